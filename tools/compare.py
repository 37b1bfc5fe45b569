"""``neurospeech compare-decisions``: two decoders' decisions on the same words, paired.

Reads two sets of decision files (the JSON lines ``decode-file --out`` writes, or a recording of the service's
``decode`` and ``word_early`` messages in the same schema) made from the same recording and word events by two
configurations -- e.g. the exact bank and a low-rank one, a float and an int8 encoder -- and pairs their
word-locked decisions (and provisional ones, by delay) on the window they were made from. For each decision
delay it reports each side's segment top-1 / top-10 with a 95 % bootstrap interval over the true segments, the
paired difference B - A with its paired interval (the same segments resampled for both sides), how often the
two top-1 candidates agree and how often the whole ranked lists are the same, and the chance level
``k / n_candidates``.

Sliding decisions carry no truth and are ignored. No torch, no model: only the decisions.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from ..errors import ConfigError, DataFormatError
from ..metrics import bootstrap_ci

__all__ = ["Decision", "compare_cmd", "compare_decisions", "format_comparison", "read_decisions"]

log = logging.getLogger(__name__)

#: ``delay_s`` given to the final word-locked decision (its window ends at ``tmax``; the contract's value is not
#: in the decisions, so the key is the kind, and the table prints "full")
FULL = "full"


@dataclass(frozen=True)
class Decision:
    """One word decision: its pairing key, true segment and ranked candidate ids."""

    key: tuple[str, float, str]  # (file name in a folder or "", t_window_start rounded to 1 us, delay label)
    truth: str
    ranked: tuple[str, ...]


def read_decisions(path: str | Path) -> list[Decision]:
    """The word-locked and provisional decisions of one decisions file (JSON lines), in file order.

    ``path`` may also be a folder: every ``*.jsonl`` in it, paired by file name with the other side's folder.
    """
    p = Path(path)
    folder = p.is_dir()
    files = sorted(p.glob("*.jsonl")) if folder else [p]
    if not files:
        raise ConfigError(f"{str(p)!r} holds no *.jsonl decisions file; pass decode-file --out files or their folder")
    out: list[Decision] = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    h = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFormatError(
                        f"{f.name} line {n} is not JSON ({exc.msg}); compare files written by decode-file --out"
                    ) from exc
                if not isinstance(h, dict):
                    continue
                kind, truth = h.get("kind"), h.get("truth")
                if kind not in ("word", "word_early") or not isinstance(truth, dict) or "segment_id" not in truth:
                    continue
                if kind == "word_early":
                    d = h.get("delay_s")
                    if not isinstance(d, (int, float)):
                        raise DataFormatError(f"{f.name} line {n}: a word_early decision without a numeric delay_s")
                    delay = f"{float(d):g}"
                else:
                    delay = FULL
                start = h.get("t_window_start")
                if not isinstance(start, (int, float)):
                    raise DataFormatError(f"{f.name} line {n}: a {kind} decision without t_window_start")
                ranked = tuple(str(c.get("id")) for c in h.get("topk") or [])
                name = f.name if folder else ""  # two single files pair whatever their names
                out.append(Decision((name, round(float(start), 6), delay), str(truth["segment_id"]), ranked))
    return out


def _topk_hits(ds: list[Decision], k: int) -> np.ndarray:
    return np.array([d.truth in d.ranked[:k] for d in ds], dtype=np.float64)


def compare_decisions(a: list[Decision], b: list[Decision], n_candidates: int, n_boot: int = 2000,
                      seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two decision sets (see the module docstring).

    Returns
    -------
    dict
        ``delays``: one entry per delay (provisional delays ascending, then ``"full"``) with ``n``, ``a`` and ``b``
        (``top1``, ``top10`` and their ``_ci``), ``diff_top10`` / ``diff_top1`` (B - A) with ``_ci``,
        ``top1_agreement``, ``topk_identical`` (share of pairs with the same ranked list); ``chance_top1`` /
        ``chance_top10``; ``unpaired`` counts of each side.
    """
    if n_candidates < 1:
        raise ConfigError(f"n_candidates must be >= 1, got {n_candidates!r}")
    ia = {d.key: d for d in a}
    ib = {d.key: d for d in b}
    common = sorted(set(ia) & set(ib))
    if not common:
        raise DataFormatError(
            f"no decision of A ({len(ia)} word decisions) pairs with one of B ({len(ib)}): compare files made from "
            "the same recording and events (paired by file name, window start and delay)"
        )
    mismatched = [k for k in common if ia[k].truth != ib[k].truth]
    if mismatched:
        raise DataFormatError(
            f"{len(mismatched)} paired decisions disagree on the true segment (first: {mismatched[0]}): the two "
            "sides were not made with the same events"
        )
    delays = sorted({k[2] for k in common}, key=lambda d: (d == FULL, float(d) if d != FULL else 0.0))
    rows = []
    for delay in delays:
        keys = [k for k in common if k[2] == delay]
        da, db = [ia[k] for k in keys], [ib[k] for k in keys]
        groups = np.array([d.truth for d in da])
        row: dict[str, Any] = {"delay": delay, "n": len(keys)}
        hits = {(side, k): _topk_hits(ds, k) for side, ds in (("a", da), ("b", db)) for k in (1, 10)}
        for side in ("a", "b"):
            row[side] = {}
            for k in (1, 10):
                h = hits[side, k]
                row[side][f"top{k}"] = float(h.mean())
                row[side][f"top{k}_ci"] = list(bootstrap_ci(h, groups, n_boot, seed))
        for k in (1, 10):
            diff = hits["b", k] - hits["a", k]
            row[f"diff_top{k}"] = float(diff.mean())
            row[f"diff_top{k}_ci"] = list(bootstrap_ci(diff, groups, n_boot, seed))
        row["top1_agreement"] = float(np.mean([x.ranked[:1] == y.ranked[:1] for x, y in zip(da, db, strict=True)]))
        row["topk_identical"] = float(np.mean([x.ranked == y.ranked for x, y in zip(da, db, strict=True)]))
        rows.append(row)
    return {
        "n_candidates": int(n_candidates),
        "chance_top1": min(1.0, 1 / n_candidates),
        "chance_top10": min(1.0, 10 / n_candidates),
        "delays": rows,
        "unpaired": {"a": len(ia) - len(common), "b": len(ib) - len(common)},
    }


def format_comparison(r: dict[str, Any], label_a: str = "A", label_b: str = "B") -> str:
    """Markdown table of :func:`compare_decisions` (percentages, 95 % intervals)."""

    def pc(x: float) -> str:
        return f"{100 * x:.1f}"

    def share(x: float) -> str:  # 100.0 only when every pair agrees (1 of 2,374 would round to it)
        return "100.0" if x >= 1.0 else f"{min(100 * x, 99.9):.1f}"

    def ci(v: list[float], sign: bool = False) -> str:
        f = "{:+.1f}" if sign else "{:.1f}"
        return "[" + ", ".join(f.format(100 * x) for x in v) + "]"

    lines = [
        f"| delay | n | {label_a} top-10 % | {label_b} top-10 % | {label_b} - {label_a} top-10 (points) | "
        f"{label_a} top-1 % | {label_b} top-1 % | top-1 agreement % | same ranked list % |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["delays"]:
        d = row["delay"] if row["delay"] == FULL else f"+{row['delay']} s"
        lines.append(
            f"| {d} | {row['n']} | {pc(row['a']['top10'])} {ci(row['a']['top10_ci'])} | "
            f"{pc(row['b']['top10'])} {ci(row['b']['top10_ci'])} | {100 * row['diff_top10']:+.1f} "
            f"{ci(row['diff_top10_ci'], True)} | {pc(row['a']['top1'])} | {pc(row['b']['top1'])} | "
            f"{share(row['top1_agreement'])} | {share(row['topk_identical'])} |"
        )
    lines.append(f"chance: top-1 {100 * r['chance_top1']:.2f} %, top-10 {100 * r['chance_top10']:.2f} % "
                 f"({r['n_candidates']} candidates); unpaired decisions: {label_a} {r['unpaired']['a']}, "
                 f"{label_b} {r['unpaired']['b']}")
    return "\n".join(lines)


@click.command("compare-decisions")
@click.argument("a", type=click.Path(exists=True, path_type=Path))
@click.argument("b", type=click.Path(exists=True, path_type=Path))
@click.option("--candidates", "n_candidates", type=click.IntRange(min=1), required=True,
              help="Candidates in the bank(s) (the chance level is k / this; decode-file prints n_candidates).")
@click.option("--label-a", default="A", show_default=True)
@click.option("--label-b", default="B", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON.")
def compare_cmd(a: Path, b: Path, n_candidates: int, label_a: str, label_b: str, out: Path | None) -> None:
    """Pair the word decisions of A and B (decode-file --out files, or folders of them paired by file name).

    Prints segment top-1/top-10 of each side per decision delay, the paired difference B - A with its 95 %
    bootstrap interval over true segments, the top-1 agreement and the share of identical ranked lists.

    Example: neurospeech compare-decisions dec/exact dec/r512 --candidates 5953 --label-a exact --label-b r512
    """
    r = compare_decisions(read_decisions(a), read_decisions(b), n_candidates)
    r["a"], r["b"] = {"path": str(a), "label": label_a}, {"path": str(b), "label": label_b}
    click.echo(format_comparison(r, label_a, label_b))
    if out is not None:
        try:
            out.write_text(json.dumps(r, indent=1))
        except OSError as exc:
            raise ConfigError(f"cannot write {str(out)!r} ({exc.strerror}); choose a writable --out") from exc

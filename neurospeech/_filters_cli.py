"""``neurospeech filters``: the measured delay and bands of the anti-aliasing filters the pipeline runs.

The decision delay of a word-locked window is ``tmax`` after the word onset plus this filter's delay: the
command prints it per input rate and frequency, for both designs or for the one a model's contract names.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from .errors import ArtifactError
from .preprocessing import RESAMPLE_PHASES, PreprocessingSpec, WindowSpec, group_delay_table

__all__ = ["filters"]

log = logging.getLogger(__name__)

#: input rates of common systems: CTF / Neuromag (1200, 1000), KIT (1000, 500), BioSemi (2048, 512, 128) ...
DEFAULT_RATES = (2048.0, 1200.0, 1000.0, 600.0, 512.0, 500.0, 250.0, 200.0, 150.0)


def _model_settings(model: Path) -> tuple[float, WindowSpec, PreprocessingSpec]:
    """Input rate, window and preprocessing recorded in an exported model's contract."""
    import onnxruntime as ort

    from .contract import METADATA_KEY, ModelContract

    try:
        meta = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf ...: one clear message
        raise ArtifactError(f"cannot read ONNX model {str(model)!r}: {exc}") from exc
    meta = meta.custom_metadata_map
    if METADATA_KEY not in meta:
        raise ArtifactError(f"model {str(model)!r} carries no contract (metadata key {METADATA_KEY!r})")
    c = ModelContract.from_json(meta[METADATA_KEY])
    return c.sfreq_raw, c.window, c.preprocessing


@click.command("filters")
@click.option("--sfreq", "rates", type=float, multiple=True, help="Input rate(s) in Hz (default: common systems).")
@click.option("--phase", type=click.Choice([*sorted(RESAMPLE_PHASES), "both"]), default="both", show_default=True)
@click.option("--model", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Print the filter this exported model's contract names (its training rate unless --sfreq).")
@click.option("--half-len", type=int, default=PreprocessingSpec().resample_half_len, show_default=True,
              help="Length parameter of the linear-phase design.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
def filters(rates: tuple[float, ...], phase: str, model: Path | None, half_len: int, as_json: bool) -> None:
    """Print the group delay (ms, per frequency), passband ripple and stopband of the resampling filters."""
    sfreq_out = WindowSpec().sfreq
    phases = sorted(RESAMPLE_PHASES) if phase == "both" else [phase]
    if model is not None:
        sfreq_raw, window, spec = _model_settings(model)
        sfreq_out, half_len, phases = window.sfreq, spec.resample_half_len, [spec.resample_phase]
        rates = rates or (sfreq_raw,)
    rows: list[dict[str, Any]] = [
        group_delay_table(r, sfreq_out, half_len, p) for r in (rates or DEFAULT_RATES) for p in phases
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    freqs = list(rows[0]["group_delay_ms"]) if rows else []
    head = f"{'in Hz':>7} {'phase':<8} {'taps':>5} {'delay ms':>9} " + " ".join(f"{f + ' Hz':>7}" for f in freqs)
    click.echo(f"anti-aliasing filters to {sfreq_out:g} Hz: group delay in ms per frequency")
    click.echo(head + f" {'ripple':>7} {'stop dB':>7}")
    for r in rows:
        gd = " ".join(f"{r['group_delay_ms'].get(f, float('nan')):7.2f}" for f in freqs)
        click.echo(
            f"{r['sfreq_in']:7g} {r['phase']:<8} {r['n_taps']:5d} {r['delay_ms']:9.2f} {gd} "
            f"{r['passband_ripple']:7.4f} {r['stopband_db']:7.1f}"
        )
    click.echo(
        f"ripple: max |gain - 1| below {sfreq_out / 3:g} Hz; stop: max gain from {2 * sfreq_out / 3:g} Hz; "
        "delay: what output sample times are corrected by"
    )

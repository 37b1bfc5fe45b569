"""decode-file's output file (service/_partial_file.py): an interrupt at any line leaves no temporary file.

The CLI's signal handlers raise ``Interrupted`` in the main thread at whatever Python line it is on. Here a
trace function raises it at the n-th line or return event inside ``PartialFile.open`` / ``commit`` (and the
Python functions they call), for every n in turn, with the caller written as ``decode_file`` writes it. The
subprocess tests in tests/test_exit_codes.py send real signals, but land wherever the scheduler puts them;
a SIGHUP between ``tempfile.mkstemp``'s ``open`` and its return (which this test reaches) once left a
``.partial`` file in a loaded CI run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from neurospeech.service._partial_file import PartialFile

from neurospeech.errors import ConfigError, Interrupted


class _InterruptAt:
    """While active, raise ``Interrupted(SIGHUP)`` at the ``n``-th line/return event of any Python frame."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.fired = False

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call" and frame.f_code is _InterruptAt.__exit__.__code__:
            return None  # the end of the checked block, not a point inside it
        if event in ("line", "return") and not self.fired:
            if self.seen == self.n:
                self.fired = True
                raise Interrupted(signal.SIGHUP, "decode-file")
            self.seen += 1
        return self._trace

    def __enter__(self) -> _InterruptAt:
        sys.settrace(self._trace)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(None)


def _write(target: Path, interrupt_open: int | None, interrupt_commit: int | None) -> bool:
    """decode_file's use of PartialFile; True when an interrupt fired (and was raised to the caller)."""
    out = PartialFile(target)
    fired = False
    try:
        with _InterruptAt(-1 if interrupt_open is None else interrupt_open) as hit:
            fh = out.open()
        fired |= hit.fired
        fh.write('{"seq": 0}\n')
        with _InterruptAt(-1 if interrupt_commit is None else interrupt_commit) as hit:
            out.commit()
        fired |= hit.fired
    except Interrupted:
        return True
    finally:
        out.discard()
    if fired:  # an interrupt that did not reach the caller would be a swallowed stop request
        raise AssertionError("an interrupt fired inside PartialFile but was not raised")
    return False


@pytest.mark.parametrize("stage", ["open", "commit"])
def test_an_interrupt_at_any_line_leaves_no_partial_file(tmp_path, stage):
    target = tmp_path / "dec.jsonl"
    target.write_text("an earlier run's complete output\n")
    n = 0
    while True:
        fired = _write(target, n if stage == "open" else None, n if stage == "commit" else None)
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == ["dec.jsonl"], (stage, n, left)
        if not fired:  # the n-th event is past the end: every earlier point was interrupted
            break
        # interrupted before the rename: the earlier output is untouched; after it: the new, complete one
        assert target.read_text() in ("an earlier run's complete output\n", '{"seq": 0}\n'), (stage, n)
        n += 1
    assert target.read_text() == '{"seq": 0}\n'
    assert n >= 3, f"only {n} interrupt points reached in {stage}(): is the trace seeing the code?"


def test_interrupts_are_checked_inside_mkstemp_too(tmp_path):
    """The check above reaches the spot that broke: ``mkstemp`` created the file and had not yet returned."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=tmp_path)  # first call: initialises tempfile's name sequence under a lock
    os.close(fd)
    os.unlink(name)

    def leaks(n: int) -> bool | None:  # None: n is past mkstemp's last event
        name = None
        with _InterruptAt(n) as hit:
            try:
                fd, name = tempfile.mkstemp(suffix=".partial", dir=tmp_path)
            except Interrupted:
                pass
        if not hit.fired:
            os.close(fd)
            os.unlink(name)  # type: ignore[arg-type]
            return None
        found = list(tmp_path.glob("*.partial"))
        for p in found:
            p.unlink()
        return bool(found) and name is None  # created, and the caller never learnt its name

    results = []
    n = 0
    while (r := leaks(n)) is not None:
        results.append(r)
        n += 1
    assert any(results), "no interrupt point inside mkstemp left a nameless file: the trace misses that window"


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        PartialFile(tmp_path).open()
    missing = tmp_path / "no" / "such" / "dec.jsonl"
    with pytest.raises(ConfigError, match="mkdir -p"):
        PartialFile(missing).open()
    assert not (tmp_path / "no").exists()


def test_the_output_gets_a_plain_files_permissions(tmp_path):
    out = PartialFile(tmp_path / "dec.jsonl")
    try:
        out.open().write("x\n")
        out.commit()
    finally:
        out.discard()
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "dec.jsonl").stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["dec.jsonl"]

"""A real LSL outlet pushing a recording at real-time pace (:class:`Player`), for the service tests.

Kept apart from ``_service_fixtures`` (which imports onnx, scipy and the package) so that the player's child
process (``_player_proc.py``, ``Player(process=True)``) starts in a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Player"]


class Player:
    """A real LSL outlet (plus a word-marker outlet) pushing a recording at real-time pace in a thread.

    Stamps are ``pylsl.local_clock()`` at push time for the chunk's last sample (never future-dated). Faults:
    ``nan`` {channel index: (t0, t1)} NaN bursts, ``dead`` channel indices (zeros), ``jump_at``/``jump_by``
    (stamps shifted from that data time on), ``rate_factor`` (true rate = nominal * factor),
    ``unit``/``scale`` (e.g. 'uV', 1e6), ``order`` (channel permutation), ``stop_at`` (data time at which the
    outlet is destroyed;
    ``restart_after`` seconds later a new outlet with the same source_id continues). ``stalls``: data time ->
    seconds the producer sleeps before pushing the chunk that reaches that time (a producer starved of CPU,
    made deterministic: it then catches up in a burst of chunks, each stamped when pushed). ``stamp_on_schedule``:
    stamp each chunk with its scheduled time instead (as an amplifier stamps at acquisition): exact stamps for
    the tests that need them.

    ``process``: run the outlets in a child Python process (``tests/_player_proc.py``) instead of a thread of
    this one. Default: when the outlet is killed mid-stream (``stop_at`` with ``kill``): the child then exits
    without running liblsl's outlet destructor and a new child continues after ``restart_after``, because
    destroying an outlet while an inlet pulls from it can crash liblsl (a segfault was seen under two busy loops,
    first of the whole test run, then of the child: sccn/liblsl#218).
    The attributes the tests read (``t_first``, ``pushed``, ``stopped_at``, ``restarted_at``,
    ``error``, ``done``) are reported back by the child (LSL's clock is the same in every process of a machine).
    """

    def __init__(
        self,
        data,
        sfreq,
        names,
        name=None,
        chunk=0.02,
        markers=None,
        unit="V",
        scale=1.0,
        order=None,
        nan=None,
        dead=(),
        jump_at=None,
        jump_by=0.0,
        rate_factor=1.0,
        stop_at=None,
        restart_after=1.0,
        loop=False,
        ch_type="EEG",
        declared_sfreq=None,
        wait_consumers=True,
        kill=True,
        stamp_on_schedule=False,
        stalls=None,
        process=None,
        start_index=0,
    ):
        import threading
        import uuid

        self.name = name or f"nstest-{uuid.uuid4().hex[:10]}"
        self.source_id = self.name + "-sid"
        self.sfreq = float(sfreq)
        self.declared = float(declared_sfreq or sfreq)
        x = np.asarray(data, dtype=np.float64).copy()
        for c, (t0, t1) in (nan or {}).items():
            x[c, int(t0 * sfreq) : int(t1 * sfreq)] = np.nan
        for c in dead:
            x[c] = 0.0
        x *= scale
        order = list(range(len(names))) if order is None else list(order)
        self.data = np.ascontiguousarray(x[order].T, dtype=np.float32)
        self.names = [names[i] for i in order]
        self.unit, self.ch_type = unit, ch_type
        self.chunk = max(1, round(chunk * sfreq))
        self.markers = sorted(markers or [], key=lambda m: m[0])  # (data time, payload)
        self.jump_at, self.jump_by = jump_at, jump_by
        self.rate_factor = rate_factor
        self.stop_at, self.restart_after = stop_at, restart_after
        self.loop = loop
        self.wait_consumers = wait_consumers
        self.kill = kill
        self.stamp_on_schedule = stamp_on_schedule
        self.stalls = sorted(dict(stalls or {}).items())  # a dict, or (time, seconds) pairs
        self.start_index = int(start_index)  # a resumed child: the sample the killed one stopped at
        self.pushed = self.start_index
        self.t_first = None
        self.stopped_at = None
        self.restarted_at = None
        self.error = None
        self.ready = False  # process mode: the child's outlets exist
        self._halt = threading.Event()
        self._proc_lock = threading.Lock()
        self._killed_at: int | None = None  # process mode: the sample at which the child killed its outlet
        self._live: list = []  # this player's outlets (see _run)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.process = bool(stop_at is not None and kill) if process is None else bool(process)
        self._proc: subprocess.Popen | None = None
        self._report: Callable[[str, Any], None] | None = None  # the child's channel to its parent

    def _outlets(self):
        import pylsl

        minfo = pylsl.StreamInfo(self.name + "-markers", "Markers", 1, 0, "string", self.source_id + "-m")
        return self._outlets_data_only()[0], pylsl.StreamOutlet(minfo)

    def start(self):
        if self.process:
            self._start_process()
        else:
            self._thread.start()
        return self

    def _set(self, key, value):
        setattr(self, key, value)
        if self._report is not None:
            self._report(key, value)

    def child_config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this player in ``tests/_player_proc.py`` (JSON-safe), beside its
        data (already scaled and ordered, so ``scale``, ``order``, ``nan`` and ``dead`` keep their defaults)."""
        return {
            "sfreq": self.sfreq, "names": self.names, "name": self.name, "chunk": self.chunk / self.sfreq,
            "markers": self.markers, "unit": self.unit, "ch_type": self.ch_type, "declared_sfreq": self.declared,
            "jump_at": self.jump_at, "jump_by": self.jump_by, "rate_factor": self.rate_factor,
            "stop_at": self.stop_at, "restart_after": self.restart_after, "loop": self.loop,
            "wait_consumers": self.wait_consumers, "kill": self.kill, "stamp_on_schedule": self.stamp_on_schedule,
            "stalls": self.stalls, "start_index": self.start_index,
        }

    def _start_process(self):
        import json
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="nstest-player-")
        d = Path(self._tmp.name)
        np.save(d / "data.npy", self.data)
        (d / "player.json").write_text(json.dumps(self.child_config()))
        def spawn(config: str) -> None:
            with (d / "stderr.txt").open("w") as err_file:  # the child writes to its own copy of the handle
                self._proc = subprocess.Popen(
                    [sys.executable, str(Path(__file__).with_name("_player_proc.py")), str(d), config],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err_file, text=True,
                )

        def follow() -> int:
            assert self._proc is not None and self._proc.stdout is not None
            for line in self._proc.stdout:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                for k, v in msg.items():
                    setattr(self, k, v)
            self._proc.stdout.close()
            rc = self._proc.wait()
            if self._killed_at is not None and self._proc.stdin is not None:  # replaced by its continuation
                with contextlib.suppress(OSError, ValueError):
                    self._proc.stdin.close()
            err = (d / "stderr.txt").read_text(errors="replace")
            if rc != 0 and self.error is None and not self._halt.is_set():
                self.error = f"player process exited {rc}: {err[-1500:]}"
            return rc

        def read():
            if follow() != 0 or self._killed_at is None:
                return
            # the outlet was killed with its process (no liblsl destructor ran, as when an amplifier's
            # software dies): ``restart_after`` seconds later a new process continues with the same source_id
            if self._halt.wait(self.restart_after):
                return
            cfg = {**self.child_config(), "start_index": self._killed_at, "stop_at": None, "markers": [],
                   "wait_consumers": False}
            (d / "resume.json").write_text(json.dumps(cfg))
            with self._proc_lock:  # stop() either sees the new child or has halted before it starts
                if self._halt.is_set():
                    return
                spawn("resume.json")
            follow()

        spawn("player.json")
        self._thread = threading.Thread(target=read, daemon=True)
        self._thread.start()
        # the outlet exists before start() returns, as with a thread (the service resolves it within its
        # resolve_timeout): wait for the child's "ready" (a loaded machine may take seconds to start Python)
        deadline = time.monotonic() + 60.0
        while not self.ready and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.ready:
            self.stop()
            raise RuntimeError(f"the player process did not open its outlet: {self.error}")

    def _run(self):
        import json
        import time

        import pylsl

        try:
            out, mout = self._outlets() if not self.start_index else self._outlets_data_only()
            # held by the Player, not by this thread: the outlets outlive the thread and are destroyed in stop(),
            # which run_session calls after the service's inlets are closed. Destroying an outlet while an inlet
            # in this process is still connected can crash liblsl (a segfault in the outlet's destructor was
            # seen under load: sccn/liblsl#218; mne-lsl's tests likewise delete inlets before outlets, #168)
            self._live = [out, mout]
            if self._report is not None:
                self._report("ready", True)
            if self.start_index:  # a resumed child: its outlet is the restarted one
                self._set("restarted_at", pylsl.local_clock())
            if self.wait_consumers:  # start pushing once the service has both inlets (bounded wait)
                out.wait_for_consumers(10.0)
                if self.markers:
                    mout.wait_for_consumers(5.0)
            rate = self.sfreq * self.rate_factor
            n = len(self.data)
            i = self.start_index
            mk = 0
            t0 = time.monotonic() - i / rate  # a resumed child continues the schedule from its first sample
            lsl0 = pylsl.local_clock() - i / rate
            shift = 0.0  # pause time removed from the schedule after a restart
            while not self._halt.is_set():
                if i >= n:
                    if not self.loop:
                        break
                    i = 0
                    shift += n / rate  # the next pass continues the schedule (and the stamps)
                j = min(i + self.chunk, n)
                due = t0 + shift + j / rate
                while not self._halt.is_set():
                    left = due - time.monotonic()
                    if left <= 0:
                        break
                    time.sleep(min(left, 0.005))
                while self.stalls and self.stalls[0][0] * self.sfreq <= j:
                    self._halt.wait(self.stalls.pop(0)[1])
                stamp = pylsl.local_clock()
                if self.t_first is None and not self.start_index:
                    self._set("t_first", stamp - (j - 1) / rate)
                    lsl0 = self.t_first
                elif self.stamp_on_schedule:  # like an amplifier: acquisition time, however late the push
                    stamp = min(stamp, lsl0 + shift + (j - 1) / rate)
                if self.jump_at is not None and j / self.sfreq >= self.jump_at:
                    stamp += self.jump_by
                out.push_chunk(self.data[i:j], stamp)
                self.pushed += j - i
                if self._report is not None and (self.pushed // self.chunk) % 50 == 0:
                    self._report("pushed", self.pushed)
                # markers whose onset sample has been pushed: stamped with the onset sample's LSL time
                while mk < len(self.markers) and self.markers[mk][0] * self.sfreq < j:
                    t_data, payload = self.markers[mk]
                    mout.push_sample([json.dumps(payload)], lsl0 + shift + t_data / self.rate_factor)
                    mk += 1
                i = j
                if self.stop_at is not None and self.stopped_at is None and i / self.sfreq >= self.stop_at:
                    self._set("stopped_at", pylsl.local_clock())
                    if self.kill and self._report is not None:
                        # a child: the process dies with its outlets, no liblsl destructor runs (destroying an
                        # outlet while a consumer is connected crashed liblsl, in the child too, under two busy
                        # loops: exit -11); the parent starts the continuation (see _start_process)
                        self._report("pushed", self.pushed)
                        self._report("_killed_at", i)
                        os._exit(0)
                    if self.kill:  # the outlet vanishes under a connected inlet: the case under test
                        self._live = [o for o in self._live if o is not out]
                        del out
                        import gc

                        gc.collect()
                    if self._halt.wait(self.restart_after):
                        return
                    if self.kill:
                        out, _ = self._outlets_data_only()
                        self._live.append(out)
                    self._set("restarted_at", pylsl.local_clock())
                    shift += time.monotonic() - (t0 + shift + j / rate)
        except Exception as exc:  # reported by the test
            self._set("error", exc if self._report is None else f"{type(exc).__name__}: {exc}")
        if self._report is not None:
            self._report("pushed", self.pushed)

    def _outlets_data_only(self):
        """The data outlet (channel labels, types and units in its description) and no marker outlet."""
        import pylsl

        info = pylsl.StreamInfo(
            self.name, self.ch_type, len(self.names), self.declared, "float32", self.source_id
        )
        chs = info.desc().append_child("channels")
        for nme in self.names:
            ch = chs.append_child("channel")
            ch.append_child_value("label", nme)
            ch.append_child_value("type", self.ch_type)
            ch.append_child_value("unit", self.unit)
        return pylsl.StreamOutlet(info, chunk_size=self.chunk, max_buffered=10), None

    @property
    def done(self):
        return not self._thread.is_alive()

    def stop(self):
        with self._proc_lock:
            self._halt.set()
        if self._proc is not None:
            with contextlib.suppress(OSError, ValueError):
                self._proc.stdin.write("stop\n")  # type: ignore[union-attr]
                self._proc.stdin.close()  # type: ignore[union-attr]
            try:
                self._proc.wait(10.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._thread.join(5.0)
            self._tmp.cleanup()
            return
        self._thread.join(2.0)
        self._live = []  # the outlets go now (see _run)

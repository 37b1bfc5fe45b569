"""``neurospeech bench dashboard``: the dashboard under a steady load, in a real headless Chromium.

A real ZeroMQ publisher (the service's :class:`~neurospeech.service.publisher.Publisher`, with a state
endpoint) sends ``rate`` word-locked decisions per second (top-10, truth, flags now and then) and a status
heartbeat at 2 Hz for ``minutes``; ``neurospeech dashboard`` runs as a subprocess; Chromium (Debian's, driven
by Playwright) shows the page. Measured:

- page ready: ``goto`` until the first snapshot is rendered (``#state`` shows ``running``), median of 5 fresh
  pages opened after the warm-up;
- JS heap of the page (CDP ``Runtime.getHeapUsage`` after ``HeapProfiler.collectGarbage``) after the warm-up
  (the page's bounded buffers are full by then: 1200 latency points, 60 ticker rows) and at the end: growth %;
- CPU of the dashboard server process (% of one core) over the measured part, and its RSS;
- decisions received by the page (its counter) vs published.

Targets from issue 16: page ready < 1 s, heap growth < 10 % over 10 min at 10 decisions/s, server < 5 % of a
core. The figures depend on the machine and its load: the report prints both.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, NeurospeechError

__all__ = ["DashboardBenchSettings", "format_dashboard", "run_dashboard_bench"]

log = logging.getLogger(__name__)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class DashboardBenchSettings:
    """Settings of :func:`run_dashboard_bench` (``minutes`` measured after ``warmup_s``)."""

    minutes: float = 10.0
    rate: float = 10.0
    warmup_s: float = 150.0
    n_candidates: int = 1000
    n_channels: int = 64
    chromium: str = "/usr/bin/chromium"
    workdir: Path = Path("neurospeech-bench")

    def __post_init__(self) -> None:
        if not self.minutes > 0 or not self.rate > 0 or self.warmup_s < 0:
            raise ConfigError(f"minutes and rate must be > 0 and warmup_s >= 0, got {self.minutes}, {self.rate}, "
                              f"{self.warmup_s}")
        if not Path(self.chromium).exists():
            raise ConfigError(f"no Chromium at {self.chromium!r}; install Debian's `chromium` or pass --chromium")


class _Load:
    """Publishes decisions at ``rate`` per second and a heartbeat at 2 Hz from a thread."""

    def __init__(self, s: DashboardBenchSettings) -> None:
        from ...service.publisher import Publisher, PublisherSettings

        angles = np.linspace(0, 2 * np.pi, s.n_channels, endpoint=False)
        self.names = [f"EEG{i + 1:03d}" for i in range(s.n_channels)]
        info = {"model_id": "bench-model", "model_sha256": "0" * 64, "preset": "bench", "subject": "01",
                "n_candidates": s.n_candidates,
                "channels": [{"name": n, "type": "eeg", "unit": "V", "pos": [float(np.cos(a)), float(np.sin(a))]}
                             for n, a in zip(self.names, angles, strict=True)]}
        self.pub = Publisher(PublisherSettings(endpoint="tcp://127.0.0.1:*", state_endpoint="tcp://127.0.0.1:*"),
                             info)
        self.s = s
        self.sent = 0
        self._stop = threading.Event()
        self._rng = np.random.default_rng(0)
        self._t0 = time.monotonic()
        self.thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def _decision(self, i: int) -> dict[str, Any]:
        import pylsl

        rng = self._rng
        truth = int(rng.integers(self.s.n_candidates))
        ids = list(rng.choice(self.s.n_candidates, 10, replace=False))
        if rng.random() < 0.3 and truth not in ids:
            ids[int(rng.integers(10))] = truth
        p = np.sort(rng.dirichlet(np.ones(10)))[::-1]
        now = pylsl.local_clock()
        return {"kind": "word", "subject": "01", "t_window_start": now - 3.0, "t_window_end": now - 0.05,
                "t_newest_sample": now - 0.03 - 0.02 * rng.random(), "processing_ms": 5 + 3 * rng.random(),
                "topk": [{"rank": r + 1, "id": f"seg{c}", "word": f"word{c}", "sound": "s.wav", "sound_time": 0.0,
                          "score": float(1 - r / 10), "prob": float(p[r])} for r, c in enumerate(ids)],
                "truth": {"segment_id": f"seg{truth}", "word": f"word{truth}"},
                "flags": ["interpolated:EEG003"] if i % 97 == 0 else []}

    def _status(self) -> dict[str, Any]:
        up = time.monotonic() - self._t0
        return {"state": "running", "stream": {"name": "bench", "source_id": "bench", "sfreq": 1000.0,
                                               "n_channels": self.s.n_channels},
                "buffer_fill": 1.0, "lag_s": 0.01, "samples_received": int(1000 * up), "dropped_samples": 0,
                "overruns": 0, "skipped_decisions": 0, "messages_sent": {"decode": self.sent},
                "dropped_messages": {}, "slow_subscriber_events": {}, "subscribers": 2, "gaps": [], "n_gaps": 0,
                "channel_quality": {"n_channels": self.s.n_channels, "n_bad": 1, "bad": {"EEG010": ["flat"]}},
                "uptime_s": up, "timestamp_issues": {"clock_jumps": 0, "rate_ratio": 1.0},
                "decisions": {"word": self.sent, "sliding": 0}, "processing_ms": {"p50": 6.0, "p99": 8.0, "max": 9.0},
                "cpu_percent": 20.0}

    def _run(self) -> None:
        period = 1.0 / self.s.rate
        next_dec = next_status = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_status:
                self.pub.publish("status", self._status())
                next_status += 0.5
            if now >= next_dec:
                self.pub.publish("decode", self._decision(self.sent))
                self.sent += 1
                next_dec += period
            self._stop.wait(max(0.0, min(next_dec, next_status) - time.monotonic()))

    def start(self) -> None:
        self.pub.publish("status", self._status())
        self.thread.start()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.pub.close()


def run_dashboard_bench(s: DashboardBenchSettings) -> dict[str, Any]:
    """Run the benchmark; returns the figures (see the module docstring)."""
    from playwright.sync_api import sync_playwright

    from ._procs import ProcSampler, _stop

    s.workdir.mkdir(parents=True, exist_ok=True)
    load = _Load(s)
    load.start()
    log_path = s.workdir / "dashboard-bench.log"
    with open(log_path, "w") as err:
        dash = subprocess.Popen([sys.executable, "-m", "neurospeech", "dashboard", "--pub", load.pub.endpoint,
                                 "--state", str(load.pub.state_endpoint), "--port", "0"],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=dict(os.environ))
    try:
        line = dash.stdout.readline() if dash.stdout else ""
        if not line.startswith("dashboard on "):
            raise NeurospeechError(f"the dashboard did not start (see {log_path}): {line!r}")
        url = line.split()[-1]
        errors: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=s.chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(url)
                page.wait_for_selector('#state[data-state="running"]', timeout=60_000)
                cdp = page.context.new_cdp_session(page)

                def heap() -> float:
                    cdp.send("HeapProfiler.collectGarbage")
                    return float(cdp.send("Runtime.getHeapUsage")["usedSize"])

                time.sleep(s.warmup_s)
                ready, ready_nav = [], []
                for _ in range(5):
                    extra = browser.new_page()
                    t0 = time.perf_counter()
                    extra.goto(url)
                    extra.wait_for_selector('#state[data-state="running"]', timeout=60_000)
                    ready.append(time.perf_counter() - t0)
                    # in the page: navigation start -> first snapshot rendered (performance.mark in dashboard.js)
                    ready_nav.append(extra.evaluate(
                        "performance.getEntriesByName('neurospeech-first-snapshot')[0].startTime") / 1000)
                    extra.close()
                h0 = heap()
                sent0 = load.sent
                sampler = ProcSampler(dash.pid)
                sampler.start()
                heaps = [h0]
                end = time.monotonic() + 60 * s.minutes
                while time.monotonic() < end:
                    time.sleep(min(30.0, max(0.0, end - time.monotonic())))
                    heaps.append(heap())
                cpu = sampler.cpu_percent()
                rss = sampler.p.memory_info().rss
                shown = page.inner_text("#ticker-count")
                sent = load.sent
            finally:
                browser.close()
    finally:
        load.close()
        _stop(dash)
    return {
        "minutes": s.minutes, "rate_per_s": s.rate, "warmup_s": s.warmup_s, "decisions_published": sent,
        "decisions_measured": sent - sent0, "page_counter": shown,
        "page_ready_s": {"median": float(np.median(ready)), "max": float(max(ready)), "all": ready},
        "page_ready_in_page_s": {"median": float(np.median(ready_nav)), "max": float(max(ready_nav)),
                                 "all": ready_nav},
        "heap_bytes": {"start": heaps[0], "end": heaps[-1], "max": max(heaps), "samples": heaps},
        "heap_growth_pct": 100.0 * (heaps[-1] - heaps[0]) / heaps[0],
        "server_cpu_pct_of_core": cpu, "server_rss_mb": rss / 2**20, "console_errors": errors,
        "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
    }


def format_dashboard(r: dict[str, Any]) -> str:
    """A short table of :func:`run_dashboard_bench` results, with the issue's targets."""
    return "\n".join([
        f"dashboard bench: {r['rate_per_s']:g} decisions/s for {r['minutes']:g} min after {r['warmup_s']:g} s warm-up "
        f"({r['decisions_measured']} measured; page counter '{r['page_counter']}')",
        f"  page ready      median {r['page_ready_in_page_s']['median']:.3f} s, max "
        f"{r['page_ready_in_page_s']['max']:.3f} s from navigation start (in the page); "
        f"{r['page_ready_s']['median']:.3f} s from goto() (tab creation aside)   (target < 1 s)",
        f"  JS heap         {r['heap_bytes']['start'] / 2**20:.2f} -> {r['heap_bytes']['end'] / 2**20:.2f} MiB "
        f"({r['heap_growth_pct']:+.1f} %, max {r['heap_bytes']['max'] / 2**20:.2f} MiB)   (target < +10 %)",
        f"  server CPU      {r['server_cpu_pct_of_core']:.1f} % of one core, RSS {r['server_rss_mb']:.0f} MiB"
        "   (target < 5 %)",
        f"  console errors  {len(r['console_errors'])};  machine: {r['cpu_count']} cores, load "
        f"{', '.join(f'{x:.1f}' for x in r['load_avg'])}",
    ])

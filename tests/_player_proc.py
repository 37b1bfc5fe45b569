"""Child process of :class:`_service_fixtures.Player` (``process=True``): rebuilds the player from the folder
its parent wrote (``data.npy``, ``player.json``), pushes in its main thread and reports ``t_first``,
``pushed``, ``stopped_at``, ``restarted_at`` and ``error`` as JSON lines on stdout. A line on stdin (or its
closing) stops it. Its outlets live and die in this process, never beside the service's inlets."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
from _player import Player


def main(folder: str, config: str = "player.json") -> int:
    d = Path(folder)
    cfg = json.loads((d / config).read_text())
    data = np.load(d / "data.npy")  # (n, C), scaled and ordered by the parent
    p = Player(data.T, **cfg, process=False)  # Player.child_config: its own keyword arguments
    lock = threading.Lock()

    def report(key: str, value: object) -> None:
        with lock:
            sys.stdout.write(json.dumps({key: value}) + "\n")
            sys.stdout.flush()

    p._report = report

    def watch_stdin() -> None:
        sys.stdin.readline()  # a line, or EOF when the parent closes the pipe or dies
        p._halt.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    p._run()
    p._live = []  # the outlets go here, in a process without inlets
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

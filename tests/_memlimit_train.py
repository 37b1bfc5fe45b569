"""Child process of tests/test_corpus_cache.py: train one epoch under a data-segment limit (RLIMIT_DATA).

    python _memlimit_train.py DATA OUT CACHE BUDGET_MB on|off

Every library the run needs is imported first; then RLIMIT_DATA (private writable memory: heap and anonymous
maps, which is what numpy arrays and torch tensors use; read-only file maps such as the cache's memory maps
do not count) is set to what the process holds now plus BUDGET_MB, and ``train`` runs with ``data_cache``
on or off. Prints one JSON line: the limit, the memory held before training and the peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys


def _vm_data_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def limit_data(budget_mb: int) -> tuple[int, int]:
    """Import what a run needs, set torch up, then RLIMIT_DATA to the memory held now plus ``budget_mb``.

    Returns the bytes held before and the limit.
    """
    import h5py  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot
    import mne  # noqa: F401
    import neurospeech.models._stream
    import neurospeech.models.evaluate
    import neurospeech.models.train
    import scipy.signal  # noqa: F401
    import torch

    import neurospeech.data.formats
    import neurospeech.speech  # noqa: F401

    torch.set_num_threads(1)
    # oneDNN allocates per-shape scratch memory on first use of each primitive, outside the batch data this test
    # bounds: under the limit its backward failed 1 run in 3 ("could not create a primitive"); torch's native
    # CPU kernels need no such workspace
    torch.backends.mkldnn.set_flags(False)
    torch.nn.functional.conv1d(torch.zeros(2, 4, 64), torch.zeros(4, 4, 3)).sum()  # torch's lazy set-up

    held = _vm_data_bytes()
    limit = held + int(budget_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    return held, limit


def main() -> None:
    data, out, cache, budget_mb, mode = sys.argv[1:6]
    from neurospeech.models.train import TrainConfig, train

    held, limit = limit_data(int(budget_mb))
    cfg = TrainConfig(
        data=data, data_format="libribrain", out=out, feature_cache=cache,
        data_cache="on" if mode == "on" else "off", max_epochs=1, max_val_windows=32,
        batch_size=8, batches_per_epoch=2, score_dim=8, progress=False, threads=1, resume=False,
        encoder={"n_virtual": 16, "hidden": 32, "head_hidden": 32, "fourier_harmonics": 4})
    train(cfg)
    print(json.dumps({"limit": limit, "held_before": held, "budget": limit - held,
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()

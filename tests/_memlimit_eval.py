"""Child process of tests/test_corpus_cache.py: evaluate a run under a data-segment limit (RLIMIT_DATA).

    python _memlimit_eval.py RUN DATA OUT CACHE BUDGET_MB on|off [BATCH]

As ``_memlimit_train.py`` (same imports and set-up before the limit, :func:`_memlimit_train.limit_data`), then
``evaluate`` of RUN on DATA's test split with ``data_cache`` on or off: the run, random and frequency scores and one
decision delay (no ridge baseline: its training windows are cut in memory, capped by ``max_ridge_windows``; no
centring: a second pass over validation windows, streamed the same way). A budget of 0 sets no limit (to
measure the peak RSS of either path). Prints one JSON line: the limit, the memory held before evaluating, the
peak RSS and the number of test windows.
"""

from __future__ import annotations

import json
import resource
import sys

from _memlimit_train import limit_data


def main() -> None:
    run, data, out, cache, budget_mb, mode = sys.argv[1:7]
    batch = int(sys.argv[7]) if len(sys.argv) > 7 else 16
    from neurospeech.models.evaluate import EvalConfig, evaluate

    held, limit = limit_data(int(budget_mb)) if int(budget_mb) > 0 else (0, -1)
    rep = evaluate(EvalConfig(
        runs=[run], data=data, data_format="libribrain", out=out, feature_cache=cache, data_cache=mode,
        batch_size=batch, ridge=False, centered=False, early_delays=[1.0], n_boot=50, chance_draws=10,
        progress=False))
    print(json.dumps({"limit": limit, "held_before": held, "budget": limit - held,
                      "n_queries": rep["methods"]["random"]["overall"]["n_queries"],
                      "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))


if __name__ == "__main__":
    main()

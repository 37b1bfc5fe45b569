"""Decoder batching (decode-file) and the scheduler's counters: failures are said, counted and retried."""

from __future__ import annotations

import logging
import threading

import onnx
import pytest
from _service_fixtures import build_artifacts, offline_windows
from neurospeech.service.decoder import Decoder, load_artifacts
from neurospeech.service.jobs import WindowJob
from neurospeech.service.model import EncoderModel
from neurospeech.service.scheduler import Scheduler


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    return build_artifacts(tmp_path_factory.mktemp("art"), duration=8.0, n_distractors=20)


def _jobs(art, model):
    x, _ = offline_windows(art.data, art.sfreq, model.contract, art.anchors)
    return [WindowJob("word", xi, [], 0.0, 3.0, 3.1, None) for xi in x[:4]]


def _top1(headers):
    return [h["topk"][0]["id"] for h in headers]


def test_a_failed_batch_is_logged_counted_and_batching_is_retried(art, caplog):
    model, bank, subject = load_artifacts(art.model, art.bank, None)
    dec = Decoder(model, bank, subject, k=3)
    jobs = _jobs(art, model)
    expect = _top1(dec.decide(j)[0] for j in jobs)
    encode = model.encode
    calls = {"batch": 0, "fail": 1}

    def flaky(x, subject_index=0):  # a batch call that fails once (as an out-of-memory error would)
        if x.ndim == 3:
            calls["batch"] += 1
            if calls["fail"]:
                calls["fail"] -= 1
                raise RuntimeError("injected: cannot allocate the batch")
        return encode(x, subject_index)

    model.encode = flaky  # the failure of a real session cannot be provoked on demand
    with caplog.at_level(logging.WARNING, logger="neurospeech.service.decoder"):
        first = dec.decide_batch(jobs)
    assert _top1(first) == expect  # decided one by one instead
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "injected: cannot allocate the batch" in warned[0] and "one by one" in warned[0]
    assert dec.stats() == {"batching": True, "batch_failures": 1,
                           "last_batch_error": "RuntimeError: injected: cannot allocate the batch"}
    # the next batch goes one by one (back-off of 1), the one after that is batched again
    assert _top1(dec.decide_batch(jobs)) == expect and calls["batch"] == 1
    assert _top1(dec.decide_batch(jobs)) == expect and calls["batch"] == 2


def test_a_model_with_a_fixed_batch_of_one_is_encoded_one_by_one_without_a_failure(art, tmp_path):
    m = onnx.load(str(art.model))
    for vi in [*m.graph.input, *m.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "fixed.onnx"
    onnx.save(m, str(fixed))
    model = EncoderModel(fixed)
    _, bank, subject = load_artifacts(art.model, art.bank, None)
    dec = Decoder(model, bank, subject, k=3)
    jobs = _jobs(art, model)
    assert _top1(dec.decide_batch(jobs)) == _top1(dec.decide(j)[0] for j in jobs)
    assert dec.stats() == {"batching": False, "batch_failures": 0, "last_batch_error": None}


def test_skipped_decisions_are_counted_exactly_from_two_threads():
    sched = Scheduler(30.0)
    n = 200_000

    def skip():
        for _ in range(n):
            sched.skip()

    threads = [threading.Thread(target=skip) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sched.skipped_decisions == 2 * n

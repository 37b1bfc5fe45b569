"""Every documented exit code, run with the real CLI, against the table in service/README.md.

The table is parsed from the README (case -> exit code), so the documentation and the code cannot drift apart:
a row without a case here fails, a case here without a row fails, and each case runs ``python -m neurospeech``
in a subprocess (real files, real LSL outlets on loopback, real ZeroMQ sockets) and compares its exit code with
the row's. No refusal may print a traceback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import zmq
from _service_fixtures import SUBJECT, Artifacts, Player, build_artifacts, write_onnx

from neurospeech.errors import (
    ArtifactError,
    ConfigError,
    ContractMismatchError,
    DataFormatError,
    StreamError,
    TransportError,
)
from neurospeech.scoring import CandidateBank

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
REAL = Path(__file__).resolve().parent / "data" / "real-formats"


def _rows(text: str, header: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


SERVICE_README = (ROOT / "service" / "README.md").read_text("utf-8")
TABLE = {row[0].strip("`"): int(row[-1]) for row in _rows(SERVICE_README, "| case |")}
MEANINGS = {row[0]: row[1] for row in _rows(SERVICE_README, "| code | meaning |")}


# ------------------------------------------------------------------------------------------------ helpers
class Cli:
    """``python -m neurospeech ARGS`` with its stderr collected line by line (to wait for a phase)."""

    def __init__(self, *args: object, limit_file_size: int | None = None) -> None:
        def preexec() -> None:
            if limit_file_size is not None:  # a full disk: writes beyond this size fail with EFBIG
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "neurospeech", *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None:
                self._reader.join(5)
                if any(text in line for line in self.lines):
                    return
                raise AssertionError(f"exited ({self.proc.returncode}) before {text!r}:\n{self.stderr[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.stderr[-2000:]}")
            time.sleep(0.02)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def finish(self, timeout: float = 120.0) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return rc, self.stderr


def run(*args: object, **kw: object) -> tuple[int, str]:
    return Cli(*args, **kw).finish()  # type: ignore[arg-type]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_endpoint() -> str:
    return "tcp://127.0.0.1:*"


@dataclasses.dataclass
class Ctx:
    art: Artifacts
    tmp: Path
    fif: Path
    long_fif: Path

    def new_dir(self) -> Path:
        d = self.tmp / uuid.uuid4().hex[:8]
        d.mkdir()
        return d


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    import mne

    tmp = tmp_path_factory.mktemp("exit-codes")
    art = build_artifacts(tmp, duration=6.0, n_distractors=10)
    info = mne.create_info(art.names, art.sfreq, "eeg")
    fif = tmp / "rec_raw.fif"
    mne.io.RawArray(art.data, info, verbose="error").save(fif, verbose="error")
    long_fif = tmp / "long_raw.fif"  # 5 minutes: decode-file writes for seconds, long enough to be signalled
    mne.io.RawArray(np.tile(art.data, (1, 50)), info, verbose="error").save(long_fif, verbose="error")
    return Ctx(art, tmp, fif, long_fif)


def decode(c: Ctx, *extra: object, model: object = None, bank: object = None, recording: object = None,
           out: object = None, **kw: object) -> tuple[int, str]:
    return run("decode-file", recording or c.fif, "--model", model or c.art.model, "--bank", bank or c.art.bank,
               "--out", out or c.new_dir() / "dec.jsonl", *extra, **kw)


def serve(c: Ctx, *extra: object, model: object = None, bank: object = None) -> Cli:
    return Cli("serve", "--model", model or c.art.model, "--bank", bank or c.art.bank, "--no-markers", *extra)


def serve_config(c: Ctx, toml: str) -> tuple[int, str]:
    cfg = c.new_dir() / "serve.toml"
    cfg.write_text(toml)
    return serve(c, "--config", cfg, "--stream-name", unique("never"), "--resolve-timeout", "1").finish()


def edited_bank(c: Ctx, edit) -> Path:
    b = CandidateBank.load(c.art.bank)
    fields = {f: getattr(b, f) for f in ("features", "ids", "words", "sounds", "sentences", "sound_times")}
    fields["header"] = dict(b.header)
    edit(fields)
    path = c.new_dir() / "bank.npz"
    CandidateBank(**fields).save(path)
    return path


# ------------------------------------------------------------------------------------------------ cases
def case_ok(c):
    out = c.new_dir() / "dec.jsonl"
    rc, err = decode(c, out=out)
    import json

    def no_constant(name):  # NaN, Infinity: not JSON
        raise AssertionError(f"non-standard JSON token {name}")

    lines = [json.loads(x, parse_constant=no_constant) for x in out.read_text().splitlines()]
    assert len(lines) > 5 and not list(out.parent.glob("*.partial"))
    return rc, err


def case_stop_while_loading(c):
    p = serve(c, "--stream-name", unique("never"), "--resolve-timeout", "60", "--pub", free_endpoint())
    p.wait_for("loading model")
    p.proc.send_signal(signal.SIGTERM)
    rc, err = p.finish(timeout=20)
    assert "no LSL stream matches" not in err
    return rc, err


def case_stop_while_resolving(c):
    p = serve(c, "--stream-name", unique("never"), "--resolve-timeout", "60", "--pub", free_endpoint())
    p.wait_for("waiting up to")
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    rc, err = p.finish(timeout=20)  # a deadline, not a timing claim: the stop itself takes ~10 ms
    assert "no LSL stream matches" not in err and "Streams found" not in err, err[-1000:]
    assert time.monotonic() - t0 < 20
    return rc, err


def _replay(path):
    return run("replay", path, "--name", unique("real"), "--speed", "20", "--no-markers")


def case_replay_kit(c):
    return _replay(REAL / "KIT" / "test_as-raw.con")


def case_replay_ctf(c):
    return _replay(REAL / "CTF" / "somMDYO-18av.ds")


def case_replay_brainvision(c):
    return _replay(REAL / "Brainvision" / "test_NO.vhdr")


def _expect_key(key):
    def check(rc_err):
        assert key in rc_err[1], rc_err[1][-1000:]
        return rc_err

    return check


def case_config_sndhwm_text(c):
    return _expect_key("sndhwm")(serve_config(c, '[publish]\nsndhwm = "lots"\n'))


def case_config_nodrop_text(c):
    return _expect_key("nodrop")(serve_config(c, '[publish]\nnodrop = "no"\n'))


def case_config_status_interval_tiny(c):
    return _expect_key("status_interval")(serve_config(c, "[decode]\nstatus_interval = 1e-6\n"))


def case_config_loss_timeout_tiny(c):
    return _expect_key("loss_timeout")(serve_config(c, "[acquisition]\nloss_timeout = 0.001\n"))


def case_config_unknown_publish_key(c):
    return _expect_key("hwm")(serve_config(c, "[publish]\nhwm = 10\n"))


def case_subject_unknown(c):
    return _expect_key(SUBJECT)(decode(c, "--subject", "nobody"))


def case_subject_missing(c):
    d = c.new_dir()
    contract = c.art.contract
    scaler = contract.scalers[SUBJECT]
    two = dataclasses.replace(contract, scalers={SUBJECT: scaler, "sim02": scaler}, subjects=[SUBJECT, "sim02"])
    model = d / "model.onnx"
    rng = np.random.default_rng(3)
    write_onnx(model, two, rng.standard_normal((8, len(c.art.names))))
    bank = CandidateBank.load(c.art.bank)
    bank.header["model_sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()
    bank.save(d / "bank.npz")
    return _expect_key("--subject")(decode(c, model=model, bank=d / "bank.npz"))


def case_message_log_unwritable(c):
    blocker = c.new_dir() / "a-file"
    blocker.write_text("x")
    p = serve(c, "--stream-name", unique("never"), "--resolve-timeout", "1", "--pub", free_endpoint(),
              "--log-messages", blocker / "log.jsonl")
    return p.finish()


def case_out_unwritable(c):
    rc, err = decode(c, out=c.new_dir() / "missing" / "dec.jsonl")
    assert "folder" in err and "does not exist" in err and "mkdir -p" in err, err  # names the problem and the fix
    return rc, err


def case_out_disk_full(c):
    d = c.new_dir()
    rc, err = decode(c, out=d / "dec.jsonl", limit_file_size=4000)
    assert list(d.iterdir()) == [], list(d.iterdir())  # neither the output nor a partial file
    return rc, err


def case_recording_missing(c):
    return decode(c, recording=c.tmp / "missing_raw.fif")


def case_replay_empty_fif(c):
    empty = c.new_dir() / "empty_raw.fif"
    empty.write_bytes(b"")
    return run("replay", empty, "--name", unique("empty"))


def case_bank_truncated(c):
    path = c.new_dir() / "bank.npz"
    path.write_bytes(c.art.bank.read_bytes()[:50_000])
    return decode(c, bank=path)


def case_bank_nan(c):
    def edit(f):
        x = np.array(f["features"])
        x[3, 5] = np.nan
        f["features"] = x

    return _expect_key("non-finite")(decode(c, bank=edited_bank(c, edit)))


def case_bank_dim(c):
    def edit(f):  # half the features: the latent no longer reshapes to the bank's dimension
        f["features"] = np.array(f["features"])[:, : f["features"].shape[1] // 2]

    return _expect_key("dimensional")(decode(c, bank=edited_bank(c, edit)))


def case_bank_contract(c):
    def edit(f):
        f["header"]["contract_sha256"] = "0" * 64

    return _expect_key("contract")(decode(c, bank=edited_bank(c, edit)))


def case_sidecar_tampered(c):
    d = c.new_dir()
    model = d / "model.onnx"
    shutil.copy(c.art.model, model)
    tampered = dataclasses.replace(c.art.contract, model_id="someone-elses")
    tampered.save(d / "model.contract.json")
    return _expect_key("sidecar")(decode(c, model=model))


def case_model_corrupted(c):
    d = c.new_dir()
    data = bytearray(c.art.model.read_bytes())
    data[100:200] = b"\x00" * 100
    model = d / "model.onnx"
    model.write_bytes(bytes(data))
    # with the model's own (valid) bank: the hash no longer matches, and the model is named as a suspect
    rc, err = decode(c, model=model)
    assert "corrupted" in err and "model file was changed" in err, err[-1000:]
    # with a bank that names the corrupted bytes: onnxruntime refuses them
    bank = CandidateBank.load(c.art.bank)
    bank.header["model_sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    bank.save(d / "bank.npz")
    rc2, err2 = decode(c, model=model, bank=d / "bank.npz")
    assert rc2 == rc and "onnxruntime" in err2 and "rebuild the bank" not in err2, err2[-1000:]
    return rc, err + err2


def case_recording_wrong_channels(c):
    import mne

    names = [f"X{i}" for i in range(len(c.art.names))]
    fif = c.new_dir() / "other_raw.fif"
    mne.io.RawArray(c.art.data, mne.create_info(names, c.art.sfreq, "eeg"), verbose="error").save(
        fif, verbose="error")
    return decode(c, recording=fif)


def _decode_real(c, path, n_channels):
    rc, err = decode(c, recording=path)
    assert f"stream has {n_channels} channels" in err, err[-1000:]  # the file was read
    return rc, err


def case_decode_file_kit(c):
    return _decode_real(c, REAL / "KIT" / "test_as-raw.con", 257)


def case_decode_file_ctf(c):
    return _decode_real(c, REAL / "CTF" / "somMDYO-18av.ds", 181)


def case_decode_file_brainvision(c):
    return _decode_real(c, REAL / "Brainvision" / "test_NO.vhdr", 65)


def _bad_outlet(c, fmt, labels):
    import pylsl

    name = unique("bad")
    info = pylsl.StreamInfo(name, "EEG", len(c.art.names), c.art.sfreq, fmt, name + "-sid")
    if labels:
        chs = info.desc().append_child("channels")
        for n in c.art.names:
            ch = chs.append_child("channel")
            ch.append_child_value("label", n)
            ch.append_child_value("type", "EEG")
            ch.append_child_value("unit", "V")
    outlet = pylsl.StreamOutlet(info)
    try:
        return serve(c, "--stream-name", name, "--resolve-timeout", "20", "--pub", free_endpoint()).finish()
    finally:
        del outlet


def case_stream_string_format(c):
    return _expect_key("string")(_bad_outlet(c, "string", labels=True))


def case_stream_no_labels(c):
    return _expect_key("label")(_bad_outlet(c, "float32", labels=False))


def case_stream_layout_change(c):
    art = c.art
    first = Player(art.data, art.sfreq, art.names, loop=True, wait_consumers=False).start()
    p = serve(c, "--stream-name", first.name, "--source-id", first.source_id, "--resolve-timeout", "20",
              "--pub", free_endpoint())
    second = None
    try:
        p.wait_for("-> running")
        first.stop()  # the outlet goes away
        p.wait_for("-> lost")
        order = list(range(len(art.names)))[::-1]  # same stream, channels in another order
        second = Player(art.data, art.sfreq, art.names, name=first.name, order=order, loop=True,
                        wait_consumers=False).start()
        rc, err = p.finish(timeout=60)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert "another layout" in err, err[-1500:]
    return rc, err


def case_stream_not_found(c):
    return serve(c, "--stream-name", unique("never"), "--resolve-timeout", "1", "--pub", free_endpoint()).finish()


def case_pub_in_use(c):
    zctx = zmq.Context()
    sock = zctx.socket(zmq.PUB)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    try:
        return serve(c, "--stream-name", unique("never"), "--resolve-timeout", "1", "--pub",
                     f"tcp://127.0.0.1:{port}").finish()
    finally:
        sock.close(0)
        zctx.term()


def case_pub_bad_endpoint(c):
    return serve(c, "--stream-name", unique("never"), "--resolve-timeout", "1", "--pub",
                 "tcp://127.0.0.1:notaport").finish()


def _signal_decode(c, sig):
    d = c.new_dir()
    p = Cli("decode-file", c.long_fif, "--model", c.art.model, "--bank", c.art.bank, "--out", d / "dec.jsonl")
    deadline = time.monotonic() + 120
    while not list(d.glob("*.partial")):  # it has started writing
        assert p.proc.poll() is None, p.stderr[-1500:]
        assert time.monotonic() < deadline, "decode-file never started writing"
        time.sleep(0.01)
    p.proc.send_signal(sig)
    rc, err = p.finish()
    # no output that looks complete, no partial file left (rc and stderr: for a failure seen only under load)
    assert list(d.iterdir()) == [], (list(d.iterdir()), rc, err[-1500:])
    assert "interrupted" in err, err[-1000:]
    return rc, err


def case_decode_file_sigint(c):
    return _signal_decode(c, signal.SIGINT)


def case_decode_file_sigterm(c):
    return _signal_decode(c, signal.SIGTERM)


def case_decode_file_sighup(c):
    return _signal_decode(c, signal.SIGHUP)


CASES = {name[len("case_"):].replace("_", "-"): fn for name, fn in dict(globals()).items()
         if name.startswith("case_")}


# ------------------------------------------------------------------------------------------------ tests
def test_every_documented_case_has_a_test_and_every_test_a_row():
    assert TABLE, "no case table found in service/README.md"
    assert set(TABLE) == set(CASES), (sorted(set(TABLE) - set(CASES)), sorted(set(CASES) - set(TABLE)))


def test_code_meanings_match_the_error_classes_and_the_main_readme():
    codes = {int(k) for k in MEANINGS if k.isdigit()}
    assert codes == {0, 1, 2, 3, 4, 5, 6, 7}
    for cls, word in ((ConfigError, "settings"), (DataFormatError, "data"), (ArtifactError, "model/bank"),
                      (ContractMismatchError, "does not fit"), (StreamError, "not found"),
                      (TransportError, "ZeroMQ")):
        assert word in MEANINGS[str(cls.exit_code)], (cls.__name__, MEANINGS[str(cls.exit_code)])
    line = re.search(r"real exit codes \((.*?)\)\.", (ROOT / "README.md").read_text("utf-8"), re.S)
    assert line is not None
    listed = {int(m) for m in re.findall(r"(?:^|; )(\d+) ", line.group(1).replace("\n", " "))}
    assert listed == codes
    assert set(TABLE.values()) <= codes | {130, 143, 129}


@pytest.mark.parametrize("case", sorted(TABLE))
def test_exit_code(ctx, case):
    if case not in CASES:
        pytest.fail(f"service/README.md documents {case!r} but tests/test_exit_codes.py has no case_ for it")
    rc, err = CASES[case](ctx)
    assert "Traceback" not in err, err[-3000:]
    assert rc == TABLE[case], f"{case}: exit {rc}, documented {TABLE[case]}\n{err[-2000:]}"
    if 2 <= rc <= 7:  # the reason is printed (as the CLI's "Error: ..." or the service's ERROR log line)
        assert "Error: " in err or " ERROR " in err, err[-1000:]


def test_a_stop_that_a_c_extension_import_wraps_is_still_a_stop(monkeypatch, capsys):
    """CI saw SIGTERM land while onnxruntime's pybind module initialised: the handler's ``Interrupted`` came
    out as ``ImportError: initialization failed`` (its context) and the CLI crashed with a traceback (exit 1).
    The stop request must still be found and honoured: here for a command that exits 128 + signal."""
    from neurospeech import cli as cli_module
    from neurospeech.errors import Interrupted

    def wrapped_by_import(*args, **kwargs):
        try:
            raise Interrupted(signal.SIGTERM, "listen")
        except Interrupted:
            raise ImportError("initialization failed")  # what pybind11 does: context, not cause

    monkeypatch.setattr(cli_module.cli, "main", wrapped_by_import)
    with pytest.raises(SystemExit) as stop:
        cli_module.main(["listen", "--help"])
    assert stop.value.code == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in capsys.readouterr().err

    def plain_import_error(*args, **kwargs):
        raise ImportError("initialization failed")

    monkeypatch.setattr(cli_module.cli, "main", plain_import_error)
    with pytest.raises(ImportError):  # a real import failure is not mistaken for a stop
        cli_module.main(["listen", "--help"])

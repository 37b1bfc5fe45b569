"""The distribution outside the checkout: extras that match the imports, and a runtime-only wheel that serves.

The ``wheel`` tests drive a fresh virtual environment in which .ci/run installed the built wheel *without
extras* (``NEUROSPEECH_WHEEL_VENV``): ``neurospeech serve`` decodes a ``neurospeech replay`` of a FIF file on
loopback, both started from that environment, with ``LSLAPICFG`` unset so that the packaged liblsl config
must be found. They are deselected by default (``-m wheel`` selects them) and fail, never skip, when selected
without that environment.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from pathlib import Path

import numpy as np
import pytest
from _service_fixtures import build_artifacts

from neurospeech._extras import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# import name -> distribution, for the runtime's third-party imports
IMPORT_TO_DIST = {
    "numpy": "numpy",
    "scipy": "scipy",
    "click": "click",
    "mne": "mne",
    "mne_bids": "mne-bids",
    "pylsl": "pylsl",
    "zmq": "pyzmq",
    "msgpack": "msgpack",
    "jsonschema": "jsonschema",
    "onnxruntime": "onnxruntime",
    "threadpoolctl": "threadpoolctl",
    "tqdm": "tqdm",
    "psutil": "psutil",
    "pydantic": "pydantic",
}


def _names(reqs: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in reqs}


def _third_party_imports(path: Path, module_level_only: bool) -> set[str]:
    """Top-level names of the absolute imports of a file (all of them, or those at module level only)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out - set(sys.stdlib_module_names) - {"neurospeech", "__future__"}


def test_runtime_dependencies_are_what_the_core_and_the_service_import():
    runtime = _names(PYPROJECT["dependencies"])
    used: dict[str, set[str]] = {}
    # the service runs on the runtime alone: every import, lazy ones included
    for f in (ROOT / "service").rglob("*.py"):
        for name in _third_party_imports(f, module_level_only=False):
            used.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    # the core: what it imports at module level (its optional features import their extra lazily)
    for f in (ROOT / "neurospeech").rglob("*.py"):
        for name in _third_party_imports(f, module_level_only=True):
            used.setdefault(name, set()).add(str(f.relative_to(ROOT)))
    unknown = {n: sorted(w) for n, w in used.items() if n not in IMPORT_TO_DIST}
    assert not unknown, f"imports of the runtime that no runtime dependency brings: {unknown}"
    needed = {IMPORT_TO_DIST[n] for n in used}
    assert needed <= runtime, f"runtime imports missing from [project] dependencies: {sorted(needed - runtime)}"
    # and nothing in the runtime list that neither imports (it would be dead weight on a decoding PC)
    assert runtime <= needed, f"runtime dependencies nothing in service/ or the core imports: {runtime - needed}"


def test_every_optional_import_is_in_the_extra_its_error_names():
    extras = {k: _names(v) for k, v in PYPROJECT["optional-dependencies"].items()}
    runtime = _names(PYPROJECT["dependencies"])
    for module, (dist, named) in EXTRAS.items():
        assert dist.lower() not in runtime, f"{dist} is a runtime dependency, not an extra"
        for extra in named:
            assert extra in extras, f"{module}: extra {extra!r} does not exist in pyproject"
            assert dist.lower() in extras[extra], f"{module}: {dist} is not in the {extra!r} extra"


_BLOCK = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {mod!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Block())
from neurospeech.cli import main
main({argv!r})
"""


@pytest.mark.parametrize(
    ("module", "argv", "extra"),
    [
        ("sklearn", ["analyze", "noise-limits", "{tmp}/cells.npz", "--out", "{tmp}/out"], "analysis"),
        ("torch", ["wm-rnn", "train", "--out", "{tmp}/wm", "--seeds", "0"], "train"),
        ("torch", ["train", "--data", "{tmp}", "--out", "{tmp}/run"], "train"),
        ("pyxdf", ["replay", "{tmp}/rec.xdf"], "xdf"),
    ],
)
def test_a_command_whose_extra_is_missing_names_the_extra(module, argv, extra, tmp_path):
    """The command runs (not only --help) with the module made unimportable: exit 1 and the pip line."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cells.npz", X=rng.standard_normal((40, 6)), y=np.repeat(np.arange(4), 10))
    (tmp_path / "rec.xdf").write_bytes(b"XDF:")
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK.format(mod=module, argv=argv)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 1, (out.returncode, out.stderr[-2000:])
    assert f"pip install 'neurospeech[{extra}]'" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- the wheel, outside the checkout
def _venv() -> Path:
    v = os.environ.get("NEUROSPEECH_WHEEL_VENV")
    if not v:
        pytest.fail("the wheel tests need NEUROSPEECH_WHEEL_VENV: a venv with the built wheel (see .ci/run)")
    return Path(v)


def _run(venv: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300, env=env, cwd=venv)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LSLAPICFG", "PYTHONPATH")}
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.wheel
def test_wheel_is_installed_outside_the_checkout_with_its_resources_and_no_extras():
    venv = _venv()
    code = (
        "import importlib.util, os, neurospeech, neurospeech.service as s\n"
        "from neurospeech.resources import ensure_lsl_config, example_config, EXAMPLE_CONFIGS\n"
        "print(neurospeech.__file__)\n"
        "print(os.path.dirname(s.__file__))\n"
        "print(ensure_lsl_config())\n"
        "print(all(example_config(n).is_file() for n in EXAMPLE_CONFIGS))\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'pyxdf', 'onnx', 'pybv')"
        " if importlib.util.find_spec(m)))  # mne brings matplotlib; psutil is a runtime dependency\n"
    )
    out = _run(venv, "python", "-c", code, env=_clean_env())
    assert out.returncode == 0, out.stderr
    init, service_dir, cfg, configs_ok, extras = out.stdout.strip().splitlines()
    assert Path(init).resolve().is_relative_to(venv.resolve()), init
    assert Path(service_dir).resolve() == Path(init).resolve().parent / "service"
    assert Path(cfg).resolve().is_relative_to(venv.resolve()) and Path(cfg).is_file(), cfg
    assert "KnownPeers" in Path(cfg).read_text()
    assert configs_ok == "True"
    assert extras == "[]", f"the runtime-only install pulled extras: {extras}"


@pytest.mark.wheel
def test_wheel_demo_help_and_a_missing_extra(tmp_path):
    venv = _venv()
    out = _run(venv, "neurospeech", "demo", "--help", env=_clean_env())
    assert out.returncode == 0 and "Usage" in out.stdout, out.stderr
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cells.npz", X=rng.standard_normal((40, 6)), y=np.repeat(np.arange(4), 10))
    out = _run(venv, "neurospeech", "analyze", "noise-limits", str(tmp_path / "cells.npz"), "--out",
               str(tmp_path / "out"), env=_clean_env())
    assert out.returncode == 1 and "pip install 'neurospeech[analysis]'" in out.stderr, out.stderr


@pytest.mark.wheel
def test_wheel_serves_a_replay_on_loopback(tmp_path):
    import mne
    import zmq
    from neurospeech.service.client import Subscriber

    venv = _venv()
    art = build_artifacts(tmp_path, duration=12.0, n_distractors=20)
    info = mne.create_info(art.names, art.sfreq, "eeg")
    fif = tmp_path / "rec_raw.fif"
    mne.io.RawArray(art.data, info, verbose="error").save(fif, verbose="error")
    ctx = zmq.Context()
    probe = ctx.socket(zmq.PUB)
    port = probe.bind_to_random_port("tcp://127.0.0.1")
    probe.close(0)
    ctx.term()
    endpoint = f"tcp://127.0.0.1:{port}"
    name = f"wheel-smoke-{uuid.uuid4().hex[:8]}"
    env = _clean_env()
    bin_ = venv / "bin" / "neurospeech"
    logs = [open(tmp_path / f"{n}.log", "w") for n in ("replay", "serve")]  # files: a full pipe would block
    serve = subprocess.Popen(
        [str(bin_), "serve", "--model", str(art.model), "--bank", str(art.bank), "--stream-name", name,
         "--pub", endpoint, "--no-markers", "--resolve-timeout", "120"],
        stdout=subprocess.DEVNULL, stderr=logs[1], env=env, cwd=tmp_path,
    )
    replay = subprocess.Popen(
        [str(bin_), "replay", str(fif), "--name", name, "--loop", "--no-markers"],
        stdout=subprocess.DEVNULL, stderr=logs[0], env=env, cwd=tmp_path,
    )
    sub = Subscriber(endpoint)
    decodes = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len(decodes) < 3 and serve.poll() is None and replay.poll() is None:
            m = sub.recv(0.2)
            if m is not None and m.kind == "decode":
                decodes.append(m)
    finally:
        sub.close()
        for p in (replay, serve):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in (replay, serve)]
        for f in logs:
            f.close()
        errs = [(tmp_path / f"{n}.log").read_text(errors="replace") for n in ("replay", "serve")]
    assert len(decodes) >= 3, f"no decisions from the wheel's serve; replay: {errs[0][-1500:]} serve: {errs[1][-1500:]}"
    assert all(np.isfinite(d["topk"][0]["score"]) for d in decodes)
    assert codes[1] == 0, errs[1][-2000:]

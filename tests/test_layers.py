"""The checks check: mypy sees the installed package layout, and the import-linter layers hold.

``typecheck/neurospeech/`` mirrors the wheel (links to every entry of ``neurospeech/`` plus ``service/``,
``models/`` and ``tools/`` as subpackages); mypy and import-linter read the package from there. The planted
tests build the same mirror in a temporary folder with one extra module inside ``neurospeech.service`` that
breaks the rules, and require each checker to report it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIRROR = ROOT / "typecheck" / "neurospeech"
SUBPACKAGES = {"service": "service", "models": "models", "tools": "tools"}

PLANTED = '''\
"""A module that breaks the rules on purpose (tests/test_layers.py)."""
from __future__ import annotations

from ..preprocessing import PreprocessingSpec, StreamPreprocessor, WindowSpec


def right() -> StreamPreprocessor:
    return StreamPreprocessor(600.0, 4, WindowSpec(), PreprocessingSpec())


def wrong() -> StreamPreprocessor:
    return StreamPreprocessor(1, 2, 3, 4, 5, 6, 7)  # PLANTED-TYPE-ERROR
'''

PLANTED_IMPORTS = '''\
"""Imports that break the layers on purpose (tests/test_layers.py)."""
from __future__ import annotations


def encoder():  # function-level imports count too
    import torch

    from ..models import encoder

    return torch, encoder
'''


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name != "__pycache__"}


def test_the_typecheck_mirror_is_the_installed_layout():
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert {k.split(".", 1)[1]: v for k, v in mapping.items() if "." in k} == SUBPACKAGES
    want = _entries(ROOT / "neurospeech") | set(SUBPACKAGES)
    have = _entries(MIRROR)
    assert have == want, (
        f"typecheck/neurospeech/ is out of date: missing {sorted(want - have)}, extra {sorted(have - want)}. Add "
        "a relative link per new entry of neurospeech/ (cd typecheck/neurospeech && ln -s ../../neurospeech/NEW)"
    )
    for name in have:
        link = MIRROR / name
        target = ROOT / SUBPACKAGES.get(name, f"neurospeech/{name}")
        assert link.is_symlink() and not os.path.isabs(os.readlink(link)), f"{link} must be a relative link"
        assert link.resolve() == target.resolve(), f"{link} -> {link.resolve()}, expected {target}"


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    """A copy of the mirror whose ``neurospeech/service/`` holds the planted modules beside links to service/."""
    top = tmp_path_factory.mktemp("layout")
    pkg = top / "neurospeech"
    pkg.mkdir()
    for name in _entries(MIRROR):
        if name != "service":
            (pkg / name).symlink_to(MIRROR.joinpath(name).resolve())
    svc = pkg / "service"
    svc.mkdir()
    for name in _entries(ROOT / "service"):
        (svc / name).symlink_to((ROOT / "service" / name).resolve())
    (svc / "_planted.py").write_text(PLANTED)
    (svc / "_planted_imports.py").write_text(PLANTED_IMPORTS)
    return top


def test_mypy_catches_a_wrong_cross_package_call(planted):
    """``from ..preprocessing import`` inside service/ resolves to the core's real class (not Any)."""
    target = planted / "neurospeech" / "service" / "_planted.py"
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "--follow-imports=silent",
         "--cache-dir", str(planted / ".mypy_cache"), "--no-error-summary", str(target)],
        capture_output=True, text=True, timeout=900, cwd=planted, env={**os.environ, "MYPYPATH": str(planted)},
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    wrong_line = PLANTED.splitlines().index(next(x for x in PLANTED.splitlines() if "PLANTED-TYPE-ERROR" in x)) + 1
    assert out.returncode == 1, out.stdout + out.stderr
    assert errors and all(f"_planted.py:{wrong_line}:" in e for e in errors), out.stdout
    assert any("StreamPreprocessor" in e for e in errors), out.stdout


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with ``cwd`` first on sys.path, so that ``neurospeech`` is the mirror found there."""
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(ROOT / "pyproject.toml")],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_the_import_contracts_hold():
    out = _lint_imports(MIRROR.parent)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout, out.stdout[-2000:]


def test_the_import_contracts_catch_planted_violations(planted):
    out = _lint_imports(planted)
    assert out.returncode == 1, out.stdout[-4000:]
    assert "0 kept, 2 broken" in out.stdout, out.stdout[-4000:]
    assert "neurospeech.service._planted_imports -> neurospeech.models" in out.stdout
    assert "neurospeech.service._planted_imports -> torch" in out.stdout

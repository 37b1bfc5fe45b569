"""Packaging: one distribution, every package installed, the runtime free of torch, the CLI answering."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    mapping = cfg["package-dir"]
    found = set()
    for pkg, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            name = ".".join([pkg, *rel.parts]) if rel.parts else pkg
            found.add(name)
    assert found <= listed, f"packages missing from pyproject: {sorted(found - listed)}"


def test_service_never_imports_torch():
    code = (
        "import sys, neurospeech.service, neurospeech.preprocessing, neurospeech.contract, neurospeech.scoring\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(neurospeech.service.__path__, 'neurospeech.service.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_help_and_sys_info():
    out = subprocess.run([sys.executable, "-m", "neurospeech", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "serve" in out.stdout
    out = subprocess.run([sys.executable, "-m", "neurospeech", "sys-info"], capture_output=True, text=True)
    assert out.returncode == 0 and "onnxruntime" in out.stdout and "liblsl" in out.stdout
    out = subprocess.run([sys.executable, "-m", "neurospeech", "no-such-command"], capture_output=True, text=True)
    assert out.returncode != 0

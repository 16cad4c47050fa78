"""Import a plugin's driver when it is first used, not when the plugin is discovered."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ._errors import PluginLoadError

__all__ = ["lazy_import"]


class _LazyModule:
    __slots__ = ("_distribution", "_module", "_name")

    def __init__(self, name: str, distribution: str | None) -> None:
        self._name = name
        self._distribution = distribution
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        module = self._module
        if module is None:
            try:
                module = self._module = importlib.import_module(self._name)
            except ImportError as exc:
                fix = (
                    f"pip install --force-reinstall {self._distribution}"
                    if self._distribution
                    else f"install {self._name}"
                )
                raise PluginLoadError(
                    f"{self._name} failed to import ({exc}). Fix: {fix}."
                ) from exc
        return getattr(module, attribute)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<lazy module {self._name!r} ({state})>"


def lazy_import(name: str, *, distribution: str | None = None) -> Any:
    """A stand-in for module ``name`` that imports it on first attribute access.

    For a plugin's connection module, which the core imports at discovery: write
    ``nats = lazy_import("nats", distribution="opal-broadcast-nats")`` at its top and use
    ``nats.connect(...)`` inside methods. A failed import raises ``PluginLoadError`` naming the
    reinstall command, when the first connection opens, and never breaks other backbones.
    Annotations that need the driver's types go under ``if TYPE_CHECKING:``.
    """
    return _LazyModule(name, distribution)

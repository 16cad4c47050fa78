"""The public surface is exactly what __all__ says, typed and documented."""

import importlib
import inspect
from pathlib import Path

import pytest

import opal_broadcast

PUBLIC_MODULES = [
    "opal_broadcast",
    "opal_broadcast.hookspecs",
    "opal_broadcast.plugin",
    "opal_broadcast.telemetry",
    "opal_broadcast.testing",
]


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_names_exist_and_are_documented(name):
    """Every name in __all__ resolves and has a docstring of its own."""
    module = importlib.import_module(name)
    assert module.__doc__
    for item in module.__all__:
        obj = getattr(module, item)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, f"{name}.{item} has no docstring"


def test_package_is_typed():
    """py.typed ships with the package."""
    assert (Path(opal_broadcast.__file__).parent / "py.typed").exists()


def test_broadcast_public_methods_are_documented():
    for name, member in inspect.getmembers(opal_broadcast.Broadcast):
        if not name.startswith("_") and callable(member):
            assert member.__doc__, f"Broadcast.{name} has no docstring"

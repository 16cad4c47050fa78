"""The plugin is found through its entry point, imports no driver until used, and runs on asyncio."""

import subprocess
import sys

import pytest
import trio

from opal_broadcast import Broadcast, UnsupportedAsyncLibrary
from opal_broadcast._registry import default_registry


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_schemes_resolve_to_the_installed_distribution(scheme):
    """redis://, rediss:// and unix:// resolve to opal-broadcast-redis through its entry point."""
    backbone = default_registry().resolve(scheme)
    assert backbone.distribution == "opal-broadcast-redis"
    assert backbone.info is not None
    assert backbone.info.async_libraries == ("asyncio",)


def test_entry_point_module_imports_no_driver():
    """Importing the entry-point module leaves redis-py unimported (discovery never needs it)."""
    code = (
        "import sys, opal_broadcast_redis.plugin; "
        "loaded = sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')); "
        "print(','.join(loaded))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_trio_is_refused_with_a_typed_error():
    """Under trio the core refuses the asyncio-only backbone, naming asyncio, before any I/O."""

    async def connect() -> None:
        async with Broadcast("redis://127.0.0.1:1"):
            pass

    with pytest.raises(UnsupportedAsyncLibrary, match="asyncio"):
        trio.run(connect)

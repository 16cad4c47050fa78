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


def test_entry_point_module_imports_no_parser():
    """Importing the entry-point module leaves hiredis unimported (discovery never needs it)."""
    code = (
        "import sys, opal_broadcast_redis.plugin; "
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('hiredis', 'redis'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("blocked", ["redis", "hiredis"])
def test_a_round_trip_needs_neither_redis_py_nor_hiredis(redis_url, blocked):
    """The plugin speaks RESP itself: with redis-py (or hiredis) impossible to import, a
    publish still reaches a subscriber; redis-py is not even installed with the plugin."""
    code = f"""
import asyncio, sys
sys.modules[{blocked!r}] = None  # any import of it fails
from opal_broadcast import Broadcast

async def main():
    async with Broadcast({redis_url!r}) as broadcast:
        async with broadcast.subscribe("no-driver") as subscriber:
            await broadcast.publish("no-driver", "spoken directly")
            print((await asyncio.wait_for(subscriber.get(), 10)).message)

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "spoken directly"


def test_trio_is_refused_with_a_typed_error():
    """Under trio the core refuses the asyncio-only backbone, naming asyncio, before any I/O."""

    async def connect() -> None:
        async with Broadcast("redis://127.0.0.1:1"):
            pass

    with pytest.raises(UnsupportedAsyncLibrary, match="asyncio"):
        trio.run(connect)

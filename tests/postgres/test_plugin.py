"""The plugin as installed: found by entry point for both schemes, cheap to import, asyncio only."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import trio

import opal_broadcast_postgres
from opal_broadcast import Broadcast, UnsupportedAsyncLibrary
from opal_broadcast._registry import default_registry


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_both_schemes_are_served_by_the_installed_distribution(scheme):
    """postgres:// and postgresql:// resolve to opal-broadcast-postgres through its entry point."""
    backbone = default_registry().resolve(scheme)
    assert backbone.distribution == "opal-broadcast-postgres"
    assert backbone.info is not None
    assert backbone.info.async_libraries == ("asyncio",)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_entry_point_module_imports_no_driver():
    """Loading the plugin (as discovery does) leaves asyncpg unimported."""
    result = _run(
        """
        import sys
        import opal_broadcast_postgres.plugin
        from opal_broadcast._registry import default_registry
        default_registry().resolve("postgres")
        print("asyncpg" in sys.modules)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_missing_driver_is_a_configuration_error_with_the_install_hint():
    """Without asyncpg, discovery still works and connecting says what to install."""
    result = _run(
        """
        import sys, asyncio
        sys.modules["asyncpg"] = None  # as if it were not installed
        from opal_broadcast import Broadcast, ConfigurationError
        async def main():
            try:
                await Broadcast("postgres://127.0.0.1:1/db").connect()
            except ConfigurationError as exc:
                print(type(exc).__name__, exc)
        asyncio.run(main())
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ConfigurationError")
    assert "pip install opal-broadcast-postgres" in result.stdout


def test_trio_is_refused_with_a_clear_error():
    """The plugin runs on asyncio only; under trio the core raises UnsupportedAsyncLibrary."""

    async def main() -> None:
        await Broadcast("postgres://127.0.0.1:1/db").connect()

    with pytest.raises(UnsupportedAsyncLibrary, match="asyncio"):
        trio.run(main)


def test_public_surface():
    """The package exports its limits and defaults, and nothing else."""
    assert sorted(opal_broadcast_postgres.__all__) == [
        "DEFAULT_MAX_MESSAGE_SIZE",
        "DEFAULT_POOL_SIZE",
        "MAX_CHANNEL_BYTES",
        "MAX_PAYLOAD_BYTES",
        "OPTIONS",
        "POOL_SIZE_ENV",
    ]
    assert opal_broadcast_postgres.MAX_PAYLOAD_BYTES == 7999
    assert opal_broadcast_postgres.MAX_CHANNEL_BYTES == 63
    for name in opal_broadcast_postgres.__all__:
        assert getattr(opal_broadcast_postgres, name) is not None

"""The Postgres backbone works with the lowest asyncpg it declares and with the newest release.

The declared range is ``asyncpg>=<lowest>`` in plugins/postgres/pyproject.toml, with no upper
bound: the asyncpg internals the plugin relies on are fenced (``_fences``), so an asyncpg that
drops one costs speed, after a warning, not correctness. For each end of the range, the core and
the plugin are installed, as a user would install them, into a new virtual environment with
that asyncpg (the newest: whatever the package index offers now, not the workspace's lock), and
the Postgres suite runs there against the real test server: every test the workspace collects
must pass, none skipped. Needs ``uv`` and the package registry (about 30 s each). Without
``uv`` it is skipped, except in CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest

from tests._fresh_venv import ROOT, clean_env, fresh_venv, pytest_counts, run

pytestmark = pytest.mark.postgres

PLUGIN = ROOT / "plugins" / "postgres"


def _lowest() -> str:
    """The lower bound of asyncpg declared in the plugin's pyproject.toml."""
    declared = re.search(r'"asyncpg>=([\d.]+)"', (PLUGIN / "pyproject.toml").read_text())
    assert declared, "plugins/postgres/pyproject.toml declares no asyncpg>=..."
    return declared.group(1)


def _release(version: str) -> tuple[int, int, int]:
    """``(0, 29, 0)`` for ``0.29``, ``0.29.0`` or ``0.29.0rc1``."""
    major, minor, patch = (*map(int, re.findall(r"\d+", version)[:3]), 0, 0, 0)[:3]
    return major, minor, patch


@pytest.mark.parametrize("end", ["lowest", "newest"])
@pytest.mark.usefixtures("postgres_url")  # the server must run: skip (or fail in CI) otherwise
def test_the_postgres_suite_passes_at_each_end_of_the_asyncpg_range(
    tmp_path: Path, end: str
) -> None:
    """tests/postgres, run with the lowest and the newest asyncpg: all passed, nothing else."""
    collect = [sys.executable, "-m", "pytest", "tests/postgres", "--collect-only", "-q"]
    collected = run(collect, cwd=ROOT, env=dict(os.environ), timeout=120)
    count = sum("::" in line for line in collected.splitlines())
    assert count > 100, collected
    env = clean_env()
    wanted = f"asyncpg=={_lowest()}" if end == "lowest" else "asyncpg"
    packages = [str(ROOT / "core"), str(PLUGIN), wanted, "pytest", "anyio", "trio", "hypothesis"]
    python = str(fresh_venv(tmp_path, packages, env))
    version = run(
        [python, "-c", "import asyncpg; print(asyncpg.__version__)"], cwd=ROOT, env=env, timeout=60
    )
    if end == "lowest":
        assert _release(version) == _release(_lowest()), version
    else:  # the index's newest is never older than the workspace's lock
        assert _release(version) >= _release(asyncpg.__version__), version
    argv = [python, "-m", "pytest", "tests/postgres", "-q", "-p", "no:cacheprovider"]
    output = run(argv, cwd=ROOT, env=env, timeout=600)
    assert pytest_counts(output) == {"passed": count}, f"asyncpg {version}: {output}"

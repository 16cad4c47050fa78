"""The Postgres backbone works with asyncpg 0.29, the lower bound the plugin declares.

The plugin publishes through asyncpg's protocol method where asyncpg shows its known signature
(0.30 and later) and through ``PreparedStatement.fetchval`` otherwise; the workspace runs the
first, this test the second. The core and the plugin are installed, as a user would install
them, into a new virtual environment with asyncpg 0.29.0, and the Postgres suite runs there
against the real test server: every test the workspace collects must pass, none skipped. Needs
``uv`` and the package registry (about 40 s). Without ``uv`` it is skipped, except in CI
(``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests._fresh_venv import ROOT, clean_env, fresh_venv, pytest_counts, run

pytestmark = pytest.mark.postgres


@pytest.mark.usefixtures("postgres_url")  # the server must run: skip (or fail in CI) otherwise
def test_the_postgres_suite_passes_with_asyncpg_0_29(tmp_path: Path) -> None:
    """tests/postgres, run with asyncpg 0.29.0: as many passed as collected, nothing else."""
    collect = [sys.executable, "-m", "pytest", "tests/postgres", "--collect-only", "-q"]
    collected = run(collect, cwd=ROOT, env=dict(os.environ), timeout=120)
    count = sum("::" in line for line in collected.splitlines())
    assert count > 100, collected
    env = clean_env()
    packages = [str(ROOT / "core"), str(ROOT / "plugins" / "postgres"), "asyncpg==0.29.0"]
    python = str(fresh_venv(tmp_path, [*packages, "pytest", "anyio", "trio"], env))
    argv = [python, "-m", "pytest", "tests/postgres", "-q", "-p", "no:cacheprovider"]
    output = run(argv, cwd=ROOT, env=env, timeout=600)
    assert pytest_counts(output) == {"passed": count}, output

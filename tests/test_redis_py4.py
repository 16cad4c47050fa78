"""The Redis backbone works with redis-py 4.x, which opal-server 0.9.9 pins (``redis>=4.3.4,<5``).

The core and the plugin are installed, as a user would install them, into a new virtual
environment with redis-py 4.x instead of the workspace's current one, and the Redis suite runs
there against the real test services: every test the workspace collects must pass, none skipped.
4.3.4 is the lower bound the plugin declares; 4.6.0 is the redis-py that pip picks beside
opal-server 0.9.9. Needs ``uv`` and the package registry; about 30 s per version. Without ``uv``
it is skipped, except in CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests._fresh_venv import ROOT, clean_env, fresh_venv, pytest_counts, run

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def redis_tests() -> int:
    """How many tests the workspace collects in tests/redis."""
    argv = [sys.executable, "-m", "pytest", "tests/redis", "--collect-only", "-q"]
    output = run(argv, cwd=ROOT, env=dict(os.environ), timeout=120)
    count = sum("::" in line for line in output.splitlines())
    assert count > 100, output
    return count


@pytest.mark.usefixtures("redis_url")  # the services must run: skip (or fail in CI) otherwise
@pytest.mark.parametrize("version", ["4.3.4", "4.6.0"])
def test_the_redis_suite_passes_with_redis_py_4(
    version: str, redis_tests: int, tmp_path: Path
) -> None:
    """tests/redis, run with redis-py ``version``: as many passed as collected, nothing else."""
    env = clean_env()
    packages = [str(ROOT / "core"), str(ROOT / "plugins" / "redis"), f"redis=={version}"]
    python = str(fresh_venv(tmp_path, [*packages, "pytest", "anyio", "trio", "uvloop"], env))
    argv = [python, "-m", "pytest", "tests/redis", "-q", "-p", "no:cacheprovider"]
    output = run(argv, cwd=ROOT, env=env, timeout=600)
    assert pytest_counts(output) == {"passed": redis_tests}, output

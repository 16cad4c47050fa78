"""The lowest and the newest Python, with the newest release of every driver.

The packages declare ``requires-python = ">=3.10"``, and each plugin a range of its driver. The
workspace runs one Python (3.11) with the lock's drivers; here the core's and each plugin's test
suites run again in a fresh environment on 3.10 and on 3.13 (the lowest and newest the machine
has), with asyncpg, aiokafka, hiredis and redis-py (the tests' admin client) as the package index
has them today, not as the lock pins them. A driver release that breaks a plugin, or a Python
feature used too early, fails here instead of in production. Each run takes a few minutes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._fresh_venv import ROOT, clean_env, pytest_counts, run
from tests.services.fixtures import missing

DRIVERS = ["asyncpg", "aiokafka", "hiredis", "redis"]
#: What the suites import besides our packages and the drivers.
TEST_TOOLS = ["pytest>=8.3", "trio>=0.27", "hypothesis>=6.100", "uvloop>=0.21"]
SUITES = ["tests/core", "tests/redis", "tests/postgres", "tests/kafka"]


def interpreter(version: str) -> str:
    """The machine's Python ``version`` (pyenv's, or one on the PATH that really runs)."""
    root = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    for candidate in sorted(root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True):
        return str(candidate)
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-V"], capture_output=True).returncode == 0:
        return found
    missing(f"Python {version} is needed (pyenv install {version}, or uv python install)")
    raise AssertionError("unreachable")


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_every_suite_passes_on_the_python_range_with_the_newest_drivers(version, tmp_path):
    uv = shutil.which("uv") or missing("uv is needed to build a fresh environment: pip install uv")
    env = clean_env()
    venv = tmp_path / "venv"
    run([uv, "venv", "--python", interpreter(version), str(venv)], cwd=ROOT, env=env, timeout=120)
    python = str(venv / "bin" / "python")
    ours = ["-e", "core[testing,watch]", "-e", "plugins/redis", "-e", "plugins/postgres"]
    ours += ["-e", "plugins/kafka"]
    install = [uv, "pip", "install", "--quiet", "--upgrade", "--python", python]
    run([*install, *ours, *DRIVERS, *TEST_TOOLS], cwd=ROOT, env=env, timeout=600)
    versions = run([python, "-c", _VERSIONS.format(DRIVERS)], cwd=ROOT, env=env, timeout=60).strip()
    result = subprocess.run(
        [python, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env={**env, "CI": os.environ.get("CI", "")},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    output = result.stdout + result.stderr
    counts = pytest_counts(output)
    print(f"Python {version}, {versions}: {counts}")
    assert result.returncode == 0, f"Python {version} with {versions}:\n{output[-6000:]}"
    assert counts.get("passed", 0) > 700 and not counts.get("skipped"), counts


_VERSIONS = """
import sys
from importlib.metadata import version
print(sys.version.split()[0], ", ".join(f"{{n}} {{version(n)}}" for n in {0!r}))
"""

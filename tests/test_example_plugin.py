"""A third-party plugin installed into a fresh environment is found, with no change to the core.

The example plugin (``examples/opal-broadcast-nats``) is installed with the core into a new
virtual environment, as a user would install it from PyPI. There the CLI must list it, and its own
test suite (the conformance suite against a real nats-server) must pass. Needs ``uv``, the
``nats-server`` binary and the package registry; it takes tens of seconds. Without ``uv`` or
``nats-server`` it is skipped, except in CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services.fixtures import missing

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
EXAMPLE = ROOT / "examples" / "opal-broadcast-nats"


def _require(tool: str, found: str | None, install: str) -> str:
    if found is None:
        missing(f"{tool} is needed to test the example plugin in a fresh environment: {install}")
    return found


def _run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} exited with {result.returncode}:\n{output}"
    return output


def _counts(pytest_output: str) -> dict[str, int]:
    """``{'passed': 45, 'failed': 1, ...}`` from pytest's final summary line."""
    summary = [line for line in pytest_output.splitlines() if re.search(r" in [\d.]+s", line)]
    assert summary, f"no pytest summary line in:\n{pytest_output}"
    pairs = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", summary[-1])
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in pairs}


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A new virtual environment holding the core, the example plugin, pytest and anyio."""
    uv = _require("uv", shutil.which("uv"), "pip install uv, or see docs.astral.sh/uv.")
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    nats_server = _require(
        "nats-server",
        shutil.which(os.environ.get("NATS_SERVER", "nats-server"), path=path),
        "apt-get install nats-server (Debian/Ubuntu), or set NATS_SERVER to the binary.",
    )
    work = tmp_path_factory.mktemp("fresh-env")
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("VIRTUAL_ENV", "PYTHON", "OPAL_BROADCAST_"))
    }
    env.update(NATS_SERVER=nats_server, UV_PYTHON_DOWNLOADS="never")
    venv = work / "venv"
    _run([uv, "venv", "--python", sys.executable, str(venv)], cwd=work, env=env, timeout=120)
    python = venv / "bin" / "python"
    _run(
        [uv, "pip", "install", "--python", str(python), str(CORE), str(EXAMPLE), "pytest", "anyio"],
        cwd=work,
        env=env,
        timeout=600,
    )
    return python, env


def test_the_cli_lists_the_installed_plugin(fresh_env: tuple[Path, dict[str, str]]) -> None:
    """``opal-broadcast backends`` finds ``nats`` through the entry point of its distribution."""
    python, env = fresh_env
    output = _run(
        [str(python), "-m", "opal_broadcast", "backends"], cwd=EXAMPLE, env=env, timeout=60
    )
    rows = [line.split() for line in output.splitlines()]
    nats = [row for row in rows if row and row[0] == "nats"]
    assert nats, f"nats is not listed:\n{output}"
    assert nats[0][1:] == ["opal-broadcast-nats", "0.1.0", "ok"], output


def test_the_plugin_passes_its_own_suite(fresh_env: tuple[Path, dict[str, str]]) -> None:
    """The example's tests (conformance suite included) pass against a real nats-server."""
    python, env = fresh_env
    argv = [str(python), "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        argv, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    counts = _counts(output)
    assert counts.get("failed", 0) == 0, output
    assert counts.get("error", 0) == 0, output
    assert counts.get("passed", 0) > 0, output
    assert result.returncode == 0, output

"""New virtual environments for tests that install our distributions as a user would.

Used where the workspace's own environment cannot stand in for a user's: a third-party plugin
installed beside the core, redis-py 4.x instead of the workspace's 8.x, opal-server with its own
pins. Needs ``uv``: without it the test is skipped, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.services.fixtures import missing

ROOT = Path(__file__).resolve().parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without its venv and our settings, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("VIRTUAL_ENV", "PYTHON", "OPAL_BROADCAST_"))
    }
    return {**env, "UV_PYTHON_DOWNLOADS": "never", **extra}


def run(argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    """Run ``argv``; its output, or an assertion error quoting it when it exits non-zero."""
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv)} exited with {result.returncode}:\n{output}"
    return output


def fresh_venv(directory: Path, packages: list[str], env: dict[str, str]) -> Path:
    """A venv in ``directory/venv`` on this Python, holding ``packages``; its python."""
    uv = shutil.which("uv") or missing("uv is needed to build a fresh environment: pip install uv")
    venv = directory / "venv"
    run([uv, "venv", "--python", sys.executable, str(venv)], cwd=directory, env=env, timeout=120)
    python = venv / "bin" / "python"
    install = [uv, "pip", "install", "--quiet", "--python", str(python), *packages]
    run(install, cwd=directory, env=env, timeout=600)
    return python


def core_wheel(directory: Path, env: dict[str, str]) -> Path:
    """Build the core's wheel into ``directory/dist`` (as the plugin authors' guide says)."""
    uv = shutil.which("uv") or missing("uv is needed to build the core's wheel: pip install uv")
    dist = directory / "dist"
    core = ROOT / "core"
    run([uv, "build", "--wheel", "--out-dir", str(dist), str(core)], cwd=ROOT, env=env, timeout=300)
    [wheel] = dist.glob("opal_broadcast-*.whl")
    return wheel


def pytest_counts(pytest_output: str) -> dict[str, int]:
    """``{'passed': 45, 'failed': 1, ...}`` from pytest's final summary line."""
    summary = [line for line in pytest_output.splitlines() if re.search(r" in [\d.]+s", line)]
    assert summary, f"no pytest summary line in:\n{pytest_output}"
    pairs = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", summary[-1])
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n) for n, kind in pairs}

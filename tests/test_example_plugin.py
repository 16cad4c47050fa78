"""A third-party plugin installed into a fresh environment is found, with no change to the core.

The example plugin (``examples/opal-broadcast-nats``) is installed with the core's wheel (and its
``testing`` extra) into a new virtual environment, with the commands the plugin authors' guide
gives for a checkout outside this repository. There the CLI must list it, and its own
test suite (the conformance suite against a real nats-server) must pass. Needs ``uv``, the
``nats-server`` binary and the package registry; it takes tens of seconds. Without ``uv`` or
``nats-server`` it is skipped, except in CI (``CI=true``), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests._fresh_venv import ROOT, clean_env, core_wheel, fresh_venv, pytest_counts, run
from tests.services.fixtures import missing

CORE = ROOT / "core"
EXAMPLE = ROOT / "examples" / "opal-broadcast-nats"


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A new virtual environment holding the core, the example plugin, pytest and anyio."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    nats_server = shutil.which(os.environ.get("NATS_SERVER", "nats-server"), path=path) or missing(
        "nats-server is needed to test the example plugin: apt-get install nats-server"
        " (Debian/Ubuntu), or set NATS_SERVER to the binary."
    )
    env = clean_env(NATS_SERVER=nats_server)
    # The guide's commands for an author outside this repository: build the core's wheel, install
    # it with its testing extra beside the plugin's own folder (its test extra), run its tests.
    directory = tmp_path_factory.mktemp("fresh-env")
    wheel = core_wheel(directory, env)
    packages = [f"{wheel}[testing]", f"{EXAMPLE}[test]", "--find-links", str(wheel.parent)]
    return fresh_venv(directory, packages, env), env


def test_the_cli_lists_the_installed_plugin(fresh_env: tuple[Path, dict[str, str]]) -> None:
    """``opal-broadcast backends`` finds ``nats`` through the entry point of its distribution."""
    python, env = fresh_env
    output = run(
        [str(python), "-m", "opal_broadcast", "backends"], cwd=EXAMPLE, env=env, timeout=60
    )
    rows = [line.split() for line in output.splitlines()]
    nats = [row for row in rows if row and row[0] == "nats"]
    assert nats, f"nats is not listed:\n{output}"
    assert nats[0][1:] == ["opal-broadcast-nats", "0.1.0", "1", "batch_subscribe", "ok"], output


def test_the_plugin_passes_its_own_suite(fresh_env: tuple[Path, dict[str, str]]) -> None:
    """The example's tests (conformance suite included) pass against a real nats-server."""
    python, env = fresh_env
    argv = [str(python), "-m", "pytest", str(EXAMPLE / "tests"), "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        argv, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    output = result.stdout + result.stderr
    counts = pytest_counts(output)
    assert counts.get("failed", 0) == 0, output
    assert counts.get("error", 0) == 0, output
    assert counts.get("passed", 0) > 0, output
    assert result.returncode == 0, output

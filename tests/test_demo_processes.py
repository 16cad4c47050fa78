"""`opal-broadcast demo --processes N` on every real backbone: separate processes, all delivered."""

import os
import subprocess
import sys

import pytest


@pytest.fixture(params=["redis", "postgres", "kafka"])
def backbone_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_url"))


def test_demo_in_separate_processes_delivers_everything(backbone_url):
    """3 worker processes x 20 messages: each process receives all 60, latency reported."""
    result = subprocess.run(
        [sys.executable, "-m", "opal_broadcast", "demo", backbone_url, "--processes", "3",
         "--messages", "20"],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in separate processes" in result.stdout
    assert "delivered 180/180" in result.stdout
    assert "ok: every worker received every message" in result.stdout
    assert "latency ms: p50" in result.stdout

"""The opal-broadcast command, run as an operator would run it."""

import os
import signal
import subprocess
import sys
import time

import pytest


def cli(*args, env=None, timeout=60):
    environment = {**os.environ, **(env or {})}
    environment.pop("OPAL_BROADCAST_URI", None) if env is None else None
    return subprocess.run(
        [sys.executable, "-m", "opal_broadcast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


@pytest.mark.parametrize(
    "command", [[], ["backends"], ["check"], ["publish"], ["listen"], ["demo"], ["new-plugin"]]
)
def test_help_everywhere(command):
    """Every command has --help with a description."""
    result = cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: opal-broadcast" in result.stdout
    assert len(result.stdout.splitlines()) > 4


def test_check_memory_reports_the_round_trip():
    result = cli("check", "memory://")
    assert result.returncode == 0, result.stderr
    assert "round trip" in result.stdout and result.stdout.strip().endswith("ok")


def test_check_reads_the_environment_variable():
    result = cli("check", env={"OPAL_BROADCAST_URI": "memory://from-env"})
    assert result.returncode == 0, result.stderr
    assert "memory://from-env" in result.stdout


def test_check_without_a_url_says_how():
    result = cli("check")
    assert result.returncode == 2
    assert "OPAL_BROADCAST_URI" in result.stderr


def test_check_missing_plugin_names_the_install_and_hides_the_password():
    result = cli(
        "check",
        "redis://opal:Sentinel-c1i@localhost:6379",
        env={"OPAL_BROADCAST_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert result.returncode == 2
    assert "pip install opal-broadcast-redis" in result.stderr
    assert "Sentinel-c1i" not in result.stdout + result.stderr


def test_publish_to_memory():
    result = cli("publish", "memory://", "updates", "hello")
    assert result.returncode == 0, result.stderr


def test_listen_exits_cleanly_on_ctrl_c():
    """SIGINT while waiting: exit 0, no traceback. (If it hangs instead, the failure shows where:
    faulthandler dumps every thread's stack on SIGABRT.)"""
    command = [sys.executable, "-X", "faulthandler", "-m", "opal_broadcast", "listen", "memory://"]
    process = subprocess.Popen(
        [*command, "updates"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("listening on 'updates'")
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, err = process.communicate(timeout=10)
            pytest.fail(f"still running 20 s after SIGINT; its stacks:\n{err[-6000:]}")
        assert process.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_demo_on_the_embedded_default():
    """The quick start's first command: every worker receives every message."""
    result = cli("demo", "--workers", "3", "--messages", "40")
    assert result.returncode == 0, result.stderr
    assert "delivered 360/360" in result.stdout
    assert "ok: every worker received every message" in result.stdout
    assert "latency ms: p50" in result.stdout


def test_demo_refuses_processes_on_memory():
    result = cli("demo", "--processes", "2")
    assert result.returncode == 2
    assert "real backbone" in result.stderr

"""``opal-broadcast watch``: the live view's figures, its JSON lines, and a clean Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import anyio
import pytest

from opal_broadcast import Broadcast, ConfigurationError, _memory
from opal_broadcast._cli import main
from opal_broadcast._watch import watch


@pytest.fixture
def url() -> str:
    return f"memory://watch-{uuid.uuid4().hex[:8]}"


def lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.anyio
async def test_json_lines_count_messages_and_time_the_probe(url, capsys):
    """A publisher sends 40 messages on 'a' during the view: the per-second rates add up to
    them, the probe's round trip is measured, the state is connected."""
    async with Broadcast(url) as publisher, anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: watch(url, ["a", "b"], as_json=True, seconds=3.5))
        await anyio.sleep(0.3)  # the view is subscribed
        for number in range(40):
            await publisher.publish("a", str(number))
            await anyio.sleep(0.02)
    samples = lines(capsys.readouterr().out)
    assert len(samples) == 3
    assert sum(sample["rates"]["a"] for sample in samples) == pytest.approx(40, rel=0.15)
    assert all(sample["rates"]["b"] == 0 for sample in samples)
    assert samples[-1]["p50_ms"] is not None and samples[-1]["p99_ms"] >= samples[-1]["p50_ms"]
    assert {sample["state"] for sample in samples} == {"connected"}


@pytest.mark.anyio
async def test_a_loss_shows_as_a_gap_and_a_reconnect(url, capsys):
    """The backbone drops: the next lines count one gap and one reconnect."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: watch(url, ["a"], as_json=True, seconds=2.5))
        await anyio.sleep(0.5)
        _memory.simulate_loss(url, stay_down=False)
    last = lines(capsys.readouterr().out)[-1]
    assert (last["gaps"], last["reconnects"]) == (1, 1)
    assert last["state"] == "connected"


@pytest.mark.anyio
async def test_the_terminal_view_shows_the_figures(url, capsys):
    """Without --json, rich draws a table with the state and the round trip."""
    await watch(url, ["a"], as_json=False, seconds=1.5)
    out = capsys.readouterr().out
    assert "round trip p50 / p99" in out and "connected" in out and "a messages/s" in out


def test_without_rich_the_view_says_what_to_install(url, monkeypatch):
    """rich missing: a ConfigurationError naming the extra (and --json as the alternative)."""
    monkeypatch.setitem(sys.modules, "rich", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'opal-broadcast\[watch\]'"):
        anyio.run(lambda: watch(url, [], as_json=False, seconds=0.1))
    assert main(["watch", url, "--seconds", "0.1"]) == 2


def test_the_command_line_runs_for_the_seconds_given(url, capsys):
    """``opal-broadcast watch URL --json --seconds 1.5`` prints one line and exits 0."""
    assert main(["watch", url, "--json", "--seconds", "1.5"]) == 0
    assert len(lines(capsys.readouterr().out)) == 1


def test_ctrl_c_exits_cleanly(url):
    """SIGINT while watching: exit status 0, no traceback."""
    with subprocess.Popen(
        [sys.executable, "-m", "opal_broadcast", "watch", url, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()  # blocks until the first line, a second in
        assert json.loads(first)["state"] == "connected"
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        try:
            status = process.wait(timeout=10)
        finally:
            process.kill()
        errors = process.stderr.read()
    assert status == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in errors

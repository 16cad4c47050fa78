"""The fault campaign: asyncio only (the TCP proxy and the server plugins are asyncio), and its
one line per scenario printed at the end of the run, so CI's log shows them."""

import pytest

from tests.campaign.harness import LINES


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if LINES:
        terminalreporter.section("fault campaign")
        for line in LINES:
            terminalreporter.write_line(line)

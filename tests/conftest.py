"""Shared test configuration: async backends, and the real backbone services' fixtures."""

import gc
import sys
from collections.abc import Generator, Iterator
from typing import Any

import pytest

if sys.version_info < (3, 11):  # pytest depends on the backport there
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found]

pytest_plugins = ["tests.services.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    """Let two known bugs through: CPython 3.10's TLS transport warning after the peer closed
    (see :func:`_spurious_on_python_3_10`), and one asyncpg bug, through anyio's check of
    unhandled event-loop exceptions.

    asyncpg (0.30, 0.31) asks for TLS with a future that the connection's loss completes with
    ``ConnectionError("unexpected connection_lost() call")``; when the server closes during that
    request (a restart) or the connect is cancelled just then, nobody retrieves it, and asyncio
    reports "Future exception was never retrieved" (MagicStack/asyncpg#1211, #1310). The connect
    itself fails or is cancelled as it should; only that report is dropped, nothing else.
    """
    if sys.version_info < (3, 11):
        config.addinivalue_line(
            "filterwarnings",
            "ignore:Exception ignored in. <function _SSLProtocolTransport.__del__"
            ":pytest.PytestUnraisableExceptionWarning",
        )
    from anyio._backends import _asyncio as backend

    handler = getattr(backend.TestRunner, "_exception_handler", None)
    if handler is None:  # anyio changed: report everything
        return

    def filtered(self: Any, loop: Any, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if (
            context.get("message") == "Future exception was never retrieved"
            and type(error) is ConnectionError
            and str(error) == "unexpected connection_lost() call"
        ):
            return
        handler(self, loop, context)

    backend.TestRunner._exception_handler = filtered  # type: ignore[method-assign]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Core code is anyio code: run it on both asyncio and trio (plugins may narrow this)."""
    return str(request.param)


@pytest.fixture
def unraisable(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``__del__`` methods raise during the test (a ResourceWarning: something left open),
    collected here instead of by pytest, so that the test can assert it is empty."""
    raised: list[str] = []

    def hook(unraisable: Any) -> None:
        if not _spurious_on_python_3_10(repr(unraisable.exc_value)):
            raised.append(repr(unraisable.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    return raised


def _spurious_on_python_3_10(text: str) -> bool:
    """CPython 3.10's TLS transport is never marked closed when the peer closes the connection
    (a server terminating an asyncpg session): its ``__del__`` warns although the socket under it
    is closed. The 3.11 rewrite of ``asyncio.sslproto`` fixed it; on 3.11+ the warning counts."""
    return sys.version_info < (3, 11) and "unclosed transport <asyncio.sslproto." in text


@pytest.fixture(autouse=True)
def collect_garbage_after_each_test() -> Iterator[None]:
    """Collect what the test dropped before the next one starts: an unclosed socket's
    ResourceWarning then fails the test that leaked it, not whichever test the collector
    happened to run in."""
    yield
    gc.collect()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Name every exception of a failing group in the one-line summary (``-ra``): CI shows the
    log's tail, where "multiple unraisable exception warnings (2 sub-exceptions)" says too little."""
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    crash = getattr(report.longrepr, "reprcrash", None)
    if isinstance(error, BaseExceptionGroup) and crash is not None:
        crash.message += " [" + "; ".join(map(_first_line, error.exceptions)) + "]"
    return report


def _first_line(error: BaseException) -> str:
    # An unraisable warning's own text names the __del__; its cause says what was raised there.
    where, *_ = str(error).partition("\n")
    cause = error.__cause__
    return f"{where} {type(cause).__name__}: {cause}" if cause is not None else where

"""The plugin toolkit besides options: error mapping with redaction, lazy driver imports, and the
reader task for drivers without a disconnect callback."""

import asyncio
import sys

import pytest

from opal_broadcast.plugin import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    PluginLoadError,
    Redactor,
    lazy_import,
    start_reader,
)

URL = BackboneURL.parse("acme://alice:Pw-s3cret@h:1")


class DriverAuthError(Exception):
    pass


def raised(block) -> BaseException:
    with pytest.raises((BackboneError, BackboneUnavailable)) as caught:
        block()
    return caught.value


def test_mapped_driver_errors_become_the_typed_error_with_the_hint_and_no_secret():
    redactor = Redactor(URL, secrets=("env-Token-9",))
    mapping = {DriverAuthError: (AuthenticationFailed, "Check the user and password.")}

    def fail():
        with redactor.errors("connecting to", mapping):
            raise DriverAuthError("login Pw-s3cret / env-Token-9 refused")

    error = raised(fail)
    assert isinstance(error, AuthenticationFailed)
    text = str(error)
    assert text.startswith("Error connecting to acme://alice:***@h:1: DriverAuthError: login")
    assert text.endswith("refused. Check the user and password.")
    assert "Pw-s3cret" not in text and "env-Token-9" not in text
    assert error.__cause__ is None  # the cause would print the secrets


@pytest.mark.parametrize(
    ("raise_", "kind", "chained"),
    [
        (ConnectionRefusedError(111, "refused"), BackboneUnavailable, True),
        (TimeoutError("slow"), BackboneUnavailable, True),
        (KeyError("odd"), BackboneError, True),
    ],
)
def test_unmapped_errors_get_the_default_types(raise_, kind, chained):
    def fail():
        with Redactor(URL).errors("publishing to", {DriverAuthError: AuthenticationFailed}):
            raise raise_

    error = raised(fail)
    assert type(error) is kind
    assert (error.__cause__ is raise_) is chained


def test_typed_errors_without_secrets_pass_through_unchanged():
    original = BackboneUnavailable("down")

    def fail():
        with Redactor(URL).errors("publishing to"):
            raise original

    assert raised(fail) is original


def test_a_lazy_import_imports_on_first_use_and_names_the_fix_when_missing():
    name = "json.tool"
    sys.modules.pop(name, None)
    module = lazy_import(name)
    assert name not in sys.modules
    assert "not imported yet" in repr(module)
    assert callable(module.main)
    assert name in sys.modules
    missing = lazy_import("no_such_driver_xyz", distribution="opal-broadcast-xyz")
    with pytest.raises(PluginLoadError, match="pip install --force-reinstall opal-broadcast-xyz"):
        _ = missing.connect


class RecordingLink:
    def __init__(self):
        self.losses = []
        self.resume_state = {}

    def deliver(self, channel, message):
        return True

    def gap(self, channel, reason):
        pass

    def lost(self, reason):
        self.losses.append(reason)

    def keep_secret(self, secret):
        pass


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_a_reader_that_ends_or_fails_reports_the_loss_and_a_cancelled_one_does_not():
    link = RecordingLink()

    async def ends():
        await asyncio.sleep(0)

    async def fails():
        raise ConnectionResetError("peer reset")

    async def runs():
        await asyncio.sleep(3600)

    await start_reader(link, ends(), what="the read loop")
    assert link.losses == ["the read loop ended"]
    with pytest.raises(ConnectionResetError):
        await start_reader(link, fails(), what="the read loop")
    assert isinstance(link.losses[1], ConnectionResetError)
    task = start_reader(link, runs(), what="the read loop")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(link.losses) == 2

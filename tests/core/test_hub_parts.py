"""The shared connection's parts on their own, without a plugin: the channel table, gap
accounting and error translation."""

import pytest

from opal_broadcast import (
    AuthenticationFailed,
    BackboneError,
    BackboneUnavailable,
    BackboneURL,
    Event,
    Gap,
    SubscriptionGap,
)
from opal_broadcast._channels import ChannelTable
from opal_broadcast._gaps import GapLog
from opal_broadcast._subscriber import QueueBound, Subscriber
from opal_broadcast._translate import Redactor


def subscriber(table: ChannelTable, channel: str, **kwargs) -> Subscriber:
    def detach(s):
        entry = table.get(s.channel)
        if entry is not None:
            entry.subscribers.discard(s)

    bound = QueueBound(kwargs.pop("max_queue", 10), kwargs.pop("max_queue_bytes", 1 << 20))
    made = Subscriber(channel, bound=bound, detach=detach, **kwargs)
    table.entry(channel).subscribers.add(made)
    return made


def queued(s: Subscriber) -> list:
    return list(s._items or ())


def test_delivery_reaches_the_channels_subscribers_only():
    """A message goes to every subscriber of its channel and to nobody else."""
    table = ChannelTable()
    a1, a2 = subscriber(table, "a", keep_going=False), subscriber(table, "a", keep_going=False)
    b = subscriber(table, "b", keep_going=False)
    table.deliver("a", "m")
    table.deliver("nobody", "m")
    assert queued(a1) == queued(a2) == [Event("a", "m")]
    assert queued(b) == []


def test_a_loss_makes_every_channel_not_live_and_reaches_every_subscriber():
    """gap_all: each subscriber gets the gap on its own channel, at the same moment; default
    subscribers detach, keep_going ones stay, continuing ones hear nothing."""
    table = ChannelTable()
    ends = subscriber(table, "a", keep_going=False)
    marks = subscriber(table, "b", keep_going=True)
    continues = subscriber(table, "b", keep_going=False, continues=True)
    for _, entry in table:
        entry.live = True
    table.gap_all(Gap(None, "lost", at=12.5))
    assert table.live_count() == 0
    assert queued(ends) == [Gap("a", "lost", at=12.5)]
    assert queued(marks) == [Gap("b", "lost", at=12.5)]
    assert queued(continues) == []
    assert table.get("a").subscribers == set()
    assert table.get("b").subscribers == {marks, continues}


def test_a_channel_gap_stays_on_its_channel():
    """A gap on one channel: its subscribers hear it, the others do not; no subscriber, no gap."""
    table = ChannelTable()
    a, b = subscriber(table, "a", keep_going=True), subscriber(table, "b", keep_going=True)
    assert table.gap("a", Gap("a", "reassembly failed"))
    assert not table.gap("nobody", Gap("nobody", "x"))
    assert [type(item) for item in queued(a)] == [Gap]
    assert queued(b) == []


def test_an_entry_is_forgotten_only_when_unwanted_not_live_and_idle():
    """Pending, live or busy channels stay in the table; an unused one goes."""
    table = ChannelTable()
    entry = table.entry("c")
    entry.pending = 1
    table.forget_if_unused("c", entry)
    assert table.get("c") is entry
    entry.pending, entry.live = 0, True
    table.forget_if_unused("c", entry)
    assert table.get("c") is entry
    entry.live = False
    table.forget_if_unused("c", entry)
    assert table.get("c") is None


async def _read(s: Subscriber):
    return await s.get()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_close_all_ends_every_iteration(anyio_backend):
    """close_all (the hub failed or closed): queued items are read first, then the end."""
    table = ChannelTable()
    s = subscriber(table, "c", keep_going=True)
    table.deliver("c", "last")
    table.close_all()
    assert await s.get() == Event("c", "last")
    assert [event async for event in s] == []
    assert table.get("c") is None


def test_gap_log_counts_remembers_and_survives_a_raising_callback():
    """Every gap is counted and told to every callback, even after one raised."""
    log, heard = GapLog(), []

    def broken(gap):
        raise RuntimeError("callback bug")

    log.add(broken)
    log.add(heard.append)
    log.add(None)
    first, second = Gap(None, "one"), Gap("c", "two")
    log.report(first)
    log.discard(broken)
    log.report(second)
    assert (log.count, log.last, heard) == (2, second, [first, second])


def test_redactor_masks_the_url_password_and_declared_secrets():
    """The URL's password and every kept secret become ***, longest first."""
    redact = Redactor(BackboneURL.parse("redis://user:hunter2@h:1/0"))
    redact.keep_secret("token-abc")
    redact.keep_secret("token-abc-longer")
    redact.keep_secret("")
    text = redact("auth hunter2 failed with token-abc-longer and token-abc")
    assert "hunter2" not in text and "token-abc" not in text
    assert text.count("***") == 3


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionResetError("reset"), BackboneUnavailable),
        (TimeoutError("slow"), BackboneUnavailable),
        (ValueError("odd"), BackboneError),
        (AuthenticationFailed("refused"), AuthenticationFailed),
    ],
)
def test_untyped_errors_become_typed_and_chained(raised, expected):
    """OSError/TimeoutError: unavailable; other untyped errors: BackboneError; typed ones stay."""
    redact = Redactor(BackboneURL.parse("redis://h:1/0"))
    with pytest.raises(expected) as caught, redact.errors("publishing to"):
        raise raised
    if caught.value is not raised:
        assert "Error publishing to redis://h:1/0" in str(caught.value)
        assert caught.value.__cause__ is raised


def test_an_error_that_would_leak_a_secret_is_replaced_without_its_cause():
    """A typed error whose text holds the password is re-made masked, with no cause to print."""
    redact = Redactor(BackboneURL.parse("redis://:s3cret-pw@h:1/0"))
    with pytest.raises(AuthenticationFailed) as caught, redact.errors("connecting to"):
        raise AuthenticationFailed("wrong password s3cret-pw")
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_gap_error_keeps_its_gap():
    """SubscriptionGap is not a backbone error: its own type survives translation untouched."""
    gap = SubscriptionGap(Gap("c", "x"))
    assert Redactor(BackboneURL.parse("memory://")).translate(gap, "reading") is gap

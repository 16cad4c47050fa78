"""A model test of the core's connection state machine, on ``memory://`` and its fault switches.

Hypothesis draws schedules of subscribe, unsubscribe, publish, cancel, lose, reconnect-fails and
reconnect-succeeds. Operations and faults start tasks; the loop runs in the rules that let time
pass (until every task waits, for a virtual interval, or one batch of ready callbacks), so the
tasks interleave at their await points. The loop runs on a virtual clock (``_virtual_clock.py``):
timeouts cost no wall time and cannot flake. Consumers behave like real ones: each subscribes again
at once when its iteration ends with a gap or its subscribe fails. The tasks record what happens
in one sequence ("published after the subscription was live" means: the ``subscribe()`` context
was entered before the ``publish()`` call started). After every step the model checks what the
core promises (what needs every task to have caught up, only when the loop is idle):

- no call blocks past its timeout: a subscribe ends within ``connect_timeout``, a publish within
  ``publish_timeout``, leaving a subscription within ``connect_timeout``;
- once the backbone has been back for ``reconnect_max_delay`` (the longest backoff step) plus
  0.1 s, the connection is up and every consumer's subscription is live, those entered during the
  reconnect included; a subscribe or publish fails with BackboneUnavailable only before that;
- every subscriber receives each message published after it entered its subscription, once and in
  order, unless it saw a gap covering it: at a loss a default subscriber's iteration ends with
  SubscriptionGap and a keep_going one gets a Gap marker and carries on;
- the event loop never gets stuck: a deadlock, a livelock or a task that never awaits fails the
  schedule (the virtual clock detects them) instead of hanging the test run.

Only the public API is used. A failure prints the shortest schedule that reproduces it (the
stateful printout) and the model's last events with their virtual times.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from dataclasses import dataclass, field

import anyio
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from opal_broadcast import BackboneUnavailable, Broadcast, Event, Gap, SubscriptionGap
from opal_broadcast.testing import restore_memory, simulate_memory_loss
from tests.core._virtual_clock import Hang, Stuck, VirtualClockLoop

CONNECT_TIMEOUT = 1.0
PUBLISH_TIMEOUT = 0.5
RECONNECT_MAX_DELAY = 0.2
#: How long after the backbone is back everything must be live again: the longest backoff step
#: (the next attempt comes at the latest then), plus the 0.1 s a subscription made during the
#: reconnect may take to become live.
RECOVERY = RECONNECT_MAX_DELAY + 0.1
#: Slack for comparing virtual times (floating-point sums), not for slowness.
EPSILON = 1e-6
#: After a subscribe that failed in no time at all, a consumer waits this long before the next
#: try (an instant failure while down would otherwise spin without the clock moving).
RETRY_AFTER_INSTANT_FAILURE = 0.01

CHANNELS = ("a", "b", "c")
MAX_CONSUMERS = 4
#: cancel_publish picks one of the latest few publishes (the others have long finished).
LATEST_PUBLISHES = 4
#: How far the run rule moves the clock: 0 runs until idle; the others cross the timeouts.
RUN_FOR = (0.0, 0.05, 0.15, 0.35, 1.1)
#: CPU seconds one step of the loop may use before it counts as hung (a task that never awaits);
#: a step normally takes milliseconds.
HANG_AFTER = 0.5

_schedules = itertools.count()


@dataclass(eq=False)
class Publish:
    number: int
    channel: str
    via: str  # "shared" (the subscribers' connection) or "own" (a connection of its own)
    task: asyncio.Task[None] | None = None
    start_seq: int | None = None
    started: float = math.nan
    #: Whether the backbone was expected up when this publish started.
    expected_up: bool = False
    end_seq: int | None = None
    ended: float = math.nan
    outcome: str | None = None  # "ok", "unavailable", "cancelled", or what else it raised
    #: The cancel was asked while the loop was idle (then only a cancellation may end it).
    cancelled_when_idle: bool | None = None

    @property
    def payload(self) -> str:
        return f"m{self.number}"

    def __str__(self) -> str:
        return f"publish {self.payload} to {self.channel!r} via the {self.via} connection"


@dataclass(eq=False)
class Subscription:
    """One entered ``subscribe()`` context of a consumer."""

    consumer: Consumer
    enter_seq: int
    entered: float
    received: dict[str, int] = field(default_factory=dict)  # payload -> seq of receipt
    last_end_seq: int = -1  # of the last message received (order check)
    gap_seqs: list[int] = field(default_factory=list)
    end_seq: int | None = None
    #: Every message delivered before this seq has been read (None: still reading).
    drained_seq: int | None = None
    ended_by: str | None = None
    checked: bool = False

    def __str__(self) -> str:
        return f"{self.consumer}'s subscription entered at {self.entered:.3f} s"


@dataclass(eq=False)
class Consumer:
    number: int
    channel: str
    keep_going: bool
    task: asyncio.Task[None] | None = None
    subscriptions: list[Subscription] = field(default_factory=list)
    current: Subscription | None = None
    #: The subscribe in progress: (seq, virtual time) of its start.
    subscribing: tuple[int, float] | None = None
    leaving_since: float | None = None
    #: After a subscribe that failed at once: the next try waits until then.
    retry_at: float = -math.inf
    leave: anyio.CancelScope | None = None
    #: Set when unsubscribe or cancel was asked: (how, seq, time, last idle seq then).
    stop: tuple[str, int, float, int] | None = None

    def __str__(self) -> str:
        mode = "keep_going" if self.keep_going else "default"
        return f"consumer #{self.number} ({self.channel!r}, {mode})"


@dataclass(eq=False)
class Loss:
    seq: int
    at: float
    #: The shared connection was up (connected, or restoring the subscriptions over a new
    #: connection): every subscriber then owes its consumer a gap.
    hitting: bool
    checked: bool = False


class ConnectionModel(RuleBasedStateMachine):
    """One schedule: a shared connection for the consumers, another one for some publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.url = f"memory://state-machine-{next(_schedules)}"
        self.loop = VirtualClockLoop(hang_after=HANG_AFTER)
        #: A check failed or the loop got stuck: the teardown then only cleans up, quietly.
        self.failed = False
        #: The loop hung (a task that never awaits): it cannot even be cleaned up.
        self.hung = False
        self.loop.set_exception_handler(self._loop_error)
        self.seq = 0
        self.trace: list[str] = []
        self.violations: list[str] = []
        self.consumers: list[Consumer] = []
        self.publishes: list[Publish] = []
        self.losses: list[Loss] = []
        self.faults: list[asyncio.Task[None]] = []
        #: Whether the bus is down now, and whether it will be once the faults asked for ran.
        self.down = self.will_be_down = False
        self.up_since = -math.inf
        self.idle = True
        self.last_idle_seq = 0
        timings = {
            "connect_timeout": CONNECT_TIMEOUT,
            "publish_timeout": PUBLISH_TIMEOUT,
            "probe_interval": 0.5,
            "probe_timeout": 0.5,
            "reconnect_max_delay": RECONNECT_MAX_DELAY,
        }
        self.shared = Broadcast(self.url, **timings)
        self.own = Broadcast(self.url, share_connection=False, **timings)
        try:
            self.loop.run_until_complete(self.shared.connect())
            self.loop.run_until_complete(self.own.connect())
        except BaseException:
            self.loop.close()
            raise

    # -- rules: operations (they start tasks; the loop runs in the rules further down) ----------

    # Preconditions read only what the schedule decided (not what the tasks did), so that the
    # same schedule always offers the same rules: hypothesis requires it to replay and shrink.

    @precondition(lambda self: len(self._unstopped()) < MAX_CONSUMERS)
    @rule(channel=st.sampled_from(CHANNELS), keep_going=st.booleans())
    def subscribe(self, channel: str, keep_going: bool) -> None:
        consumer = Consumer(len(self.consumers), channel, keep_going)
        self.consumers.append(consumer)
        consumer.task = self.loop.create_task(self._consume(consumer))
        self._operation(f"start {consumer}")

    @precondition(lambda self: self._unstopped())
    @rule(which=st.integers(0, MAX_CONSUMERS - 1))
    def unsubscribe(self, which: int) -> None:
        """The consumer leaves its subscription (or leaves as soon as its subscribe is done)."""
        consumer = self._pick(self._unstopped(), which)
        self._stop(consumer, "unsubscribe")
        self.loop.call_soon(self._leave, consumer)

    @precondition(lambda self: self._unstopped())
    @rule(which=st.integers(0, MAX_CONSUMERS - 1))
    def cancel_consumer(self, which: int) -> None:
        """Cancel the consumer's task wherever it is (subscribing, reading, leaving)."""
        consumer = self._pick(self._unstopped(), which)
        self._stop(consumer, "cancel")
        assert consumer.task is not None
        consumer.task.cancel()

    @rule(channel=st.sampled_from(CHANNELS), via=st.sampled_from(["shared", "own"]))
    def publish(self, channel: str, via: str) -> None:
        self._start_publish(channel, via)

    @precondition(lambda self: self.publishes)
    @rule(latest=st.integers(0, LATEST_PUBLISHES - 1))
    def cancel_publish(self, latest: int) -> None:
        """Cancel one of the latest publishes, if it is still running."""
        publish = self.publishes[-1 - latest % len(self.publishes)]
        if publish.outcome is not None:
            self._note(f"{publish} has already ended: nothing to cancel")
            return
        publish.cancelled_when_idle = self.idle
        if publish.start_seq is None:
            publish.outcome = "cancelled"  # before its first step: it never runs
        assert publish.task is not None
        publish.task.cancel()
        self._operation(f"cancel {publish}")

    @rule(stay_down=st.booleans())
    def lose(self, stay_down: bool) -> None:
        """Drop every connection to the bus; with stay_down it refuses new ones until restored.

        The fault runs in a task of its own, at its turn, as a plugin's reader reports a loss.
        """
        self.will_be_down = stay_down
        self.faults.append(self.loop.create_task(self._lose(stay_down)))
        self._operation(f"ask for a loss (stay_down={stay_down})")

    # -- rules: time passes -------------------------------------------------------------------

    @rule(seconds=st.sampled_from(RUN_FOR))
    def run(self, seconds: float) -> None:
        """Let every task run while the clock moves ``seconds`` ahead (0: until all wait)."""
        self._advance(seconds)

    @rule()
    def tick(self) -> None:
        """Run one batch of the callbacks ready now: a finer interleaving than until-idle."""
        self._drive(self.loop.run_once)
        self.idle = False
        self._note("one step of the loop")

    @precondition(lambda self: self.will_be_down)
    @rule()
    def reconnect_fails(self) -> None:
        """While the bus is down, reconnection attempts fail (at least one, with backoff)."""
        self._advance(RECOVERY)
        self._require(self.down, "the model thought the backbone down, but it is not")
        for name, broadcast in (("shared", self.shared), ("own", self.own)):
            state = broadcast.health().state
            self._require(state == "reconnecting", f"the {name} connection is {state!r} while down")

    @precondition(lambda self: self.will_be_down)
    @rule()
    def reconnect_succeeds(self) -> None:
        """Bring the bus back: after RECOVERY every subscription is live and a publish reaches it."""
        self._advance(0)  # the losses asked for happen first
        self._require(self.down, "the model thought the backbone down, but it is not")
        restore_memory(self.url)
        self.down = self.will_be_down = False
        self.up_since = self.loop.time()
        self._note("restore the backbone")
        self._advance(RECOVERY)
        self.check()  # connected, every consumer subscribed
        probes = {}
        for consumer in self._active_consumers():
            if consumer.current is not None and consumer.channel not in probes:
                probes[consumer.channel] = self._start_publish(consumer.channel, "shared")
        self._advance(0)
        for channel, probe in probes.items():
            self._require(probe.outcome == "ok", f"{probe}, after the reconnect: {probe.outcome}")
            for consumer in self._active_consumers():
                subscription = consumer.current
                if consumer.channel == channel and subscription is not None:
                    self._require(
                        probe.payload in subscription.received,
                        f"{subscription} did not receive {probe.payload}, published "
                        f"{RECOVERY:g} s after the backbone came back (its channel is not live)",
                    )

    # -- what must hold after every step -------------------------------------------------------

    @invariant()
    def promises_kept(self) -> None:
        self.check()

    def check(self) -> None:
        now = self.loop.time()
        problems = list(self.violations)
        problems += self._overdue_calls(now)
        if self.idle:
            problems += self._missing_gaps()
            if self.expect_up(now):
                problems += self._not_recovered(now)
            problems += self._missed_messages()
        self._require(not problems, "; ".join(problems))

    def expect_up(self, at: float) -> bool:
        """Whether everything must be up and live at virtual time ``at``."""
        return not self.down and at >= self.up_since + RECOVERY

    def _overdue_calls(self, now: float) -> list[str]:
        problems = []
        for publish in self._publishes_in_flight():
            if publish.start_seq is not None and now - publish.started > PUBLISH_TIMEOUT + EPSILON:
                problems.append(
                    f"{publish} started at {publish.started:.3f} s still runs at {now:.3f} s "
                    f"(publish_timeout {PUBLISH_TIMEOUT:g} s)"
                )
        for consumer in self.consumers:
            if consumer.subscribing is not None:
                _, started = consumer.subscribing
                if now - started > CONNECT_TIMEOUT + EPSILON:
                    problems.append(
                        f"{consumer}'s subscribe() started at {started:.3f} s still runs at "
                        f"{now:.3f} s (connect_timeout {CONNECT_TIMEOUT:g} s)"
                    )
            since = consumer.leaving_since
            if consumer.stop is not None and not consumer.task.done():
                since = consumer.stop[2] if since is None else min(since, consumer.stop[2])
            if since is not None and now - since > CONNECT_TIMEOUT + EPSILON:
                problems.append(
                    f"{consumer} has been leaving since {since:.3f} s, still at {now:.3f} s"
                )
        return problems

    def _missing_gaps(self) -> list[str]:
        """Every subscription live at a loss of the shared connection saw a gap after it."""
        problems = []
        for loss in self.losses:
            if loss.checked or not loss.hitting:
                continue
            loss.checked = True
            for consumer in self.consumers:
                if consumer.stop is not None:
                    continue  # asked to stop: it may leave before reading the gap
                for subscription in consumer.subscriptions:
                    live = subscription.enter_seq < loss.seq and (
                        subscription.end_seq is None or subscription.end_seq > loss.seq
                    )
                    if live and not any(seq > loss.seq for seq in subscription.gap_seqs):
                        problems.append(
                            f"{subscription} saw no gap for the loss at {loss.at:.3f} s"
                        )
        return problems

    def _not_recovered(self, now: float) -> list[str]:
        back = f"{now - self.up_since:.3f} s after the backbone came back"
        problems = []
        for name, broadcast in (("shared", self.shared), ("own", self.own)):
            state = broadcast.health().state
            if state != "connected":
                problems.append(f"{back}, the {name} connection is still {state!r}")
        for consumer in self._active_consumers():
            if consumer.current is None and now >= consumer.retry_at:
                doing = (
                    f"its subscribe() started at {consumer.subscribing[1]:.3f} s is still waiting"
                    if consumer.subscribing is not None
                    else "it is between attempts"
                )
                problems.append(f"{back}, {consumer} is not subscribed: {doing}")
        return problems

    def _missed_messages(self) -> list[str]:
        """Each subscriber got every message published after it entered, or saw a gap for it."""
        problems = []
        for consumer in self.consumers:
            for subscription in consumer.subscriptions:
                if subscription.checked:
                    continue
                drained = subscription.drained_seq
                if drained is None:
                    drained = self.seq  # still reading, and the loop is idle: all read
                else:
                    subscription.checked = True
                for publish in self.publishes:
                    if (
                        publish.channel == consumer.channel
                        and publish.outcome == "ok"
                        and publish.payload not in subscription.received
                        and subscription.enter_seq < publish.start_seq
                        and publish.end_seq < drained
                        and not self._excused(subscription, publish)
                    ):
                        problems.append(
                            f"{subscription} never received {publish.payload} (published "
                            f"{publish.started:.3f}-{publish.ended:.3f} s via the {publish.via} "
                            "connection) and saw no gap covering it"
                        )
        return problems

    def _excused(self, subscription: Subscription, publish: Publish) -> bool:
        """A message may be missed if it was published while the backbone was down or still
        recovering from a loss that came after the subscriber entered, which it saw a gap for."""
        if publish.expected_up:
            return False
        losses = [
            loss.seq for loss in self.losses if subscription.enter_seq < loss.seq < publish.end_seq
        ]
        return bool(losses) and any(seq > losses[0] for seq in subscription.gap_seqs)

    # -- the tasks: faults, consumers, publishers -------------------------------------------------

    async def _lose(self, stay_down: bool) -> None:
        hitting = self.shared.health().state in ("connected", "restoring")
        self.losses.append(Loss(self._next_seq(), self.loop.time(), hitting))
        simulate_memory_loss(self.url, stay_down=stay_down)
        self.down = stay_down
        if not stay_down:
            self.up_since = self.loop.time()
        self._note(f"lose the backbone (stay_down={stay_down}, hitting={hitting})")

    async def _consume(self, consumer: Consumer) -> None:
        """Subscribe, read until the iteration ends, and subscribe again at once; until stopped."""
        try:
            while consumer.stop is None:
                consumer.subscribing = (self._next_seq(), self.loop.time())
                self._note(f"{consumer} subscribes")
                entered = False
                try:
                    async with self.shared.subscribe(
                        consumer.channel, keep_going=consumer.keep_going
                    ) as subscriber:
                        entered = True
                        consumer.subscribing = None
                        subscription = Subscription(consumer, self._next_seq(), self.loop.time())
                        consumer.subscriptions.append(subscription)
                        consumer.current = subscription
                        self._note(f"{consumer} entered its subscription")
                        await self._read(consumer, subscription, subscriber)
                        consumer.current = None
                        consumer.leaving_since = self.loop.time()
                    consumer.leaving_since = None
                except BackboneUnavailable as exc:
                    if entered:
                        raise
                    await self._subscribe_failed(consumer, exc)
        except asyncio.CancelledError:
            self._consumer_cancelled(consumer)
            raise
        except Exception as exc:
            self._violation(f"{consumer} failed: {exc!r}")

    async def _read(self, consumer: Consumer, subscription: Subscription, subscriber) -> None:
        try:
            with anyio.CancelScope() as consumer.leave:
                if consumer.stop is not None:
                    consumer.leave.cancel()  # asked to leave while it was subscribing
                async for item in subscriber:
                    self._received(subscription, item)
        except SubscriptionGap as exc:
            seq = self._next_seq()
            subscription.gap_seqs.append(seq)
            self._end(subscription, "gap", seq, seq)
            self._note(f"{subscription} ended with a gap: {exc.gap.reason}")
            return
        finally:
            consumer.leave = None
        if consumer.stop is not None:
            self._end(subscription, consumer.stop[0], self._next_seq(), consumer.stop[3])
        else:
            self._violation(f"{subscription}'s iteration ended without a gap")

    def _received(self, subscription: Subscription, item: Event | Gap) -> None:
        seq = self._next_seq()
        if isinstance(item, Gap):
            subscription.gap_seqs.append(seq)
            self._note(f"{subscription} got a gap marker: {item.reason}")
            return
        consumer = subscription.consumer
        message = item.message
        publish = next((p for p in self.publishes if p.payload == message), None)
        if item.channel != consumer.channel or publish is None:
            self._violation(f"{subscription} received {item!r}, which nobody published to it")
        elif any(message in s.received for s in consumer.subscriptions):
            self._violation(f"{consumer} received {message} twice")
        elif publish.end_seq is not None and publish.end_seq < subscription.last_end_seq:
            self._violation(f"{subscription} received {message} out of order")
        else:
            subscription.last_end_seq = publish.end_seq or seq
        subscription.received[message] = seq

    async def _subscribe_failed(self, consumer: Consumer, exc: BackboneUnavailable) -> None:
        assert consumer.subscribing is not None
        _, started = consumer.subscribing
        consumer.subscribing = None
        now = self.loop.time()
        self._note(f"{consumer}'s subscribe() failed after {now - started:.3f} s: {exc}")
        if self.expect_up(now):
            self._violation(
                f"{consumer}'s subscribe() started at {started:.3f} s failed at {now:.3f} s, "
                f"{now - self.up_since:.3f} s after the backbone came back: {exc}"
            )
        if now == started:
            consumer.retry_at = now + RETRY_AFTER_INSTANT_FAILURE
            await anyio.sleep(RETRY_AFTER_INSTANT_FAILURE)

    def _consumer_cancelled(self, consumer: Consumer) -> None:
        subscription = consumer.current
        if subscription is not None and subscription.end_seq is None:
            # Cancelled by the schedule, or by the teardown (its last checks were at the last idle).
            drained = consumer.stop[3] if consumer.stop is not None else self.last_idle_seq
            self._end(subscription, "cancel", self._next_seq(), drained)
        consumer.current = consumer.subscribing = consumer.leaving_since = None
        self._note(f"{consumer} cancelled")

    def _start_publish(self, channel: str, via: str) -> Publish:
        publish = Publish(len(self.publishes), channel, via)
        self.publishes.append(publish)
        publish.task = self.loop.create_task(self._publish(publish))
        self._operation(f"start {publish}")
        return publish

    async def _publish(self, publish: Publish) -> None:
        broadcast = self.shared if publish.via == "shared" else self.own
        publish.start_seq, publish.started = self._next_seq(), self.loop.time()
        publish.expected_up = self.expect_up(publish.started)
        try:
            await broadcast.publish(publish.channel, publish.payload)
        except BackboneUnavailable as exc:
            publish.outcome = "unavailable"
            if self.expect_up(self.loop.time()):
                self._violation(
                    f"{publish} started at {publish.started:.3f} s failed at "
                    f"{self.loop.time():.3f} s, {self.loop.time() - self.up_since:.3f} s after "
                    f"the backbone came back: {exc}"
                )
        except asyncio.CancelledError:
            publish.outcome = "cancelled"
            raise
        except Exception as exc:
            publish.outcome = repr(exc)
            self._violation(f"{publish} raised {exc!r}")
        else:
            publish.outcome = "ok"
        finally:
            publish.end_seq, publish.ended = self._next_seq(), self.loop.time()
            self._note(f"{publish}: {publish.outcome}")
            if publish.cancelled_when_idle and publish.outcome != "cancelled":
                self._violation(f"{publish} was cancelled but ended {publish.outcome!r}")

    # -- helpers ---------------------------------------------------------------------------

    def _advance(self, seconds: float) -> None:
        self._drive(self.loop.advance, seconds)
        self.idle = True
        self.last_idle_seq = self.seq
        self._note(f"ran {seconds:g} s")

    def _require(self, holds: bool, problem: str) -> None:
        if not holds:
            self.failed = True
            raise AssertionError(self._report(problem))

    def _drive(self, run, *args) -> None:
        """Run the loop; a loop that cannot make progress fails the schedule, with the trace."""
        try:
            run(*args)
        except Stuck as exc:
            self.failed = True
            self.hung = isinstance(exc, Hang)
            raise AssertionError(self._report(str(exc))) from exc

    def _operation(self, what: str) -> None:
        self.idle = False
        self._note(what)

    def _stop(self, consumer: Consumer, how: str) -> None:
        consumer.stop = (how, self._next_seq(), self.loop.time(), self.last_idle_seq)
        self._operation(f"{how} {consumer}")

    def _leave(self, consumer: Consumer) -> None:
        if consumer.leave is not None:
            consumer.leave.cancel()

    def _end(self, subscription: Subscription, how: str, seq: int, drained: int) -> None:
        subscription.end_seq, subscription.drained_seq = seq, drained
        subscription.ended_by = how
        if subscription.consumer.current is subscription:
            subscription.consumer.current = None

    def _unstopped(self) -> list[Consumer]:
        return [c for c in self.consumers if c.stop is None]

    def _active_consumers(self) -> list[Consumer]:
        return [c for c in self.consumers if c.stop is None and not c.task.done()]

    def _publishes_in_flight(self) -> list[Publish]:
        return [p for p in self.publishes if p.outcome is None]

    @staticmethod
    def _pick(items: list, which: int):
        return items[which % len(items)]

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _note(self, what: str) -> None:
        self.trace.append(f"{self.loop.time():8.3f} s  #{self.seq:<4} {what}")

    def _violation(self, what: str) -> None:
        self.violations.append(what)
        self._note(f"VIOLATION: {what}")

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        self._violation(f"the event loop caught an error: {context.get('message')}")

    def _report(self, problem: str) -> str:
        recent = "\n".join(self.trace[-40:])
        return f"{problem}\n\nThe model's last events (virtual time, seq):\n{recent}"

    def teardown(self) -> None:
        """Cancel what still runs, disconnect, and leave no task behind; always close the loop.

        First a last look, once the last steps' tasks have run. After a failure this only
        cleans up, as well as it can: the failure is the report.
        """
        try:
            if not self.failed:
                self._advance(0)
                self.check()
        finally:
            self._clean_up()

    def _clean_up(self) -> None:
        loop = self.loop
        try:
            if self.hung:
                return
            tasks = [x.task for x in [*self.consumers, *self.publishes] if x.task is not None]
            tasks += self.faults
            for task in tasks:
                task.cancel()
            restore_memory(self.url)
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(self.shared.disconnect())
            loop.run_until_complete(self.own.disconnect())
            loop.run_until_idle()
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            assert not left, f"tasks left running after disconnect: {left}"
        except Exception:
            if not self.failed:
                raise
        finally:
            loop.close()


def _settings(**kwargs: object) -> settings:
    return settings(
        database=None,  # nothing written into the repository
        deadline=None,  # virtual time: wall time says nothing about the core
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
        **kwargs,
    )


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    # Thousands of schedules each log their losses and reconnects: keep only the errors.
    caplog.set_level(logging.ERROR, logger="opal_broadcast")


def test_the_connection_state_machine_keeps_its_promises():
    """1,000 seeded schedules of operations and faults (the same ones on every run)."""
    run_state_machine_as_test(
        ConnectionModel,
        settings=_settings(max_examples=1000, stateful_step_count=30, derandomize=True),
    )


@pytest.mark.slow
def test_the_connection_state_machine_keeps_its_promises_in_long_schedules():
    """Many more, longer schedules, new ones each run (a failure prints its reproduction blob)."""
    run_state_machine_as_test(
        ConnectionModel, settings=_settings(max_examples=20_000, stateful_step_count=80)
    )

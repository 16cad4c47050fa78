"""Group commit of (un)subscribes: callers that arrive together share one plugin call, each gets
its own outcome, and a caller that leaves (cancelled) leaves nobody stranded."""

import uuid

import anyio
import pytest

from opal_broadcast import Broadcast
from opal_broadcast._memory import MemoryConnection
from opal_broadcast._rounds import Rounds

pytestmark = pytest.mark.anyio


class Recorder:
    """A ``send`` that records each round, and can be held open, or fail some channels."""

    def __init__(self, refuse: frozenset[str] = frozenset(), hold: bool = False) -> None:
        self.rounds: list[list[str]] = []
        #: With ``hold``, round N is under way until ``gates[N]`` is set.
        self.gates = [anyio.Event() for _ in range(3)] if hold else []
        self.refuse = refuse

    async def __call__(self, items: list[tuple[str, int]]) -> dict[str, Exception]:
        self.rounds.append(sorted(name for name, _ in items))
        if self.gates:
            await self.gates[len(self.rounds) - 1].wait()
        return {name: PermissionError(name) for name, _ in items if name in self.refuse}


async def test_callers_of_one_loop_turn_share_one_round():
    send = Recorder()
    rounds: Rounds[int] = Rounds(send, anyio.Event)
    async with anyio.create_task_group() as tasks:
        for i in range(100):
            tasks.start_soon(rounds.join, f"c{i}", i)
    assert send.rounds == [sorted(f"c{i}" for i in range(100))]


async def test_callers_arriving_during_a_round_go_together_in_the_next():
    send = Recorder(hold=True)
    rounds: Rounds[int] = Rounds(send, anyio.Event)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(rounds.join, "first", 0)
        await anyio.wait_all_tasks_blocked()
        for i in range(50):
            tasks.start_soon(rounds.join, f"c{i}", i)
        await anyio.wait_all_tasks_blocked()
        assert len(send.rounds) == 1  # the others wait for the round under way
        for gate in send.gates:
            gate.set()
    assert send.rounds == [
        ["first"],
        sorted(f"c{i}" for i in range(50)),
    ]


async def test_each_caller_gets_its_own_outcome():
    send = Recorder(refuse=frozenset({"refused"}))
    rounds: Rounds[int] = Rounds(send, anyio.Event)
    outcomes: dict[str, str] = {}

    async def join(channel: str) -> None:
        try:
            await rounds.join(channel, 0)
            outcomes[channel] = "ok"
        except PermissionError as exc:
            outcomes[channel] = f"refused {exc}"

    async with anyio.create_task_group() as tasks:
        for channel in ("a", "refused", "b"):
            tasks.start_soon(join, channel)
    assert len(send.rounds) == 1
    assert outcomes == {"a": "ok", "refused": "refused refused", "b": "ok"}


async def test_a_leader_cancelled_while_waiting_hands_its_round_over():
    send = Recorder(hold=True)
    rounds: Rounds[int] = Rounds(send, anyio.Event)
    done: list[str] = []

    async def join(channel: str) -> None:
        await rounds.join(channel, 0)
        done.append(channel)

    with anyio.fail_after(5):
        await handover(rounds, send, join)
    # The follower's channel went in the next round although its leader left.
    assert sorted(done) == ["follower", "running"]
    assert send.rounds[0] == ["running"]
    assert "follower" in send.rounds[1]


async def handover(rounds, send, join):
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(join, "running")
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as leader:
            async with anyio.create_task_group() as inner:
                inner.start_soon(rounds.join, "leader", 0)  # leads the next round
                await anyio.wait_all_tasks_blocked()
                tasks.start_soon(join, "follower")
                await anyio.wait_all_tasks_blocked()
                leader.cancel()
        for gate in send.gates:
            gate.set()


async def test_a_leader_cancelled_while_sending_ends_the_round_for_the_others():
    send = Recorder(hold=True)
    rounds: Rounds[int] = Rounds(send, anyio.Event)
    done: list[str] = []
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await rounds.join("leader", 0)

    async def follow(channel: str) -> None:
        await rounds.join(channel, 0)
        done.append(channel)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(follow, "running")
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(lead)  # leads the next round
            await anyio.wait_all_tasks_blocked()
            tasks.start_soon(follow, "follower")  # joins the leader's round
            await anyio.wait_all_tasks_blocked()
            send.gates[0].set()
            await anyio.wait_all_tasks_blocked()
            assert send.rounds == [["running"], ["follower", "leader"]]
            leader.cancel()
    # The follower returned (its caller finds its channel not live and goes again).
    assert sorted(done) == ["follower", "running"]


async def test_ten_thousand_subscribes_entered_at_once_make_a_few_plugin_calls(monkeypatch):
    calls: list[int] = []
    subscribe = MemoryConnection.subscribe

    async def counted(self, channels):
        calls.append(len(channels))
        await subscribe(self, channels)

    monkeypatch.setattr(MemoryConnection, "subscribe", counted)
    channels = [f"many-{uuid.uuid4().hex[:6]}-{i}" for i in range(10_000)]
    async with Broadcast(f"memory://{uuid.uuid4().hex}") as broadcast:
        entered = anyio.Event()
        count = 0

        async def hold(channel: str) -> None:
            nonlocal count
            async with broadcast.subscribe(channel):
                count += 1
                if count == len(channels):
                    entered.set()
                await anyio.sleep_forever()

        async with anyio.create_task_group() as tasks:
            for channel in channels:
                tasks.start_soon(hold, channel)
            with anyio.fail_after(30):
                await entered.wait()
            assert broadcast.health().channels == len(channels)
            tasks.cancel_scope.cancel()
    assert sum(calls) == len(channels)
    assert len(calls) <= 20, calls  # batches of 1,000, not one call per channel

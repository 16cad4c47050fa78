"""The history checker on hand-written histories: each rule passes what it must and fails the rest."""

import pytest

from tests.campaign.history import Fault, PublisherLog, WorkerLog, check


def publisher(name: str, *times: float, failed: tuple[float, ...] = ()) -> PublisherLog:
    """A publisher whose publish number ``i`` (from 1) started at ``times[i-1]`` and took 10 ms."""
    log = PublisherLog(name)
    for seq, at in enumerate(times, start=1):
        log.record(seq, at, at + 0.01, ok=at not in failed, error="x" if at in failed else None)
    return log


def test_a_clean_history_passes():
    """Everything owed arrives once and in order: no problems, nothing lost."""
    pub = publisher("p", 1.0, 2.0, 3.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    for seq in (1, 2, 3):
        worker.received("p", seq, seq + 0.1)
    worker.closed(4.0)
    verdict = check([pub], [worker])
    assert verdict.problems == []
    assert (verdict.lost_with_gap, verdict.gaps, verdict.received) == (0, 0, 3)


def test_a_loss_without_a_gap_is_silent():
    """A message owed to a subscription that ended without a gap, never received: a silent loss."""
    pub = publisher("p", 1.0, 2.0, 3.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.received("p", 3, 3.1)
    worker.closed(4.0)
    verdict = check([pub], [worker])
    assert len(verdict.silent) == 1
    assert "p#2" in verdict.silent[0]


def test_losses_before_a_gap_are_excused():
    """What a subscription missed before the gap that ended it is lost-with-gap, not silent."""
    pub = publisher("p", 1.0, 2.0, 3.0, 4.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.gap(3.5)
    worker.live(3.6)
    worker.received("p", 4, 4.1)
    worker.closed(5.0)
    verdict = check([pub], [worker])
    assert verdict.problems == []
    assert (verdict.lost_with_gap, verdict.gaps) == (2, 1)


def test_a_hole_before_later_messages_is_silent_even_with_a_gap():
    """Missing #2 while #3 of the same publisher arrived in that subscription: no gap explains it."""
    pub = publisher("p", 1.0, 2.0, 3.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.received("p", 3, 3.1)
    worker.gap(3.5)
    verdict = check([pub], [worker])
    assert len(verdict.silent) == 1
    assert "before the gap" in verdict.silent[0]


def test_a_later_message_of_another_publisher_is_no_hole():
    """Publishers are independent: q's message arriving does not make p's loss silent."""
    p = publisher("p", 1.0, 2.0)
    q = publisher("q", 2.5)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.received("q", 1, 2.6)
    worker.gap(3.0)
    verdict = check([p, q], [worker])
    assert verdict.problems == []
    assert verdict.lost_with_gap == 1


def test_only_messages_published_while_live_are_owed():
    """Before the first live, between subscriptions, and failed publishes: owed to no one."""
    pub = publisher("p", 0.2, 1.0, 1.5, 2.0, 3.0, failed=(3.0,))
    worker = WorkerLog("w")
    worker.live(0.5)  # #1 was published before: not owed
    worker.received("p", 2, 1.1)
    worker.gap(1.2)
    worker.subscribe_failed(1.8, "BackboneUnavailable")  # #3 published while unsubscribed
    worker.live(1.9)
    worker.received("p", 4, 2.1)
    worker.closed(4.0)  # #5 failed: not owed
    verdict = check([pub], [worker])
    assert verdict.problems == []
    assert verdict.lost_with_gap == 0
    assert verdict.failed_publishes == 1


def test_a_failed_publish_may_arrive():
    """A publish that raised may still have been delivered: receiving it is no problem."""
    pub = publisher("p", 1.0, 2.0, failed=(1.0,))
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.5)
    worker.received("p", 2, 2.1)
    worker.closed(3.0)
    assert check([pub], [worker]).problems == []


def test_duplicates_are_found_across_subscriptions():
    """The same message twice, even in two subscriptions, is a duplicate (reported once)."""
    pub = publisher("p", 1.0, 2.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.gap(1.5)
    worker.live(1.6)
    worker.received("p", 1, 1.7)
    worker.received("p", 2, 2.1)
    worker.closed(3.0)
    verdict = check([pub], [worker])
    assert verdict.duplicates == ["w received p#1 2 times"]
    assert verdict.disorder == []


def test_order_is_per_publisher():
    """p's #2 before p's #1 is out of order; interleaving with q is not."""
    p = publisher("p", 1.0, 1.1)
    q = publisher("q", 1.05)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 2, 1.2)
    worker.received("q", 1, 1.25)
    worker.received("p", 1, 1.3)
    worker.closed(2.0)
    verdict = check([p, q], [worker])
    assert verdict.disorder == ["w received p#1 after #2"]
    assert verdict.silent == []


def test_a_message_nobody_published_is_reported():
    """A received message no publisher sent is a phantom."""
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 7, 1.0)
    worker.closed(2.0)
    verdict = check([publisher("p", 1.0)], [worker])
    assert verdict.phantoms == ["w received p#7"]


def test_an_iteration_error_does_not_excuse_a_loss():
    """Only a gap excuses a loss: an iteration that raised something else is reported, and what it
    missed is silent."""
    pub = publisher("p", 1.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.error(1.5, "RuntimeError('boom')")
    verdict = check([pub], [worker])
    assert len(verdict.silent) == 1
    assert verdict.errors == ["w: iteration raised RuntimeError('boom') at 1.500"]


def test_every_worker_is_checked_on_its_own():
    """Two workers: one saw the gap (excused), the other missed the same message silently."""
    pub = publisher("p", 1.0, 2.0)
    one, two = WorkerLog("one"), WorkerLog("two")
    for worker in (one, two):
        worker.live(0.5)
        worker.received("p", 1, 1.1)
    one.gap(2.5)
    two.closed(2.5)
    verdict = check([pub], [one, two])
    assert verdict.lost_with_gap == 1
    assert len(verdict.silent) == 1
    assert verdict.silent[0].startswith("two missed p#2")


def test_resume_times_and_gaps_per_fault():
    """Resume: from ready to the first message published after ready; gaps are attributed to
    the fault whose window (until the next fault) they fall in; no resume is None."""
    pub = publisher("p", 1.0, 2.0, 3.0, 4.0, 5.0, 6.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.1)
    worker.gap(1.5)
    worker.live(2.6)
    worker.received("p", 3, 3.2)  # first published after ready=2.5
    worker.gap(3.6)  # second fault: never resumes before the third starts at 5.5
    worker.live(5.9)
    worker.received("p", 6, 6.1)
    worker.closed(7.0)
    faults = [Fault("a", 1.4, 2.5), Fault("b", 3.5, 3.7), Fault("c", 5.5, 5.8)]
    verdict = check([pub], [worker], faults)
    assert verdict.resumes[0] == [pytest.approx(0.7)]
    assert verdict.resumes[1] == [None]
    assert verdict.resumes[2] == [pytest.approx(0.3)]
    assert verdict.gaps_per_fault == [[[1.5]], [[3.6]], [[]]]
    assert verdict.unresumed() == 1


def test_a_message_published_before_ready_does_not_count_as_resumed():
    """A message received after ready but published before it (Kafka's kept position) is old."""
    pub = publisher("p", 1.0, 2.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.received("p", 1, 1.6)
    worker.received("p", 2, 2.05)
    worker.closed(3.0)
    verdict = check([pub], [worker], [Fault("restart", 0.9, 1.5)])
    assert verdict.resumes == [[pytest.approx(0.55)]]


def test_the_line_names_every_count():
    """The one-line summary carries faults, gaps, lost-with-gap, silent and resume times."""
    pub = publisher("p", 1.0, 2.0, 3.0)
    worker = WorkerLog("w")
    worker.live(0.5)
    worker.gap(1.5)
    worker.live(2.6)
    worker.received("p", 3, 3.2)
    worker.closed(4.0)
    verdict = check([pub], [worker], [Fault("restart", 1.4, 2.5)])
    line = verdict.line("memory restart", 1)
    assert line.startswith(
        "memory restart: faults=1 gaps=1 lost-with-gap=1 silent=0 resume median=0.70s worst=0.70s"
    )


def test_malformed_histories_are_reported():
    """Events outside a subscription, or a second live without an end, are harness errors."""
    worker = WorkerLog("w")
    worker.received("p", 1, 0.1)
    worker.live(0.5)
    worker.live(0.6)
    worker.closed(1.0)
    verdict = check([publisher("p", 0.05)], [worker])
    assert len(verdict.errors) == 2

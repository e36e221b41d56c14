"""A process SIGKILLed at each crash point (fastq.c's CRASH_POINT, the stores of send,
receive and remove) leaves the queue exactly as before its operation, or exactly as after
it once the kill came after the commit store; whoever takes the mutex next (the parent's
next call, or a third process) replays the undo record."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqfs import fastq
from mqfs.server.store import MessageStore
from tests.support.fastq import contents, crash_in_child, in_child, new_queue
from tests.support.waiting import wait_until

START = [(b"p0", 5), (b"p1", 3), (b"p2", 3), (b"p3", 3), (b"p4", 1), (b"p5", 1)]
MAXMSG = 8


@dataclass(frozen=True)
class Operation:
    run: Callable[[fastq.MappedQueue], object]
    model: Callable[[MessageStore], object]
    reaches: frozenset[int]  # the crash points on its path
    committed: frozenset[int]  # those after its commit store


SEND_POINTS = frozenset({1, 2, 3, 4, 6})
TAKE_POINTS = frozenset({7, 8, 9, 10})
OPERATIONS = {
    # after every queued priority >= 0: the back, nothing moves
    "send-back": Operation(
        lambda q: q.send(b"new", 0),
        lambda s: s.push(b"new", 0),
        SEND_POINTS,
        frozenset({4, 6}),
    ),
    # before the head: `front`, at position 0, nothing moves
    "send-front": Operation(
        lambda q: q.send(b"new", 9),
        lambda s: s.push(b"new", 9),
        SEND_POINTS,
        frozenset({4, 6}),
    ),
    # position 1 of 6: placed before the head, moved back one (do_send's front branch)
    "send-middle-front": Operation(
        lambda q: q.send(b"new", 4),
        lambda s: s.push(b"new", 4),
        SEND_POINTS | {5},
        frozenset({4, 5, 6}),
    ),
    # position 4 of 6: placed at the back, moved forward two
    "send-middle-back": Operation(
        lambda q: q.send(b"new", 2),
        lambda s: s.push(b"new", 2),
        SEND_POINTS | {5},
        frozenset({4, 5, 6}),
    ),
    "receive": Operation(lambda q: q.receive(), lambda s: s.pop(), TAKE_POINTS, frozenset({9, 10})),
    # index 3: moved to the head before the commit (point 5 undoes the move)
    "remove-middle": Operation(
        lambda q: q.remove(3),
        lambda s: s.remove(3),
        TAKE_POINTS | {5},
        frozenset({9, 10}),
    ),
}


def queue_at_start(tmp_path: Path) -> fastq.MappedQueue:
    """START queued in a ring whose head is not cell 0, so the operations wrap."""
    queue = new_queue(tmp_path, MAXMSG, 16)
    for _ in range(5):
        queue.send(b"lap", 0)
        queue.receive()
    for payload, priority in START:
        queue.send(payload, priority)
    assert contents(queue) == START
    return queue


def expected_after(operation: Operation) -> list[tuple[bytes, int]]:
    store = MessageStore()
    for payload, priority in START:
        store.push(payload, priority)
    operation.model(store)
    return [(m.payload, m.priority) for m in store]


def recover_and_read(queue: fastq.MappedQueue, third_process: bool, want: list[object]) -> None:
    if third_process:

        def recover() -> None:
            queue.check()
            assert contents(queue) == want

        assert in_child(recover) == 0, "the third process saw another queue"
    assert contents(queue) == want
    queue.check()


@pytest.mark.parametrize("third_process", [False, True], ids=["parent-recovers", "third-recovers"])
@pytest.mark.parametrize("point", range(1, fastq.CRASH_POINTS + 1))
@pytest.mark.parametrize("name", OPERATIONS)
def test_a_kill_at_a_crash_point_leaves_before_or_after(
    tmp_path: Path, name: str, point: int, third_process: bool
) -> None:
    operation = OPERATIONS[name]
    queue = queue_at_start(tmp_path)
    state = queue.state()
    was_killed = crash_in_child(queue, point, lambda: operation.run(queue))
    assert was_killed == (point in operation.reaches)
    after = not was_killed or point in operation.committed
    want = expected_after(operation) if after else START
    recover_and_read(queue, third_process, want)  # type: ignore[arg-type]
    now = queue.state()
    assert now.recovered == state.recovered + was_killed  # one replay, whoever made it
    assert now.count == len(want)
    assert now.bytes == sum(len(payload) for payload, _ in want)
    assert now.generation > state.generation
    # and the queue works on
    queue.send(b"next", 0)
    assert contents(queue) == [*want, (b"next", 0)]
    while queue.state().count:
        queue.receive()
    queue.check()


def test_every_crash_point_is_on_some_path() -> None:
    """CRASH_POINTS counts fastq.c's points, and the cases above reach each of them."""
    reached = set().union(*(operation.reaches for operation in OPERATIONS.values()))
    assert reached == set(range(1, fastq.CRASH_POINTS + 1))


@pytest.mark.parametrize("point", [4, 6])
def test_a_sender_killed_before_it_woke_anyone_strands_no_receiver(
    tmp_path: Path, point: int
) -> None:
    """Killed after its commit, before its wake and with the mutex held: the sleeping
    receiver's next look (each futex sleep is bounded) recovers the queue and takes it."""
    queue = new_queue(tmp_path, 4, 16)
    read_end, write_end = os.pipe()
    receiver = os.fork()
    if receiver == 0:
        try:
            payload, _ = queue.receive(deadline=time.time() + 30)
            os.write(write_end, payload)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        wait_until(lambda: queue.state().recv_waiters == 1, what="the receiver to sleep")
        assert crash_in_child(queue, point, lambda: queue.send(b"orphan", 1))
        assert os.read(read_end, 16) == b"orphan"
    finally:
        os.close(read_end)
        os.waitpid(receiver, 0)
    assert queue.state().recovered == 1
    queue.check()


@pytest.mark.parametrize("point", [4, 6])
def test_a_sender_killed_after_its_commit_still_fires_the_notification(
    tmp_path: Path, point: int
) -> None:
    queue = new_queue(tmp_path, 4, 16)
    queue.set_interest(False, notify_armed=True)
    assert crash_in_child(queue, point, lambda: queue.send(b"first", 1))
    assert contents(queue) == [(b"first", 1)]  # recovered: forward, and notified
    assert queue.take_notify()


@pytest.mark.parametrize("point", [1, 2, 3])
def test_a_sender_killed_before_its_commit_fires_no_notification(
    tmp_path: Path, point: int
) -> None:
    queue = new_queue(tmp_path, 4, 16)
    queue.set_interest(False, notify_armed=True)
    assert crash_in_child(queue, point, lambda: queue.send(b"first", 1))
    assert contents(queue) == []
    assert not queue.take_notify()


def test_the_replayed_notification_does_not_count_a_receiver_killed_asleep(
    tmp_path: Path,
) -> None:
    queue = new_queue(tmp_path, 4, 16)
    queue.set_interest(False, notify_armed=True)
    receiver = os.fork()
    if receiver == 0:
        try:
            queue.receive()
        finally:
            os._exit(0)
    wait_until(lambda: queue.state().recv_waiters == 1, what="the receiver to sleep")
    os.kill(receiver, 9)
    os.waitpid(receiver, 0)
    assert crash_in_child(queue, 6, lambda: queue.send(b"first", 1))
    assert queue.take_notify()  # nobody alive waits to receive: it fires
    assert contents(queue) == [(b"first", 1)]

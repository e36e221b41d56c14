"""Waiting on a mapped queue: absolute CLOCK_REALTIME deadlines, and sleepers in another
thread or process woken by the change they wait for."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from mqfs import errors, fastq
from tests.support.fastq import contents, new_queue
from tests.support.waiting import wait_until

SLACK = 3.0  # how late a timed-out call may return on a loaded machine


class Background:
    """*call* in a thread (on its own attach of the mapping): its result or exception."""

    def __init__(self, call: Callable[[], object]) -> None:
        self.result: object = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(call,))
        self.thread.start()

    def _run(self, call: Callable[[], object]) -> None:
        try:
            self.result = call()
        except BaseException as exc:  # handed to the test
            self.error = exc

    def join(self) -> object:
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "the call did not return"
        if self.error is not None:
            raise self.error
        return self.result


def second_attach(tmp_path: Path, queue: fastq.MappedQueue) -> fastq.MappedQueue:
    return fastq.MappedQueue(tmp_path / "q", queue.maxmsg, queue.msgsize)


@pytest.mark.parametrize("timeout", [0.05, 0.3])
def test_receive_times_out_at_its_deadline_not_before(tmp_path: Path, timeout: float) -> None:
    queue = new_queue(tmp_path, 2, 8)
    deadline = time.time() + timeout
    with pytest.raises(errors.TimedOut):
        queue.receive(deadline=deadline)
    ended = time.time()
    assert deadline <= ended < deadline + SLACK
    assert queue.state().recv_waiters == 0


def test_send_times_out_at_its_deadline_not_before(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 1, 8)
    queue.send(b"full", 0)
    deadline = time.time() + 0.25
    with pytest.raises(errors.TimedOut):
        queue.send(b"more", 0, deadline=deadline)
    assert deadline <= time.time() < deadline + SLACK
    assert contents(queue) == [(b"full", 0)]
    assert queue.state().send_waiters == 0


def test_a_wait_longer_than_one_futex_sleep_still_ends_at_the_deadline(tmp_path: Path) -> None:
    """Each futex sleep lasts at most FASTQ_RECHECK_NS (0.2 s); the deadline is the call's."""
    queue = new_queue(tmp_path, 1, 8)
    deadline = time.time() + 0.5
    with pytest.raises(errors.TimedOut):
        queue.receive(deadline=deadline)
    assert deadline <= time.time() < deadline + SLACK


def test_a_deadline_in_the_past_times_out_only_when_it_would_block(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 1, 8)
    past = time.time() - 5
    with pytest.raises(errors.TimedOut):
        queue.receive(deadline=past)
    queue.send(b"a", 3, deadline=past)  # room: no wait, no timeout
    with pytest.raises(errors.TimedOut):
        queue.send(b"b", 3, deadline=past)  # full
    assert queue.receive(deadline=past) == (b"a", 3)  # a message: no wait
    with pytest.raises(errors.TimedOut):
        queue.receive(deadline=0.0)  # the epoch
    queue.check()


def test_a_blocked_receive_in_another_thread_wakes_on_a_send(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 2, 8)
    other = second_attach(tmp_path, queue)
    sleeper = Background(lambda: other.receive(deadline=time.time() + 30))
    wait_until(lambda: queue.state().recv_waiters == 1, what="the receiver to sleep")
    queue.send(b"wake", 9)
    assert sleeper.join() == (b"wake", 9)
    assert queue.state().recv_waiters == 0
    other.close()


def test_a_blocked_send_in_another_thread_wakes_on_a_receive(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 1, 8)
    queue.send(b"first", 1)
    other = second_attach(tmp_path, queue)
    sleeper = Background(lambda: other.send(b"second", 2))
    wait_until(lambda: queue.state().send_waiters == 1, what="the sender to sleep")
    assert queue.receive() == (b"first", 1)
    sleeper.join()
    assert contents(queue) == [(b"second", 2)]
    assert queue.state().send_waiters == 0
    other.close()


def test_every_sleeping_receiver_gets_one_message(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 8)
    attaches = [second_attach(tmp_path, queue) for _ in range(3)]
    sleepers = [Background(partial(q.receive, deadline=time.time() + 30)) for q in attaches]
    wait_until(lambda: queue.state().recv_waiters == 3, what="three receivers to sleep")
    for n in range(3):
        queue.send(bytes([n]), 0)
    got = [s.join() for s in sleepers]
    assert sorted(got, key=repr) == [(b"\0", 0), (b"\1", 0), (b"\2", 0)]
    for attach in attaches:
        attach.close()


def test_a_blocked_receive_in_another_process_wakes_on_a_send(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 2, 8)
    read_end, write_end = os.pipe()

    def receive() -> None:
        payload, priority = queue.receive()
        os.write(write_end, bytes([priority]) + payload)

    pid = os.fork()
    if pid == 0:
        try:
            receive()
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        wait_until(lambda: queue.state().recv_waiters == 1, what="the child to sleep")
        queue.send(b"hello", 4)
        assert os.read(read_end, 16) == b"\4hello"
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert queue.state().count == 0


def test_a_blocked_send_in_another_process_wakes_on_a_receive(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 1, 8)
    queue.send(b"first", 0)
    pid = os.fork()
    if pid == 0:
        try:
            queue.send(b"second", 0)
        finally:
            os._exit(0)
    try:
        wait_until(lambda: queue.state().send_waiters == 1, what="the child to sleep")
        assert queue.receive() == (b"first", 0)
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert contents(queue) == [(b"second", 0)]


def _kill_a_sleeping_receiver(queue: fastq.MappedQueue) -> None:
    """A child that receives on the empty *queue*, SIGKILLed once it sleeps there."""
    pid = os.fork()
    if pid == 0:
        try:
            queue.receive()
        finally:
            os._exit(0)
    wait_until(lambda: queue.state().recv_waiters == 1, what="the child to sleep")
    os.kill(pid, 9)
    os.waitpid(pid, 0)


def test_a_sleeper_killed_in_its_sleep_strands_nobody(tmp_path: Path) -> None:
    """A receiver SIGKILLed while asleep: the next receiver still gets the next message."""
    queue = new_queue(tmp_path, 2, 8)
    _kill_a_sleeping_receiver(queue)
    before = queue.state().recv_waiters
    other = second_attach(tmp_path, queue)
    sleeper = Background(lambda: other.receive(deadline=time.time() + 30))
    wait_until(lambda: queue.state().recv_waiters > before, what="the next receiver to sleep")
    queue.send(b"x", 0)
    assert sleeper.join() == (b"x", 0)
    other.close()
    queue.check()


def test_a_sleeper_killed_in_its_sleep_stops_counting_at_the_next_send(tmp_path: Path) -> None:
    """Its count would otherwise cost every send a wake-up call and silence mq_notify."""
    queue = new_queue(tmp_path, 2, 8)
    queue.set_interest(False, notify_armed=True)
    _kill_a_sleeping_receiver(queue)
    queue.send(b"x", 0)
    state = queue.state()
    assert state.recv_waiters == 0
    assert state.notify_pending  # nobody took it: the notification fires
    assert queue.take_notify()


def test_a_send_a_sleeping_receiver_takes_fires_no_notification(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 2, 8)
    queue.set_interest(False, notify_armed=True)
    other = second_attach(tmp_path, queue)
    sleeper = Background(lambda: other.receive(deadline=time.time() + 30))
    wait_until(lambda: queue.state().recv_waiters == 1, what="the receiver to sleep")
    queue.send(b"taken", 0)
    assert sleeper.join() == (b"taken", 0)
    assert not queue.state().notify_pending
    other.close()
    queue.send(b"alone", 0)  # onto the empty queue, no receiver: it fires
    assert queue.take_notify()
    queue.set_interest(False, notify_armed=True)
    queue.send(b"behind", 0)  # the queue was not empty: it does not
    assert not queue.take_notify()

"""The calls the daemon makes on a mapping besides send/receive/peek: holds of the mutex
across calls (pinned), the framed receive's take-if-it-fits (receive_upto), adopting a
mapping from another boot, the sleepers `mqfs who` shows, and LSPID/LRPID."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from mqfs import errors, fastq
from tests.support.fastq import contents, crash_in_child, in_child, new_queue
from tests.support.waiting import wait_until

SYS_FUTEX = 202  # x86-64: where a process waiting for the mutex sleeps


def sleeps_in(pid: int, call: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/syscall").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return text.split(" ", 1)[0] == str(call)


def test_calls_inside_a_hold_see_one_instant_and_holds_nest(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 8)
    queue.send(b"a", 1)
    with queue.pinned():
        queue.send(b"b", 2, nonblock=True)
        with queue.pinned():
            assert contents(queue) == [(b"b", 2), (b"a", 1)]
        assert queue.receive(nonblock=True) == (b"b", 2)
        queue.check()
    queue.check()  # the mutex was released: this takes it again


def test_another_process_waits_for_the_hold_to_end(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 8)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.read(read_end, 1)  # the parent holds the mutex now
            queue.send(b"later", 0, nonblock=True)
        finally:
            os._exit(0)
    os.close(read_end)
    try:
        with queue.pinned():
            os.write(write_end, b"!")
            wait_until(lambda: sleeps_in(child, SYS_FUTEX), what="the child to wait for the mutex")
            assert queue.state().count == 0
    finally:
        os.close(write_end)
        _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert contents(queue) == [(b"later", 0)]


def test_a_child_forked_inside_a_hold_does_not_inherit_it(tmp_path: Path) -> None:
    """The hold is the parent thread's: the child's calls wait for the mutex like anyone's."""
    queue = new_queue(tmp_path, 4, 8)
    with queue.pinned():
        child = os.fork()
        if child == 0:
            try:
                queue.send(b"child", 0, nonblock=True)
            finally:
                os._exit(0)
        wait_until(lambda: sleeps_in(child, SYS_FUTEX), what="the child to wait for the mutex")
        assert queue.state().count == 0
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert contents(queue) == [(b"child", 0)]
    queue.check()


def test_receive_upto_takes_the_head_only_if_it_fits(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 16)
    with pytest.raises(errors.WouldBlock):
        queue.receive_upto(16)
    queue.send(b"0123456789", 3)
    queue.send(b"", 1)
    assert queue.receive_upto(9) is None
    assert contents(queue) == [(b"0123456789", 3), (b"", 1)]
    assert queue.receive_upto(10) == (b"0123456789", 3)
    assert queue.receive_upto(0) == (b"", 1)
    queue.check()


BOOT_A, BOOT_B = b"A" * 16, b"B" * 16


def adopt(queue: fastq.MappedQueue, boot: bytes) -> int:
    return int(fastq.library().fastq_adopt(queue._ref, boot))


def test_adopting_in_another_boot_renews_the_mutex_and_replays_the_undo_record(
    tmp_path: Path,
) -> None:
    queue = new_queue(tmp_path, 4, 16)
    queue.send(b"kept", 1)
    assert adopt(queue, BOOT_A) == 1
    assert adopt(queue, BOOT_A) == 0  # the same boot: nothing done
    # A sender killed after its commit, holding the mutex; then "a reboot".
    assert crash_in_child(queue, 4, lambda: queue.send(b"new", 2))
    assert adopt(queue, BOOT_B) == 1
    state = queue.state()
    assert state.recovered == 0  # the fresh mutex is not owner-dead: adopt replayed it
    assert contents(queue) == [(b"new", 2), (b"kept", 1)]
    assert (state.recv_waiters, state.send_waiters, queue.sleepers()) == (0, 0, [])
    queue.check()


def test_a_sleeping_receiver_is_listed_until_it_wakes(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 16)
    other = fastq.MappedQueue(tmp_path / "q", 4, 16)
    got: list[object] = []
    before = time.time_ns()
    thread = threading.Thread(target=lambda: got.append(other.receive()))
    thread.start()
    wait_until(queue.sleepers, what="the receiver to sleep")
    (sleeper,) = queue.sleepers()
    assert (sleeper.pid, sleeper.tid, sleeper.receiving) == (os.getpid(), thread.native_id, True)
    assert before <= sleeper.since_ns <= time.time_ns()
    queue.send(b"wake", 0)
    thread.join(timeout=10)
    assert got == [(b"wake", 0)]
    assert queue.sleepers() == []
    other.close()


def test_a_sleeper_killed_asleep_is_reaped_by_the_next_send(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 16)
    child = os.fork()
    if child == 0:
        try:
            queue.receive()
        finally:
            os._exit(0)
    wait_until(queue.sleepers, what="the child to sleep")
    assert [s.pid for s in queue.sleepers()] == [child]
    os.kill(child, 9)
    os.waitpid(child, 0)
    queue.send(b"x", 0)  # its wake finds nobody asleep: the dead are taken off
    assert queue.sleepers() == []
    assert queue.state().recv_waiters == 0


def test_the_last_sender_and_receiver_are_recorded(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 16)
    assert (queue.state().last_sender, queue.state().last_receiver) == (0, 0)
    assert in_child(lambda: queue.send(b"from a child", 0)) == 0
    sender = queue.state().last_sender
    assert sender not in (0, os.getpid())
    queue.receive()
    assert (queue.state().last_sender, queue.state().last_receiver) == (sender, os.getpid())

"""The queue layer without a mount: check order, hand-off, deadlines, cancellation."""

from __future__ import annotations

import errno
import math
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from mqfs import errors
from mqfs.posix import check_name
from mqfs.server.queue import Descriptor, Limits, Namespace, Queue, memory_charge


def make_queue(maxmsg: int = 2, msgsize: int = 16) -> Queue:
    return Namespace(Limits()).create("q", mode=0o600, uid=0, gid=0, maxmsg=maxmsg, msgsize=msgsize)


def descriptor(
    queue: Queue, *, nonblock: bool = False, readable: bool = True, writable: bool = True
) -> Descriptor:
    return Descriptor(queue, readable=readable, writable=writable, nonblock=nonblock)


async def test_send_checks_run_in_the_kernels_order() -> None:
    queue = make_queue(maxmsg=1)
    read_only = descriptor(queue, writable=False, nonblock=True)
    with pytest.raises(errors.InvalidArgument):  # priority before EBADF
        await read_only.send(b"x" * 99, 32768)
    with pytest.raises(errors.BadDescriptor):  # EBADF before EMSGSIZE
        await read_only.send(b"x" * 99, 0)
    writer = descriptor(queue, nonblock=True)
    await writer.send(b"x", 0)
    with pytest.raises(errors.MessageTooLong):  # EMSGSIZE before EAGAIN
        await writer.send(b"x" * 17, 0)
    with pytest.raises(errors.WouldBlock):
        await writer.send(b"x", 0)


async def test_receive_checks_run_in_the_kernels_order() -> None:
    queue = make_queue()
    write_only = descriptor(queue, readable=False, nonblock=True)
    with pytest.raises(errors.BadDescriptor):
        await write_only.receive(1)
    reader = descriptor(queue, nonblock=True)
    with pytest.raises(errors.MessageTooLong):  # even on an empty queue
        await reader.receive(15)
    with pytest.raises(errors.WouldBlock):
        await reader.receive(16)


async def test_blocked_receivers_are_served_in_order_one_message_each() -> None:
    queue = make_queue()
    got: list[tuple[int, bytes]] = []

    async def receiver(number: int) -> None:
        got.append((number, (await descriptor(queue).receive(16)).payload))

    async with trio.open_nursery() as nursery:
        for number in range(3):
            nursery.start_soon(receiver, number)
            await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().receivers_waiting == 3
        for payload in (b"a", b"b", b"c"):
            await descriptor(queue).send(payload, 0)
    # trio resumes woken tasks in any order; what matters is who got which message.
    assert sorted(got) == [(0, b"a"), (1, b"b"), (2, b"c")]
    assert len(queue) == 0  # handed over, never queued twice


async def test_a_receive_admits_a_blocked_sender() -> None:
    queue = make_queue(maxmsg=1)
    await descriptor(queue).send(b"first", 0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(descriptor(queue).send, b"second", 5)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().senders_waiting == 1
        assert (await descriptor(queue).receive(16)).payload == b"first"
    assert [m.payload for m in queue.store] == [b"second"]


async def test_remove_checks_ebadf_then_estale_then_enoent_and_changes_nothing() -> None:
    queue = make_queue(maxmsg=3)
    for payload in (b"a", b"b"):
        await descriptor(queue).send(payload, 0)
    generation = queue.generation
    write_only = descriptor(queue, readable=False)
    with pytest.raises(errors.BadDescriptor):  # even with a stale generation and index
        await write_only.remove(9, generation - 1)
    with pytest.raises(errors.QueueChanged) as stale:  # before the index is looked at
        await descriptor(queue).remove(9, generation - 1)
    assert stale.value.errno == errno.ESTALE
    with pytest.raises(errors.NoSuchMessage) as missing:
        await descriptor(queue).remove(2, generation)
    assert missing.value.errno == errno.ENOENT
    assert [m.payload for m in queue.store] == [b"a", b"b"]
    assert queue.generation == generation


async def test_remove_admits_a_blocked_sender_and_wakes_watchers() -> None:
    queue = make_queue(maxmsg=2)
    await descriptor(queue).send(b"keep", 1)
    await descriptor(queue).send(b"poison", 1)
    woken: list[int] = []
    queue.add_watcher(lambda: woken.append(queue.generation))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(descriptor(queue).send, b"waited", 0)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().senders_waiting == 1
        before = queue.generation
        removed, after = await descriptor(queue).remove(1, before)
    assert removed.payload == b"poison" and removed.priority == 1
    assert after == before + 1 == queue.generation
    assert woken == [after]
    assert queue.statistics().senders_waiting == 0
    assert [m.payload for m in queue.store] == [b"keep", b"waited"]


async def test_deadlines_give_etimedout(autojump_clock: trio.testing.MockClock) -> None:
    queue = make_queue(maxmsg=1)
    start = trio.current_time()
    with pytest.raises(errors.TimedOut) as timed_out:
        await descriptor(queue).receive(16, deadline=start + 5)
    assert timed_out.value.errno == errno.ETIMEDOUT
    assert trio.current_time() == pytest.approx(start + 5)
    assert queue.statistics().receivers_waiting == 0
    await descriptor(queue).send(b"x", 0, deadline=start)  # room: the deadline is moot
    with pytest.raises(errors.TimedOut):
        await descriptor(queue).send(b"y", 0, deadline=trio.current_time())


async def test_cancelled_receiver_leaves_the_message_in_the_queue() -> None:
    queue = make_queue()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(descriptor(queue).receive, 16)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    assert queue.statistics().receivers_waiting == 0
    await descriptor(queue).send(b"kept", 0)
    assert [m.payload for m in queue.store] == [b"kept"]


async def test_a_receiver_cancelled_after_the_hand_off_still_gets_it() -> None:
    queue = make_queue()
    results: list[bytes] = []

    async def receive_then_record() -> None:
        message = await descriptor(queue).receive(16)
        results.append(message.payload)  # no checkpoint in between

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            nursery.start_soon(receive_then_record)
            await trio.testing.wait_all_tasks_blocked()
        queue.send_nowait(b"handed", 0)
        scope.cancel()  # too late: the waiter was rescheduled with the message
    assert results == [b"handed"]
    assert len(queue) == 0


def test_status_line_format() -> None:
    queue = make_queue()
    queue.store.push(b"12345", 0)
    assert queue.status_line() == b"QSIZE:5          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"
    assert len(queue.status_line()) == 60


def test_setattr_only_o_nonblock() -> None:
    handle = descriptor(make_queue())
    handle.set_flags(os.O_NONBLOCK)
    assert handle.attributes() == (os.O_NONBLOCK, 2, 16, 0)
    with pytest.raises(errors.InvalidArgument):
        handle.set_flags(os.O_NONBLOCK | 1)
    assert handle.nonblock


def test_namespace_limits_and_unlink_lifetime() -> None:
    namespace = Namespace(Limits(queues_max=1))
    queue = namespace.create("a", mode=0o600, uid=0, gid=0)
    assert (queue.maxmsg, queue.msgsize) == (10, 8192)
    with pytest.raises(errors.QueueExists):
        namespace.create("a", mode=0o600, uid=0, gid=0, exclusive=True)
    assert namespace.create("a", mode=0, uid=0, gid=0, maxmsg=-5, msgsize=-5) is queue
    with pytest.raises(errors.TooManyQueues):  # ENOSPC comes before EINVAL
        namespace.create("b", mode=0o600, uid=0, gid=0, maxmsg=-1, msgsize=-1)
    namespace.acquire(queue)
    namespace.unlink("a")
    with pytest.raises(errors.NoSuchQueue):
        namespace.lookup("a")
    assert namespace.is_alive(queue) and namespace.live == 1
    namespace.release(queue)
    assert not namespace.is_alive(queue) and namespace.live == 0
    namespace.create("b", mode=0o600, uid=0, gid=0)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", errors.NoSuchQueue),
        (".", errors.PermissionDenied),
        ("..", errors.PermissionDenied),
        ("a/b", errors.PermissionDenied),
        ("x" * 256, errors.NameTooLong),
    ],
)
def test_bad_names(name: str, error: type[errors.MqfsError]) -> None:
    with pytest.raises(error):
        check_name(name)
    check_name("x" * 255)


def test_limits_are_validated() -> None:
    with pytest.raises(errors.InvalidArgument):
        Limits(msg_max=65537)
    with pytest.raises(errors.InvalidArgument):
        Limits(msgsize_max=16 * 1024 * 1024 + 1)
    Limits(msg_max=65536, msgsize_max=16 * 1024 * 1024)
    assert Limits(msg_default=50, msg_max=10).default_attributes() == (10, 8192)
    assert math.isinf(float("inf"))


# -- every waiter goes on every exit path (issue: no user can exhaust the daemon) -------
class _User:
    def __init__(self, uid: int) -> None:
        self.uid = uid
        self.pid = 1000 + uid


async def test_wait_changed_leaves_no_watcher_behind_on_any_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    queue = make_queue()
    start = queue.generation
    for _ in range(1000):  # deadline passed already, and deadline passing while waiting
        assert await queue.wait_changed(start, trio.current_time()) == start
        assert await queue.wait_changed(start, trio.current_time() + 1) == start
    with trio.move_on_after(5):  # cancelled (a FUSE interrupt)
        await queue.wait_changed(start)
    assert queue._watchers == {}
    async with trio.open_nursery() as nursery:  # woken by a change
        nursery.start_soon(queue.wait_changed, start)
        await trio.testing.wait_all_tasks_blocked()
        assert len(queue._watchers) == 1
        await descriptor(queue).send(b"x", 0)
    assert queue._watchers == {}


async def test_a_watcher_can_be_removed_before_it_fires() -> None:
    queue = make_queue()
    fired: list[int] = []
    key = queue.add_watcher(lambda: fired.append(1))
    queue.remove_watcher(key)
    await descriptor(queue).send(b"x", 0)
    assert fired == [] and queue._watchers == {}


async def test_blocked_callers_are_capped_per_user_and_counted_down_on_every_exit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    namespace = Namespace(Limits(blocked_max=2))
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    alice, bob = _User(1), _User(2)
    async with trio.open_nursery() as nursery:
        for _ in range(2):
            nursery.start_soon(descriptor(queue).receive, 8192, math.inf, alice)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(errors.WouldBlock, match="blocked_max"):
            await descriptor(queue).receive(8192, math.inf, alice)
        with pytest.raises(errors.TimedOut):  # bob is not held back by alice's callers
            await descriptor(queue).receive(8192, trio.current_time() + 1, bob)
        generation = queue.generation
        assert await queue.wait_changed(generation, trio.current_time() + 1, bob) == generation
        assert namespace.blocked.by_uid == {alice.uid: 2}
        nursery.cancel_scope.cancel()
    assert namespace.blocked.by_uid == {}


async def test_close_fails_every_blocked_caller_with_enotconn() -> None:
    namespace = Namespace(Limits())
    queue = namespace.create("q", mode=0o600, uid=0, gid=0, maxmsg=1, msgsize=16)
    empty = namespace.create("e", mode=0o600, uid=0, gid=0)
    await descriptor(queue).send(b"full", 0)
    outcomes: list[int] = []

    async def call(operation: object) -> None:
        try:
            await operation()  # type: ignore[operator]
        except errors.MqfsError as exc:
            outcomes.append(exc.errno)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, lambda: descriptor(queue).send(b"more", 0))
        nursery.start_soon(call, lambda: descriptor(empty).receive(8192))
        nursery.start_soon(call, lambda: empty.wait_changed(empty.generation))
        await trio.testing.wait_all_tasks_blocked()
        namespace.close()
    assert outcomes == [errno.ENOTCONN] * 3
    assert len(queue) == 1  # the blocked sender's message was not queued
    with pytest.raises(errors.MqfsError):  # and a later wait fails at once
        await descriptor(empty).receive(8192)


def test_destroyed_queues_leave_nothing_behind() -> None:
    namespace = Namespace(Limits())
    for _ in range(100):
        queue = namespace.create("q", mode=0o600, uid=7, gid=0)
        namespace.acquire(queue)
        namespace.unlink("q")
        namespace.release(queue)
    assert namespace.by_qid == {} and namespace.charged == {} and namespace.queues == {}


def test_an_empty_queue_costs_under_2_kib() -> None:
    import tracemalloc

    namespace = Namespace(Limits(queues_max=100_000))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for number in range(2000):
            namespace.create(f"q{number}", mode=0o600, uid=0, gid=0)
        per_queue = (tracemalloc.get_traced_memory()[0] - before) / 2000
    finally:
        tracemalloc.stop()
    assert per_queue < 2048, f"{per_queue:.0f} bytes per empty queue"


def test_cap_sys_resource_passes_queues_max_and_msg_max_but_not_the_hard_limits() -> None:
    namespace = Namespace(Limits(queues_max=1))
    namespace.create("a", mode=0o600, uid=1, gid=1)
    with pytest.raises(errors.TooManyQueues):
        namespace.create("b", mode=0o600, uid=1, gid=1)
    namespace.create("b", mode=0o600, uid=0, gid=0, privileged=True)  # root is not locked out
    roomy = Namespace(Limits())
    with pytest.raises(errors.InvalidArgument):
        roomy.create("c", mode=0o600, uid=1, gid=1, maxmsg=11, msgsize=64, privileged=False)
    namespace.create("c", mode=0o600, uid=0, gid=0, maxmsg=11, msgsize=64, privileged=True)
    with pytest.raises(errors.InvalidArgument):
        namespace.create("d", mode=0o600, uid=0, gid=0, maxmsg=65537, msgsize=64, privileged=True)
    with pytest.raises(errors.OverQuota):  # RLIMIT_MSGQUEUE: the kernel does not waive it
        namespace.create("e", mode=0o600, uid=0, gid=0, byte_limit=10, privileged=True)


async def test_a_wait_refused_by_blocked_max_registers_no_watcher() -> None:
    namespace = Namespace(Limits(blocked_max=1))
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    alice = _User(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.wait_changed, queue.generation, math.inf, alice)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(errors.WouldBlock):
            await queue.wait_changed(queue.generation, math.inf, alice)
        assert len(queue._watchers) == 1  # only the admitted one
        nursery.cancel_scope.cancel()
    assert queue._watchers == {} and namespace.blocked.by_uid == {}


def test_processes_reads_its_own_status() -> None:
    from mqfs.server import processes

    assert processes.tgid_of(os.getpid()) == os.getpid()
    assert processes.tgid_of(-5) == -5
    status = Path("/proc/self/status").read_text()
    effective = int(status.split("CapEff:")[1].split()[0], 16)
    assert processes.has_sys_resource(os.getpid()) == bool(effective >> 24 & 1)
    assert processes.has_sys_resource(-5) is False


# -- what operators see: who is blocked in what, the last change, usage (issue 16) -------
async def test_a_descriptor_records_each_parked_caller_with_its_direction() -> None:
    queue = make_queue(maxmsg=1)
    shared = descriptor(queue)  # one O_RDWR descriptor, several threads
    alice, bob = _User(1), _User(2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.receive, 16, math.inf, alice)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(shared.receive, 16, math.inf, bob)
        await trio.testing.wait_all_tasks_blocked()
        assert [(b.direction, b.tid) for b in shared.blocked] == [
            ("receive", alice.pid),
            ("receive", bob.pid),
        ]
        first, second = shared.blocked
        assert first.since_ns <= second.since_ns and shared.oldest_blocked() is first
        assert shared.waiting == 2 and shared.blocked_counts == {"receive": 2}
        await descriptor(queue).send(b"x", 0)  # served: alice (first) leaves the list
        await trio.testing.wait_all_tasks_blocked()
        assert [b.tid for b in shared.blocked] == [bob.pid]
        nursery.cancel_scope.cancel()
    assert shared.blocked == {} and shared.blocked_counts == {}
    await shared.send(b"full", 0)  # a send that does not wait is not recorded
    assert shared.blocked == {} and shared.blocked_counts == {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(shared.send, b"more", 0, math.inf, alice)
        nursery.start_soon(shared.wait_changed, queue.generation, math.inf, bob)
        await trio.testing.wait_all_tasks_blocked()
        assert shared.blocked_counts == {"send": 1, "wait": 1}
        nursery.cancel_scope.cancel()
    assert shared.blocked == {} and shared.blocked_counts == {}


async def test_the_last_sender_receiver_and_change_are_recorded() -> None:
    queue = make_queue(maxmsg=1)
    alice, bob, carol = _User(1), _User(2), _User(3)
    await descriptor(queue).send(b"a", 0, sender=alice)
    assert (queue.last_send_tid, queue.last_receive_tid) == (alice.pid, 0)
    assert (queue.change_kind, queue.change_tid) == ("send", alice.pid)
    async with trio.open_nursery() as nursery:  # carol waits; bob's receive admits her
        nursery.start_soon(descriptor(queue).send, b"c", 0, math.inf, carol)
        await trio.testing.wait_all_tasks_blocked()
        await descriptor(queue).receive(16, caller=bob)
    assert (queue.last_send_tid, queue.last_receive_tid) == (carol.pid, bob.pid)
    assert (queue.change_kind, queue.change_tid) == ("receive", bob.pid)
    await descriptor(queue).receive(16, caller=bob)
    async with trio.open_nursery() as nursery:  # a hand-off: alice waits, carol sends
        nursery.start_soon(descriptor(queue).receive, 16, math.inf, alice)
        await trio.testing.wait_all_tasks_blocked()
        before = queue.generation
        await descriptor(queue).send(b"h", 0, sender=carol)
    assert (queue.last_send_tid, queue.last_receive_tid) == (carol.pid, alice.pid)
    assert queue.generation == before + 1
    await descriptor(queue).send(b"r", 0, sender=carol)
    queue.remove(0, queue.generation, bob)  # rm-msg: not a receive
    assert (queue.change_kind, queue.change_tid, queue.last_receive_tid) == (
        "remove",
        bob.pid,
        alice.pid,
    )


async def test_unlink_and_a_mode_change_wake_wait_callers_but_not_pollers() -> None:
    namespace = Namespace(Limits())
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    alice = _User(1)
    polled: list[int] = []
    poll_key = queue.add_watcher(lambda: polled.append(1))
    results: list[int] = []

    async def wait() -> None:
        results.append(await queue.wait_changed(queue.generation))

    class Fields:
        update_mode, update_uid, update_gid, update_atime, update_mtime = (True,) + (False,) * 4

    class Attr:
        st_mode = 0o640

    with trio.fail_after(5):  # a wait nothing wakes fails here, not hangs
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            queue.set_attributes(Attr(), Fields(), alice)
    assert results == [queue.generation] and queue.change_kind == "attributes"
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            await trio.testing.wait_all_tasks_blocked()
            namespace.unlink("q", alice)
    assert results[-1] == queue.generation and queue.unlinked
    assert (queue.change_kind, queue.change_tid) == ("unlink", alice.pid)
    assert polled == [] and list(queue._watchers) == [poll_key]  # readiness did not change
    queue.remove_watcher(poll_key)


def test_usage_counts_queues_and_bytes_per_user_until_destroyed() -> None:
    namespace = Namespace(Limits())
    one = namespace.create("a", mode=0o600, uid=7, gid=0, maxmsg=2, msgsize=16)
    namespace.create("b", mode=0o600, uid=7, gid=0, maxmsg=2, msgsize=16)
    namespace.create("c", mode=0o600, uid=8, gid=0, maxmsg=1, msgsize=128)
    charge = memory_charge(2, 16)
    assert namespace.usage() == {7: (2, 2 * charge), 8: (1, memory_charge(1, 128))}
    namespace.acquire(one)
    namespace.unlink("a")  # still open: still charged, as the kernel
    assert namespace.usage()[7] == (2, 2 * charge)
    namespace.release(one)
    assert namespace.usage()[7] == (1, charge)

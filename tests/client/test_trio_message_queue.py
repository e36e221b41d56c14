"""mqfs.client.api.AsyncMessageQueue under trio, against a real mqfs mount (and the kernel's queues).

Ordering is made deterministic with ``trio.testing.wait_all_tasks_blocked`` rather than
sleeps; it also proves that a waiting call is parked in trio (it would never return if a
task busy-polled the queue).
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from mqfs.client.api import (
    O_CREAT,
    O_CREX,
    O_NONBLOCK,
    AsyncMessageQueue,
    BusyError,
    ExistentialError,
    MessageQueue,
    MessageTooLong,
    NoSuchMessage,
    PermissionsError,
    QueueChanged,
)
from mqfs.client.backends import KernelBackend, MqfsBackend
from tests.support.kernel import why_kernel_mqueue_unusable


@pytest.fixture
async def queue(backend: MqfsBackend) -> AsyncIterator[AsyncMessageQueue]:
    async with AsyncMessageQueue(
        "/q", O_CREX, max_messages=2, max_message_size=64, backend=backend
    ) as q:
        yield q


async def test_send_then_receive(queue: AsyncMessageQueue) -> None:
    await queue.send(b"one", priority=1)
    await queue.send("two", priority=2)
    assert queue.current_messages == 2
    assert (queue.max_messages, queue.max_message_size, queue.name) == (2, 64, "/q")
    assert await queue.receive() == (b"two", 2)
    assert await queue.receive() == (b"one", 1)
    assert queue.current_messages == 0


async def test_receive_waits_for_a_send_from_another_task(queue: AsyncMessageQueue) -> None:
    received: list[tuple[bytes, int]] = []

    async def receiver() -> None:
        received.append(await queue.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        await queue.send(b"wake", priority=3)
    assert received == [(b"wake", 3)]


async def test_receive_waits_for_a_send_from_a_worker_thread(
    queue: AsyncMessageQueue, backend: MqfsBackend
) -> None:
    # A plain thread, joined at the end: trio.to_thread's cached workers outlive the test,
    # and a stray thread would catch process-directed signals other tests sigwait() for.
    def send_from_thread() -> None:
        with MessageQueue("/q", read=False, backend=backend) as writer:
            writer.send(b"from a thread", priority=5)

    sender = threading.Thread(target=send_from_thread)
    received: list[tuple[bytes, int]] = []

    async def receiver() -> None:
        received.append(await queue.receive())

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            sender.start()
    finally:
        sender.join(timeout=30)
    assert received == [(b"from a thread", 5)]


async def test_send_waits_for_room(queue: AsyncMessageQueue) -> None:
    await queue.send(b"1")
    await queue.send(b"2")
    done = trio.Event()

    async def sender() -> None:
        await queue.send(b"3")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        assert await queue.receive() == (b"1", 0)
        await done.wait()
    assert queue.sync.peek_all() == [(b"2", 0), (b"3", 0)]


async def test_cancelled_receive_loses_nothing(queue: AsyncMessageQueue) -> None:
    cancelled = trio.CancelScope()
    received: list[tuple[bytes, int]] = []

    async def receiver() -> None:
        with cancelled:
            received.append(await queue.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()
    assert cancelled.cancelled_caught
    assert received == []
    await queue.send(b"after the cancel")
    assert queue.current_messages == 1
    assert await queue.receive() == (b"after the cancel", 0)


async def test_cancelled_send_sends_nothing(queue: AsyncMessageQueue) -> None:
    await queue.send(b"1")
    await queue.send(b"2")
    with trio.move_on_after(0.05) as scope:
        await queue.send(b"never")
    assert scope.cancelled_caught
    assert [await queue.receive() for _ in range(2)] == [(b"1", 0), (b"2", 0)]
    assert queue.current_messages == 0


async def test_an_already_cancelled_scope_does_not_touch_the_queue(
    queue: AsyncMessageQueue,
) -> None:
    await queue.send(b"stays")
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.receive()
    assert scope.cancelled_caught
    assert queue.current_messages == 1


async def test_timeouts_are_busy_errors(queue: AsyncMessageQueue) -> None:
    with pytest.raises(BusyError) as timed_out:
        await queue.receive(timeout=0.05)
    assert timed_out.value.errno == errno.ETIMEDOUT
    assert str(timed_out.value) == "timed out: queue '/q' is still empty (ETIMEDOUT)"
    with pytest.raises(BusyError) as try_once:
        await queue.receive(timeout=0)
    assert try_once.value.errno == errno.EAGAIN
    await queue.send(b"1", timeout=0)
    await queue.send(b"2", timeout=1)
    with pytest.raises(BusyError) as full:
        await queue.send(b"3", timeout=0.05)
    assert full.value.errno == errno.ETIMEDOUT
    assert "still full" in str(full.value)
    assert await queue.receive(timeout=0) == (b"1", 0)
    with pytest.raises(ValueError, match="timeout"):
        await queue.receive(timeout=-1)


async def test_trio_fail_after_works_too(queue: AsyncMessageQueue) -> None:
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0.05):
            await queue.receive()


async def test_block_false_fails_at_once(queue: AsyncMessageQueue) -> None:
    queue.block = False
    with pytest.raises(BusyError) as empty:
        await queue.receive()
    assert empty.value.errno == errno.EAGAIN
    await queue.send(b"1")
    await queue.send(b"2")
    with pytest.raises(BusyError) as full:
        await queue.send(b"3")
    assert full.value.errno == errno.EAGAIN
    assert str(full.value) == "queue '/q' is full (EAGAIN)"


async def test_o_nonblock_in_flags_means_block_false(backend: MqfsBackend) -> None:
    with AsyncMessageQueue("/nb", O_CREAT | O_NONBLOCK, backend=backend) as q:
        assert q.block is False
        with pytest.raises(BusyError):
            await q.receive()


async def test_the_descriptor_is_non_blocking(queue: AsyncMessageQueue) -> None:
    assert queue.sync.block is False  # mq_getattr's O_NONBLOCK
    assert queue.block is True  # ...while the async calls wait


async def test_remove_never_waits_and_admits_a_waiting_sender(queue: AsyncMessageQueue) -> None:
    await queue.send(b"poison", priority=1)
    await queue.send(b"fine", priority=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.send, b"was waiting")  # the queue holds 2: it waits
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().tasks_waiting_send == 1
        removed = await queue.remove(0, queue.generation)
        assert (removed.head, removed.priority) == (b"poison", 1)
    assert await queue.peek_all() == [(b"fine", 1), (b"was waiting", 0)]
    with pytest.raises(QueueChanged):
        await queue.remove(0, removed.generation)  # the admitted send changed it again


async def test_peek_never_waits_and_does_not_consume(queue: AsyncMessageQueue) -> None:
    with pytest.raises(BusyError) as empty:
        await queue.peek()  # as the synchronous peek (and MQ_PEEK): EAGAIN at once
    assert empty.value.errno == errno.EAGAIN
    await queue.send(b"look", priority=2)
    await queue.send(b"second")
    assert await queue.peek() == (b"look", 2)
    assert await queue.peek(1) == (b"second", 0)
    assert await queue.peek_all() == [(b"look", 2), (b"second", 0)]
    assert queue.current_messages == 2
    await queue.receive()
    with pytest.raises(NoSuchMessage):
        await queue.peek(1)  # past the end of a non-empty queue


async def test_trio_conventions(queue: AsyncMessageQueue) -> None:
    assert isinstance(queue, trio.abc.AsyncResource)
    with pytest.raises(trio.WouldBlock):
        queue.receive_nowait()
    queue.send_nowait(b"a", 1)
    assert queue.receive_nowait() == (b"a", 1)
    received: list[tuple[bytes, int]] = []

    async def consume() -> None:
        async for message in queue:
            received.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().tasks_waiting_receive == 1
        await queue.send(b"b")
        await queue.send(b"c")
        # On -o fastpath a send wakes the daemon, which then wakes the waiting task's
        # poll: a moment later rather than before send returns.
        with trio.fail_after(10):
            while queue.statistics().current_messages:
                await trio.testing.wait_all_tasks_blocked(cushion=0.01)
        await queue.aclose()  # the waiting iteration ends
    assert received == [(b"b", 0), (b"c", 0)]
    with pytest.raises(trio.ClosedResourceError):
        await queue.send(b"late")
    with pytest.raises(trio.ClosedResourceError):
        queue.receive_nowait()


async def test_errors_are_the_sync_ones(queue: AsyncMessageQueue, backend: MqfsBackend) -> None:
    with pytest.raises(MessageTooLong):
        await queue.send(b"x" * 65)
    with pytest.raises(ExistentialError) as missing:
        AsyncMessageQueue("/missing", backend=backend)
    assert missing.value.errno == errno.ENOENT
    with (
        AsyncMessageQueue("/q", read=False, backend=backend) as writer,
        pytest.raises(PermissionsError),
    ):
        await writer.receive()


async def test_close_wakes_a_waiting_task(backend: MqfsBackend) -> None:
    q = AsyncMessageQueue("/c", O_CREAT, backend=backend)
    outcome: list[BaseException] = []

    async def receiver() -> None:
        try:
            await q.receive()
        except trio.ClosedResourceError as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        q.close()
    assert len(outcome) == 1
    assert q.mqd == -1
    q.close()
    with pytest.raises(trio.ClosedResourceError):  # trio's answer for a closed resource
        await q.receive()
    q.unlink()


async def test_many_receivers_each_get_one_message(queue: AsyncMessageQueue) -> None:
    received: list[bytes] = []

    async def receiver() -> None:
        message, _ = await queue.receive()
        received.append(message)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        for index in range(5):
            await queue.send(f"m{index}")
    assert sorted(received) == [f"m{index}".encode() for index in range(5)]


async def test_repr_and_sync(queue: AsyncMessageQueue) -> None:
    assert "AsyncMessageQueue" in repr(queue)
    assert queue.fileno() == queue.mqd == queue.sync.mqd
    assert queue.backend is queue.sync.backend


@pytest.mark.kernel
async def test_trio_flavour_on_the_kernel_backend() -> None:
    reason = why_kernel_mqueue_unusable()
    if reason:
        pytest.skip(reason)
    kernel = KernelBackend()
    name = f"/mqfs-client-test-{os.getpid()}-trio"
    async with AsyncMessageQueue(name, O_CREX, max_messages=1, backend=kernel) as q:
        try:
            received: list[tuple[bytes, int]] = []

            async def receiver() -> None:
                received.append(await q.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                await q.send(b"kernel", priority=4)
            assert received == [(b"kernel", 4)]
            await q.send(b"fills it")
            with trio.move_on_after(0.05) as scope:
                await q.send(b"no room")
            assert scope.cancelled_caught
            with pytest.raises(BusyError) as timed_out:
                await q.send(b"no room", timeout=0.05)
            assert timed_out.value.errno == errno.ETIMEDOUT
            assert await q.receive(timeout=0) == (b"fills it", 0)
        finally:
            q.unlink()

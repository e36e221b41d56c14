"""send_many/receive_many of MessageQueue and AsyncMessageQueue: equal to one-by-one calls,
on mqfs (framed I/O) and on the kernel's queues (one call each)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio
import trio.testing

from mqfs.client.api import (
    O_CREX,
    AsyncMessageQueue,
    BusyError,
    InvalidArgument,
    MessageQueue,
    MessageTooLong,
)
from mqfs.client.backends import Backend, KernelBackend, MqfsBackend
from tests.support.kernel import why_kernel_mqueue_unusable
from tests.support.mounts import mounted, variant_params

MESSAGES = [b"zero", ("high", 9), (b"low", 1), (b"", 9), (bytearray(b"mid"), 5)]
EXPECTED = [(b"high", 9), (b"", 9), (b"mid", 5), (b"low", 1), (b"zero", 0)]


@pytest.fixture(params=variant_params("kernel"))
def any_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """mqfs on each mount variant, then the kernel's queues."""
    if request.param == "kernel":
        reason = why_kernel_mqueue_unusable()
        if reason:
            pytest.skip(reason)
        yield KernelBackend()
        return
    with mounted(request.param) as mount:
        yield MqfsBackend(mount.path)


def test_send_many_and_receive_many_equal_one_by_one(any_backend: Backend) -> None:
    with MessageQueue(None, O_CREX, max_messages=8, max_message_size=64, backend=any_backend) as q:
        try:
            assert q.send_many(MESSAGES) == 5
            assert q.peek_all() == EXPECTED if isinstance(any_backend, MqfsBackend) else True
            assert q.receive_many(2) == EXPECTED[:2]
            assert q.receive_many() == EXPECTED[2:]
            for message in MESSAGES:
                if isinstance(message, tuple):
                    q.send(message[0], priority=message[1])
                else:
                    q.send(message)
            assert [q.receive() for _ in MESSAGES] == EXPECTED
        finally:
            q.unlink()


def test_nonblocking_send_many_sends_what_fits(any_backend: Backend) -> None:
    with MessageQueue(None, O_CREX, max_messages=3, max_message_size=64, backend=any_backend) as q:
        try:
            q.block = False
            assert q.send_many([b"a", b"b", b"c", b"d"]) == 3
            with pytest.raises(BusyError):
                q.send_many([b"e"])
            assert q.receive_many() == [(b"a", 0), (b"b", 0), (b"c", 0)]
            with pytest.raises(BusyError):
                q.receive_many()
        finally:
            q.unlink()


def test_a_bad_message_sends_nothing(backend: MqfsBackend) -> None:
    with MessageQueue("/q", O_CREX, max_messages=8, max_message_size=64, backend=backend) as q:
        with pytest.raises(MessageTooLong):
            q.send_many([b"fine", b"x" * 65])
        with pytest.raises(InvalidArgument):
            q.send_many([b"fine", (b"bad", 32768)])
        assert q.current_messages == 0
        with pytest.raises(ValueError):
            q.receive_many(0)


def test_many_batches_for_more_than_one_request(mount_factory: object) -> None:
    mount = mount_factory("msg_max=65536", "ignore_rlimit")  # type: ignore[operator]
    messages = [(b"%06d" % i * 10, i % 7) for i in range(40_000)]  # 2.7 MB of frames
    with MessageQueue(
        "/big", O_CREX, max_messages=65536, max_message_size=64, mount=mount.path
    ) as q:
        assert q.send_many(messages) == len(messages)
        expected = sorted(messages, key=lambda m: -m[1])  # stable: FIFO within a priority
        assert q.peek_all() == expected
        received = []
        while len(received) < len(messages):
            received.extend(q.receive_many())
        assert received == expected


async def test_async_send_many_waits_for_room_and_receive_many(backend: MqfsBackend) -> None:
    async with AsyncMessageQueue(
        "/q", O_CREX, max_messages=2, max_message_size=64, backend=backend
    ) as q:
        result: list[int] = []
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                result.append(await q.send_many([b"a", b"b", b"c", (b"d", 3)]))

            nursery.start_soon(send)
            await trio.testing.wait_all_tasks_blocked()
            assert q.statistics().tasks_waiting_send == 1
            assert await q.receive_many() == [(b"a", 0), (b"b", 0)]
        assert result == [4]
        assert await q.receive_many() == [(b"d", 3), (b"c", 0)]
        async with trio.open_nursery() as nursery:
            got: list[list[tuple[bytes, int]]] = []

            async def receive() -> None:
                got.append(await q.receive_many())

            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            q.send_nowait(b"late")
        assert got == [[(b"late", 0)]]

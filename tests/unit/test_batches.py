"""Batch operations (framed I/O) against the same operations one by one: the store's
push_run/pop_front, the queue's send_many/receive_many, the wire's frame codec."""

from __future__ import annotations

import itertools
import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from mqfs import errors, wire
from mqfs.posix import SIGEV_SIGNAL
from mqfs.server.queue import Descriptor, Limits, Namespace, Notification, Queue, Run
from mqfs.server.store import MessageStore

MESSAGES = st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 5)), max_size=40)


def runs_of(messages: list[tuple[bytes, int]]) -> list[Run]:
    return wire.decode_frames(wire.encode_frames(messages))


def flat(runs: list[Run]) -> list[tuple[bytes, int]]:
    return [(payload, priority) for priority, payloads in runs for payload in payloads]


@settings(max_examples=300, deadline=None)
@given(before=MESSAGES, batch=MESSAGES, pops=st.integers(0, 90))
def test_push_run_and_pop_front_equal_push_and_pop(
    before: list[tuple[bytes, int]], batch: list[tuple[bytes, int]], pops: int
) -> None:
    one, many = MessageStore(prio_max=8), MessageStore(prio_max=8)
    for payload, priority in before:
        one.push(payload, priority)
        many.push(payload, priority)
    for payload, priority in batch:
        one.push(payload, priority)
    for priority, payloads in runs_of(batch):
        many.push_run(payloads, priority)
    many.check_invariants()
    assert list(many) == list(one)
    count = min(pops, len(one))
    expected = [one.pop() for _ in range(count)]
    popped = flat(many.pop_front(count))
    assert popped == [(m.payload, m.priority) for m in expected]
    many.check_invariants()
    assert list(many) == list(one)
    assert many.bytes_queued == one.bytes_queued


def test_pop_front_past_the_end_changes_nothing() -> None:
    store = MessageStore()
    store.push_run([b"a", b"b"], 3)
    with pytest.raises(errors.WouldBlock):
        store.pop_front(3)
    assert len(store) == 2


def test_push_run_checks_the_priority() -> None:
    store = MessageStore(prio_max=8)
    with pytest.raises(errors.InvalidArgument):
        store.push_run([b"a"], 8)
    assert not store


@given(MESSAGES)
def test_frames_round_trip(messages: list[tuple[bytes, int]]) -> None:
    buffer = wire.encode_frames(messages)
    assert len(buffer) == sum(wire.frame_size(len(p)) for p, _ in messages)
    assert len(buffer) % 8 == 0
    assert flat(wire.decode_frames(buffer)) == messages
    reply = wire.encode_reply(7, wire.decode_frames(buffer), True)
    assert wire.decode_reply(reply) == (7, True, messages)
    assert len(reply) == wire.FRAMES_HEADER_SIZE + sum(
        wire.record_size(len(p)) for p, _ in messages
    )


@given(
    length=st.integers(0, 20),
    priorities=st.lists(st.integers(0, 3), min_size=1, max_size=30),
    data=st.data(),
)
def test_frames_of_one_size_round_trip(
    length: int, priorities: list[int], data: st.DataObject
) -> None:
    """Messages of one size take the one-call path of both codecs: the same result."""
    payloads = [data.draw(st.binary(min_size=length, max_size=length)) for _ in priorities]
    messages = list(zip(payloads, priorities, strict=True))
    buffer = wire.encode_frames(messages)
    assert flat(wire.decode_frames(buffer)) == messages
    assert wire.decode_reply(wire.encode_reply(3, runs_of(messages), False))[2] == messages
    if length & 7:  # nonzero padding is refused on this path too
        spoiled = bytearray(buffer)
        spoiled[-1] = 1
        with pytest.raises(wire.Malformed):
            wire.decode_frames(spoiled)


@pytest.mark.parametrize(
    "reply",
    [
        b"\0" * 15,  # a partial header
        wire.encode_reply(1, [(0, [b"abc"])], False)[:-1],  # a payload cut
        wire.encode_reply(1, [(0, [b"abc"])], False) + b"x",  # bytes after the payloads
        wire.encode_reply(1, [(0, [b"abc"])], False)[:20],  # a record cut
    ],
)
def test_malformed_replies_are_refused(reply: bytes) -> None:
    with pytest.raises(wire.Malformed):
        wire.decode_reply(reply)


@pytest.mark.parametrize(
    "buffer",
    [
        b"\x01",  # a partial header
        wire.encode_frames([(b"abc", 1)])[:-1],  # cut padding
        wire.encode_frames([(b"abc", 1)])[:10],  # cut payload
        wire.encode_frames([(b"abc", 1)])[:-1] + b"\x01",  # nonzero padding
        wire.encode_frames([(b"abcdefgh", 1)]) + b"\0" * 4,  # trailing bytes
    ],
)
def test_malformed_frames_are_refused(buffer: bytes) -> None:
    with pytest.raises(wire.Malformed):
        wire.decode_frames(buffer)


def test_peek_offsets_are_a_stride_apart() -> None:
    assert wire.framed_peek_index(wire.framed_peek_offset(5)) == 5
    assert wire.framed_peek_index(wire.framed_peek_offset(5) + 4096) is None
    assert wire.reply_room(wire.FRAMES_HEADER_SIZE + wire.record_size(100)) == 100
    assert wire.reply_room(wire.FRAMES_HEADER_SIZE + 7) == -1


def make_queue(maxmsg: int = 4, msgsize: int = 16) -> Queue:
    return Namespace(Limits(msg_max=100)).create(
        "q", mode=0o600, uid=0, gid=0, maxmsg=maxmsg, msgsize=msgsize
    )


def descriptor(queue: Queue, *, nonblock: bool = False, **access: bool) -> Descriptor:
    return Descriptor(
        queue,
        readable=access.get("readable", True),
        writable=access.get("writable", True),
        nonblock=nonblock,
    )


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.tuples(st.binary(max_size=16), st.integers(0, 5)), max_size=6),
    batch=st.lists(st.tuples(st.binary(max_size=16), st.integers(0, 5)), max_size=12),
    capacity=st.integers(0, 200),
)
def test_nonblocking_batches_equal_one_by_one_calls(
    before: list[tuple[bytes, int]], batch: list[tuple[bytes, int]], capacity: int
) -> None:
    async def main() -> None:
        one, many = make_queue(maxmsg=8), make_queue(maxmsg=8)
        for queue in (one, many):
            for payload, priority in before:
                queue.send_nowait(payload, priority)
        sent = 0
        for payload, priority in batch:
            if one.is_full:
                break
            one.send_nowait(payload, priority)
            sent += 1
        assert many.send_many_nowait(runs_of(batch)) == sent
        assert list(many.store) == list(one.store)
        received = []
        left = capacity
        while one.store and wire.record_size(one.store.head_length) <= left:
            left -= wire.record_size(one.store.head_length)
            message = one.receive_nowait()
            received.append((message.payload, message.priority))
        assert flat(many.receive_many_nowait(capacity, 100)) == received
        assert list(many.store) == list(one.store)
        many.store.check_invariants()

    trio.run(main)


async def test_batch_send_checks_every_message_before_sending_any() -> None:
    queue = make_queue()
    writer = descriptor(queue, nonblock=True)
    with pytest.raises(errors.InvalidArgument):  # a priority past MQ_PRIO_MAX, last
        await writer.send_many([(1, [b"ok"]), (32768, [b"bad"])])
    with pytest.raises(errors.MessageTooLong):
        await writer.send_many([(1, [b"ok"]), (2, [b"x" * 17])])
    with pytest.raises(errors.BadDescriptor):
        await descriptor(queue, writable=False).send_many([(1, [b"x" * 17])])
    assert len(queue) == 0


async def test_nonblocking_batch_send_is_short_then_eagain() -> None:
    queue = make_queue(maxmsg=3)
    writer = descriptor(queue, nonblock=True)
    assert await writer.send_many([(1, [b"a", b"b"]), (2, [b"c", b"d"])]) == 3
    with pytest.raises(errors.WouldBlock):
        await writer.send_many([(1, [b"e"])])
    assert [m.payload for m in queue.store] == [b"c", b"a", b"b"]


async def test_blocking_batch_send_waits_for_each_slot_as_one_by_one_sends() -> None:
    queue = make_queue(maxmsg=2)
    writer = descriptor(queue)
    reader = descriptor(queue, nonblock=True)
    result: list[int] = []
    async with trio.open_nursery() as nursery:

        async def send() -> None:
            result.append(await writer.send_many([(1, [b"a", b"b", b"c"]), (5, [b"d"])]))

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        assert queue.statistics().senders_waiting == 1
        # One batch receive admits the blocked sender per message it takes: c comes in
        # behind b after a goes, as one-by-one receives would see.
        runs = await reader.receive_many(wire.FRAMES_HEADER_SIZE + 3 * wire.record_size(16))
        assert flat(runs) == [(b"a", 1), (b"b", 1), (b"c", 1)]
        await trio.testing.wait_all_tasks_blocked()
        assert flat(await reader.receive_many(4096)) == [(b"d", 5)]
    assert result == [4]
    assert len(queue) == 0


async def test_interrupted_batch_send_returns_what_was_sent() -> None:
    queue = make_queue(maxmsg=2)
    writer = descriptor(queue)
    result: list[int] = []
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def send() -> None:
            with scope:
                result.append(await writer.send_many([(1, [b"a", b"b", b"c"])]))

        nursery.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert result == [2]
    assert queue.statistics().senders_waiting == 0
    assert [m.payload for m in queue.store] == [b"a", b"b"]


async def test_interrupted_before_any_sent_is_cancelled() -> None:
    queue = make_queue(maxmsg=1)
    queue.send_nowait(b"full", 0)
    writer = descriptor(queue)
    with trio.move_on_after(1) as scope:
        await writer.send_many([(1, [b"a"])])
    assert scope.cancelled_caught
    assert len(queue) == 1


async def test_batch_receive_waits_only_for_the_first(autojump_clock: trio.abc.Clock) -> None:
    queue = make_queue()
    reader = descriptor(queue)
    got: list[list[tuple[bytes, int]]] = []
    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            got.append(flat(await reader.receive_many(4096)))

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        queue.send_nowait(b"first", 3)
    assert got == [[(b"first", 3)]]
    nonblocking = descriptor(queue, nonblock=True)
    with pytest.raises(errors.WouldBlock):
        await nonblocking.receive_many(4096)


async def test_batch_receive_needs_room_for_a_frame_of_msgsize() -> None:
    queue = make_queue(msgsize=16)
    queue.send_nowait(b"x", 0)
    reader = descriptor(queue, nonblock=True)
    too_small = wire.FRAMES_HEADER_SIZE + wire.record_size(16) - 1
    with pytest.raises(errors.MessageTooLong):
        await reader.receive_many(too_small)
    with pytest.raises(errors.BadDescriptor):
        await descriptor(queue, readable=False).receive_many(4096)
    assert flat(await reader.receive_many(too_small + 1)) == [(b"x", 0)]


async def test_batch_send_to_waiting_receivers_hands_over_in_order() -> None:
    queue = make_queue()
    got: dict[int, bytes] = {}

    async def receive(number: int) -> None:
        got[number] = (await queue.receive(math.inf)).payload

    async with trio.open_nursery() as nursery:
        for number in range(2):
            nursery.start_soon(receive, number)
            await trio.testing.wait_all_tasks_blocked()
        assert queue.send_many_nowait([(0, [b"a", b"b", b"c"])]) == 3
    assert got == {0: b"a", 1: b"b"}  # the longest-waiting receiver gets the first
    assert [m.payload for m in queue.store] == [b"c"]


def test_a_batch_into_an_empty_queue_fires_the_notification_once() -> None:
    fired: list[int] = []
    namespace = Namespace(Limits(), notifier=lambda registration, _: fired.append(registration.pid))
    queue = namespace.create("q", mode=0o600, uid=0, gid=0, maxmsg=4, msgsize=16)
    queue.register_notification(Notification(pid=42, sigev_notify=SIGEV_SIGNAL, signo=10))
    assert queue.send_many_nowait([(1, [b"a", b"b"]), (2, [b"c"])]) == 3
    assert fired == [42]
    assert queue.notification is None


@settings(max_examples=300, deadline=None)
@given(messages=MESSAGES, index=st.integers(0, 45), capacity=st.integers(0, 300))
def test_count_fitting_equals_adding_up_records(
    messages: list[tuple[bytes, int]], index: int, capacity: int
) -> None:
    queue = make_queue(maxmsg=64)
    for payload, priority in messages:
        queue.send_nowait(payload, priority)
    ordered = list(queue.store)[index:]
    expected = used = 0
    for message in ordered:
        used += wire.record_size(len(message.payload))
        if used > capacity:
            break
        expected += 1
    assert queue.count_fitting(index, capacity, 100) == expected
    assert queue.count_fitting(index, capacity, 2) == min(expected, 2)


@given(
    lengths=st.lists(st.integers(0, 40), max_size=30),
    limit=st.integers(1, 120),
)
def test_frame_batches_cut_where_the_limit_says(lengths: list[int], limit: int) -> None:
    messages = [(bytes(length), 0) for length in lengths]
    batches = list(wire.frame_batches(messages, limit))
    assert [m for batch in batches for m in batch] == messages
    for batch in batches:
        size = len(wire.encode_frames(batch))
        assert size <= limit or len(batch) == 1
    for batch, following in itertools.pairwise(batches):  # each as full as it can be
        assert len(wire.encode_frames([*batch, following[0]])) > limit

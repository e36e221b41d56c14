"""The queue core against the pure-Python store (mqfs.server.store.MessageStore), its model:
every operation's result, error and effect on the generation, and the core's own
invariant check after every step."""

from __future__ import annotations

import ctypes
import errno
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mqfs import errors, fastq
from mqfs.server.store import MessageStore
from tests.support.fastq import contents, new_queue

PRIORITIES = st.sampled_from([0, 1, 2, 7, 32767, 32768, 65535])


class QueueVersusStore(RuleBasedStateMachine):
    queue: fastq.MappedQueue

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="fastq-model-"))
        self.store = MessageStore()
        self.generation = 0

    @initialize(maxmsg=st.integers(1, 8), msgsize=st.integers(0, 64))
    def create(self, maxmsg: int, msgsize: int) -> None:
        self.maxmsg, self.msgsize = maxmsg, msgsize
        self.queue = new_queue(self.directory, maxmsg, msgsize)
        self.generation = self.queue.generation()

    def teardown(self) -> None:
        if hasattr(self, "queue"):
            self.queue.close()
        shutil.rmtree(self.directory)

    def changed(self) -> None:
        generation = self.queue.generation()
        assert generation > self.generation
        self.generation = generation

    def unchanged(self) -> None:
        assert self.queue.generation() == self.generation

    @rule(data=st.data(), priority=PRIORITIES, extra=st.integers(0, 2))
    def send(self, data: st.DataObject, priority: int, extra: int) -> None:
        length = data.draw(st.integers(0, self.msgsize + extra))
        payload = data.draw(st.binary(min_size=length, max_size=length))
        if priority >= fastq.PRIO_MAX:  # the kernel's order: EINVAL, EMSGSIZE, EAGAIN
            expected: type[errors.MqfsError] | None = errors.InvalidArgument
        elif length > self.msgsize:
            expected = errors.MessageTooLong
        elif len(self.store) == self.maxmsg:
            expected = errors.WouldBlock
        else:
            expected = None
        if expected is None:
            self.queue.send(payload, priority, nonblock=True)
            self.store.push(payload, priority)
            self.changed()
        else:
            with pytest.raises(expected):
                self.queue.send(payload, priority, nonblock=True)
            self.unchanged()

    @rule()
    def receive(self) -> None:
        if not self.store:
            with pytest.raises(errors.WouldBlock):
                self.queue.receive(nonblock=True)
            self.unchanged()
            return
        message = self.store.pop()
        assert self.queue.receive(nonblock=True) == (message.payload, message.priority)
        self.changed()

    @rule(size=st.integers(0, 70))
    def receive_if_it_fits(self, size: int) -> None:
        """The framed receive's take-if-it-fits (FASTQ_UPTO): any buffer size."""
        if not self.store:
            with pytest.raises(errors.WouldBlock):
                self.queue.receive_upto(size)
            self.unchanged()
        elif self.store.head_length > size:
            assert self.queue.receive_upto(size) is None
            self.unchanged()
        else:
            message = self.store.pop()
            assert self.queue.receive_upto(size) == (message.payload, message.priority)
            self.changed()

    @precondition(lambda self: self.msgsize > 0)
    @rule(short=st.integers(1, 64))
    def receive_into_a_short_buffer(self, short: int) -> None:
        """EMSGSIZE for a buffer shorter than msgsize, before anything else (empty or not)."""
        buflen = max(0, self.msgsize - short)
        buffer = ctypes.create_string_buffer(max(buflen, 1))
        prio = ctypes.c_uint32()
        lib = fastq.library()
        got = lib.fastq_receive(self.queue._ref, buffer, buflen, ctypes.byref(prio), 1, None)
        assert got == -errno.EMSGSIZE
        self.unchanged()

    @rule(index=st.integers(0, 9))
    def peek(self, index: int) -> None:
        if not self.store:
            with pytest.raises(errors.WouldBlock):
                self.queue.peek(index)
        elif index >= len(self.store):
            with pytest.raises(errors.NoSuchMessage):
                self.queue.peek(index)
        else:
            message = self.store.peek(index)
            payload, priority, length, generation = self.queue.peek(index)
            assert (payload, priority) == (message.payload, message.priority)
            assert length == len(message.payload)
            assert generation == self.generation
        self.unchanged()

    @rule(index=st.integers(0, 9), offset=st.integers(0, 70), size=st.integers(0, 70))
    def peek_a_part(self, index: int, offset: int, size: int) -> None:
        if index >= len(self.store):
            return
        message = self.store.peek(index)
        payload, _, length, _ = self.queue.peek(index, offset, size)
        assert payload == message.payload[offset : offset + size]
        assert length == len(message.payload)

    @rule(index=st.integers(0, 9), stale=st.booleans())
    def remove(self, index: int, stale: bool) -> None:
        generation = self.generation + 1 if stale else self.generation
        if stale:  # ESTALE first, then ENOENT (an empty queue too)
            with pytest.raises(errors.QueueChanged):
                self.queue.remove(index, generation)
        elif index >= len(self.store):
            with pytest.raises(errors.NoSuchMessage):
                self.queue.remove(index, generation)
        else:
            message = self.store.remove(index)
            assert self.queue.remove(index, generation) == (message.payload, message.priority)
            self.changed()
            return
        self.unchanged()

    @rule()
    def remove_any_generation(self) -> None:
        if self.store:
            message = self.store.remove(len(self.store) - 1)
            assert self.queue.remove(len(self.store), 0) == (message.payload, message.priority)
            self.changed()

    @precondition(lambda self: len(self.store) > 3)
    @rule()
    def clear(self) -> None:
        self.queue.clear()
        self.store.clear()
        self.changed()

    @invariant()
    def agrees(self) -> None:
        if not hasattr(self, "queue"):
            return
        self.queue.check()
        state = self.queue.state()
        assert state.count == len(self.store)
        assert state.bytes == self.store.bytes_queued
        assert state.head_length == self.store.head_length
        assert state.generation == self.generation
        assert contents(self.queue) == [(m.payload, m.priority) for m in self.store]
        self.store.check_invariants()


QueueVersusStore.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None
)
TestQueueVersusStore = QueueVersusStore.TestCase


def test_zero_length_messages_keep_their_order(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 4, 0)
    for priority in (1, 3, 1, 3):
        queue.send(b"", priority)
    assert [queue.receive() for _ in range(4)] == [(b"", 3), (b"", 3), (b"", 1), (b"", 1)]
    assert queue.state().bytes == 0
    queue.check()


def test_wraparound_keeps_receive_order(tmp_path: Path) -> None:
    """Many laps of the ring, with sends to the front, the back and the middle."""
    queue = new_queue(tmp_path, 5, 8)
    store = MessageStore()
    for step in range(2000):
        if len(store) == 5 or (store and step % 3 == 0):
            message = store.pop()
            assert queue.receive(nonblock=True) == (message.payload, message.priority)
        else:
            payload, priority = step.to_bytes(4, "little"), (step * 7) % 5
            queue.send(payload, priority, nonblock=True)
            store.push(payload, priority)
    assert contents(queue) == [(m.payload, m.priority) for m in store]
    queue.check()

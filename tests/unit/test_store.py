"""The priority tree against a naive model: a list kept in receive order."""

from __future__ import annotations

import errno

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mqfs import errors
from mqfs.store import MQ_PRIO_MAX, Message, MessageStore


def test_receive_order_is_priority_then_fifo() -> None:
    store = MessageStore()
    for payload, priority in [(b"a", 1), (b"b", 5), (b"c", 1), (b"d", MQ_PRIO_MAX - 1), (b"e", 0)]:
        store.push(payload, priority)
    assert [store.peek(i) for i in range(len(store))] == list(store)
    assert [(m.payload, m.priority) for m in store] == [
        (b"d", MQ_PRIO_MAX - 1),
        (b"b", 5),
        (b"a", 1),
        (b"c", 1),
        (b"e", 0),
    ]
    assert [store.pop().payload for _ in range(5)] == [b"d", b"b", b"a", b"c", b"e"]
    store.check_invariants()


@pytest.mark.parametrize("priority", [-1, MQ_PRIO_MAX, 2**32])
def test_priority_out_of_range_is_einval_and_changes_nothing(priority: int) -> None:
    store = MessageStore()
    store.push(b"keep", 3)
    with pytest.raises(errors.InvalidArgument) as caught:
        store.push(b"x", priority)
    assert caught.value.errno == errno.EINVAL
    assert list(store) == [Message(b"keep", 3)]
    store.check_invariants()


def test_empty_store_pop_and_peek_are_eagain() -> None:
    store = MessageStore()
    with pytest.raises(errors.WouldBlock):
        store.pop()
    with pytest.raises(errors.WouldBlock) as caught:
        store.peek(0)
    assert caught.value.errno == errno.EAGAIN


@pytest.mark.parametrize("index", [-1, 2, 10**9])
def test_peek_outside_the_queue_is_enoent(index: int) -> None:
    store = MessageStore()
    store.push(b"a", 0)
    store.push(b"b", 0)
    with pytest.raises(errors.NoSuchMessage) as caught:
        store.peek(index)
    assert caught.value.errno == errno.ENOENT


def test_zero_length_messages_count_but_add_no_bytes() -> None:
    store = MessageStore()
    store.push(b"", 7)
    store.push(b"xyz", 7)
    assert len(store) == 2
    assert store.bytes_queued == 3
    assert store.pop() == Message(b"", 7)


def test_long_fifo_compacts_and_keeps_order() -> None:
    store = MessageStore()
    for i in range(1000):
        store.push(i.to_bytes(2, "big"), 9)
    for i in range(900):
        assert store.pop().payload == i.to_bytes(2, "big")
        if i % 97 == 0:
            store.check_invariants()
    assert store.peek(50).payload == (950).to_bytes(2, "big")
    store.check_invariants()


def test_messages_from_starts_at_index_across_priorities() -> None:
    store = MessageStore()
    for priority in (1, 2, 3):
        for n in range(3):
            store.push(bytes([priority, n]), priority)
    got = [m.payload for m in store.messages_from(4)]
    assert got == [bytes([2, 1]), bytes([2, 2]), bytes([1, 0]), bytes([1, 1]), bytes([1, 2])]
    assert list(store.messages_from(9)) == []


def test_clear() -> None:
    store = MessageStore()
    store.push(b"abc", 4)
    store.clear()
    assert not store
    assert store.bytes_queued == 0
    store.check_invariants()


class StoreAgainstModel(RuleBasedStateMachine):
    """Random programs of push/pop/peek; the model is a list sorted by (-priority, seq)."""

    def __init__(self) -> None:
        super().__init__()
        # A small priority space makes collisions (FIFO within a priority) frequent.
        self.store = MessageStore(prio_max=64)
        self.model: list[tuple[int, int, bytes]] = []
        self.sequence = 0

    @rule(payload=st.binary(max_size=8), priority=st.integers(0, 63))
    def push(self, payload: bytes, priority: int) -> None:
        self.store.push(payload, priority)
        self.model.append((-priority, self.sequence, payload))
        self.model.sort()
        self.sequence += 1

    @rule(priority=st.one_of(st.integers(max_value=-1), st.integers(min_value=64)))
    def push_bad_priority(self, priority: int) -> None:
        with pytest.raises(errors.InvalidArgument):
            self.store.push(b"x", priority)

    @precondition(lambda self: self.model)
    @rule()
    def pop(self) -> None:
        negated, _, payload = self.model.pop(0)
        assert self.store.pop() == Message(payload, -negated)

    @precondition(lambda self: not self.model)
    @rule(index=st.integers(-3, 3))
    def peek_or_pop_empty(self, index: int) -> None:
        with pytest.raises(errors.WouldBlock):
            self.store.peek(index)
        with pytest.raises(errors.WouldBlock):
            self.store.pop()

    @rule(data=st.data())
    def peek(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(-2, len(self.model) + 2))
        if not self.model:
            with pytest.raises(errors.WouldBlock):
                self.store.peek(index)
        elif 0 <= index < len(self.model):
            negated, _, payload = self.model[index]
            assert self.store.peek(index) == Message(payload, -negated)
        else:
            with pytest.raises(errors.NoSuchMessage):
                self.store.peek(index)

    @rule(index=st.integers(0, 20), limit=st.integers(0, 8))
    def iterate_from(self, index: int, limit: int) -> None:
        expected = [Message(p, -n) for n, _, p in self.model[index:]]
        assert list(self.store.messages_from(index)) == expected
        raw = [(m.payload, m.priority) for m in expected[:limit]]
        runs = self.store.segments_from(index, limit)
        assert [(p, prio) for prio, payloads in runs for p in payloads] == raw

    @invariant()
    def totals_agree(self) -> None:
        assert len(self.store) == len(self.model)
        assert self.store.bytes_queued == sum(len(p) for _, _, p in self.model)
        self.store.check_invariants()


StoreAgainstModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None
)
test_store_against_model = StoreAgainstModel.TestCase

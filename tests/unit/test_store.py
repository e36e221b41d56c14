"""The priority tree against a naive model: a list kept in receive order."""

from __future__ import annotations

import errno
import gc
import random
import sys
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mqfs import errors
from mqfs.posix import MQ_PRIO_MAX
from mqfs.server.store import Message, MessageStore


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


def footprint(store: MessageStore) -> int:
    """Bytes of every object reachable from *store* (classes excepted), payloads included."""
    seen: set[int] = set()
    total = 0
    todo: list[object] = [store]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        todo.extend(gc.get_referents(obj))
    return total


EMPTY_FOOTPRINT = footprint(MessageStore())


def test_an_empty_store_costs_a_few_hundred_bytes() -> None:
    assert EMPTY_FOOTPRINT < 1024
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stores = [MessageStore() for _ in range(1000)]
        each = (tracemalloc.get_traced_memory()[0] - before) / len(stores)
    finally:
        tracemalloc.stop()
    assert each < 1024, f"{each:.0f} bytes per empty store"


@pytest.mark.parametrize(
    ("priorities", "limit"),
    [
        ([MQ_PRIO_MAX - 1], 1024),  # the top costs no tree node at all
        ([0], 1024),
        ([0, MQ_PRIO_MAX - 1], 2048),  # priority 0 is one node
        ([MQ_PRIO_MAX - 1, MQ_PRIO_MAX - 2], 3072),  # rank 1: a 15-node path
        (list(range(MQ_PRIO_MAX - 1, MQ_PRIO_MAX - 17, -1)), 16 * 1024),
    ],
)
def test_hostile_priorities_cost_little(priorities: list[int], limit: int) -> None:
    store = MessageStore()
    for priority in priorities:
        store.push(b"", priority)
    store.check_invariants()
    assert footprint(store) < limit


def test_one_message_at_the_highest_priority_in_many_queues() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        stores = []
        for _ in range(1000):
            store = MessageStore()
            store.push(b"", MQ_PRIO_MAX - 1)
            stores.append(store)
        each = (tracemalloc.get_traced_memory()[0] - before) / len(stores)
    finally:
        tracemalloc.stop()
    assert each < 2048, f"{each:.0f} bytes per queue"


@pytest.mark.parametrize("distinct", [3, 40, 2000])  # 2000 priorities: the dense tree
def test_the_index_shrinks_back_when_messages_go(distinct: int) -> None:
    rng = random.Random(distinct)
    store = MessageStore()
    priorities = rng.sample(range(MQ_PRIO_MAX), distinct)
    for priority in priorities * 2:
        store.push(b"", priority)
    store.check_invariants()
    assert footprint(store) > EMPTY_FOOTPRINT + distinct * 100
    while len(store) > 4:  # the 2 lowest priorities are left, 2 messages each
        store.pop()
    store.check_invariants()
    assert footprint(store) < 3 * 1024
    while store:
        store.pop()
    store.check_invariants()
    assert footprint(store) == EMPTY_FOOTPRINT < 1024
    # and again with clear(), from the full store
    for priority in priorities:
        store.push(b"", priority)
    store.clear()
    store.check_invariants()
    assert footprint(store) == EMPTY_FOOTPRINT < 1024


@settings(max_examples=60, deadline=None)
@given(
    priorities=st.lists(
        st.one_of(
            st.integers(0, MQ_PRIO_MAX - 1),
            st.integers(MQ_PRIO_MAX - 64, MQ_PRIO_MAX - 1),
            st.sampled_from([0, 1, MQ_PRIO_MAX // 2, MQ_PRIO_MAX - 1]),
        ),
        max_size=80,
    ),
    pops=st.integers(0, 80),
)
def test_memory_follows_what_is_queued(priorities: list[int], pops: int) -> None:
    """The module docstring's bound: at most ~5 KB of index per queued message, whatever
    the priorities, and an emptied store is a new one."""
    store = MessageStore()
    for priority in priorities:
        store.push(b"", priority)
    for _ in range(min(pops, len(store))):
        store.pop()
    store.check_invariants()
    assert footprint(store) <= 1024 + 5 * 1024 * len(store)


def test_peek_pop_and_runs_across_the_dense_tree() -> None:
    """Enough priorities to turn the tree dense, then few enough to turn it sparse."""
    rng = random.Random(7)
    store = MessageStore()
    model: list[tuple[int, int, bytes]] = []
    for sequence in range(6000):
        priority = rng.randrange(MQ_PRIO_MAX)
        payload = sequence.to_bytes(2, "big")
        store.push(payload, priority)
        model.append((-priority, sequence, payload))
    model.sort()
    store.check_invariants()
    for index in [*rng.sample(range(len(model)), 200), 0, len(model) - 1]:
        negated, _, payload = model[index]
        assert store.peek(index) == Message(payload, -negated)
    assert [(m.payload, m.priority) for m in store.messages_from(5990)] == [
        (p, -n) for n, _, p in model[5990:]
    ]
    for count, (negated, _, payload) in enumerate(model):
        assert store.pop() == Message(payload, -negated)
        if count % 997 == 0:
            store.check_invariants()
    assert not store
    store.check_invariants()


@given(
    messages=st.lists(
        st.tuples(st.binary(max_size=4), st.sampled_from([0, 1, 2, 7, MQ_PRIO_MAX - 1])),
        min_size=1,
        max_size=60,
    ),
    data=st.data(),
)
def test_remove_at_index_is_removal_from_the_receive_order_list(
    messages: list[tuple[bytes, int]], data: st.DataObject
) -> None:
    """Whatever was queued and whichever index goes, the store afterwards holds exactly
    the receive-order list without that message, and remove() returned it."""
    store = MessageStore()
    for payload, priority in messages:
        store.push(payload, priority)
    order = list(store)
    while order:
        index = data.draw(st.integers(0, len(order) - 1))
        assert store.remove(index) == order.pop(index)
        store.check_invariants()
        assert list(store) == order
        assert store.bytes_queued == sum(len(m.payload) for m in order)
    assert not store


@pytest.mark.parametrize(("queued", "index"), [(0, 0), (3, -1), (3, 3), (3, 4)])
def test_remove_outside_the_queue_is_enoent_and_changes_nothing(queued: int, index: int) -> None:
    """ENOENT, an empty store included: there is nothing to wait for (not EAGAIN)."""
    store = MessageStore()
    for number in range(queued):
        store.push(bytes([number]), 1)
    before = list(store)
    with pytest.raises(errors.NoSuchMessage) as caught:
        store.remove(index)
    assert caught.value.errno == errno.ENOENT
    assert list(store) == before
    store.check_invariants()


def test_remove_across_the_dense_tree_keeps_the_order() -> None:
    """Removals from the middle of many priorities, the tree dense and then sparse."""
    rng = random.Random(11)
    store = MessageStore()
    for sequence in range(5000):
        store.push(sequence.to_bytes(2, "big"), rng.randrange(MQ_PRIO_MAX))
    order = list(store)
    while len(order) > 10:
        index = rng.randrange(len(order))
        assert store.remove(index) == order.pop(index)
        if len(order) % 499 == 0:
            store.check_invariants()
            assert list(store) == order
    store.check_invariants()
    assert list(store) == order


class StoreAgainstModel(RuleBasedStateMachine):
    """Random programs of push/pop/peek; the model is a list sorted by (-priority, seq)."""

    # A small priority space makes collisions (FIFO within a priority) frequent, and
    # takes the tree (64 nodes) between its sparse and dense forms.
    PRIO_MAX = 64
    PRIORITIES = st.integers(0, 63)

    def __init__(self) -> None:
        super().__init__()
        self.store = MessageStore(prio_max=self.PRIO_MAX)
        self.model: list[tuple[int, int, bytes]] = []
        self.sequence = 0

    def _push(self, payload: bytes, priority: int) -> None:
        self.store.push(payload, priority)
        self.model.append((-priority, self.sequence, payload))
        self.model.sort()
        self.sequence += 1

    @rule(payload=st.binary(max_size=8), data=st.data())
    def push(self, payload: bytes, data: st.DataObject) -> None:
        self._push(payload, data.draw(self.PRIORITIES))

    @rule(data=st.data(), count=st.integers(1, 40))
    def push_run(self, data: st.DataObject, count: int) -> None:
        priority = data.draw(self.PRIORITIES)
        for _ in range(count):
            self._push(bytes([count]), priority)

    @rule(data=st.data())
    def push_bad_priority(self, data: st.DataObject) -> None:
        priority = data.draw(
            st.one_of(st.integers(max_value=-1), st.integers(min_value=self.PRIO_MAX))
        )
        with pytest.raises(errors.InvalidArgument):
            self.store.push(b"x", priority)

    @precondition(lambda self: self.model)
    @rule(count=st.integers(1, 40))
    def pop_run(self, count: int) -> None:
        for _ in range(min(count, len(self.model))):
            negated, _, payload = self.model.pop(0)
            assert self.store.pop() == Message(payload, -negated)

    @rule()
    def clear(self) -> None:
        self.store.clear()
        self.model.clear()

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

    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(-1, len(self.model) + 1))
        if 0 <= index < len(self.model):
            negated, _, payload = self.model.pop(index)
            assert self.store.remove(index) == Message(payload, -negated)
        else:
            with pytest.raises(errors.NoSuchMessage):
                self.store.remove(index)

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
        assert self.store.head_length == (len(self.model[0][2]) if self.model else 0)
        self.store.check_invariants()


class FullRangeStoreAgainstModel(StoreAgainstModel):
    """The same at Linux's 32768 priorities, where memory must follow what is queued."""

    PRIO_MAX = MQ_PRIO_MAX
    PRIORITIES = st.one_of(
        st.integers(0, MQ_PRIO_MAX - 1),
        st.integers(0, 3),
        st.integers(MQ_PRIO_MAX - 4, MQ_PRIO_MAX - 1),
    )

    @invariant()
    def memory_follows_the_queue(self) -> None:
        assert footprint(self.store) <= 1024 + 5 * 1024 * len(self.store)


StoreAgainstModel.TestCase.settings = settings(
    max_examples=400, stateful_step_count=60, deadline=None
)
test_store_against_model = StoreAgainstModel.TestCase
FullRangeStoreAgainstModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None
)
test_full_range_store_against_model = FullRangeStoreAgainstModel.TestCase

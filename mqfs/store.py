"""The message store: per-priority FIFOs plus an order-statistics tree over priorities.

Receive order is POSIX's: highest priority first, FIFO within a priority. The kernel keeps
a red-black tree of per-priority lists and finds "message N" by walking it in O(n); mqfs
needs "message N" for every peek, every ``msgs/N`` lookup and every ``ls``, so it keeps:

* one FIFO per priority that holds messages: a plain list of payloads plus a head index.
  Popping advances the head (O(1)); the dead prefix is cut off once it is the larger half,
  so the amortised cost stays O(1) and the memory stays within 2x. Indexing into the
  middle of a FIFO is O(1), which a ``deque`` could not give us.
* a Fenwick (binary indexed) tree of message counts, indexed by *rank* = prio_max-1-priority
  so that rank 0 is the highest priority. The prefix sum up to rank r is the number of
  messages that are received before any message of the priority at rank r+1. "Which
  priority holds message N" is a descent of the tree (binary lifting): O(log P), with
  P = prio_max (32768, so 15 steps), independent of how many messages are queued.

push, pop and peek(N) are therefore O(log P). Only payloads are stored (priorities are
implied by which FIFO holds them) to keep the cost per queued message low; ``Message``
objects are made on the way out.

Pure Python: no trio, no pyfuse3. Errors are mqfs's own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mqfs import errors

MQ_PRIO_MAX = 32768
"""Priorities are 0 .. MQ_PRIO_MAX-1, as Linux's (sysconf(_SC_MQ_PRIO_MAX))."""

# A FIFO compacts when its dead prefix is at least this long and at least half the list.
_COMPACT_MIN = 32


@dataclass(frozen=True, slots=True)
class Message:
    """One message: its bytes and its priority."""

    payload: bytes
    priority: int


class _Fifo:
    """Messages of one priority, oldest first."""

    __slots__ = ("head", "payloads")

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.payloads) - self.head

    def append(self, payload: bytes) -> None:
        self.payloads.append(payload)

    def popleft(self) -> bytes:
        payload = self.payloads[self.head]
        self.head += 1
        if self.head >= _COMPACT_MIN and self.head * 2 >= len(self.payloads):
            del self.payloads[: self.head]
            self.head = 0
        return payload

    def __getitem__(self, position: int) -> bytes:
        return self.payloads[self.head + position]


class MessageStore:
    """The messages of one queue, in POSIX receive order.

    >>> store = MessageStore()
    >>> store.push(b"low", 1); store.push(b"high", 5); store.push(b"low2", 1)
    >>> [m.payload for m in store]
    [b'high', b'low', b'low2']
    >>> store.peek(1)
    Message(payload=b'low', priority=1)
    >>> store.pop().payload, len(store), store.bytes_queued
    (b'high', 2, 7)
    """

    __slots__ = ("_bytes", "_count", "_fifos", "_size", "_tree", "prio_max")

    def __init__(self, prio_max: int = MQ_PRIO_MAX) -> None:
        if prio_max < 1:
            raise ValueError("prio_max must be at least 1")
        self.prio_max = prio_max
        self._size = 1 << (prio_max - 1).bit_length()  # tree size: a power of two
        # 1-based Fenwick tree over ranks 0.._size-1 (slot rank+1).
        self._tree = [0] * (self._size + 1)
        self._fifos: dict[int, _Fifo] = {}
        self._count = 0
        self._bytes = 0

    # -- size --------------------------------------------------------------------
    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    @property
    def bytes_queued(self) -> int:
        """Sum of the payload lengths: the kernel's QSIZE."""
        return self._bytes

    # -- the Fenwick tree ----------------------------------------------------------
    def _add(self, priority: int, delta: int) -> None:
        slot = self.prio_max - priority  # rank + 1
        tree = self._tree
        size = self._size
        while slot <= size:
            tree[slot] += delta
            slot += slot & -slot

    def _locate(self, index: int) -> tuple[int, int]:
        """(priority, position in its FIFO) of message *index* (0 <= index < len)."""
        tree = self._tree
        slot = 0
        remaining = index
        step = self._size
        while step:
            probe = slot + step
            if probe <= self._size and tree[probe] <= remaining:
                slot = probe
                remaining -= tree[probe]
            step >>= 1
        # slot is now the largest slot whose prefix sum is <= index, i.e. the rank.
        return self.prio_max - 1 - slot, remaining

    # -- operations ----------------------------------------------------------------
    def push(self, payload: bytes, priority: int) -> None:
        """Queue *payload* behind every message of the same or higher priority."""
        if not 0 <= priority < self.prio_max:
            raise errors.InvalidArgument(f"priority {priority} is outside 0..{self.prio_max - 1}")
        fifo = self._fifos.get(priority)
        if fifo is None:
            fifo = self._fifos[priority] = _Fifo()
        fifo.append(payload)
        self._add(priority, 1)
        self._count += 1
        self._bytes += len(payload)

    def pop(self) -> Message:
        """Remove and return the message a receive gets: highest priority, oldest."""
        if not self._count:
            raise errors.WouldBlock("the queue is empty")
        priority, _ = self._locate(0)
        fifo = self._fifos[priority]
        payload = fifo.popleft()
        if not fifo:
            del self._fifos[priority]
        self._add(priority, -1)
        self._count -= 1
        self._bytes -= len(payload)
        return Message(payload, priority)

    def peek(self, index: int) -> Message:
        """Message *index* in receive order (0 = what pop returns), left in place.

        EAGAIN on an empty store, ENOENT for an index outside 0..len-1, as the
        mq_timedreceive2 proposal's MQ_PEEK.
        """
        if not self._count:
            raise errors.WouldBlock("the queue is empty")
        if not 0 <= index < self._count:
            raise errors.NoSuchMessage(
                f"no message at index {index} (the queue holds {self._count})"
            )
        priority, position = self._locate(index)
        return Message(self._fifos[priority][position], priority)

    def messages_from(self, index: int = 0) -> Iterator[Message]:
        """Messages *index*, *index*+1, ... in receive order.

        Each priority run costs one tree descent, each message O(1). The store must not
        change while the iterator is in use.
        """
        for priority, run in self.segments_from(index, self._count):
            for payload in run:
                yield Message(payload, priority)

    def segments_from(self, index: int, limit: int) -> Iterator[tuple[int, list[bytes]]]:
        """(priority, payloads) runs covering at most *limit* messages from *index* on, in
        receive order: a batch peek packs whole runs without a Python step per message.
        Each FIFO is sliced, so the cost is O(log P + limit), wherever *index* is (the
        store must not change while the iterator is in use)."""
        remaining = limit
        position_in_order = max(index, 0)
        while position_in_order < self._count and remaining > 0:
            priority, position = self._locate(position_in_order)
            fifo = self._fifos[priority]
            start = fifo.head + position
            segment = fifo.payloads[start : start + min(remaining, len(fifo) - position)]
            yield priority, segment
            position_in_order += len(segment)
            remaining -= len(segment)

    def __iter__(self) -> Iterator[Message]:
        return self.messages_from(0)

    def clear(self) -> None:
        """Drop every message (the queue is being destroyed)."""
        self._tree = [0] * (self._size + 1)
        self._fifos.clear()
        self._count = 0
        self._bytes = 0

    # -- checking ------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the tree, the FIFOs and the totals disagree."""
        counts = [0] * (self._size + 1)
        total = 0
        total_bytes = 0
        for priority, fifo in self._fifos.items():
            assert 0 <= priority < self.prio_max, priority
            assert len(fifo) > 0, f"empty FIFO kept for priority {priority}"
            assert 0 <= fifo.head <= len(fifo.payloads)
            counts[self.prio_max - priority] = len(fifo)
            total += len(fifo)
            total_bytes += sum(len(fifo[i]) for i in range(len(fifo)))
        assert total == self._count, (total, self._count)
        assert total_bytes == self._bytes, (total_bytes, self._bytes)
        # Rebuild the Fenwick tree from the counts and compare node by node.
        expected = counts[:]
        for slot in range(1, self._size + 1):
            parent = slot + (slot & -slot)
            if parent <= self._size:
                expected[parent] += expected[slot]
        assert expected[1:] == self._tree[1:], "Fenwick tree out of step with the FIFOs"

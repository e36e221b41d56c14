"""The message store: per-priority FIFOs plus an order-statistics tree over priorities.

Receive order is POSIX's: highest priority first, FIFO within a priority. The kernel keeps
a red-black tree of per-priority lists and finds "message N" by walking it in O(n); mqfs
needs "message N" for every peek, every ``msgs/N`` lookup and every ``ls``, so it keeps:

* one FIFO per priority that holds messages: a plain list of payloads plus a head index.
  Popping advances the head (O(1)); the dead prefix is cut off once it is the larger half,
  so the amortised cost stays O(1) and the memory stays within 2x. Indexing into the
  middle of a FIFO is O(1), which a ``deque`` could not give us.
* the *top* FIFO (the highest priority holding messages) on its own, outside the tree:
  every pop takes from it, and many queues only ever use one priority, so the common
  paths (push at the top, pop, peek within the top run) touch no tree at all.
* a Fenwick (binary indexed) tree of the message counts of the priorities *below* the
  top, indexed by *rank* = prio_max-1-priority so that rank 0 is the highest priority.
  The prefix sum up to rank r is the number of those messages that are received before
  any message of the priority at rank r+1. "Which priority holds message N" is a descent
  of the tree (binary lifting): O(log P), with P = prio_max (32768, so 15 steps),
  independent of how many messages are queued. When the top FIFO empties, the next
  priority (one descent) leaves the tree and becomes the top.

The tree is sized by the priorities in use, not by P: a dense list of P+1 counts would
cost 263 KB per queue, even an empty one. It has two forms:

* *sparse*, a dict from node to count holding only the nonzero nodes: a missing node
  reads as 0, so the descent is the dense one with ``dict.get`` probes, and adding a
  priority creates exactly the nodes on its update path;
* *dense*, the plain list, once more than P/8 nodes (4096) are nonzero: by then the dict
  (an entry plus an int key per node) costs as much as the list, and its probes are
  ~1.6x slower (int keys compared by value, a table several times the list's size).
  It turns sparse again below P/32 nodes, so each switch, O(P), is paid for by at
  least P/32 node insertions or removals since the last.

Bounds, P = 32768, whatever priorities a user picks:

* an empty store holds no node, and neither does a store using one priority (the top);
* each distinct priority below the top adds at most log2(P)+1 = 16 nodes (its update
  path; rank 0, priority P-1, has the longest) and there are never more than P nodes;
* sparse, a node costs at most ~0.3 KB: its dict entry, within 12 table slots of ~18
  bytes (CPython grows a table to at most 6x its entries and the dict is rebuilt when
  it falls below half its peak), plus two ints of 32 bytes; dense, the 256 KiB list is
  kept only while at least P/32 = 1024 nodes, so at least 64 priorities, are live: at
  most 4 KiB per priority. Either way the index costs at most ~5 KB per distinct
  queued priority, hence per queued message (the worst we could construct, priorities
  chosen greedily to maximise the nodes, costs ~1.5 KB per message, FIFO included);
* the FIFO dict and the sparse tree are rebuilt (CPython's dicts never shrink on
  deletion) when they fall below half of their peak size, so memory follows what is
  queued, not what once was: a store emptied by pops or ``clear`` is a new one again.

push, pop and peek(N) are therefore O(log P), amortised for the rebuilds and the
switches of form (O(1) per node or FIFO removed). remove(N), which takes a message out
of the middle (``mqfs rm-msg``), is O(log P) plus moving the messages behind it in its
FIFO up by one (a memmove of pointers). Only payloads are stored (priorities
are implied by which FIFO holds them) to keep the cost per queued message low;
``Message`` objects are made on the way out.

Pure Python: no trio, no pyfuse3. Errors are mqfs's own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from mqfs import errors
from mqfs.posix import MQ_PRIO_MAX

# A FIFO compacts when its dead prefix is at least this long and at least half the list.
_COMPACT_MIN = 32

# The FIFO dict and the sparse tree are rebuilt when their size falls below 1/_SHRINK
# of the peak they reached since the last rebuild.
_SHRINK = 2
# The tree turns dense (a list) above size >> _DENSE_AT nonzero nodes and sparse (a
# dict) again below size >> _SPARSE_AT.
_DENSE_AT = 3
_SPARSE_AT = 5


@dataclass(frozen=True, slots=True)
class Message:
    """One message: its bytes and its priority."""

    payload: bytes
    priority: int


class _Fifo:
    """Messages of one priority, oldest first."""

    __slots__ = ("head", "payloads")

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.head = 0

    def __len__(self) -> int:
        return len(self.payloads) - self.head

    def popleft(self) -> bytes:
        payload = self.payloads[self.head]
        self.head += 1
        if self.head >= _COMPACT_MIN and self.head * 2 >= len(self.payloads):
            del self.payloads[: self.head]
            self.head = 0
        return payload

    def __getitem__(self, position: int) -> bytes:
        return self.payloads[self.head + position]

    def take(self, position: int) -> bytes:
        """Remove and return the message at *position*: O(1) at the head, else a move of
        the messages behind it (one memmove of pointers, as ``del`` on a list)."""
        if position == 0:
            return self.popleft()
        return self.payloads.pop(self.head + position)


_NO_FIFO = _Fifo([])
"""The top FIFO of an empty store (priority -1): never written to."""


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

    __slots__ = (
        "_bytes",
        "_count",
        "_fifos",
        "_fifos_peak",
        "_nodes",
        "_size",
        "_top",
        "_top_fifo",
        "_tree",
        "_tree_peak",
        "prio_max",
    )

    mapped = False  # a fast-path queue's store is a MappedStore (mqfs.server.mapped)
    generation = 0  # only a MappedStore counts changes itself (Queue.generation adds it)

    def __init__(self, prio_max: int = MQ_PRIO_MAX) -> None:
        if prio_max < 1:
            raise ValueError("prio_max must be at least 1")
        self.prio_max = prio_max
        self._size = 1 << (prio_max - 1).bit_length()  # tree size: a power of two
        self._top = -1  # the highest priority holding messages; -1 when empty
        self._top_fifo = _NO_FIFO
        # The FIFOs of the priorities below the top, and the 1-based Fenwick tree of
        # their counts over ranks 0.._size-1 (node rank+1): sparse, a dict holding the
        # nonzero nodes, or dense, a list of _size+1 (see the module docstring).
        self._fifos: dict[int, _Fifo] = {}
        self._tree: dict[int, int] | list[int] = {}
        self._nodes = 0  # nonzero nodes in the tree
        self._fifos_peak = 0
        self._tree_peak = 0
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

    @property
    def head_length(self) -> int:
        """The length of the message :meth:`pop` would return (0 for an empty store)."""
        top = self._top_fifo
        return len(top.payloads[top.head]) if self._count else 0

    # -- the Fenwick tree ----------------------------------------------------------
    def _insert(self, priority: int, fifo: _Fifo) -> None:
        """Put *fifo*, of a priority below the top and not in the tree, into the tree."""
        fifos = self._fifos
        fifos[priority] = fifo
        self._fifos_peak = max(self._fifos_peak, len(fifos))
        count = len(fifo)
        node = self.prio_max - priority  # rank + 1
        size = self._size
        tree = self._tree
        if isinstance(tree, list):
            nodes = self._nodes
            while node <= size:
                if not tree[node]:
                    nodes += 1
                tree[node] += count
                node += node & -node
            self._nodes = nodes
            return
        get = tree.get
        while node <= size:
            tree[node] = get(node, 0) + count
            node += node & -node
        nodes = self._nodes = len(tree)
        self._tree_peak = max(self._tree_peak, nodes)
        if nodes > size >> _DENSE_AT:
            dense = [0] * (size + 1)
            for filled, filled_count in tree.items():
                dense[filled] = filled_count
            self._tree = dense

    def _grew(self, priority: int, added: int) -> None:
        """The FIFO of *priority*, already in the tree, holds *added* more messages: no
        node becomes non-zero, so neither form nor node count changes."""
        tree = self._tree
        node = self.prio_max - priority
        size = self._size
        while node <= size:
            tree[node] += added
            node += node & -node

    def _remove(self, priority: int) -> _Fifo:
        """Take the FIFO of *priority* out of the tree and return it."""
        fifo = self._fifos.pop(priority)
        count = len(fifo)
        node = self.prio_max - priority
        size = self._size
        tree = self._tree
        if isinstance(tree, list):
            nodes = self._nodes
            while node <= size:
                left = tree[node] - count
                tree[node] = left
                if not left:
                    nodes -= 1
                node += node & -node
            self._nodes = nodes
            if nodes < size >> _SPARSE_AT:
                self._tree = {filled: n for filled, n in enumerate(tree) if n}
                self._tree_peak = nodes
        else:
            while node <= size:
                left = tree[node] - count
                if left:
                    tree[node] = left
                else:
                    del tree[node]
                node += node & -node
            nodes = self._nodes = len(tree)
            if nodes * _SHRINK < self._tree_peak:
                # CPython's dicts never shrink on deletion: copy to a table sized to
                # what is live (amortised O(1) per removed entry).
                self._tree = dict(tree)
                self._tree_peak = nodes
        if len(self._fifos) * _SHRINK < self._fifos_peak:
            self._fifos = dict(self._fifos)
            self._fifos_peak = len(self._fifos)
        return fifo

    def _locate(self, index: int) -> tuple[int, int]:
        """(priority, position in its FIFO) of message *index* of the tree
        (0 <= index < number of messages below the top)."""
        tree = self._tree
        node = 0
        # Node _size holds the whole tree's count, which is > index: start below it.
        step = self._size >> 1
        if isinstance(tree, list):
            while step:
                count = tree[node + step]
                if count <= index:
                    node += step
                    index -= count
                step >>= 1
        else:
            get = tree.get  # an absent node counts 0
            while step:
                count = get(node + step, 0)
                if count <= index:
                    node += step
                    index -= count
                step >>= 1
        # node is now the largest node whose prefix sum is <= index, i.e. the rank.
        return self.prio_max - 1 - node, index

    def _find(self, index: int) -> tuple[int, _Fifo, int]:
        """(priority, FIFO, position in the FIFO) of message *index* (0 <= index < len)."""
        top = self._top_fifo
        above = len(top)
        if index < above:
            return self._top, top, index
        priority, position = self._locate(index - above)
        return priority, self._fifos[priority], position

    # -- operations ----------------------------------------------------------------
    def push(self, payload: bytes, priority: int) -> None:
        """Queue *payload* behind every message of the same or higher priority."""
        if not 0 <= priority < self.prio_max:
            raise errors.InvalidArgument(f"priority {priority} is outside 0..{self.prio_max - 1}")
        top = self._top
        if priority == top:
            self._top_fifo.payloads.append(payload)
        elif priority < top:
            fifo = self._fifos.get(priority)
            if fifo is None:
                self._insert(priority, _Fifo([payload]))
            else:
                fifo.payloads.append(payload)
                self._grew(priority, 1)
        else:
            if top >= 0:  # the old top goes into the tree (an empty store's top is -1)
                self._insert(top, self._top_fifo)
            self._top = priority
            self._top_fifo = _Fifo([payload])
        self._count += 1
        self._bytes += len(payload)

    def pop(self) -> Message:
        """Remove and return the message a receive gets: highest priority, oldest."""
        if not self._count:
            raise errors.WouldBlock("the queue is empty")
        fifo = self._top_fifo
        priority = self._top
        payload = fifo.popleft()
        self._count -= 1
        self._bytes -= len(payload)
        if fifo.head == len(fifo.payloads):
            self._promote_next()
        return Message(payload, priority)

    def _promote_next(self) -> None:
        """The top FIFO is empty: the next priority's becomes the top (or none is left)."""
        if self._count:
            self._top, _ = self._locate(0)
            self._top_fifo = self._remove(self._top)
        else:
            self._top = -1
            self._top_fifo = _NO_FIFO

    def push_run(self, payloads: list[bytes], priority: int) -> None:
        """:meth:`push` each of *payloads* in order at *priority*: one tree update for the
        run, O(log P + len(payloads)); *payloads* is copied, not kept."""
        if not 0 <= priority < self.prio_max:
            raise errors.InvalidArgument(f"priority {priority} is outside 0..{self.prio_max - 1}")
        if not payloads:
            return
        top = self._top
        if priority == top:
            self._top_fifo.payloads.extend(payloads)
        elif priority < top:
            fifo = self._fifos.get(priority)
            if fifo is None:
                self._insert(priority, _Fifo(list(payloads)))
            else:
                fifo.payloads.extend(payloads)
                self._grew(priority, len(payloads))
        else:
            if top >= 0:
                self._insert(top, self._top_fifo)
            self._top = priority
            self._top_fifo = _Fifo(list(payloads))
        self._count += len(payloads)
        self._bytes += sum(map(len, payloads))

    def pop_front(self, count: int) -> list[tuple[int, list[bytes]]]:
        """Remove the first *count* messages, as *count* :meth:`pop` calls would, and
        return them as (priority, payloads) runs: one slice and at most one tree descent
        per priority run, O(runs * log P + count)."""
        if not 0 <= count <= self._count:
            raise errors.WouldBlock(f"cannot pop {count} of {self._count} messages")
        runs: list[tuple[int, list[bytes]]] = []
        while count:
            fifo = self._top_fifo
            start = fifo.head
            take = min(count, len(fifo.payloads) - start)
            run = fifo.payloads[start : start + take]
            runs.append((self._top, run))
            count -= take
            self._count -= take
            self._bytes -= sum(map(len, run))
            fifo.head = start + take
            if fifo.head == len(fifo.payloads):
                self._promote_next()
            elif fifo.head >= _COMPACT_MIN and fifo.head * 2 >= len(fifo.payloads):
                del fifo.payloads[: fifo.head]
                fifo.head = 0
        return runs

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
        top = self._top_fifo
        above = len(top.payloads) - top.head
        if index < above:
            return Message(top.payloads[top.head + index], self._top)
        priority, position = self._locate(index - above)
        return Message(self._fifos[priority][position], priority)

    def remove(self, index: int) -> Message:
        """Remove and return message *index* in receive order (0 is :meth:`pop`): the
        messages behind it move up by one, the order of the others is kept.

        ENOENT for an index outside 0..len-1, an empty store included (there is nothing
        to wait for: the caller named a message that is not there).
        """
        if not 0 <= index < self._count:
            raise errors.NoSuchMessage(
                f"no message at index {index} (the queue holds {self._count})"
            )
        if index == 0:
            return self.pop()
        top = self._top_fifo
        if index < len(top):  # within the top run, not its head: the run stays non-empty
            priority = self._top
            payload = top.take(index)
        else:
            priority, position = self._locate(index - len(top))
            # Out of the tree with its count, and back in with one fewer if any is left:
            # the tree's own bookkeeping (forms, peaks, rebuilds) stays in one place.
            fifo = self._remove(priority)
            payload = fifo.take(position)
            if len(fifo):
                self._insert(priority, fifo)
        self._count -= 1
        self._bytes -= len(payload)
        return Message(payload, priority)

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
            priority, fifo, position = self._find(position_in_order)
            start = fifo.head + position
            segment = fifo.payloads[start : start + min(remaining, len(fifo) - position)]
            yield priority, segment
            position_in_order += len(segment)
            remaining -= len(segment)

    def __iter__(self) -> Iterator[Message]:
        return self.messages_from(0)

    def clear(self) -> None:
        """Drop every message (the queue is being destroyed)."""
        self._top = -1
        self._top_fifo = _NO_FIFO
        self._fifos = {}
        self._tree = {}
        self._nodes = 0
        self._fifos_peak = 0
        self._tree_peak = 0
        self._count = 0
        self._bytes = 0

    # -- checking ------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if the tree, the FIFOs and the totals disagree."""
        assert not _NO_FIFO.payloads, "the empty top FIFO was written to"
        assert _NO_FIFO.head == 0
        fifos = dict(self._fifos)
        if self._count:
            assert 0 <= self._top < self.prio_max, self._top
            assert len(self._top_fifo) > 0, "empty top FIFO"
            assert self._top not in fifos, "the top priority is also in the tree"
            fifos[self._top] = self._top_fifo
        else:
            assert self._top == -1, self._top
            assert self._top_fifo is _NO_FIFO
        total = 0
        total_bytes = 0
        for priority, fifo in fifos.items():
            assert 0 <= priority <= self._top, (priority, self._top)
            assert len(fifo) > 0, f"empty FIFO kept for priority {priority}"
            assert 0 <= fifo.head <= len(fifo.payloads)
            total += len(fifo)
            total_bytes += sum(len(fifo[i]) for i in range(len(fifo)))
        assert total == self._count, (total, self._count)
        assert total_bytes == self._bytes, (total_bytes, self._bytes)
        # Rebuild the Fenwick tree of the priorities below the top from their counts and
        # compare node by node: no node may be zero, missing or extra.
        expected: dict[int, int] = {}
        for priority, fifo in self._fifos.items():
            node = self.prio_max - priority
            while node <= self._size:
                expected[node] = expected.get(node, 0) + len(fifo)
                node += node & -node
        tree = self._tree
        assert self._nodes == len(expected), (self._nodes, len(expected))
        if isinstance(tree, list):
            assert len(tree) == self._size + 1
            assert tree[0] == 0
            assert {node: count for node, count in enumerate(tree) if count} == expected
            assert all(count >= 0 for count in tree)
            assert self._nodes >= self._size >> _SPARSE_AT, "dense tree kept for few nodes"
        else:
            assert tree == expected, "Fenwick tree out of step with the FIFOs"
            assert self._nodes <= self._size >> _DENSE_AT, "sparse tree kept for many nodes"
            # The dict is no bigger than a constant times what is live.
            assert len(tree) <= self._tree_peak <= _SHRINK * len(tree), (
                len(tree),
                self._tree_peak,
            )
        assert len(self._fifos) <= self._fifos_peak <= _SHRINK * len(self._fifos), (
            len(self._fifos),
            self._fifos_peak,
        )

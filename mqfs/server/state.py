"""``-o state=DIR`` in the daemon: the journal of :mod:`mqfs.server.journal` in trio's world.

:class:`Durability` is the :class:`~mqfs.server.queue.Journal` a
:class:`~mqfs.server.queue.Namespace` is given. It turns the queue layer's commit points
into records, brings the queues back at mount (:meth:`Durability.restore`), rewrites the
journal in the background when it outgrows its bound (:meth:`Durability.run`: the live
queues are taken and the log rotated in one step of the event loop, the snapshot is
written by a worker thread while records go on being appended to the new log), and on a
clean stop rewrites it to the queues as they are, times included (:meth:`Durability.close`).

Durability levels (Redis's ``appendfsync``):

* default: records are written with write(2) before each reply and never fsynced; that
  survives the daemon dying in any way, not a power loss or a kernel crash.
* ``state_sync``: every reply to a send, a receive or a message's removal waits for an
  fsync that covers its record, in groups: the first caller to wait starts one fsync in a
  worker thread; whoever arrives while it runs waits for the next, which covers them all.
  Creating, removing or chmod-ing a queue fsyncs at once, without grouping: those replies
  are made by handlers that do not wait (they are rare).
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from mqfs import errors
from mqfs.server.journal import (
    COMPACT_SLACK,
    Journal,
    QueueImage,
    QueueRecord,
    Recovered,
    fsync_all,
)
from mqfs.server.mapped import MappedStore
from mqfs.server.queue import Namespace, Queue
from mqfs.server.store import Message, MessageStore

log = logging.getLogger(__name__)


def record_of(queue: Queue) -> QueueRecord:
    return QueueRecord(
        qid=queue.qid,
        name=queue.name,
        mode=queue.mode,
        uid=queue.uid,
        gid=queue.gid,
        owner_uid=queue.owner_uid,
        maxmsg=queue.maxmsg,
        msgsize=queue.msgsize,
        atime=queue.atime,
        mtime=queue.mtime,
        ctime=queue.ctime,
    )


def images_of(namespace: Namespace) -> list[QueueImage]:
    """The named queues now, as a snapshot takes them (copies of their message lists)."""
    return [
        (
            record_of(queue),
            [] if queue.mapped else list(queue.store.segments_from(0, len(queue.store))),
        )  # a fast-path queue's messages are in its mapping, on disk beside the journal
        for queue in namespace.queues.values()
    ]


class Durability:
    """The journal of one mount, as the queue layer sees it."""

    def __init__(self, journal: Journal, sync: bool) -> None:
        self.journal = journal
        self.sync = sync
        self._synced = journal.written  # journal.written when the last fsync started
        self._syncing: trio.Event | None = None  # the fsync running now
        self._compaction_wanted: trio.Event | None = None
        journal.on_oversize = self._oversize

    @classmethod
    def open(
        cls, directory: Path, *, sync: bool, slack: int = COMPACT_SLACK
    ) -> tuple[Durability, Recovered]:
        """Check, lock and load DIR: the journal, and the queues it held (for
        :func:`restore` into the namespace made with this journal)."""
        journal, recovered = Journal.open(directory, slack)
        return cls(journal, sync), recovered

    # -- the queue layer's commit points (queue.Journal) ------------------------------------
    def created(self, queue: Queue) -> None:
        self.journal.create(record_of(queue))
        self._metadata_written()

    def changed(
        self, queue: Queue, mode: int, uid: int, gid: int, times: tuple[int, int, int]
    ) -> None:
        self.journal.setattr(queue.qid, mode, uid, gid, times)
        self._metadata_written()

    def removed(self, queue: Queue) -> None:
        self.journal.unlink(record_of(queue), len(queue.store), queue.store.bytes_queued)
        self._metadata_written()

    def sent(self, queue: Queue, message: Message) -> None:
        self.journal.send(queue.qid, message.priority, message.payload)

    def received(self, queue: Queue, admitted: Message | None) -> None:
        if admitted is None:
            self.journal.receive(queue.qid, queue.store.head_length)
        else:
            self.journal.receive(
                queue.qid, queue.store.head_length, (admitted.priority, admitted.payload)
            )

    def discarded(self, queue: Queue, index: int, admitted: Message | None) -> None:
        length = len(queue.store.peek(index).payload)
        if admitted is None:
            self.journal.remove(queue.qid, index, length)
        else:
            self.journal.remove(queue.qid, index, length, (admitted.priority, admitted.payload))

    def _metadata_written(self) -> None:
        if self.sync:
            self.journal.sync()
            self._synced = self.journal.written

    # -- state_sync: group commit ------------------------------------------------------------
    async def settled(self) -> None:
        """Return once an fsync covers everything written so far. Shielded: a caller
        interrupted meanwhile still gets its reply (its message is taken, or sent)."""
        target = self.journal.written
        if self._synced >= target:
            return
        with trio.CancelScope(shield=True):
            while self._synced < target:
                if self._syncing is None:
                    await self._sync()
                else:
                    await self._syncing.wait()

    async def _sync(self) -> None:
        done = self._syncing = trio.Event()
        mark = self.journal.written
        fds = self.journal.sync_targets()
        try:
            await trio.to_thread.run_sync(fsync_all, fds)
        except OSError as exc:
            self.journal.dir_dirty = True  # in case DIR was among them
            raise errors.StateError(
                f"fsync of the journal in {self.journal.directory} failed: {exc.strerror}",
                errno_value=exc.errno,
            ) from exc
        finally:
            self._syncing = None
            done.set()
        self._synced = max(self._synced, mark)
        self.journal.close_retired(fds)

    # -- compaction --------------------------------------------------------------------------
    def _oversize(self) -> None:
        if self._compaction_wanted is not None:
            self._compaction_wanted.set()

    async def run(self, namespace: Namespace) -> None:
        """Rewrite the journal whenever it outgrows its bound, until cancelled."""
        while True:
            wanted = self._compaction_wanted = trio.Event()
            if self.journal.compaction_wanted:
                wanted.set()
            await wanted.wait()
            await self.compact(namespace)

    async def compact(self, namespace: Namespace) -> None:
        """One rewrite: take the queues and rotate the log now, write the snapshot in a
        worker thread. A failure is logged; the journal stays as it was, only longer."""
        try:
            compaction = self.journal.begin_compaction(images_of(namespace), namespace.next_qid)
        except errors.StateError as exc:
            log.warning("state: cannot rewrite the journal: %s", exc)
            return
        if not self.sync:
            self.journal.close_retired()  # nothing will fsync them
        try:
            size = await trio.to_thread.run_sync(compaction.write)
        except OSError as exc:
            log.warning("state: rewriting %s failed: %s", self.journal.directory, exc)
            self.journal.end_compaction(compaction, None)
            return
        self.journal.end_compaction(compaction, size)
        if self._syncing is None:
            self.journal.close_retired()  # the snapshot covers them: no fsync needed

    # -- mount and unmount -------------------------------------------------------------------
    def close(self, namespace: Namespace) -> None:
        """A clean stop: rewrite the journal to the queues as they are (times included),
        so the next mount reads one snapshot; then fsync and close it."""
        try:
            if self.journal.compacting is None:
                self.journal.compact(images_of(namespace), namespace.next_qid)
        except (OSError, errors.StateError) as exc:
            log.warning("state: the final rewrite of %s failed: %s", self.journal.directory, exc)
        finally:
            self.journal.close()


def restore(namespace: Namespace, recovered: Recovered) -> None:
    """Put the queues a journal held back into *namespace* (made with that journal). A
    queue with a mapping in DIR/fastpath is a fast-path queue again, whatever this mount's
    options: its messages are the mapping's (the journal holds none of them)."""
    mappings = namespace.mappings
    if mappings is not None:
        mappings.sweep({queue.record.qid for queue in recovered.queues.values()})
    for queue in sorted(recovered.queues.values(), key=lambda queue: queue.record.qid):
        record = queue.record
        store: MessageStore | MappedStore = queue.store
        if mappings is not None:
            try:
                attached = mappings.attach(record.qid, record.maxmsg, record.msgsize, record.name)
                store = attached or store
            except errors.MqfsError:
                store = mappings.create(
                    record.qid, record.maxmsg, record.msgsize, record.uid, record.gid, record.name
                )
        namespace.restore(
            record.name,
            record.qid,
            maxmsg=record.maxmsg,
            msgsize=record.msgsize,
            mode=record.mode,
            uid=record.uid,
            gid=record.gid,
            owner_uid=record.owner_uid,
            times=(record.atime, record.mtime, record.ctime),
            store=store,
        )
    namespace.reserve_qids(recovered.next_qid)
    log.info(
        "state: %d queues with %d messages restored",
        len(recovered.queues),
        sum(len(queue.store) for queue in recovered.queues.values()),
    )

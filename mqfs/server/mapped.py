"""Fast-path queues (``-o fastpath``): the store of a queue whose messages live in a shared
mapping, and the directory of those mappings.

A fast-path queue's owner's processes send and receive in the mapping directly (the shim,
the Python client), so the daemon does not run a copy of the queue for it: its store is
this :class:`MappedStore`, a thin layer over :class:`mqfs.fastq.MappedQueue` (the C core,
fastq/fastq.c) with the interface of :class:`mqfs.server.store.MessageStore`. What the
daemon itself does to the queue (FUSE reads and writes, ioctls, other users' calls) goes
through the same C code under the same mutex.

Every call may find the queue changed by another process since the last: a push can find
it full (WouldBlock) and a pop empty even right after a check, and the queue layer
(mqfs.server.queue) treats both as races it can lose. :meth:`MappedStore.pinned` holds
the mapping's mutex across a synchronous block, for what must see one instant (a batch
peek with its generation).

The mapping files live in :class:`MappingDirectory`: ``DIR/fastpath`` with ``-o state=DIR``
(on disk, MAP_SHARED: the messages survive the daemon's death with no journal), else a
private directory under /dev/shm removed at unmount. Each file is ``QID.q``, owned by the
queue's owner, mode 0600, in a directory of mode 0711: only the owner (and root) can open
it, and nobody can list the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from mqfs import errors, fastq
from mqfs.server.store import Message

log = logging.getLogger(__name__)

LOCK_TIMEOUT = 0.05
"""Seconds the daemon waits for a mapping's mutex before failing that call with EBUSY:
a process of the owner's stopped (or spinning) while holding it must not stall the
daemon, which serves everyone else from one thread."""


class MappedStore:
    """The messages of one fast-path queue, in its shared mapping."""

    mapped = True

    def __init__(self, queue: fastq.MappedQueue, path: Path) -> None:
        self.queue = queue
        self.path = path  # the mapping file (gone from the directory once unlinked)
        self.prio_max = fastq.PRIO_MAX
        # The watch thread may be asleep on the mapping when the queue is destroyed: the
        # mapping is let go by whichever of the two finishes last.
        self._threads = 0
        self._released = False
        self._release_lock = threading.Lock()
        self._own_changes = 0  # by the daemon itself, since take_own_changes

    @classmethod
    def create(
        cls, path: Path, maxmsg: int, msgsize: int, uid: int, gid: int, name: str
    ) -> MappedStore:
        try:
            fastq.create(path, maxmsg, msgsize, uid, gid)
        except OSError as exc:
            raise errors.OutOfMemory(
                f"cannot make the mapping of queue {name!r}: {exc.strerror}"
            ) from exc
        return cls.attach(path, maxmsg, msgsize, name)

    @classmethod
    def attach(cls, path: Path, maxmsg: int, msgsize: int, name: str) -> MappedStore:
        queue = fastq.MappedQueue(path, maxmsg, msgsize, name)
        try:
            if queue.adopt():
                log.info("queue %r: its mapping was last used before a reboot: renewed", name)
        except BaseException:
            queue.close()
            raise
        return cls(queue, path)

    # -- size ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.queue.state().count

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def bytes_queued(self) -> int:
        return self.queue.state().bytes

    @property
    def head_length(self) -> int:
        return self.queue.state().head_length

    @property
    def generation(self) -> int:
        """The mapping's own change counter (every send, receive or removal by anyone)."""
        return self.queue.state().generation

    def state(self) -> fastq.State:
        return self.queue.state()

    def sleepers(self) -> list[fastq.Sleeper]:
        return self.queue.sleepers()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Hold the mapping's mutex for a synchronous block (see the module docstring)."""
        with self.queue.pinned():
            yield

    # -- changes ---------------------------------------------------------------------------
    def take_own_changes(self) -> int:
        """How many changes of the mapping the daemon made (push, pop, remove) since the
        last call: each moved the mapping's generation, which is part of the queue's."""
        own, self._own_changes = self._own_changes, 0
        return own

    def push(self, payload: bytes, priority: int) -> None:
        """Send without waiting: WouldBlock if another process filled the queue."""
        self.queue.send(payload, priority, nonblock=True)
        self._own_changes += 1

    def pop(self) -> Message:
        """Receive without waiting: WouldBlock if another process emptied the queue."""
        payload, priority = self.queue.receive(nonblock=True)
        self._own_changes += 1
        return Message(payload, priority)

    def pop_fitting(self, size: int) -> Message | None:
        """The head if it is at most *size* bytes long (None: it is longer; nothing taken)."""
        taken = self.queue.receive_upto(size)
        if taken is None:
            return None
        self._own_changes += 1
        return Message(*taken)

    def remove(self, index: int, generation: int = 0) -> Message:
        """Take message *index* out if the mapping is at *generation* (0: whatever it is):
        NoSuchMessage past the last (an empty queue included), QueueChanged if it moved on."""
        payload, priority = self.queue.remove(index, generation)
        self._own_changes += 1
        return Message(payload, priority)

    # -- reading -------------------------------------------------------------------------
    def peek(self, index: int) -> Message:
        """Message *index* in receive order: EAGAIN if empty, ENOENT past the end."""
        if index < 0:
            raise errors.NoSuchMessage(f"no message at index {index}")
        payload, priority, _, _ = self.queue.peek(index)
        return Message(payload, priority)

    def segments_from(self, index: int, limit: int) -> Iterator[tuple[int, list[bytes]]]:
        """(priority, payloads) runs of at most *limit* messages from *index* on, taken
        under the mutex: one instant of the queue."""
        runs: list[tuple[int, list[bytes]]] = []
        with self.pinned():
            count = len(self)
            for position in range(max(index, 0), min(count, max(index, 0) + limit)):
                payload, priority, _, _ = self.queue.peek(position)
                if runs and runs[-1][0] == priority:
                    runs[-1][1].append(payload)
                else:
                    runs.append((priority, [payload]))
        return iter(runs)

    def messages_from(self, index: int = 0) -> Iterator[Message]:
        for priority, run in self.segments_from(index, len(self)):
            for payload in run:
                yield Message(payload, priority)

    def __iter__(self) -> Iterator[Message]:
        return self.messages_from(0)

    def check_invariants(self) -> None:
        self.queue.check()

    # -- the daemon's side of waking -------------------------------------------------------
    def set_interest(self, interested: bool, notify_armed: bool) -> None:
        self.queue.set_interest(interested, notify_armed)

    def take_notify(self) -> int:
        return self.queue.take_notify()

    def set_notification(self, pid: int, sigev_notify: int, signo: int, value: int) -> None:
        self.queue.set_notification(pid, sigev_notify, signo, value)

    def wait_change(self, seen: int, timeout: float) -> int | None:
        """In a worker thread: until the mapping changes (its change counter), or None."""
        with self._release_lock:
            if self._released:
                return None
            self._threads += 1
        try:
            return self.queue.wait_change(seen, timeout)
        finally:
            with self._release_lock:
                self._threads -= 1
                last = self._released and not self._threads
            if last:
                self.queue.close()

    @property
    def released(self) -> bool:
        """The queue was destroyed: the mapping is (being) let go."""
        return self._released

    def wake_all(self) -> None:
        """Wake every process and thread asleep on the mapping (the daemon is stopping)."""
        self.queue.wake_all()

    # -- the file ----------------------------------------------------------------------------
    def chown(self, uid: int, gid: int) -> None:
        """The queue changed owner: so does its mapping (only the owner may map it)."""
        with contextlib.suppress(FileNotFoundError):
            os.chown(self.path, uid, gid, follow_symlinks=False)

    def unlink_file(self) -> None:
        """The queue's name is gone: so is its mapping's (processes that have it mapped
        keep using it; a new mapping comes with a new queue of that name)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def clear(self) -> None:
        """The queue is destroyed: let the mapping go (and its file, if still there)."""
        self.unlink_file()
        with self._release_lock:
            if self._released:
                return
            self._released = True
            last = not self._threads
        self.queue.wake_all()
        if last:
            self.queue.close()


class MappingDirectory:
    """Where a mount's fast-path mappings are: ``STATE/fastpath`` or a private directory."""

    def __init__(self, path: Path, *, private: bool, create_new: bool) -> None:
        self.path = path
        self.private = private
        self.create_new = create_new  # -o fastpath: new queues get a mapping

    @classmethod
    def open(cls, state: Path | None, fastpath: bool) -> MappingDirectory | None:
        """The mount's mapping directory: None without fastpath, unless state=DIR holds
        fast-path queues from an earlier mount. With state=DIR the owners of fast-path
        queues must reach DIR/fastpath/QID.q, so DIR becomes 0711 (searchable, not
        listable; the journal's files stay 0600)."""
        if state is not None and (fastpath or (state / "fastpath").is_dir()):
            path = state / "fastpath"
            path.mkdir(mode=0o711, exist_ok=True)
            os.chmod(state, 0o711)
            private = False
        elif fastpath:
            parent = Path(_shm() or tempfile.gettempdir())
            _sweep_orphans(parent)
            path = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=parent))
            private = True
        else:
            return None
        os.chmod(path, 0o711)
        fastq.guard_faults(LOCK_TIMEOUT)
        return cls(path, private=private, create_new=fastpath)

    def file_of(self, qid: int) -> Path:
        return self.path / f"{qid}.q"

    def create(
        self, qid: int, maxmsg: int, msgsize: int, uid: int, gid: int, name: str
    ) -> MappedStore:
        path = self.file_of(qid)
        path.unlink(missing_ok=True)  # a leftover of a queue the journal never recorded
        return MappedStore.create(path, maxmsg, msgsize, uid, gid, name)

    def attach(self, qid: int, maxmsg: int, msgsize: int, name: str) -> MappedStore | None:
        """The mapping of restored queue *qid*, if it had one and it is sound."""
        path = self.file_of(qid)
        if not path.exists():
            return None
        try:
            store = MappedStore.attach(path, maxmsg, msgsize, name)
        except errors.MqfsError as exc:
            log.warning("state: the mapping of queue %r is unusable (%s): set aside", name, exc)
            path.rename(path.with_suffix(".corrupt"))
            raise
        try:
            store.check_invariants()
        except errors.Busy:
            pass  # a process of the owner's holds it right now: it is in use, so sound
        except errors.MqfsError as exc:
            store.queue.close()
            log.warning("state: the mapping of queue %r is corrupt (%s): set aside", name, exc)
            path.rename(path.with_suffix(".corrupt"))
            raise
        return store

    def sweep(self, live: set[int]) -> None:
        """Remove mappings of queues the journal does not hold (created, then lost)."""
        for entry in self.path.glob("*.q"):
            if entry.stem.isdigit() and int(entry.stem) not in live:
                entry.unlink(missing_ok=True)

    def close(self) -> None:
        if self.private:
            shutil.rmtree(self.path, ignore_errors=True)


PRIVATE_PREFIX = "mqfs-fastpath-"
"""A private mapping directory is PRIVATE_PREFIX + the daemon's pid + "-" + a random part."""


def _sweep_orphans(parent: Path) -> None:
    """Remove the private mapping directories of daemons that are gone: one killed by
    SIGKILL could not remove its own, and what is in /dev/shm is memory. Only ours (same
    owner, a real directory, a pid no process has); processes that still have a mapping of
    one keep it, only the names go."""
    for entry in parent.glob(f"{PRIVATE_PREFIX}*-*"):
        pid = entry.name[len(PRIVATE_PREFIX) :].split("-", 1)[0]
        try:
            info = entry.lstat()
        except OSError:
            continue
        if not (pid.isdigit() and stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            pass  # alive (EPERM: another user's process has that pid)


def _shm() -> str | None:
    """/dev/shm when it is a writable directory (tmpfs: no disk write-back), else the
    default temporary directory."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

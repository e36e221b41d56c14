"""Inode numbers, attributes, and what the kernel may cache of them.

Layout of a mount::

    MNT/                 one directory per queue (mode 1777, like /dev/mqueue)
    MNT/NAME/queue       write() sends, read() receives, ioctl()s (mqfs.wire)
    MNT/NAME/status      the kernel's status line for /dev/mqueue/NAME
    MNT/NAME/msgs/I      message I in receive order, read without consuming it

Inode numbers are derived, never allocated: a queue gets a serial number (``qid``, never
reused), and each of its files is ``qid << 24 | slot``. A slot is only ever made from a
checked value (``msgs/N`` exists only for N < curmsgs <= 65536, far below 2**24), so no
two live objects share a number and no number overflows into another queue's. Nothing is
keyed by lookup count, so ``forget`` has nothing to free; a queue's memory goes when it
is unlinked and its last descriptor closes (:meth:`Namespace.release`), as in the kernel.

Caching. The kernel may keep names and attributes for :data:`CACHE_TIMEOUT` seconds,
because mqfs tells it whenever they change:

* names change only through the kernel itself (mkdir, rmdir);
* a queue directory's attributes change only with chmod/chown, which invalidate every
  view of the queue (:meth:`CachedViews.invalidate_all`);
* the whole ``msgs/`` subtree is dropped with one notification at the first send or
  receive after the kernel was given any of it (:meth:`CachedViews.given_messages`);
* the queue file and ``status``, whose times and size move with every message, are
  never cached (attribute timeout zero).

Without this, ``ls -l`` of 10,000 messages costs ~20 requests per entry; with it, the
entries come in READDIRPLUS replies and nothing is asked per entry (not even an xattr:
see :meth:`~mqfs.server.ops.MqueueFS.getxattr`).
Every data file is ``direct_io``, so no file contents are ever cached.
"""

from __future__ import annotations

import contextlib
import stat
from typing import Protocol

import pyfuse3

from mqfs import errors
from mqfs.server.queue import Queue
from mqfs.server.store import Message

CACHE_TIMEOUT = 3600.0
ROOT = pyfuse3.ROOT_INODE

QID_SHIFT = 24
SLOT_MASK = (1 << QID_SHIFT) - 1
SLOT_DIR, SLOT_QUEUE, SLOT_STATUS, SLOT_MSGS = 0, 1, 2, 3
SLOT_FIRST_MESSAGE = 16
QUEUE_FILES = {b"queue": SLOT_QUEUE, b"status": SLOT_STATUS, b"msgs": SLOT_MSGS}
KERNEL_QUEUE_FILE_SIZE = 80  # st_size of /dev/mqueue/NAME (FILENT_SIZE)


def inode_of(queue: Queue, slot: int = SLOT_DIR) -> int:
    return queue.qid << QID_SHIFT | slot


def slot_of(inode: int) -> int:
    return inode & SLOT_MASK


def message_inode(queue: Queue, index: int) -> int:
    """The inode of msgs/*index*: ENOENT unless the message exists (see the docstring)."""
    message_at(queue, index)
    return inode_of(queue, SLOT_FIRST_MESSAGE + index)


def message_at(queue: Queue, index: int) -> Message:
    if not 0 <= index < len(queue):
        raise errors.NoSuchMessage(f"queue {queue.name!r} has no message {index}")
    return queue.peek(index)


def message_index(name: bytes) -> int:
    """msgs/ entries are canonical decimals: '0', '1', ... (no '01', no '+1')."""
    if not name.isdigit() or (len(name) > 1 and name.startswith(b"0")):
        raise errors.NoSuchMessage(f"no message named {name!r}")
    return int(name)


def attributes(queue: Queue | None, inode: int, root_times: int) -> pyfuse3.EntryAttributes:
    """The attributes of *inode* (of *queue*, None for the root), with how long the
    kernel may cache them. Pure: registers nothing (see :class:`CachedViews`)."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = inode
    entry.st_blksize = 4096
    entry.entry_timeout = CACHE_TIMEOUT
    entry.attr_timeout = CACHE_TIMEOUT
    if queue is None:
        entry.st_mode = stat.S_IFDIR | 0o1777
        entry.st_nlink = 2
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = root_times
        return entry
    slot = slot_of(inode)
    mode = queue.mode
    read_bits = mode & 0o444
    search_bits = ((mode >> 1) | (mode >> 2)) & 0o111  # x wherever r or w
    entry.st_uid, entry.st_gid = queue.uid, queue.gid
    entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = queue.meta_time
    entry.st_nlink = 1
    if slot == SLOT_DIR:
        entry.st_mode = stat.S_IFDIR | (mode & 0o666) | search_bits
        entry.st_nlink = 3
    elif slot == SLOT_QUEUE:
        entry.st_mode = stat.S_IFREG | (mode & 0o666)
        entry.st_size = KERNEL_QUEUE_FILE_SIZE
        entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns = queue.file_times()
        entry.attr_timeout = 0  # times change with every message
    elif slot == SLOT_STATUS:
        entry.st_mode = stat.S_IFREG | read_bits
        entry.st_size = len(queue.status_line())
        entry.attr_timeout = 0  # its size follows QSIZE
    elif slot == SLOT_MSGS:
        entry.st_mode = stat.S_IFDIR | read_bits | (read_bits >> 2)
        entry.st_nlink = 2
    elif slot >= SLOT_FIRST_MESSAGE:
        entry.st_mode = stat.S_IFREG | read_bits
        entry.st_size = len(message_at(queue, slot - SLOT_FIRST_MESSAGE).payload)
    else:
        raise errors.NoSuchQueue(f"no file in slot {slot} of queue {queue.name!r}")
    entry.st_blocks = (entry.st_size + 511) // 512
    return entry


class Invalidator(Protocol):
    """How the kernel is told to drop what it caches (pyfuse3's functions)."""

    def invalidate_entry(self, inode_p: int, name: bytes) -> None: ...
    def invalidate_entry_async(
        self, inode_p: int, name: bytes, deleted: int = 0, ignore_enoent: bool = False
    ) -> None: ...
    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None: ...


class CachedViews:
    """Which queues' ``msgs/`` entries the kernel may hold, and the notifications that
    drop them (see "Caching" above)."""

    def __init__(self, kernel: Invalidator) -> None:
        self.kernel = kernel
        self._msgs_cached: set[int] = set()  # qids

    def given_messages(self, queue: Queue) -> None:
        """The kernel was just given (part of) *queue*'s msgs/: drop all of it at the
        queue's next change."""
        if queue.qid in self._msgs_cached:
            return
        self._msgs_cached.add(queue.qid)

        def invalidate() -> None:
            self._msgs_cached.discard(queue.qid)
            # One notification drops the msgs dentry and every msgs/I under it. It is
            # synchronous, so the send or receive that changed the queue returns only
            # after the kernel has let go; this runs in handlers of the queue file,
            # where the kernel holds no lock on the queue's directory. A change made
            # straight in a fast-path queue's mapping comes with no request, at any
            # moment (an rmdir of the queue may hold that lock and wait for us): the
            # notification goes from pyfuse3's own thread then.
            if queue.changed_outside:
                self.kernel.invalidate_entry_async(inode_of(queue), b"msgs", ignore_enoent=True)
                return
            with contextlib.suppress(OSError):  # ENOENT: the kernel has already let go
                self.kernel.invalidate_entry(inode_of(queue), b"msgs")

        queue.add_watcher(invalidate)

    def invalidate_all(self, queue: Queue, changed: int) -> None:
        """Mode and owner show on every file of a queue: drop what the kernel caches
        (the inode being changed gets its new attributes from the reply)."""
        slots = [SLOT_DIR, SLOT_MSGS]
        if queue.qid in self._msgs_cached:
            slots += range(SLOT_FIRST_MESSAGE, SLOT_FIRST_MESSAGE + len(queue))
        # Attributes only, inode by inode: that takes no directory lock (chmod of the
        # directory holds its lock, so dropping entries here could deadlock).
        for slot in slots:
            if inode_of(queue, slot) != changed:
                with contextlib.suppress(OSError):  # ENOENT: not cached, nothing to drop
                    self.kernel.invalidate_inode(inode_of(queue, slot), attr_only=True)

    def forget(self, queue: Queue) -> None:
        """*queue* is destroyed: nothing of it is cached any more."""
        self._msgs_cached.discard(queue.qid)

"""Open files and directories of a mount, by FUSE file handle.

A handle number (``fh``) is never reused while the daemon runs, so a stale number from
a closed file can only miss (EBADF), never reach another caller's open file.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from mqfs import errors
from mqfs.server.queue import Descriptor, Queue, ThreadWaiter
from mqfs.server.transfers import Transfers

KEPT_PER_FILE = 16
"""SIGEV_THREAD outcomes (and waiter threads) one open file keeps until collected: a
client that registers and never waits cannot grow the daemon's memory with history."""
_LAST_ID = (1 << 31) - 1  # ids are an ioctl's (positive int) return value


@dataclass
class ThreadNotifications:
    """The SIGEV_THREAD registrations made through one open file, by the id the NOTIFY
    ioctl returned, until NOTIFY_WAIT collects how each ended.

    Also the threads whose NOTIFY_WAIT has returned: the shim's helper waits on a dup of
    the program's descriptor and closes it when done, and that close (a FUSE flush from
    the helper's thread) is not the program closing the queue, so it must not end the
    registration the program may have made meanwhile (:meth:`is_helper_close`).
    """

    by_id: dict[int, ThreadWaiter] = field(default_factory=dict)
    done_waiters: dict[int, None] = field(default_factory=dict)  # thread ids, oldest first
    next_id: int = 1

    def add(self, waiter: ThreadWaiter) -> int:
        if len(self.by_id) >= KEPT_PER_FILE:  # forget the oldest that has an outcome
            oldest = next((key for key, kept in self.by_id.items() if kept.outcome), None)
            if oldest is not None:
                del self.by_id[oldest]
        while self.next_id in self.by_id:
            self.next_id = self.next_id % _LAST_ID + 1
        registration = self.next_id
        self.next_id = self.next_id % _LAST_ID + 1
        self.by_id[registration] = waiter
        return registration

    def get(self, registration: int) -> ThreadWaiter:
        try:
            return self.by_id[registration]
        except KeyError:
            raise errors.MqfsError(
                f"no SIGEV_THREAD registration {registration} here", errno_value=errno.ENOENT
            ) from None

    def collected(self, registration: int, thread: int) -> None:
        """*thread*'s NOTIFY_WAIT for *registration* returned its outcome."""
        self.by_id.pop(registration, None)
        self.done_waiters.pop(thread, None)
        self.done_waiters[thread] = None
        if len(self.done_waiters) > KEPT_PER_FILE:
            del self.done_waiters[next(iter(self.done_waiters))]

    def is_helper_close(self, thread: int) -> bool:
        """Whether a flush by *thread* is a waiter closing its descriptor (once each)."""
        if thread not in self.done_waiters:
            return False
        del self.done_waiters[thread]
        return True


@dataclass
class QueueHandle:
    """An open MNT/NAME/queue: the descriptor plus transfer and poll state."""

    descriptor: Descriptor
    transfers: Transfers
    poll_handle: Any = None
    poll_watcher: int | None = None  # key of the queue watcher that wakes the poller
    receives_on_read: bool = False  # set by RECEIVE_ON_READ; else read() is the status line
    threads: ThreadNotifications = field(default_factory=ThreadNotifications)


@dataclass
class StatusHandle:
    queue: Queue


@dataclass
class SnapshotHandle:
    """An open MNT/NAME/msgs/I: the message as it was at open time."""

    payload: bytes


@dataclass
class DirHandle:
    inode: int


Handle = QueueHandle | StatusHandle | SnapshotHandle | DirHandle


class Handles:
    """The open handles of one mount."""

    def __init__(self) -> None:
        self._by_fh: dict[int, Handle] = {}
        self._next_fh = 1

    def add(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._by_fh[fh] = handle
        return fh

    def get(self, fh: int) -> Handle:
        try:
            return self._by_fh[fh]
        except KeyError:
            raise errors.BadDescriptor(f"no open file with handle {fh}") from None

    def queue_handle(self, fh: int) -> QueueHandle:
        """The handle of an open queue file: ENOTTY for any other file (no ioctls there)."""
        handle = self.get(fh)
        if not isinstance(handle, QueueHandle):
            raise errors.NotSupported("not a queue file")
        return handle

    def pop(self, fh: int) -> Handle | None:
        return self._by_fh.pop(fh, None)

    def peek(self, fh: int) -> Handle | None:
        return self._by_fh.get(fh)

    def descriptors_of(self, queue: Queue) -> Iterator[Descriptor]:
        return (descriptor for descriptor in self.descriptors() if descriptor.queue is queue)

    def descriptors(self) -> Iterator[Descriptor]:
        """Every open queue descriptor of the mount."""
        for handle in self._by_fh.values():
            if isinstance(handle, QueueHandle):
                yield handle.descriptor

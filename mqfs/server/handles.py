"""Open files and directories of a mount, by FUSE file handle.

A handle number (``fh``) is never reused while the daemon runs, so a stale number from
a closed file can only miss (EBADF), never reach another caller's open file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mqfs import errors
from mqfs.server.queue import Descriptor, Queue
from mqfs.server.transfers import Transfers


@dataclass
class QueueHandle:
    """An open MNT/NAME/queue: the descriptor plus transfer and poll state."""

    descriptor: Descriptor
    transfers: Transfers
    poll_handle: Any = None
    poll_watcher: int | None = None  # key of the queue watcher that wakes the poller
    receives_on_read: bool = False  # set by RECEIVE_ON_READ; else read() is the status line


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

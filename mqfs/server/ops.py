"""The filesystem: pyfuse3 ``Operations`` over a :class:`~mqfs.server.queue.Namespace`.

The only module that knows pyfuse3 and the only one that raises ``FUSEError``:
handlers decode the request, find the descriptor or queue, call the queue layer and
turn :class:`~mqfs.errors.MqfsError` into the errno the caller sees. Layout::

    MNT/                 one directory per queue (mode 1777, like /dev/mqueue)
    MNT/NAME/queue       write() sends, read() receives, ioctl()s (mqfs.wire)
    MNT/NAME/status      the kernel's status line for /dev/mqueue/NAME
    MNT/NAME/msgs/I      message I in receive order, read without consuming it

Inode numbers are derived, never allocated: a queue gets a serial number (``qid``,
never reused), and each of its files is ``qid << 24 | slot``. A slot is only ever made
from a checked value (``msgs/N`` exists only for N < curmsgs <= 65536, far below 2**24),
so no two live objects share a number and no number overflows into another queue's.
Nothing is keyed by lookup count, so ``forget`` has nothing to free; a queue's memory
goes when it is unlinked and its last descriptor closes (:meth:`Namespace.release`), as
in the kernel.

Every handler runs behind a last-resort boundary (:func:`_last_resort`): pyfuse3 stops
serving on any exception other than ``FUSEError``, which would lose every queue, so a
bug is logged with its traceback and answered with EIO instead.

Every attribute and entry timeout is zero and every data file is ``direct_io``:
queue contents change on each send and receive, and the kernel must never answer a
``stat`` or ``read`` from a stale cache.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import json
import logging
import math
import os
import select
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import pyfuse3

from mqfs import errors, wire
from mqfs.server import processes
from mqfs.server.queue import (
    Caller,
    Descriptor,
    Namespace,
    Notification,
    Queue,
    deadline_from_timespec,
)
from mqfs.server.store import Message
from mqfs.server.transfers import TransferBudget, Transfers

log = logging.getLogger(__name__)

QID_SHIFT = 24
SLOT_DIR, SLOT_QUEUE, SLOT_STATUS, SLOT_MSGS = 0, 1, 2, 3
SLOT_FIRST_MESSAGE = 16
QUEUE_FILES = {b"queue": SLOT_QUEUE, b"status": SLOT_STATUS, b"msgs": SLOT_MSGS}
KERNEL_QUEUE_FILE_SIZE = 80  # st_size of /dev/mqueue/NAME (FILENT_SIZE)
# A write() piece shorter than this cannot be the first part of a write the kernel split
# by pages: that takes max_pages (256) page slots, each carrying at least one byte.
MIN_SPLIT_PIECE = 256

POLL_IN = select.POLLIN | select.POLLRDNORM
POLL_OUT = select.POLLOUT | select.POLLWRNORM


def _fail(code: int) -> NoReturn:
    raise pyfuse3.FUSEError(code)


class _ErrnoBoundary:
    """``with _errno():`` turns the project's exceptions into FUSEError at the boundary.

    A plain class rather than @contextmanager: it is entered on every read, write and
    ioctl, and a generator-based context manager costs several times as much.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if isinstance(exc, errors.MqfsError):
            code = exc.errno or errno.EIO
            if log.isEnabledFor(logging.DEBUG):
                log.debug("-> %s: %s", errno.errorcode.get(code, code), exc.strerror)
            raise pyfuse3.FUSEError(code) from exc


_BOUNDARY = _ErrnoBoundary()


def _errno() -> _ErrnoBoundary:
    return _BOUNDARY


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])


def _last_resort(handler: _Handler) -> _Handler:
    """Answer EIO, with the traceback in the log, for any exception a handler lets
    through other than FUSEError: pyfuse3 would otherwise stop serving every queue."""

    @functools.wraps(handler)
    async def guarded(*args: Any) -> Any:
        try:
            return await handler(*args)
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("bug in the %s handler; answered EIO and kept serving", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded  # type: ignore[return-value]


@dataclass
class QueueHandle:
    """An open MNT/NAME/queue: the descriptor plus transfer and poll state."""

    descriptor: Descriptor
    transfers: Transfers
    poll_handle: Any = None
    poll_watcher: int | None = None  # key of the queue watcher that wakes the poller


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


def plain_io_limit() -> int:
    """The largest read()/write() that always reaches the daemon as one FUSE request.

    The kernel cuts a direct_io transfer into requests of at most max_pages pages
    (libfuse asks for 256; /proc/sys/fs/fuse/max_pages_limit can lower that), and a
    buffer that is not page-aligned spans one page more than its length suggests.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    max_pages = 256
    try:
        with open("/proc/sys/fs/fuse/max_pages_limit") as limit:
            max_pages = min(max_pages, int(limit.read()))
    except (OSError, ValueError):
        pass
    return (max_pages - 1) * page


def _deadline(flags: int, tv_sec: int, tv_nsec: int) -> float:
    """The trio deadline a request asks for: its timespec if XFER_TIMED, else none."""
    return deadline_from_timespec(tv_sec, tv_nsec) if flags & wire.XFER_TIMED else math.inf


def _caller(ctx: Any) -> Caller | None:
    """The caller of this request (thread id, uid), where FUSE tells it."""
    if ctx is None:
        ctx = pyfuse3.current_request_context()
    return ctx  # type: ignore[no-any-return]  # a RequestContext has pid and uid


# Caching. The kernel may keep names and attributes for CACHE_TIMEOUT seconds, because
# mqfs tells it whenever they change: names change through the kernel itself (mkdir,
# rmdir), the directories' attributes only with chmod/chown (invalidated then), and the
# whole msgs/ subtree is invalidated with one notification at the first send or receive
# after the kernel was given any of it. Only the queue file and status (whose times and
# size move with every message) are never cached. Without this, `ls -l` of 10,000
# messages costs ~20 requests per entry instead of ~2.
CACHE_TIMEOUT = 3600.0

RECEIVE = wire.base_command(wire.IOC_RECEIVE)
SEND = wire.base_command(wire.IOC_SEND)
PEEK = wire.base_command(wire.IOC_PEEK)
# The commands whose struct may come in any size from its header up, and that header's size.
SIZED_COMMANDS = {
    RECEIVE: wire.XFER_HEADER_SIZE,
    SEND: wire.XFER_HEADER_SIZE,
    PEEK: wire.PEEK_HEADER_SIZE,
}

INFO_XATTR = wire.INFO_XATTR.encode()
PRIORITY_XATTR = wire.PRIORITY_XATTR.encode()


def _guard_handlers(cls: type[pyfuse3.Operations]) -> type[pyfuse3.Operations]:
    """Put every FUSE handler *cls* defines behind :func:`_last_resort`."""
    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and hasattr(pyfuse3.Operations, name):
            setattr(cls, name, _last_resort(member))
    return cls


@_guard_handlers
class MqueueFS(pyfuse3.Operations):
    """Thin handlers: decode, guard, delegate to the queue layer, map errors."""

    # The kernel then answers system.posix_acl_* itself from its ACL cache (there are
    # none here) instead of asking the daemon for every `ls -l` entry.
    enable_acl = True

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, plain_io_max: int | None = None) -> None:
        super().__init__()
        self.namespace = namespace
        self.plain_io_max = plain_io_limit() if plain_io_max is None else plain_io_max
        # Unfinished multi-chunk transfers, per user: 64 of the largest messages.
        self.transfer_budget = TransferBudget(64 * namespace.limits.msgsize_max)
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self._root_times = time.time_ns()
        self._msgs_cached: set[int] = set()  # qids whose msgs/ entries the kernel may cache

    # -- inode helpers -------------------------------------------------------
    def _queue_of(self, inode: int) -> Queue:
        queue = self.namespace.by_id(inode >> QID_SHIFT)
        if queue is None:
            _fail(errno.ENOENT)
        return queue

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        """Attributes and how long the kernel may cache them (see "Caching" above)."""
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.st_blksize = 4096
        entry.entry_timeout = CACHE_TIMEOUT  # names change only through the kernel or
        entry.attr_timeout = CACHE_TIMEOUT  # are invalidated; attributes: see below
        if inode == pyfuse3.ROOT_INODE:
            entry.st_mode = stat.S_IFDIR | 0o1777
            entry.st_nlink = 2
            entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = self._root_times
            return entry
        queue = self._queue_of(inode)
        slot = inode & ((1 << QID_SHIFT) - 1)
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
            entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns = (
                queue.atime,
                queue.mtime,
                queue.ctime,
            )
            entry.attr_timeout = 0  # times change with every message
        elif slot == SLOT_STATUS:
            entry.st_mode = stat.S_IFREG | read_bits
            entry.st_size = len(queue.status_line())
            entry.attr_timeout = 0  # its size follows QSIZE
        elif slot == SLOT_MSGS:
            entry.st_mode = stat.S_IFDIR | read_bits | (read_bits >> 2)
            entry.st_nlink = 2
        elif slot >= SLOT_FIRST_MESSAGE:
            message = self._message_at(queue, slot - SLOT_FIRST_MESSAGE)
            entry.st_mode = stat.S_IFREG | read_bits
            entry.st_size = len(message.payload)
            self._invalidate_msgs_on_change(queue)
        else:
            _fail(errno.ENOENT)
        entry.st_blocks = (entry.st_size + 511) // 512
        return entry

    def _invalidate_msgs_on_change(self, queue: Queue) -> None:
        """The kernel now caches part of msgs/: drop it all at the queue's next change."""
        if queue.qid in self._msgs_cached:
            return
        self._msgs_cached.add(queue.qid)
        directory = queue.qid << QID_SHIFT | SLOT_DIR

        def invalidate() -> None:
            self._msgs_cached.discard(queue.qid)
            # One notification drops the msgs dentry and every msgs/I under it. It is
            # synchronous, so the send or receive that changed the queue returns only
            # after the kernel has let go; this runs in handlers of the queue file,
            # where the kernel holds no lock on the queue's directory.
            with contextlib.suppress(OSError):  # ENOENT: the kernel has already let go
                pyfuse3.invalidate_entry(directory, b"msgs")

        queue.add_watcher(invalidate)

    @staticmethod
    def _message_at(queue: Queue, index: int) -> Message:
        if not 0 <= index < len(queue):
            _fail(errno.ENOENT)
        return queue.peek(index)

    @staticmethod
    def _message_index(name: bytes) -> int:
        """msgs/ entries are canonical decimals: '0', '1', ... (no '01', no '+1')."""
        if not name.isdigit() or (len(name) > 1 and name.startswith(b"0")):
            _fail(errno.ENOENT)
        return int(name)

    def _new_fh(self, handle: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = handle
        return fh

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            _fail(errno.EBADF)

    def _queue_handle(self, fh: int) -> QueueHandle:
        handle = self._handle(fh)
        if not isinstance(handle, QueueHandle):
            _fail(errno.ENOTTY)
        return handle

    # -- metadata ------------------------------------------------------------
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attributes(inode)

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent == pyfuse3.ROOT_INODE:
            with _errno():
                queue = self.namespace.lookup(os.fsdecode(name))
            return self._attributes(queue.qid << QID_SHIFT)
        queue = self._queue_of(parent)
        base = queue.qid << QID_SHIFT
        slot = parent - base
        if slot == SLOT_DIR and name in QUEUE_FILES:
            return self._attributes(base | QUEUE_FILES[name])
        if slot == SLOT_MSGS:
            index = self._message_index(name)
            if index >= len(queue):  # also keeps the slot below 2**24: see the docstring
                _fail(errno.ENOENT)
            return self._attributes(base | (SLOT_FIRST_MESSAGE + index))
        _fail(errno.ENOENT)

    async def forget(self, inode_list: Any) -> None:
        return  # inodes are derived from qids; there is nothing to free

    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if inode == pyfuse3.ROOT_INODE:
            _fail(errno.EPERM)
        queue = self._queue_of(inode)
        slot = inode & ((1 << QID_SHIFT) - 1)
        if fields.update_size and not (slot == SLOT_QUEUE and attr.st_size == 0):
            _fail(errno.EPERM)  # only the shell's O_TRUNC on the queue file, ignored
        if slot not in (SLOT_DIR, SLOT_QUEUE) and (
            fields.update_mode or fields.update_uid or fields.update_gid
        ):
            _fail(errno.EPERM)  # the queue's mode and owner live on the directory and file
        if fields.update_mode:
            queue.mode = attr.st_mode & 0o7777
        if fields.update_uid:
            queue.uid = attr.st_uid
        if fields.update_gid:
            queue.gid = attr.st_gid
        if fields.update_atime:
            queue.atime = attr.st_atime_ns
        if fields.update_mtime:
            queue.mtime = attr.st_mtime_ns
        queue.ctime = time.time_ns()
        if fields.update_mode or fields.update_uid or fields.update_gid:
            queue.meta_time = queue.ctime
            self._invalidate_views(queue, changed=inode)
        return self._attributes(inode)

    def _invalidate_views(self, queue: Queue, changed: int) -> None:
        """Mode and owner show on every file of a queue: drop what the kernel caches
        (the inode being changed gets its new attributes from this reply)."""
        base = queue.qid << QID_SHIFT
        slots = [SLOT_DIR, SLOT_MSGS]
        if queue.qid in self._msgs_cached:
            slots += range(SLOT_FIRST_MESSAGE, SLOT_FIRST_MESSAGE + len(queue))
        # Attributes only, inode by inode: that takes no directory lock (chmod of the
        # directory holds its lock, so dropping entries here could deadlock).
        for slot in slots:
            if base | slot != changed:
                with contextlib.suppress(OSError):  # ENOENT: not cached, nothing to drop
                    pyfuse3.invalidate_inode(base | slot, attr_only=True)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_files = self.namespace.limits.queues_max
        data.f_ffree = max(0, self.namespace.limits.queues_max - self.namespace.live)
        data.f_favail = data.f_ffree
        data.f_namemax = 255
        return data

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        slot = inode & ((1 << QID_SHIFT) - 1)
        if inode != pyfuse3.ROOT_INODE and slot == SLOT_DIR and name == INFO_XATTR:
            return json.dumps(self._queue_info(self._queue_of(inode), ctx)).encode()
        if inode == pyfuse3.ROOT_INODE or slot < SLOT_FIRST_MESSAGE or name != PRIORITY_XATTR:
            _fail(pyfuse3.ENOATTR)
        message = self._message_at(self._queue_of(inode), slot - SLOT_FIRST_MESSAGE)
        return str(message.priority).encode()

    def _queue_info(self, queue: Queue, ctx: Any) -> dict[str, Any]:
        """What `mqfs ls -l` and `mqfs who` show: attributes, notify, who has it open.

        Which processes have a queue open is shown to root and the queue's owner only
        (the kernel shows a process's descriptors to its owner and root); anyone else
        gets the counts, with ``openers`` null."""
        note = queue.notification
        descriptors = [
            handle.descriptor
            for handle in self._handles.values()
            if isinstance(handle, QueueHandle) and handle.descriptor.queue is queue
        ]
        openers = [
            {
                "pid": descriptor.pid,
                "access": ("r" if descriptor.readable else "")
                + ("w" if descriptor.writable else ""),
                "nonblock": descriptor.nonblock,
                "blocked": descriptor.waiting,
            }
            for descriptor in descriptors
        ]
        return {
            "open": len(descriptors),
            "blocked": sum(descriptor.waiting for descriptor in descriptors),
            "openers": openers if ctx.uid in (0, queue.uid) else None,
            "maxmsg": queue.maxmsg,
            "msgsize": queue.msgsize,
            "curmsgs": len(queue),
            "qsize": queue.store.bytes_queued,
            "notify": None
            if note is None
            else {"pid": note.pid, "sigev_notify": note.sigev_notify, "signo": note.signo},
        }

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        slot = inode & ((1 << QID_SHIFT) - 1)
        if inode != pyfuse3.ROOT_INODE and slot == SLOT_DIR:
            self._queue_of(inode)
            return [INFO_XATTR]
        if inode != pyfuse3.ROOT_INODE and slot >= SLOT_FIRST_MESSAGE:
            self._message_at(self._queue_of(inode), slot - SLOT_FIRST_MESSAGE)
            return [PRIORITY_XATTR]
        return []

    # -- queues as directories ---------------------------------------------------
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent != pyfuse3.ROOT_INODE:
            _fail(errno.EPERM)
        with _errno():
            queue = self.namespace.create(
                os.fsdecode(name),
                mode=mode,
                uid=ctx.uid,
                gid=ctx.gid,
                exclusive=True,
                byte_limit=processes.msgqueue_rlimit(ctx.pid),
                privileged=processes.has_sys_resource(ctx.pid),
            )
        return self._attributes(queue.qid << QID_SHIFT)

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        if parent != pyfuse3.ROOT_INODE:
            _fail(errno.EPERM)
        with _errno():
            queue = self.namespace.unlink(os.fsdecode(name))
        self._forget_if_destroyed(queue)

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        _fail(errno.EISDIR if parent == pyfuse3.ROOT_INODE else errno.EPERM)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> NoReturn:
        _fail(errno.EPERM)  # queues are made with mkdir or the CREATE ioctl

    async def opendir(self, inode: int, ctx: Any) -> int:
        self._attributes(inode)  # ENOENT for a queue that is gone
        return self._new_fh(DirHandle(inode))

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        inode = self._handle(fh)
        assert isinstance(inode, DirHandle)
        if inode.inode == pyfuse3.ROOT_INODE:
            # Offsets are qids: stable however queues come and go between calls.
            for queue in sorted(self.namespace.queues.values(), key=lambda q: q.qid):
                if queue.qid <= start_id:
                    continue
                attrs = self._attributes(queue.qid << QID_SHIFT)
                if not pyfuse3.readdir_reply(token, os.fsencode(queue.name), attrs, queue.qid):
                    return
            return
        queue = self._queue_of(inode.inode)
        base = queue.qid << QID_SHIFT
        if inode.inode == base | SLOT_DIR:
            for offset, (name, slot) in enumerate(QUEUE_FILES.items(), start=1):
                if offset > start_id and not pyfuse3.readdir_reply(
                    token, name, self._attributes(base | slot), offset
                ):
                    return
            return
        # msgs/: offsets are index + 1, i.e. the name itself, so they are stable.
        for index in range(start_id, len(queue)):
            attrs = self._attributes(base | (SLOT_FIRST_MESSAGE + index))
            if not pyfuse3.readdir_reply(token, str(index).encode(), attrs, index + 1):
                return

    async def releasedir(self, fh: int) -> None:
        self._handles.pop(fh, None)

    # -- files -------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        queue = self._queue_of(inode)
        slot = inode & ((1 << QID_SHIFT) - 1)
        access = flags & os.O_ACCMODE
        handle: Handle
        if slot == SLOT_QUEUE:
            # O_ACCMODE (3) is Linux's "no read, no write" open: allowed, as on /dev/mqueue;
            # send and receive on it are EBADF.
            descriptor = Descriptor(
                queue,
                readable=access in (os.O_RDONLY, os.O_RDWR),
                writable=access in (os.O_WRONLY, os.O_RDWR),
                nonblock=bool(flags & os.O_NONBLOCK),
                pid=ctx.pid,
            )
            handle = QueueHandle(descriptor, Transfers(self.transfer_budget, ctx.uid))
            self.namespace.acquire(queue)
        elif access != os.O_RDONLY:
            _fail(errno.EACCES)  # status and msgs/I are read-only, even for root
        elif slot == SLOT_STATUS:
            handle = StatusHandle(queue)
        elif slot >= SLOT_FIRST_MESSAGE:
            handle = SnapshotHandle(self._message_at(queue, slot - SLOT_FIRST_MESSAGE).payload)
        else:
            _fail(errno.EISDIR)
        info = pyfuse3.FileInfo(fh=self._new_fh(handle))
        info.direct_io = True
        info.keep_cache = False
        return info

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._handle(fh)
        if isinstance(handle, QueueHandle):
            with _errno():
                message = await handle.descriptor.receive(size, caller=_caller(None))
            return message.payload
        if isinstance(handle, StatusHandle):
            return handle.queue.status_line()[off : off + size]
        if isinstance(handle, SnapshotHandle):
            return handle.payload[off : off + size]
        _fail(errno.EISDIR)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        if not isinstance(handle, QueueHandle):
            _fail(errno.EBADF)
        descriptor = handle.descriptor
        caller = _caller(None)
        with _errno():
            if self._split_by_kernel(len(buf), caller):
                # The first piece of a write() the kernel cut into several requests, which
                # would become several messages: refuse it, so that nothing is sent and
                # the write() fails. Large messages go through the SEND ioctl.
                descriptor.check_send(len(buf), descriptor.send_priority)  # EBADF first
                raise errors.MessageTooLong(
                    f"this write() reaches mqfs in pieces (this one {len(buf)} bytes), so it "
                    f"would not be one message; write at most {self.plain_io_max} bytes "
                    "from one buffer, or use the SEND ioctl"
                )
            await descriptor.send(buf, descriptor.send_priority, sender=caller)
        return len(buf)

    def _split_by_kernel(self, length: int, caller: Caller | None) -> bool:
        """Whether this write request is only the first piece of the caller's write().

        The kernel cuts a direct_io write into requests of at most max_pages page slots,
        one slot per page of each iovec, so a writev of many small buffers is cut as well
        as one large write. The request does not say so; the caller's pending system call
        does (/proc/TID/syscall). Too short a piece cannot be a cut one, so small
        messages skip the look."""
        if length > self.plain_io_max:
            return True
        if length < MIN_SPLIT_PIECE or caller is None:
            return False
        total = processes.pending_write_size(caller.pid)
        return total is not None and total > length

    async def poll(self, inode: int, fh: int, poll_handle: Any, ctx: Any) -> int:
        handle = self._handle(fh)
        if not isinstance(handle, QueueHandle):
            return POLL_IN
        queue = handle.descriptor.queue
        revents = (POLL_IN if len(queue) else 0) | (0 if queue.is_full else POLL_OUT)
        if poll_handle is not None:
            handle.poll_handle = poll_handle  # replaces (and so frees) the previous one
            if handle.poll_watcher is None:
                handle.poll_watcher = queue.add_watcher(lambda: self._wake_poller(handle))
        return revents

    @staticmethod
    def _wake_poller(handle: QueueHandle) -> None:
        handle.poll_watcher = None
        poll_handle, handle.poll_handle = handle.poll_handle, None
        if poll_handle is not None:
            poll_handle.notify()

    async def flush(self, fh: int) -> None:
        # close() of any descriptor of a queue by the process registered for its
        # notification ends the registration (the kernel's mqueue_flush_file).
        handle = self._handles.get(fh)
        if isinstance(handle, QueueHandle):
            queue = handle.descriptor.queue
        elif isinstance(handle, StatusHandle):
            queue = handle.queue
        else:
            return
        ctx = pyfuse3.current_request_context()
        if queue.notification is not None and ctx is not None:
            queue.closed_by(processes.tgid_of(ctx.pid))

    async def release(self, fh: int) -> None:
        handle = self._handles.pop(fh, None)
        if isinstance(handle, QueueHandle):
            queue = handle.descriptor.queue
            handle.poll_handle = None
            if handle.poll_watcher is not None:
                queue.remove_watcher(handle.poll_watcher)
            handle.transfers.drop_all()
            self.namespace.release(queue)
            self._forget_if_destroyed(queue)

    def _forget_if_destroyed(self, queue: Queue) -> None:
        """After an unlink or a close: if that destroyed *queue*, drop what we kept of it."""
        if not self.namespace.is_alive(queue):
            self._msgs_cached.discard(queue.qid)

    # -- ioctls ------------------------------------------------------------------
    async def ioctl(
        self,
        inode: int,
        fh: int,
        cmd: int,
        arg: int,
        in_buf: bytes,
        out_size: int,
        flags: int,
        ctx: Any,
    ) -> tuple[int, bytes]:
        if cmd == wire.IOC_NOOP:
            return 0, b""
        try:
            with _errno():
                if flags & pyfuse3.IOCTL_DIR:
                    if cmd == wire.IOC_CREATE and inode == pyfuse3.ROOT_INODE:
                        return self._ioctl_create(in_buf, ctx)
                    _fail(errno.ENOTTY)
                handle = self._queue_handle(fh)
                base = wire.base_command(cmd)
                if base in SIZED_COMMANDS:  # data[] may be shorter than CHUNK: see wire.sized
                    # Room for the header, and for at least one byte where data comes back.
                    if out_size < SIZED_COMMANDS[base] + (base != SEND):
                        _fail(errno.EINVAL)
                    if base == RECEIVE:
                        return await self._ioctl_receive(handle, in_buf, out_size, _caller(ctx))
                    if base == SEND:
                        return await self._ioctl_send(handle, in_buf, _caller(ctx))
                    return self._ioctl_peek(handle.descriptor, in_buf, out_size)
                if cmd == wire.IOC_GETATTR:
                    return 0, wire.Attr(*handle.descriptor.attributes()).pack()
                if cmd == wire.IOC_SETATTR:
                    previous = wire.Attr(*handle.descriptor.attributes())
                    handle.descriptor.set_flags(wire.Attr.unpack(in_buf).flags)
                    return 0, previous.pack()
                if cmd == wire.IOC_WAIT:
                    return await self._ioctl_wait(handle.descriptor.queue, in_buf, ctx)
                if cmd == wire.IOC_PEEK_BATCH:
                    return self._ioctl_peek_batch(handle.descriptor, in_buf)
                if cmd == wire.IOC_NOTIFY:
                    return self._ioctl_notify(handle.descriptor.queue, in_buf, ctx)
                if cmd == wire.IOC_SETPRIO:
                    handle.descriptor.set_send_priority(wire.decode_prio(in_buf))
                    return 0, b""
                _fail(errno.ENOTTY)
        except ValueError as exc:  # a malformed struct from the caller
            log.debug("ioctl %#x: bad argument: %s", cmd, exc)
            _fail(errno.EINVAL)

    @staticmethod
    def _ioctl_notify(queue: Queue, in_buf: bytes, ctx: Any) -> tuple[int, bytes]:
        request = wire.Notify.unpack(in_buf)
        pid = processes.tgid_of(ctx.pid)
        if request.action == wire.NOTIFY_UNREGISTER:
            queue.unregister_notification(pid)
        elif request.action == wire.NOTIFY_REGISTER:
            queue.register_notification(
                Notification(pid, request.sigev_notify, request.sigev_signo, request.sigev_value)
            )
        else:
            raise errors.InvalidArgument(f"unknown notify action {request.action}")
        return 0, b""

    def _ioctl_create(self, in_buf: bytes, ctx: Any) -> tuple[int, bytes]:
        request = wire.Create.unpack(in_buf)
        with_attr = bool(request.flags & wire.CREATE_ATTR)
        self.namespace.create(
            os.fsdecode(request.name),
            mode=request.mode,
            uid=ctx.uid,
            gid=ctx.gid,
            maxmsg=request.maxmsg if with_attr else None,
            msgsize=request.msgsize if with_attr else None,
            exclusive=bool(request.flags & wire.CREATE_EXCL),
            byte_limit=processes.msgqueue_rlimit(ctx.pid),
            privileged=processes.has_sys_resource(ctx.pid),
        )
        return 0, b""

    @staticmethod
    def _ioctl_peek(descriptor: Descriptor, in_buf: bytes, out_size: int) -> tuple[int, bytes]:
        request = wire.Peek.unpack(in_buf)
        message = descriptor.peek(request.index)
        if request.offset > len(message.payload):
            raise errors.InvalidArgument("offset beyond the end of the message")
        capacity = min(out_size - wire.PEEK_HEADER_SIZE, wire.CHUNK)
        chunk = message.payload[request.offset : request.offset + capacity]
        reply = wire.Peek(
            index=request.index,
            offset=request.offset,
            msg_len=len(message.payload),
            msg_prio=message.priority,
            data=chunk,
        )
        return len(chunk), reply.pack(full=False)

    @staticmethod
    async def _ioctl_wait(queue: Queue, in_buf: bytes, ctx: Any) -> tuple[int, bytes]:
        request = wire.Wait.unpack(in_buf)
        deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
        generation = await queue.wait_changed(request.generation, deadline, ctx)
        return 0, wire.Wait(generation=generation).pack()

    @staticmethod
    def _ioctl_peek_batch(descriptor: Descriptor, in_buf: bytes) -> tuple[int, bytes]:
        request = wire.Batch.unpack(in_buf)
        queue = descriptor.queue
        # No more records than fit even if every message were empty.
        limit = min(request.max_count or len(queue), wire.CHUNK // wire.BATCH_RECORD_HEADER_SIZE)
        count, body = wire.pack_batch_body(descriptor.segments_from(request.index, limit))
        following = request.index + count
        header = wire.Batch(
            index=request.index,
            max_count=request.max_count,
            next=following,
            generation=queue.generation,
            flags=wire.BATCH_MORE if following < len(queue) else 0,
        )
        return count, header.pack(full=False, body=(count, body))

    async def _ioctl_send(
        self, handle: QueueHandle, in_buf: bytes, sender: Caller | None
    ) -> tuple[int, bytes]:
        request = wire.Xfer.unpack(in_buf)
        deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
        descriptor = handle.descriptor
        if request.xfer_id:
            message = handle.transfers.add_chunk(request.xfer_id, request.offset, request.data)
            if message is None:
                reply = wire.Xfer(msg_len=request.msg_len, xfer_id=request.xfer_id)
                return 0, reply.pack(full=False)
            await descriptor.send(message.payload, message.priority, deadline, sender)
            return 0, b""
        if request.offset != 0:
            raise errors.InvalidArgument("a transfer starts at offset 0")
        if len(request.data) > request.msg_len:
            raise errors.InvalidArgument("chunk extends beyond msg_len")
        if len(request.data) == request.msg_len:  # the whole message in one call
            await descriptor.send(request.data, request.msg_prio, deadline, sender)
            return 0, b""
        descriptor.check_send(request.msg_len, request.msg_prio)
        if descriptor.nonblock and descriptor.queue.is_full:
            raise errors.WouldBlock(f"queue {descriptor.queue.name!r} is full")
        transfer = handle.transfers.start_send(request.msg_len, request.msg_prio, request.data)
        return 0, wire.Xfer(msg_len=request.msg_len, xfer_id=transfer).pack(full=False)

    async def _ioctl_receive(
        self, handle: QueueHandle, in_buf: bytes, out_size: int, caller: Caller | None
    ) -> tuple[int, bytes]:
        request = wire.Xfer.unpack(in_buf)
        capacity = min(out_size - wire.XFER_HEADER_SIZE, wire.CHUNK)
        transfers = handle.transfers
        if request.xfer_id:
            message = transfers.parked(request.xfer_id, request.offset)
            chunk = message.payload[request.offset : request.offset + capacity]
            if request.offset + len(chunk) >= len(message.payload):
                transfers.finish_receive(request.xfer_id)
            reply = wire.Xfer(
                msg_len=len(message.payload),
                offset=request.offset,
                xfer_id=request.xfer_id,
                msg_prio=message.priority,
                data=chunk,
            )
            return len(chunk), reply.pack(full=False)
        deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
        if handle.descriptor.queue.msgsize > capacity:  # the message may need parking
            transfers.check_room(handle.descriptor.queue.msgsize)
        message = await handle.descriptor.receive(request.msg_len, deadline, caller)
        # From here on no checkpoint: the message is ours and must reach the caller.
        transfer = transfers.park(message) if len(message.payload) > capacity else 0
        reply = wire.Xfer(
            msg_len=len(message.payload),
            xfer_id=transfer,
            msg_prio=message.priority,
            data=message.payload[:capacity],
        )
        return min(len(message.payload), capacity), reply.pack(full=False)

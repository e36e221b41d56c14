"""The FUSE operations: pyfuse3 ``Operations`` over a :class:`~mqfs.server.queue.Namespace`.

The only module that raises ``FUSEError``. Handlers are thin: decode the request, find
the queue (:mod:`~mqfs.server.inodes`) or the open file (:mod:`~mqfs.server.handles`),
call the queue layer. The layout of a mount, the inode numbers and the caching policy
are described in :mod:`mqfs.server.inodes`.

Errors are translated in one place, the boundary every handler runs behind
(:func:`_boundary`): an :class:`~mqfs.errors.MqfsError` becomes its errno; a
``FUSEError`` passes; anything else is a bug, logged with its traceback and answered
with EIO, because pyfuse3 stops serving on any other exception, which would lose every
queue.
"""

from __future__ import annotations

import errno
import functools
import inspect
import json
import logging
import math
import os
import select
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, NoReturn, Protocol, TypeVar

import pyfuse3

from mqfs import errors, wire
from mqfs.server import inodes, processes
from mqfs.server.handles import (
    DirHandle,
    Handle,
    Handles,
    QueueHandle,
    SnapshotHandle,
    StatusHandle,
)
from mqfs.server.info import limits_info, queue_info
from mqfs.server.inodes import (
    QUEUE_FILES,
    ROOT,
    SLOT_DIR,
    SLOT_FIRST_MESSAGE,
    SLOT_MSGS,
    SLOT_QUEUE,
    SLOT_STATUS,
    CachedViews,
    inode_of,
    slot_of,
)
from mqfs.server.ioctls import Ioctls
from mqfs.server.queue import (
    HARD_MSGMAX,
    Caller,
    Descriptor,
    Namespace,
    Queue,
    deadline_from_timespec,
)
from mqfs.server.transfers import TransferBudget, Transfers
from mqfs.wire import plain_io_limit

log = logging.getLogger(__name__)

# A write() piece shorter than this cannot be the first part of a write the kernel split
# by pages: that takes max_pages (256) page slots, each carrying at least one byte.
MIN_SPLIT_PIECE = 256

POLL_IN = select.POLLIN | select.POLLRDNORM
POLL_OUT = select.POLLOUT | select.POLLWRNORM

INFO_XATTR = wire.INFO_XATTR.encode()
PRIORITY_XATTR = wire.PRIORITY_XATTR.encode()
LIMITS_XATTR = wire.LIMITS_XATTR.encode()
USER_XATTR_PREFIX = b"user."  # the one xattr namespace mqfs has names in


def _fail(code: int) -> NoReturn:
    """A FUSE-shaped refusal with no queue meaning (EISDIR, EPERM on the tree, ENOATTR)."""
    raise pyfuse3.FUSEError(code)


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])


def _boundary(handler: _Handler) -> _Handler:
    """Run *handler* behind the errno boundary (see the module docstring)."""

    @functools.wraps(handler)
    async def guarded(*args: Any) -> Any:
        try:
            return await handler(*args)
        except errors.MqfsError as exc:
            code = exc.errno or errno.EIO
            if log.isEnabledFor(logging.DEBUG):
                log.debug("-> %s: %s", errno.errorcode.get(code, code), exc.strerror)
            raise pyfuse3.FUSEError(code) from exc
        except pyfuse3.FUSEError:
            raise
        except Exception:
            log.exception("bug in the %s handler; answered EIO and kept serving", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded  # type: ignore[return-value]


def _behind_boundary(cls: type[pyfuse3.Operations]) -> type[pyfuse3.Operations]:
    """Put every FUSE handler *cls* defines behind :func:`_boundary`."""
    for name, member in list(vars(cls).items()):
        if inspect.iscoroutinefunction(member) and hasattr(pyfuse3.Operations, name):
            setattr(cls, name, _boundary(member))
    return cls


class Kernel(inodes.Invalidator, Protocol):
    """What the handlers need of pyfuse3 beyond their arguments: the pyfuse3 module
    itself when mounted, a fake in tests that call the handlers without a mount."""

    def readdir_reply(self, token: Any, name: bytes, attr: Any, next_id: int) -> bool: ...
    def current_request_context(self) -> Any: ...


def _deadline(flags: int, tv_sec: int, tv_nsec: int) -> float:
    """The trio deadline a request asks for: its timespec if XFER_TIMED, else none."""
    return deadline_from_timespec(tv_sec, tv_nsec) if flags & wire.XFER_TIMED else math.inf


@_behind_boundary
class MqueueFS(pyfuse3.Operations):
    """Thin handlers: decode, guard, delegate to the queue layer."""

    # No FUSE_POSIX_ACL: there are no ACLs here (none can be set). With it, the kernel
    # still asked for system.posix_acl_access once per file `ls -l` showed, and failed
    # chmod and permission checks once the answer was EOPNOTSUPP (see getxattr). Without
    # it the kernel checks the mode bits alone (default_permissions, serve.FUSE_OPTIONS).
    enable_acl = False

    supports_dot_lookup = False
    enable_writeback_cache = False
    # A read, write or ioctl blocked on an empty or full queue is cancelled when its
    # caller gets a signal (or is killed): trio.Cancelled in the handler, EINTR for the
    # caller. Without it a killed reader would stay in D state until a message came.
    enable_interrupts = True

    def __init__(
        self, namespace: Namespace, plain_io_max: int | None = None, kernel: Kernel | None = None
    ) -> None:
        super().__init__()
        self.namespace = namespace
        self.plain_io_max = plain_io_limit() if plain_io_max is None else plain_io_max
        self.kernel: Kernel = pyfuse3 if kernel is None else kernel
        # Unfinished multi-chunk transfers, per user: 64 of the largest messages.
        self.transfer_budget = TransferBudget(64 * namespace.limits.msgsize_max)
        self.handles = Handles()
        self.views = CachedViews(self.kernel)
        self.ioctls = Ioctls(namespace)
        self._root_times = time.time_ns()

    # -- helpers ---------------------------------------------------------------
    def _queue_of(self, inode: int) -> Queue:
        queue = self.namespace.by_id(inode >> inodes.QID_SHIFT)
        if queue is None:
            raise errors.NoSuchQueue(f"no queue with inode {inode}")
        return queue

    def _attributes(self, inode: int) -> pyfuse3.EntryAttributes:
        queue = None if inode == ROOT else self._queue_of(inode)
        return inodes.attributes(queue, inode, self._root_times)

    def _caller(self) -> Caller | None:
        """The caller of this request (thread id, uid), for handlers FUSE gives no ctx."""
        return self.kernel.current_request_context()  # type: ignore[no-any-return]

    def _forget_if_destroyed(self, queue: Queue) -> None:
        """After an unlink or a close: if that destroyed *queue*, drop what we kept of it."""
        if not self.namespace.is_alive(queue):
            self.views.forget(queue)

    # -- metadata ------------------------------------------------------------
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        attributes = self._attributes(inode)
        if inode != ROOT and slot_of(inode) >= SLOT_FIRST_MESSAGE:
            self.views.given_messages(self._queue_of(inode))
        return attributes

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if parent == ROOT:
            return self._attributes(inode_of(self.namespace.lookup(os.fsdecode(name))))
        queue = self._queue_of(parent)
        slot = slot_of(parent)
        if slot == SLOT_DIR and name in QUEUE_FILES:
            return self._attributes(inode_of(queue, QUEUE_FILES[name]))
        if slot != SLOT_MSGS:
            _fail(errno.ENOENT)
        # Only an existing index makes an inode: that keeps the slot below 2**24.
        inode = inodes.message_inode(queue, inodes.message_index(name))
        self.views.given_messages(queue)
        return self._attributes(inode)

    async def forget(self, inode_list: Any) -> None:
        return  # inodes are derived from qids; there is nothing to free

    async def setattr(
        self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any
    ) -> pyfuse3.EntryAttributes:
        if inode == ROOT:
            _fail(errno.EPERM)
        queue = self._queue_of(inode)
        slot = slot_of(inode)
        if fields.update_size and not (slot == SLOT_QUEUE and attr.st_size == 0):
            _fail(errno.EPERM)  # only the shell's O_TRUNC on the queue file, ignored
        owner_change = fields.update_mode or fields.update_uid or fields.update_gid
        if owner_change and slot not in (SLOT_DIR, SLOT_QUEUE):
            _fail(errno.EPERM)  # the queue's mode and owner live on the directory and file
        queue.set_attributes(attr, fields, ctx)
        if owner_change:
            self.views.invalidate_all(queue, changed=inode)
        return self._attributes(inode)

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_files = self.namespace.limits.queues_max
        data.f_ffree = max(0, self.namespace.limits.queues_max - self.namespace.live)
        data.f_favail = data.f_ffree
        data.f_namemax = 255
        return data

    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not name.startswith(USER_XATTR_PREFIX):
            # security.*, system.* (POSIX ACLs), trusted.*: not supported, as on the
            # kernel's mqueue. EOPNOTSUPP, not ENOATTR: `ls -l` then stops asking for the
            # rest of the device instead of asking for both names on every entry.
            _fail(errno.EOPNOTSUPP)
        slot = slot_of(inode)
        # The info is on the queue's directory, and on its file for whoever holds it
        # open (fgetxattr still works once the name is unlinked: `mqfs watch`).
        if inode != ROOT and slot in (SLOT_DIR, SLOT_QUEUE) and name == INFO_XATTR:
            queue = self._queue_of(inode)
            info = queue_info(queue, self.handles.descriptors_of(queue), ctx.uid)
            return json.dumps(info).encode()
        if inode == ROOT and name == LIMITS_XATTR:
            return json.dumps(limits_info(self.namespace)).encode()
        if inode == ROOT or slot < SLOT_FIRST_MESSAGE or name != PRIORITY_XATTR:
            _fail(pyfuse3.ENOATTR)
        message = inodes.message_at(self._queue_of(inode), slot - SLOT_FIRST_MESSAGE)
        return str(message.priority).encode()

    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        slot = slot_of(inode)
        if inode != ROOT and slot in (SLOT_DIR, SLOT_QUEUE):
            self._queue_of(inode)
            return [INFO_XATTR]
        if inode != ROOT and slot >= SLOT_FIRST_MESSAGE:
            inodes.message_at(self._queue_of(inode), slot - SLOT_FIRST_MESSAGE)
            return [PRIORITY_XATTR]
        return [LIMITS_XATTR] if inode == ROOT else []

    # -- queues as directories ---------------------------------------------------
    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        if parent != ROOT:
            _fail(errno.EPERM)
        queue = self.namespace.create(
            os.fsdecode(name),
            mode=mode,
            uid=ctx.uid,
            gid=ctx.gid,
            exclusive=True,
            byte_limit=processes.msgqueue_rlimit(ctx.pid),
            privileged=processes.has_sys_resource(ctx.pid),
        )
        return self._attributes(inode_of(queue))

    async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
        if parent != ROOT:
            _fail(errno.EPERM)
        self._forget_if_destroyed(self.namespace.unlink(os.fsdecode(name), ctx))

    async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
        _fail(errno.EISDIR if parent == ROOT else errno.EPERM)

    async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> NoReturn:
        _fail(errno.EPERM)  # queues are made with mkdir or the CREATE ioctl

    # The kernel's mqueue has no rename, link, symlink or mknod (of anything but a queue):
    # the VFS answers EPERM for them, after its own EEXIST/ENOENT checks (which the FUSE
    # kernel module makes here too). A queue is made with mkdir or the CREATE ioctl.
    async def rename(
        self,
        parent_old: int,
        name_old: bytes,
        parent_new: int,
        name_new: bytes,
        flags: int,
        ctx: Any,
    ) -> NoReturn:
        raise errors.PermissionsError("queues cannot be renamed")

    async def link(self, inode: int, new_parent: int, new_name: bytes, ctx: Any) -> NoReturn:
        raise errors.PermissionsError("no hard links on an mqueue filesystem")

    async def symlink(self, parent: int, name: bytes, target: bytes, ctx: Any) -> NoReturn:
        raise errors.PermissionsError("no symbolic links on an mqueue filesystem")

    async def mknod(self, parent: int, name: bytes, mode: int, rdev: int, ctx: Any) -> NoReturn:
        raise errors.PermissionsError("mknod makes no queue here: mkdir or CREATE does")

    async def opendir(self, inode: int, ctx: Any) -> int:
        self._attributes(inode)  # ENOENT for a queue that is gone
        return self.handles.add(DirHandle(inode))

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        handle = self.handles.get(fh)
        assert isinstance(handle, DirHandle)
        if handle.inode == ROOT:
            entries = self._root_entries(start_id)
        elif slot_of(handle.inode) == SLOT_DIR:
            entries = self._queue_dir_entries(self._queue_of(handle.inode), start_id)
        else:
            entries = self._message_entries(self._queue_of(handle.inode), start_id)
        for name, inode, next_id in entries:
            if not self.kernel.readdir_reply(token, name, self._attributes(inode), next_id):
                return

    def _root_entries(self, start_id: int) -> Iterator[tuple[bytes, int, int]]:
        """Offsets are qids: stable however queues come and go between calls."""
        queues = sorted(self.namespace.queues.values(), key=lambda queue: queue.qid)
        return (
            (os.fsencode(queue.name), inode_of(queue), queue.qid)
            for queue in queues
            if queue.qid > start_id
        )

    @staticmethod
    def _queue_dir_entries(queue: Queue, start_id: int) -> Iterator[tuple[bytes, int, int]]:
        entries = enumerate(QUEUE_FILES.items(), start=1)
        return ((name, inode_of(queue, slot), n) for n, (name, slot) in entries if n > start_id)

    def _message_entries(self, queue: Queue, start_id: int) -> Iterator[tuple[bytes, int, int]]:
        """Offsets are index + 1, i.e. the name itself, so they are stable."""
        self.views.given_messages(queue)
        return (
            (str(index).encode(), inode_of(queue, SLOT_FIRST_MESSAGE + index), index + 1)
            for index in range(start_id, len(queue))
        )

    async def releasedir(self, fh: int) -> None:
        self.handles.pop(fh)

    # -- files -------------------------------------------------------------------
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        queue = self._queue_of(inode)
        slot = slot_of(inode)
        handle: Handle
        if slot == SLOT_QUEUE:
            handle = self._open_queue(queue, flags, ctx)
        elif flags & os.O_ACCMODE != os.O_RDONLY:
            _fail(errno.EACCES)  # status and msgs/I are read-only, even for root
        elif slot == SLOT_STATUS:
            handle = StatusHandle(queue)
        elif slot >= SLOT_FIRST_MESSAGE:
            handle = SnapshotHandle(inodes.message_at(queue, slot - SLOT_FIRST_MESSAGE).payload)
        else:
            _fail(errno.EISDIR)
        # direct_io: every read reaches the daemon, nothing is served from the page cache
        return pyfuse3.FileInfo(fh=self.handles.add(handle), direct_io=True, keep_cache=False)

    def _open_queue(self, queue: Queue, flags: int, ctx: Any) -> QueueHandle:
        # O_ACCMODE (3) is Linux's "no read, no write" open: allowed, as on /dev/mqueue;
        # send and receive on it are EBADF.
        access = flags & os.O_ACCMODE
        descriptor = Descriptor(
            queue,
            readable=access in (os.O_RDONLY, os.O_RDWR),
            writable=access in (os.O_WRONLY, os.O_RDWR),
            nonblock=bool(flags & os.O_NONBLOCK),
            pid=ctx.pid,
        )
        self.namespace.acquire(queue)
        return QueueHandle(descriptor, Transfers(self.transfer_budget, ctx.uid))

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.handles.get(fh)
        if isinstance(handle, QueueHandle):
            if off == wire.FRAMED_RECEIVE_ONE:
                return await self._receive_one_framed(handle.descriptor, size)
            if off >= wire.FRAMED:
                return await self._framed_read(handle, off, size)
            if not handle.receives_on_read:  # a file tool: never consume (see wire)
                return handle.descriptor.queue.status_line()[off : off + size]
            message = await handle.descriptor.receive(size, caller=self._caller())
            return message.payload
        if isinstance(handle, StatusHandle):
            return handle.queue.status_line()[off : off + size]
        if isinstance(handle, SnapshotHandle):
            return handle.payload[off : off + size]
        _fail(errno.EISDIR)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.handles.get(fh)
        if not isinstance(handle, QueueHandle):
            raise errors.BadDescriptor("only the queue file can be written")
        descriptor = handle.descriptor
        caller = self._caller()
        if off >= wire.FRAMED:
            one = wire.single_frame(buf) if off == wire.FRAMED_SEND else None
            if one is None:
                return await self._framed_write(descriptor, off, buf, caller)
            await descriptor.send(one[0], one[1], sender=caller)  # mq_send's checks
            return len(buf)
        if self._split_by_kernel(len(buf), caller):
            descriptor.refuse_pieces(len(buf), self.plain_io_max)
        await descriptor.send(buf, descriptor.send_priority, sender=caller)
        return len(buf)

    # -- framed I/O: many messages per request (see mqfs.wire) ------------------------
    async def _receive_one_framed(self, descriptor: Descriptor, size: int) -> bytes:
        """mq_receive under the shim: one message, with mq_receive's checks (EBADF, then
        EMSGSIZE for a read that cannot hold a msgsize message and its record)."""
        message = await descriptor.receive(wire.reply_room(size), caller=self._caller())
        queue = descriptor.queue
        more = bool(len(queue))
        return wire.single_reply(queue.generation, message.payload, message.priority, more)

    async def _framed_write(
        self, descriptor: Descriptor, off: int, buf: bytes, caller: Caller | None
    ) -> int:
        """A batch send: the bytes of the whole frames sent."""
        if off != wire.FRAMED_SEND:
            raise errors.InvalidArgument(f"no framed write at offset {off:#x}")
        if self._split_by_kernel(len(buf), caller):
            raise errors.MessageTooLong(
                f"a framed write reaches mqfs in pieces (this one {len(buf)} bytes); "
                f"write at most {self.plain_io_max} bytes from one buffer"
            )
        runs = wire.decode_frames(buf)
        sent = await descriptor.send_many(runs, sender=caller)
        if sent == sum(len(payloads) for _, payloads in runs):
            return len(buf)
        consumed = 0
        for _, payloads in runs:
            for payload in payloads:
                if not sent:
                    return consumed
                consumed += wire.frame_size(len(payload))
                sent -= 1
        return consumed

    async def _framed_read(self, handle: QueueHandle, off: int, size: int) -> bytes:
        """A batch receive or peek; 0 bytes at any other offset (see mqfs.wire)."""
        descriptor = handle.descriptor
        queue = descriptor.queue
        if off < wire.FRAMED_PEEK:
            count = wire.framed_receive_count(off)
            if count is None:
                return b""
            runs = await descriptor.receive_many(size, count or HARD_MSGMAX, self._caller())
            return wire.encode_reply(queue.generation, runs, bool(len(queue)))
        index = wire.framed_peek_index(off)
        if index is None:
            return b""
        capacity = size - wire.FRAMES_HEADER_SIZE
        with queue.pinned():  # the generation and the messages of one instant
            descriptor.segments_from(index, 0)  # EBADF, ENOENT past the end
            count = queue.count_fitting(index, capacity, capacity // wire.FRAME_HEADER_SIZE)
            if not count and index < len(queue):
                raise errors.MessageTooLong(
                    f"a read of {size} bytes cannot hold message {index} with its record"
                )
            runs = list(descriptor.segments_from(index, count))
            return wire.encode_reply(queue.generation, runs, index + count < len(queue))

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
        handle = self.handles.get(fh)
        if not isinstance(handle, QueueHandle):
            return POLL_IN
        queue = handle.descriptor.queue
        revents = (POLL_IN if len(queue) else 0) | (0 if queue.is_full else POLL_OUT)
        if poll_handle is not None:
            handle.poll_handle = poll_handle  # replaces (and so frees) the previous one
            if handle.poll_watcher is None:
                handle.poll_watcher = queue.add_watcher(lambda: _wake_poller(handle))
        return revents

    async def flush(self, fh: int) -> None:
        # close() of any descriptor of a queue by the process registered for its
        # notification ends the registration (the kernel's mqueue_flush_file).
        # The shim's SIGEV_THREAD helper closing its dup after NOTIFY_WAIT is not that.
        handle = self.handles.peek(fh)
        ctx = self.kernel.current_request_context()
        if isinstance(handle, QueueHandle):
            queue = handle.descriptor.queue
            if ctx is not None and handle.threads.is_helper_close(ctx.pid):
                return
        elif isinstance(handle, StatusHandle):
            queue = handle.queue
        else:
            return
        if queue.notification is not None and ctx is not None:
            queue.closed_by(processes.tgid_of(ctx.pid))

    async def release(self, fh: int) -> None:
        handle = self.handles.pop(fh)
        if isinstance(handle, QueueHandle):
            queue = handle.descriptor.queue
            handle.poll_handle = None
            if handle.poll_watcher is not None:
                queue.remove_watcher(handle.poll_watcher)
            handle.transfers.drop_all()
            self.namespace.release(queue)
            self._forget_if_destroyed(queue)

    # -- ioctls (mqfs.server.ioctls) ---------------------------------------------
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
        if flags & pyfuse3.IOCTL_DIR:
            return self.ioctls.on_directory(inode == ROOT, cmd, in_buf, ctx)
        handle = self.handles.queue_handle(fh)
        run = self.ioctls.find(cmd, out_size)
        return await run(handle, in_buf, out_size, ctx)


def _wake_poller(handle: QueueHandle) -> None:
    handle.poll_watcher = None
    poll_handle, handle.poll_handle = handle.poll_handle, None
    if poll_handle is not None:
        poll_handle.notify()

"""The ioctls of an open queue file (and CREATE on the mount's root), by command number.

Each entry decodes its struct (:mod:`mqfs.wire`; a malformed one is EINVAL), calls the
queue layer and encodes the reply. SEND, RECEIVE and PEEK carry data after a header, so
the caller may size their struct from the header up (:func:`mqfs.wire.sized`): they are
found by their base command, the others by their exact number, so that a fixed-size
command with a wrong size is ENOTTY as any unknown command.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Awaitable, Callable
from typing import Any

from mqfs import errors, fastq, wire
from mqfs.server import processes
from mqfs.server.handles import QueueHandle
from mqfs.server.queue import Caller, Namespace, Notification, deadline_from_timespec

Ioctl = Callable[[QueueHandle, bytes, int, Any], Awaitable[tuple[int, bytes]]]
SEND = wire.base_command(wire.IOC_SEND)


def _deadline(flags: int, tv_sec: int, tv_nsec: int) -> float:
    """The trio deadline a request asks for: its timespec if XFER_TIMED, else none."""
    return deadline_from_timespec(tv_sec, tv_nsec) if flags & wire.XFER_TIMED else math.inf


def _check_flags(flags: int, known: int, what: str) -> None:
    """EINVAL for a bit of *flags* this mqfs does not know: a newer client's option must
    fail, not be silently ignored."""
    if flags & ~known:
        raise errors.InvalidArgument(f"unknown {what} flags {flags & ~known:#x}")


class Ioctls:
    """The ioctl table of one mount."""

    def __init__(self, namespace: Namespace) -> None:
        self.namespace = namespace
        # Commands with data after a header, by base command, with the header's size.
        self.sized: dict[int, tuple[Ioctl, int]] = {
            wire.base_command(wire.IOC_RECEIVE): (self.receive, wire.XFER_HEADER_SIZE),
            SEND: (self.send, wire.XFER_HEADER_SIZE),
            wire.base_command(wire.IOC_PEEK): (self.peek, wire.PEEK_HEADER_SIZE),
        }
        self.fixed: dict[int, Ioctl] = {
            wire.IOC_GETATTR: self.getattr,
            wire.IOC_SETATTR: self.setattr,
            wire.IOC_WAIT: self.wait,
            wire.IOC_PEEK_BATCH: self.peek_batch,
            wire.IOC_NOTIFY: self.notify,
            wire.IOC_NOTIFY_WAIT: self.notify_wait,
            wire.IOC_SETPRIO: self.setprio,
            wire.IOC_RECEIVE_ON_READ: self.receive_on_read,
            wire.IOC_REMOVE: self.remove,
            wire.IOC_MAP: self.map,
        }

    def find(self, cmd: int, out_size: int) -> Ioctl:
        """The handler of *cmd*: ENOTTY if there is none, EINVAL if a sized command's
        reply would not hold its header and at least one byte of data."""
        base = wire.base_command(cmd)
        if base in self.sized:
            run, header_size = self.sized[base]
            if out_size < header_size + (base != SEND):
                raise errors.InvalidArgument(f"ioctl buffer of {out_size} bytes is too small")
            return run
        if cmd in self.fixed:
            return self.fixed[cmd]
        raise errors.NotSupported(f"unknown ioctl {cmd:#x}")

    def on_directory(self, is_root: bool, cmd: int, in_buf: bytes, ctx: Any) -> tuple[int, bytes]:
        """CREATE on the mount's root: mq_open(O_CREAT) with attributes and exclusivity."""
        if cmd != wire.IOC_CREATE or not is_root:
            raise errors.NotSupported("no such ioctl on a directory")
        request = wire.Create.unpack(in_buf)
        _check_flags(request.flags, wire.CREATE_EXCL | wire.CREATE_ATTR, "mqfs_create")
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
    async def getattr(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        return 0, wire.Attr(*handle.descriptor.attributes()).pack()

    @staticmethod
    async def setattr(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        previous = wire.Attr(*handle.descriptor.attributes())
        handle.descriptor.set_flags(wire.Attr.unpack(in_buf).flags)
        return 0, previous.pack()

    @staticmethod
    async def setprio(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        handle.descriptor.set_send_priority(wire.decode_prio(in_buf))
        return 0, b""

    @staticmethod
    async def receive_on_read(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        handle.receives_on_read = True
        return 0, b""

    @staticmethod
    async def notify(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        request = wire.Notify.unpack(in_buf)
        queue = handle.descriptor.queue
        pid = processes.tgid_of(ctx.pid)
        if request.action == wire.NOTIFY_UNREGISTER:
            queue.unregister_notification(pid)
        elif request.action == wire.NOTIFY_REGISTER:
            registration = Notification(
                pid, request.sigev_notify, request.sigev_signo, request.sigev_value
            )
            queue.register_notification(registration)
            if registration.waiter is not None:  # SIGEV_THREAD: its id for NOTIFY_WAIT
                return handle.threads.add(registration.waiter), b""
        else:
            raise errors.InvalidArgument(f"unknown notify action {request.action}")
        return 0, b""

    @staticmethod
    async def map(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        """Where a fast-path queue's mapping is, for its owner (or root) to map it."""
        queue = handle.descriptor.queue
        store = queue.mapped
        if store is None:
            raise errors.MqfsError(
                f"queue {queue.name!r} has no shared mapping (mount with -o fastpath)",
                errno_value=errno.EOPNOTSUPP,
            )
        if ctx.uid not in (0, queue.uid):
            raise errors.PermissionDenied(
                f"only the owner of queue {queue.name!r} maps it; others go through mqfs"
            )
        if queue.unlinked or not store.path.exists():
            raise errors.NoSuchQueue(f"queue {queue.name!r} is unlinked: its mapping is gone")
        return 0, wire.Map(queue.maxmsg, queue.msgsize, fastq.VERSION, str(store.path)).pack()

    @staticmethod
    async def notify_wait(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Caller) -> Any:
        """Until SIGEV_THREAD registration *id* of this open file fires or ends."""
        request = wire.NotifyWait.unpack(in_buf)
        waiter = handle.threads.get(request.id)
        outcome = await handle.descriptor.queue.wait_notification(waiter, ctx)
        handle.threads.collected(request.id, ctx.pid)
        return 0, wire.NotifyWait(request.id, outcome, waiter.value).pack()

    @staticmethod
    async def wait(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        request = wire.Wait.unpack(in_buf)
        _check_flags(request.flags, wire.XFER_TIMED, "mqfs_wait")
        deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
        descriptor = handle.descriptor
        generation = await descriptor.wait_changed(request.generation, deadline, ctx)
        flags = wire.WAIT_UNLINKED if descriptor.queue.unlinked else 0
        return 0, wire.Wait(generation=generation, flags=flags).pack()

    @staticmethod
    async def peek(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        request = wire.Peek.unpack(in_buf)
        message = handle.descriptor.peek(request.index)
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
        return len(chunk), reply.pack()

    @staticmethod
    async def peek_batch(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        request = wire.Batch.unpack(in_buf)
        queue = handle.descriptor.queue
        with queue.pinned():  # the generation, the count and the messages of one instant
            # No more records than fit even if every message were empty.
            limit = min(
                request.max_count or len(queue), wire.CHUNK // wire.BATCH_RECORD_HEADER_SIZE
            )
            segments = handle.descriptor.segments_from(request.index, limit)
            return wire.Batch.reply(
                request.index, request.max_count, queue.generation, len(queue), segments
            )

    @staticmethod
    async def remove(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Any) -> Any:
        """Message *index* out of the middle, if the queue is at the generation given."""
        request = wire.Remove.unpack(in_buf)
        message, generation = await handle.descriptor.remove(request.index, request.generation, ctx)
        reply = wire.Remove(
            index=request.index,
            generation=generation,
            msg_len=len(message.payload),
            msg_prio=message.priority,
            data=message.payload[: wire.REMOVE_HEAD],
        )
        return 0, reply.pack()

    @staticmethod
    async def send(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Caller) -> Any:
        """A whole message, or the first chunk of a staged one, or a later chunk."""
        request = wire.Xfer.unpack(in_buf)
        _check_flags(request.flags, wire.XFER_TIMED, "mqfs_xfer")
        deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
        descriptor = handle.descriptor
        if request.xfer_id:
            message = handle.transfers.add_chunk(request.xfer_id, request.offset, request.data)
            if message is None:
                return 0, wire.Xfer(msg_len=request.msg_len, xfer_id=request.xfer_id).pack()
            await descriptor.send(message.payload, message.priority, deadline, ctx)
            return 0, b""
        if request.offset != 0 or len(request.data) > request.msg_len:
            raise errors.InvalidArgument("a transfer starts at offset 0, within msg_len")
        if len(request.data) == request.msg_len:  # the whole message in one call
            await descriptor.send(request.data, request.msg_prio, deadline, ctx)
            return 0, b""
        descriptor.check_send_now(request.msg_len, request.msg_prio)
        transfer = handle.transfers.start_send(request.msg_len, request.msg_prio, request.data)
        return 0, wire.Xfer(msg_len=request.msg_len, xfer_id=transfer).pack()

    @staticmethod
    async def receive(handle: QueueHandle, in_buf: bytes, out_size: int, ctx: Caller) -> Any:
        """The next message (its first chunk if it is longer than the reply holds), or
        the next chunk of a message taken earlier."""
        request = wire.Xfer.unpack(in_buf)
        _check_flags(request.flags, wire.XFER_TIMED, "mqfs_xfer")
        capacity = min(out_size - wire.XFER_HEADER_SIZE, wire.CHUNK)
        transfers = handle.transfers
        offset, transfer = request.offset, request.xfer_id
        if transfer:
            message, chunk = transfers.next_chunk(transfer, offset, capacity)
        else:
            deadline = _deadline(request.flags, request.tv_sec, request.tv_nsec)
            if handle.descriptor.queue.msgsize > capacity:  # the message may need parking
                transfers.check_room(handle.descriptor.queue.msgsize)
            message = await handle.descriptor.receive(request.msg_len, deadline, ctx)
            # From here on no checkpoint: the message is ours and must reach the caller.
            transfer = transfers.park(message) if len(message.payload) > capacity else 0
            offset, chunk = 0, message.payload[:capacity]
        reply = wire.Xfer(
            msg_len=len(message.payload),
            offset=offset,
            xfer_id=transfer,
            msg_prio=message.priority,
            data=chunk,
        )
        return len(chunk), reply.pack()

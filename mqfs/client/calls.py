"""Client side of the mqfs wire format: mq_* operations on open descriptors.

These functions are the mqfs counterparts of ``mq_timedsend``, ``mq_timedreceive``,
``mq_getattr``/``mq_setattr`` and ``mq_open(O_CREAT)``, plus the peek that the kernel
lacks and the removal of one message from the middle that it cannot do. They take plain
file descriptors (of ``MNT/NAME/queue``, or of the mount's root directory for
:func:`create`) and raise ``OSError`` with the errno the daemon chose, so they behave
like the C calls. Messages larger than one ioctl chunk are moved in
several calls under one transfer id; the queue sees them whole and atomically.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mqfs import wire

Deadline = tuple[int, int]
"""An absolute CLOCK_REALTIME deadline (tv_sec, tv_nsec), as mq_timedsend's abs_timeout."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_libc.ioctl.restype = ctypes.c_int


def _call(fd: int, command: int, request: bytes | bytearray) -> tuple[int, bytearray]:
    """ioctl(fd, command, buffer) -> (return value, buffer as the daemon left it).

    Through ctypes rather than fcntl.ioctl: ctypes releases the GIL for the call, and a
    RECEIVE or SEND may block for as long as the queue is empty or full; fcntl.ioctl
    would hold every other thread of the process still meanwhile.
    """
    buffer = bytearray(request)
    pointer = (ctypes.c_char * len(buffer)).from_buffer(buffer) if buffer else None
    result = _libc.ioctl(fd, command, pointer)
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result, buffer


def deadline_after(timeout: float | None) -> Deadline | None:
    """The absolute CLOCK_REALTIME deadline *timeout* seconds from now (None: none)."""
    if timeout is None or math.isinf(timeout):
        return None
    absolute = time.clock_gettime(time.CLOCK_REALTIME) + max(timeout, 0.0)
    seconds = math.floor(absolute)
    return seconds, min(int((absolute - seconds) * 1e9), 999_999_999)


def _timing(timeout: float | None, deadline: Deadline | None) -> tuple[int, int, int]:
    """(flags, tv_sec, tv_nsec) of an mqfs_xfer; an explicit *deadline* wins."""
    if deadline is None:
        deadline = deadline_after(timeout)
    return (0, 0, 0) if deadline is None else (wire.XFER_TIMED, *deadline)


# The kernel copies _IOC_SIZE bytes each way per ioctl, so PEEK/SEND/RECEIVE are issued
# with a struct just big enough (wire.sized): a 64-byte message moves ~100 bytes, not 16 KiB.
FIRST_CHUNK = 1024
"""Payload bytes asked for by the first RECEIVE/PEEK call before the length is known."""


def send(
    fd: int,
    message: bytes,
    priority: int = 0,
    timeout: float | None = None,
    *,
    deadline: Deadline | None = None,
) -> None:
    """mq_timedsend: block while full (unless O_NONBLOCK), up to *timeout* seconds or
    until the absolute *deadline*; atomic for any length (several chunks, one transfer)."""
    flags, tv_sec, tv_nsec = _timing(timeout, deadline)
    priority &= 0xFFFFFFFF  # an unsigned int, as in C
    transfer = 0
    offset = 0
    view = memoryview(message)
    while True:
        chunk = view[offset : offset + wire.CHUNK]
        size = wire.XFER_HEADER_SIZE + len(chunk)
        request = wire.Xfer(
            len(message), offset, transfer, tv_sec, tv_nsec, priority, flags, bytes(chunk)
        )
        _, reply = _call(fd, wire.sized(wire.IOC_SEND, size), request.request(size))
        offset += len(chunk)
        if offset >= len(message):
            return
        transfer = wire.Xfer.unpack(reply).xfer_id


# How much the first RECEIVE of a descriptor asks for: the length of the last message
# received on it, rounded up (a stream of similar messages then costs one call each).
_last_length: dict[int, int] = {}


def receive(
    fd: int, bufsize: int, timeout: float | None = None, *, deadline: Deadline | None = None
) -> tuple[bytes, int]:
    """mq_timedreceive with a buffer of *bufsize* bytes: (message, priority)."""
    flags, tv_sec, tv_nsec = _timing(timeout, deadline)
    hint = max(_last_length.get(fd, FIRST_CHUNK), 64)
    capacity = min(bufsize, 1 << (hint - 1).bit_length(), wire.CHUNK)
    size = wire.XFER_HEADER_SIZE + max(capacity, 1)
    request = wire.Xfer(bufsize, tv_sec=tv_sec, tv_nsec=tv_nsec, flags=flags)
    _, buffer = _call(fd, wire.sized(wire.IOC_RECEIVE, size), request.request(size))
    reply = wire.Xfer.unpack(buffer)
    msg_len = _last_length[fd] = reply.msg_len
    if len(reply.data) == msg_len:
        return reply.data, reply.msg_prio
    parts = [reply.data]
    received = len(reply.data)
    while received < msg_len:  # the rest of a long message, already ours
        size = wire.XFER_HEADER_SIZE + min(msg_len - received, wire.CHUNK)
        request = wire.Xfer(bufsize, received, reply.xfer_id)
        _, buffer = _call(fd, wire.sized(wire.IOC_RECEIVE, size), request.request(size))
        more = wire.Xfer.unpack(buffer).data
        parts.append(more)
        received += len(more)
    return b"".join(parts), reply.msg_prio


def _peek_call(fd: int, index: int, offset: int, capacity: int) -> wire.Peek:
    size = wire.PEEK_HEADER_SIZE + min(max(capacity, 1), wire.CHUNK)
    request = wire.Peek(index=index, offset=offset)
    _, buffer = _call(fd, wire.sized(wire.IOC_PEEK, size), request.request(size))
    return wire.Peek.unpack(buffer)


PEEK_ATTEMPTS = 16
"""Reads of a long message that :func:`peek` makes before it gives up (as the shim)."""


def peek(fd: int, index: int = 0, attempts: int = PEEK_ATTEMPTS) -> tuple[bytes, int]:
    """Message *index* in receive order, without consuming it: (message, priority).

    One snapshot, as the kernel's peek would be: a message that fits one ioctl is read
    in one call (a small first call, then one of the right size if needed); a longer one
    is read by offset between two readings of the queue's generation, and read again if
    the queue changed in between (a receive and a send can put another message of the
    same length and priority at *index*). After *attempts* the last copy that held
    together is taken; if none did, EAGAIN. As preload/peek.c.
    """
    ask = FIRST_CHUNK
    for attempt in range(attempts + 1):
        if ask <= wire.CHUNK:
            reply = _peek_call(fd, index, 0, ask)
            if len(reply.data) == reply.msg_len:
                return bytes(reply.data), reply.msg_prio
            ask = reply.msg_len  # read again, whole or bracketed
            continue
        before = current_generation(fd)
        reply = _peek_call(fd, index, 0, wire.CHUNK)
        if reply.msg_len <= wire.CHUNK:  # another message now, that fits one call
            if len(reply.data) == reply.msg_len:
                return bytes(reply.data), reply.msg_prio
            ask = reply.msg_len
            continue
        ask = reply.msg_len
        whole = _peek_rest(fd, index, (reply.msg_len, reply.msg_prio, reply.data))
        if whole is not None and (current_generation(fd) == before or attempt == attempts):
            return whole, reply.msg_prio
    raise OSError(errno.EAGAIN, "the queue kept changing while the message was read")


def current_generation(fd: int) -> int:
    """The queue's generation now: it changes with every send, receive and removal (and
    a mode or owner change, and the unlink). One PEEK_BATCH of one record."""
    return peek_batch(fd, 0, 1).generation


def _batch_call(fd: int, index: int, max_count: int = 0) -> bytearray:
    request = wire.Batch(index=index, max_count=max_count)
    return _call(fd, wire.IOC_PEEK_BATCH, request.request())[1]


def peek_batch(fd: int, index: int = 0, max_count: int = 0) -> wire.Batch:
    """One PEEK_BATCH call: as many messages from *index* on as fit in one ioctl."""
    return wire.Batch.unpack(_batch_call(fd, index, max_count))


def peek_all(fd: int, attempts: int = 10, *, framed: bool = True) -> list[tuple[bytes, int]]:
    """Every queued message in receive order, as one consistent snapshot, unconsumed.

    Reads by framed peeks (about 1 MiB of messages per read); a queue holding a message
    too long for one read is read by PEEK_BATCH instead (about 16 KiB of messages per
    call; a message too large for a batch is completed by PEEK). Every read reports the
    queue's generation; if it changes between reads the snapshot starts again, up to
    *attempts* times, then EAGAIN. *framed* False reads by PEEK_BATCH from the start.
    """
    for _ in range(attempts):
        try:
            snapshot = _framed_snapshot(fd) if framed else _snapshot(fd)
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                raise
            framed = False  # a message too long for one read: PEEK_BATCH and PEEK
            continue
        if snapshot is not None:
            return snapshot
    raise OSError(errno.EAGAIN, "the queue kept changing during the snapshot")


def _snapshot(fd: int) -> list[tuple[bytes, int]] | None:
    messages: list[tuple[bytes, int]] = []
    generation: int | None = None
    unconfirmed = False  # PEEKs made after the last batch: confirm with one more batch
    while True:
        batch = wire.Batch.unpack(_batch_call(fd, len(messages)))
        if generation is None:
            generation = batch.generation
        elif batch.generation != generation:
            return None
        unconfirmed = False
        records = batch.records
        if records and len(records[0][2]) < records[0][0]:
            # Only a message too big for any batch comes cut, alone: PEEK the rest.
            whole = _peek_rest(fd, len(messages), records[0])
            if whole is None:
                return None
            messages.append((whole, records[0][1]))
            unconfirmed = True
        else:
            messages.extend([(chunk, priority) for _, priority, chunk in records])
        if not batch.flags & wire.BATCH_MORE and not unconfirmed:
            return messages


def _peek_rest(fd: int, index: int, record: wire.BatchRecord) -> bytes | None:
    """The rest of a message a batch could only start; None if it changed meanwhile."""
    msg_len, msg_prio, data = record
    parts = [data]
    offset = len(data)
    while offset < msg_len:
        try:
            reply = _peek_call(fd, index, offset, msg_len - offset)
        except OSError as exc:  # gone (received): the next attempt says what is there
            if exc.errno in (errno.EAGAIN, errno.ENOENT, errno.EINVAL):
                return None
            raise
        if (reply.msg_len, reply.msg_prio) != (msg_len, msg_prio) or not reply.data:
            return None
        parts.append(reply.data)
        offset += len(reply.data)
    return b"".join(parts)


def remove(fd: int, index: int, generation: int) -> wire.Remove:
    """Remove message *index* (receive order) if the queue is still at *generation*, as
    a PEEK_BATCH or WAIT reported it: a queue that changed since loses nothing (ESTALE).
    ENOENT past the last message, EBADF unless *fd* is open for reading. The reply has
    the removed message's length, priority and first ``wire.REMOVE_HEAD`` bytes, and the
    generation right after the removal."""
    request = wire.Remove(index=index, generation=generation)
    _, buffer = _call(fd, wire.IOC_REMOVE, request.request())
    return wire.Remove.unpack(buffer)


# -- framed I/O: many messages per read or write (see mqfs.wire) ----------------------

FRAMED_IO_MAX = wire.plain_io_limit()
"""The most one framed read or write carries: more would reach the daemon in pieces."""


def send_many(fd: int, messages: Sequence[tuple[bytes, int]]) -> int:
    """Batch send: *messages* ((payload, priority), in order) in framed writes of at
    most FRAMED_IO_MAX bytes; how many were sent. It stops at the first short write
    (a full O_NONBLOCK queue, or a signal during a blocking wait) and returns the count
    so far; EAGAIN (OSError) only if the very first write sent nothing."""
    sent = 0
    for batch in wire.frame_batches(messages, FRAMED_IO_MAX):
        frames = wire.encode_frames(batch)
        try:
            written = os.pwrite(fd, frames, wire.FRAMED_SEND)
        except BlockingIOError:
            if sent:
                return sent
            raise
        if written == len(frames):
            sent += len(batch)
            continue
        for payload, _ in batch:
            if written <= 0:
                break
            written -= wire.frame_size(len(payload))
            sent += 1
        return sent
    return sent


def receive_many(fd: int, max_count: int = 0, size: int = FRAMED_IO_MAX) -> list[tuple[bytes, int]]:
    """Batch receive: at least one message, at most *max_count* (0: as many as fit one
    read of *size* bytes), in receive order; waits only for the first (unless the
    descriptor is O_NONBLOCK: EAGAIN)."""
    return wire.decode_reply(os.pread(fd, size, wire.framed_receive_offset(max_count)))[2]


def peek_frames(
    fd: int, index: int, size: int = FRAMED_IO_MAX
) -> tuple[int, bool, list[tuple[bytes, int]]]:
    """Batch peek: (generation, more, messages) from *index* on, as many as fit one
    read of *size* bytes; nothing consumed."""
    return wire.decode_reply(os.pread(fd, size, wire.framed_peek_offset(index)))


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off meanwhile, as it was afterwards.

    A snapshot makes one (payload, priority) tuple per message, none of which can be
    part of a cycle; the collector's passes over them were a fifth of a 65,536-message
    dump. (Another thread that turns the collector on or off meanwhile may find it the
    other way round afterwards; nothing is lost but a few collections.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _framed_snapshot(fd: int) -> list[tuple[bytes, int]] | None:
    """One consistent snapshot by framed peeks (a few reads of ~1 MiB); None if the
    queue changed meanwhile."""
    messages: list[tuple[bytes, int]] = []
    first: int | None = None
    with _collector_paused():
        while True:
            try:
                generation, more, batch = peek_frames(fd, len(messages))
            except FileNotFoundError:  # ENOENT: the queue shrank under us
                return None
            if first is None:
                first = generation
            elif generation != first:
                return None
            messages.extend(batch)
            if not more:
                return messages


def wait_changed(fd: int, generation: int, timeout: float | None = None) -> wire.Wait:
    """Block until the queue's generation is no longer *generation* (or *timeout*
    seconds pass); the reply has the current generation, and ``unlinked`` once the
    queue's name is gone. For watchers: no busy polling.

    EINTR is retried, as PEP 475 does for system calls: a stopped and continued caller
    (Ctrl-Z, then fg) has its FUSE request interrupted, and waiting changes nothing, so
    asking again is exact (the deadline is absolute). A signal whose handler raises, as
    Ctrl-C's, still ends it."""
    flags, tv_sec, tv_nsec = _timing(timeout, None)
    request = wire.Wait(generation=generation, tv_sec=tv_sec, tv_nsec=tv_nsec, flags=flags)
    while True:
        try:
            _, buffer = _call(fd, wire.IOC_WAIT, request.pack())
        except InterruptedError:
            continue
        return wire.Wait.unpack(buffer)


def notify(fd: int, sigev_notify: int | None, signo: int = 0, value: int = 0) -> int:
    """mq_notify: register (SIGEV_SIGNAL=0, SIGEV_NONE=1 or SIGEV_THREAD=2), or unregister
    with None. Returns 0, or for SIGEV_THREAD the registration's id for :func:`notify_wait`."""
    if sigev_notify is None:
        request = wire.Notify(action=wire.NOTIFY_UNREGISTER)
    else:
        request = wire.Notify(
            action=wire.NOTIFY_REGISTER,
            sigev_notify=sigev_notify,
            sigev_signo=signo,
            sigev_value=value & 0xFFFFFFFFFFFFFFFF,
        )
    registration, _ = _call(fd, wire.IOC_NOTIFY, request.pack())
    return registration


def notify_wait(fd: int, registration: int) -> wire.NotifyWait:
    """Block (GIL released) until SIGEV_THREAD registration *registration* of this open
    file (*fd* may be a dup) fires or ends: ``outcome`` is wire.NOTIFY_FIRED or
    wire.NOTIFY_ENDED. An interrupted wait (EINTR) may be repeated: the daemon keeps the
    outcome until a wait collects it."""
    _, buffer = _call(fd, wire.IOC_NOTIFY_WAIT, wire.NotifyWait(registration).pack())
    return wire.NotifyWait.unpack(buffer)


def noop(fd: int) -> None:
    """The NOOP ioctl: one FUSE round trip that does nothing (the benchmark's floor)."""
    _call(fd, wire.IOC_NOOP, b"")


def receive_on_read(fd: int) -> None:
    """Make read() of *fd* receive messages (by default it returns the status line, so
    that programs that only read files never consume one). For this descriptor only."""
    _call(fd, wire.IOC_RECEIVE_ON_READ, b"")


def map(fd: int) -> wire.Map:
    """MAP: where the queue's shared mapping is (``-o fastpath``) and the geometry to
    attach it with. EOPNOTSUPP when the mount has no fast path, EACCES unless the caller
    runs as the queue's owner or root (everyone else goes through the daemon). (Named
    after the ioctl, it hides the builtin map in this module, which does not use it.)"""
    _, buffer = _call(fd, wire.IOC_MAP, bytes(wire.MAP_SIZE))
    return wire.Map.unpack(buffer)


def get_attributes(fd: int) -> wire.Attr:
    """mq_getattr."""
    _, buffer = _call(fd, wire.IOC_GETATTR, bytes(wire.ATTR_SIZE))
    return wire.Attr.unpack(buffer)


def set_attributes(fd: int, flags: int) -> wire.Attr:
    """mq_setattr: set mq_flags (only O_NONBLOCK), return the previous attributes."""
    request = wire.Attr(flags=flags, maxmsg=0, msgsize=0, curmsgs=0)
    _, buffer = _call(fd, wire.IOC_SETATTR, request.pack())
    return wire.Attr.unpack(buffer)


def set_send_priority(fd: int, priority: int) -> None:
    """Priority of the messages that plain write() sends on this descriptor."""
    _call(fd, wire.IOC_SETPRIO, wire.encode_prio(priority & 0xFFFFFFFF))


def create(
    root_fd: int,
    name: str,
    mode: int = 0o600,
    maxmsg: int | None = None,
    msgsize: int | None = None,
    exclusive: bool = False,
) -> None:
    """mq_open(O_CREAT[|O_EXCL]) without the open: *root_fd* is the mount's root dir.

    *mode* is used as given; apply the umask before calling, as mq_open does.
    """
    encoded = os.fsencode(name)
    if len(encoded) >= wire.NAME_SIZE:  # the kernel's check, before any I/O
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)
    if b"\0" in encoded:
        raise OSError(errno.EINVAL, "queue name contains a NUL byte", name)
    flags = wire.CREATE_EXCL if exclusive else 0
    if maxmsg is not None or msgsize is not None:
        if maxmsg is None or msgsize is None:
            raise ValueError("give both maxmsg and msgsize, or neither")
        flags |= wire.CREATE_ATTR
    request = wire.Create(
        name=encoded,
        mode=mode,
        flags=flags,
        maxmsg=maxmsg or 0,
        msgsize=msgsize or 0,
    )
    _call(root_fd, wire.IOC_CREATE, request.pack())


def create_at(
    mount: Path,
    name: str,
    mode: int = 0o600,
    maxmsg: int | None = None,
    msgsize: int | None = None,
    exclusive: bool = False,
) -> None:
    """:func:`create` on the mqfs mounted at *mount* (opens and closes its root)."""
    root = os.open(mount, os.O_RDONLY | os.O_DIRECTORY)
    try:
        create(root, name, mode, maxmsg, msgsize, exclusive)
    finally:
        os.close(root)

"""The mqfs wire format: ioctl numbers and struct layouts (mirrored by include/mqfs.h).

FUSE only forwards *restricted* ioctls: the kernel copies exactly ``_IOC_SIZE(cmd)`` bytes
in and/or out and cannot follow pointers inside a struct, and ``_IOC_SIZE`` has 14 bits,
so every struct here is a fixed size below 16384 bytes. Payloads travel in chunks of
``CHUNK`` bytes; a longer message takes several calls (by offset for PEEK, by a transfer
id for SEND/RECEIVE, so that a message is still sent or received atomically).

Layouts (native byte order, natural alignment, no padding anywhere)::

    struct mqfs_attr   {int64 flags, maxmsg, msgsize, curmsgs, reserved[4]}          64
    struct mqfs_peek   {u64 index, offset, msg_len; u32 msg_prio, copied;
                        u8 data[CHUNK]}                                               16352
    struct mqfs_xfer   {u64 msg_len, offset, xfer_id; i64 tv_sec, tv_nsec;
                        u32 msg_prio, flags, chunk_len, reserved; u8 data[CHUNK]}     16376
    struct mqfs_create {char name[256]; u32 mode, flags; i64 maxmsg, msgsize}         280
    struct mqfs_notify {u32 action; i32 sigev_notify, sigev_signo; u32 reserved;
                        u64 sigev_value}                                              24
    struct mqfs_batch  {u64 index, next, generation; u32 max_count, count, flags, used;
                        u8 data[CHUNK]}                                               16360
    struct mqfs_wait   {u64 generation; i64 tv_sec, tv_nsec; u32 flags, reserved}       32
    struct mqfs_notify_wait {u32 id, outcome; u64 sigev_value}                          16
    struct mqfs_remove {u64 index, generation, msg_len; u32 msg_prio, copied;
                        u8 data[REMOVE_HEAD]}                                          256
    struct mqfs_map    {u64 maxmsg, msgsize; u32 version, flags; char path[1008]}       1032
      data holds `count` record headers, then their payload chunks back to back:
        struct mqfs_batch_record {u64 msg_len; u32 msg_prio, chunk_len}               16

Replies may be shorter than the struct (header plus the bytes actually copied): the
kernel copies back only what the daemon returns, and ``copied``/``chunk_len`` say how
much of ``data`` is valid.

Framed I/O (batch send, receive and peek)
-----------------------------------------
A FUSE read or write carries up to ``plain_io_max`` bytes (about 1 MiB, the mount's
``user.mq.limits``), so many whole messages travel in one request. The request's file
offset selects it, so a program's own read()/write() of the queue file keep their meaning
(offsets below ``FRAMED``)::

    pwrite(fd, frames, n, FRAMED_SEND)                 batch send
    pread(fd, buf, n, FRAMED_RECEIVE)                  batch receive
    pread(fd, buf, n, framed_receive_offset(count))    ... of at most *count* messages
    pread(fd, buf, n, framed_peek_offset(index))       batch peek from *index*

A send is frames back to back: a frame is ``struct mqfs_frame {u32 msg_len, msg_prio}``
and the payload, padded with zeros to a multiple of 8 bytes, so that the bytes a short
write consumed are whole frames and the rest of the buffer is the frames still to send.
A receive or peek reply is ``struct mqfs_frames {u64 generation; u32 count, flags}`` (16
bytes: the queue's generation after the call, the messages that follow, FRAMES_MORE if
the queue holds messages after them), then ``count`` mqfs_frame records, then the
``count`` payloads back to back (no padding): a reader unpacks every record with one
call and cuts the payloads by their running sum, with no step per message in Python.

Semantics:

* send: the whole write is parsed before anything is sent: a truncated frame, nonzero
  padding or trailing bytes is EINVAL, a priority >= MQ_PRIO_MAX is EINVAL, a message
  longer than msgsize EMSGSIZE, and then nothing of that write is sent. Messages are
  sent in order, each atomically, exactly as one mq_send each would. With O_NONBLOCK as
  many whole messages as fit are sent and the write returns the bytes of the frames
  consumed (a short write), EAGAIN if none fit. Blocking, the write waits until all are
  sent; interrupted by a signal it returns the bytes of the frames sent so far (EINTR if
  none). A write larger than plain_io_max (cut by the kernel) is EMSGSIZE, as a plain one.
* receive: as many whole messages as fit in *n* bytes, at least one, in receive order,
  each exactly as one mq_receive would give it (a blocked sender is admitted per message
  taken). *n* must hold a reply of one msgsize message (24 + msgsize bytes), else
  EMSGSIZE. It waits
  only for the first message (O_NONBLOCK: EAGAIN on an empty queue).
* peek: as many whole messages from *index* as fit, nothing consumed, never waits; an
  index equal to the queue's length gives 0 frames, past it ENOENT, a first message that
  does not fit EMSGSIZE. Equal generations of two replies mean one consistent snapshot.
* A read at another offset at or above FRAMED (the kernel's continuation of a read larger
  than one request) returns 0 bytes and consumes nothing; a write there is EINVAL.
"""

from __future__ import annotations

import bisect
import itertools
import operator
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat

from mqfs import errors

MAGIC = ord("Q")

# Linux's generic _IOC encoding (asm-generic/ioctl.h): dir:2 | size:14 | type:8 | nr:8.
IOC_NONE = 0
IOC_WRITE = 1  # user -> kernel (-> daemon)
IOC_READ = 2  # daemon -> kernel -> user
_IOC_SIZE_LIMIT = 1 << 14
_IOC_SIZE_MASK = (_IOC_SIZE_LIMIT - 1) << 16


class Malformed(errors.InvalidArgument, ValueError):
    """A struct that cannot be what it claims (EINVAL): too short, a length past its
    buffer, a name without its NUL."""


def base_command(command: int) -> int:
    """*command* with its size field cleared: what PEEK/SEND/RECEIVE are matched on."""
    return command & ~_IOC_SIZE_MASK


def sized(command: int, size: int) -> int:
    """PEEK, SEND or RECEIVE with a smaller struct: the same header, a shorter data[].

    The kernel copies _IOC_SIZE bytes each way, so a 64-byte message need not pay for a
    16 KiB copy in and out; the daemon reads the capacity from the command.
    """
    return base_command(command) | (size << 16)


def _ioc(direction: int, number: int, size: int) -> int:
    if not 0 <= size < _IOC_SIZE_LIMIT:
        raise ValueError(f"ioctl struct of {size} bytes does not fit _IOC_SIZE")
    return (direction << 30) | (size << 16) | (MAGIC << 8) | number


CHUNK = 16320
"""Payload bytes one PEEK/SEND/RECEIVE call carries."""

_ATTR = struct.Struct("=8q")
_PEEK_HEADER = struct.Struct("=3Q2I")
_XFER_HEADER = struct.Struct("=3Q2q4I")
_CREATE = struct.Struct("=256s2I2q")
_PRIO = struct.Struct("=I")
_NOTIFY = struct.Struct("=I2iIQ")
_BATCH_HEADER = struct.Struct("=3Q4I")
_BATCH_RECORD = struct.Struct("=Q2I")
_BATCH_SLICE = 128
_WAIT = struct.Struct("=Q2q2I")
_NOTIFY_WAIT = struct.Struct("=2IQ")
_REMOVE_HEADER = struct.Struct("=3Q2I")
_MAP_HEADER = struct.Struct("=2Q2I")

ATTR_SIZE = _ATTR.size
PEEK_HEADER_SIZE = _PEEK_HEADER.size
XFER_HEADER_SIZE = _XFER_HEADER.size
PEEK_SIZE = PEEK_HEADER_SIZE + CHUNK
XFER_SIZE = XFER_HEADER_SIZE + CHUNK
CREATE_SIZE = _CREATE.size
PRIO_SIZE = _PRIO.size
NOTIFY_SIZE = _NOTIFY.size
BATCH_SIZE = _BATCH_HEADER.size + CHUNK
BATCH_RECORD_HEADER_SIZE = _BATCH_RECORD.size
WAIT_SIZE = _WAIT.size
NOTIFY_WAIT_SIZE = _NOTIFY_WAIT.size
REMOVE_HEAD = 224
"""Bytes of the removed message a REMOVE reply carries (its head, to show what went)."""
REMOVE_SIZE = _REMOVE_HEADER.size + REMOVE_HEAD
NAME_SIZE = 256
MAP_PATH_SIZE = 1008
MAP_SIZE = _MAP_HEADER.size + MAP_PATH_SIZE

IOC_NOOP = _ioc(IOC_NONE, 0, 0)
IOC_GETATTR = _ioc(IOC_READ, 1, ATTR_SIZE)
IOC_SETATTR = _ioc(IOC_READ | IOC_WRITE, 2, ATTR_SIZE)
IOC_SETPRIO = _ioc(IOC_WRITE, 3, PRIO_SIZE)
IOC_PEEK = _ioc(IOC_READ | IOC_WRITE, 4, PEEK_SIZE)
IOC_SEND = _ioc(IOC_READ | IOC_WRITE, 5, XFER_SIZE)
IOC_RECEIVE = _ioc(IOC_READ | IOC_WRITE, 6, XFER_SIZE)
IOC_CREATE = _ioc(IOC_WRITE, 7, CREATE_SIZE)
IOC_NOTIFY = _ioc(IOC_WRITE, 8, NOTIFY_SIZE)
IOC_PEEK_BATCH = _ioc(IOC_READ | IOC_WRITE, 9, BATCH_SIZE)
IOC_WAIT = _ioc(IOC_READ | IOC_WRITE, 10, WAIT_SIZE)
IOC_RECEIVE_ON_READ = _ioc(IOC_NONE, 11, 0)
"""From now on read() of this descriptor receives a message; until then it returns the
status line, as /dev/mqueue/NAME does, so a program that only reads files (grep -r, cp,
a backup) never consumes anything."""
IOC_NOTIFY_WAIT = _ioc(IOC_READ | IOC_WRITE, 12, NOTIFY_WAIT_SIZE)
"""Block until the SIGEV_THREAD registration whose id the NOTIFY ioctl returned fires or
ends (see :class:`NotifyWait`): the daemon's half of SIGEV_THREAD, which glibc gets from
the kernel through a netlink socket."""
IOC_REMOVE = _ioc(IOC_READ | IOC_WRITE, 13, REMOVE_SIZE)
"""Remove message `index` (receive order) if the queue is still at `generation`: mqfs
rm-msg. EBADF unless open for reading, ESTALE if the generation differs, ENOENT past the
last message."""

IOC_MAP = _ioc(IOC_READ, 14, MAP_SIZE)
"""Where the queue's shared mapping is (``-o fastpath``), for a caller running as the
queue's owner or root: the path and the geometry to attach it with (:class:`Map`).
EOPNOTSUPP when the mount has no fast path, EACCES for anyone else: they use the daemon."""

INFO_XATTR = "user.mq.info"
"""xattr of MNT/NAME: JSON with the attributes, notify state and openers (`mqfs ls -l`)."""
LIMITS_XATTR = "user.mq.limits"
"""xattr of MNT itself: JSON with the mount's limits (msg_max, msgsize_max, queues_max, ...)."""
PRIORITY_XATTR = "user.mq.priority"
"""xattr of MNT/NAME/msgs/I: the message's priority in decimal."""

XFER_TIMED = 1
"""mqfs_xfer.flags and mqfs_wait.flags: tv_sec/tv_nsec hold an absolute CLOCK_REALTIME
deadline. The only flag of both: the daemon refuses any other bit (EINVAL), as it does any
bit of mqfs_create.flags but CREATE_EXCL and CREATE_ATTR."""
WAIT_UNLINKED = 2
"""mqfs_wait.flags of a reply (never of a request): the queue's name has been unlinked.
An unlink changes the generation, so it wakes every WAIT caller, who sees this flag."""
CREATE_EXCL = 1
"""mqfs_create.flags: fail with EEXIST if the queue exists (O_EXCL)."""
CREATE_ATTR = 2
"""mqfs_create.flags: use maxmsg/msgsize (else the mount's defaults), as a non-NULL attr."""


def _payload(buffer: bytes | bytearray, header_size: int, length: int) -> bytes:
    if length > CHUNK or header_size + length > len(buffer):
        raise Malformed(f"chunk length {length} exceeds the buffer")
    return bytes(buffer[header_size : header_size + length])


def _check_chunk(data: bytes) -> None:
    if len(data) > CHUNK:
        raise Malformed(f"a chunk holds at most {CHUNK} bytes, not {len(data)}")


def _request(header: struct.Struct, fields: tuple[int, ...], data: bytes, size: int) -> bytearray:
    """An ioctl buffer of *size* bytes (the struct, or a sized() command's part of it):
    the header, then *data*, then zeros; the daemon's reply lands in the same buffer."""
    if header.size + len(data) > size:
        raise Malformed(f"{header.size + len(data)} bytes do not fit a {size}-byte request")
    buffer = bytearray(size)
    header.pack_into(buffer, 0, *fields)
    buffer[header.size : header.size + len(data)] = data
    return buffer


@dataclass(frozen=True, slots=True)
class Attr:
    """struct mqfs_attr: mq_getattr/mq_setattr's struct mq_attr."""

    flags: int = 0
    maxmsg: int = 0
    msgsize: int = 0
    curmsgs: int = 0

    def pack(self) -> bytes:
        return _ATTR.pack(self.flags, self.maxmsg, self.msgsize, self.curmsgs, 0, 0, 0, 0)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Attr:
        if len(buffer) < ATTR_SIZE:
            raise Malformed(f"mqfs_attr needs {ATTR_SIZE} bytes, got {len(buffer)}")
        flags, maxmsg, msgsize, curmsgs, *_ = _ATTR.unpack_from(buffer)
        return cls(flags, maxmsg, msgsize, curmsgs)


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 3x as much to make
class Peek:
    """struct mqfs_peek: in index and offset; out msg_len, msg_prio and a chunk."""

    index: int = 0
    offset: int = 0
    msg_len: int = 0
    msg_prio: int = 0
    data: bytes = b""

    def _fields(self) -> tuple[int, ...]:
        _check_chunk(self.data)
        return self.index, self.offset, self.msg_len, self.msg_prio, len(self.data)

    def pack(self) -> bytes:
        """A reply: the header and the bytes copied, nothing after them."""
        return _PEEK_HEADER.pack(*self._fields()) + self.data

    def request(self, size: int = PEEK_SIZE) -> bytearray:
        """A request buffer of *size* bytes (see :func:`sized`)."""
        return _request(_PEEK_HEADER, self._fields(), self.data, size)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Peek:
        if len(buffer) < _PEEK_HEADER.size:
            raise Malformed(f"mqfs_peek needs {_PEEK_HEADER.size} bytes, got {len(buffer)}")
        index, offset, msg_len, msg_prio, copied = _PEEK_HEADER.unpack_from(buffer)
        return cls(index, offset, msg_len, msg_prio, _payload(buffer, _PEEK_HEADER.size, copied))


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 3x as much to make
class Xfer:
    """struct mqfs_xfer: one chunk of a SEND or RECEIVE."""

    msg_len: int = 0
    offset: int = 0
    xfer_id: int = 0
    tv_sec: int = 0
    tv_nsec: int = 0
    msg_prio: int = 0
    flags: int = 0
    data: bytes = b""

    def _fields(self) -> tuple[int, ...]:
        _check_chunk(self.data)
        return (
            self.msg_len,
            self.offset,
            self.xfer_id,
            self.tv_sec,
            self.tv_nsec,
            self.msg_prio,
            self.flags,
            len(self.data),
            0,
        )

    def pack(self) -> bytes:
        """A reply: the header and the chunk, nothing after them."""
        return _XFER_HEADER.pack(*self._fields()) + bytes(self.data)

    def request(self, size: int = XFER_SIZE) -> bytearray:
        """A request buffer of *size* bytes (see :func:`sized`)."""
        return _request(_XFER_HEADER, self._fields(), self.data, size)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Xfer:
        if len(buffer) < _XFER_HEADER.size:
            raise Malformed(f"mqfs_xfer needs {_XFER_HEADER.size} bytes, got {len(buffer)}")
        fields = _XFER_HEADER.unpack_from(buffer)
        msg_len, offset, xfer_id, tv_sec, tv_nsec, msg_prio, flags, chunk_len, _ = fields
        data = _payload(buffer, _XFER_HEADER.size, chunk_len)
        return cls(msg_len, offset, xfer_id, tv_sec, tv_nsec, msg_prio, flags, data)


@dataclass(frozen=True, slots=True)
class Create:
    """struct mqfs_create: mq_open(O_CREAT) on the mount's root directory."""

    name: bytes = b""
    mode: int = 0o600
    flags: int = 0
    maxmsg: int = 0
    msgsize: int = 0

    def pack(self) -> bytes:
        if len(self.name) >= NAME_SIZE or b"\0" in self.name:
            raise Malformed("a queue name is at most 255 bytes without NUL")
        return _CREATE.pack(self.name, self.mode, self.flags, self.maxmsg, self.msgsize)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Create:
        if len(buffer) < CREATE_SIZE:
            raise Malformed(f"mqfs_create needs {CREATE_SIZE} bytes, got {len(buffer)}")
        raw_name, mode, flags, maxmsg, msgsize = _CREATE.unpack_from(buffer)
        end = raw_name.find(b"\0")
        if end < 0:
            raise Malformed("queue name is not NUL-terminated within 256 bytes")
        return cls(raw_name[:end], mode, flags, maxmsg, msgsize)


BATCH_MORE = 1
"""mqfs_batch.flags: messages follow `next`; call again with index = next."""

NOTIFY_UNREGISTER = 0
"""mqfs_notify.action: mq_notify(mqd, NULL)."""
NOTIFY_REGISTER = 1
"""mqfs_notify.action: mq_notify(mqd, &sigevent) with the fields given. For SIGEV_THREAD
the ioctl returns a positive id, which NOTIFY_WAIT on the same open file (or a dup of it)
takes: no signal is sent, the waiter learns of the firing instead."""

NOTIFY_FIRED = 1
"""mqfs_notify_wait.outcome: the registration fired (the queue went from empty to one
message with no receiver waiting); run the function with sigev_value."""
NOTIFY_ENDED = 2
"""mqfs_notify_wait.outcome: the registration ended without firing: mq_notify(NULL), a
close by the registered process (mqueue_flush_file), or the queue was destroyed."""


@dataclass(frozen=True, slots=True)
class Notify:
    """struct mqfs_notify: mq_notify's struct sigevent, flattened."""

    action: int = NOTIFY_UNREGISTER
    sigev_notify: int = 0
    sigev_signo: int = 0
    sigev_value: int = 0

    def pack(self) -> bytes:
        return _NOTIFY.pack(self.action, self.sigev_notify, self.sigev_signo, 0, self.sigev_value)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Notify:
        if len(buffer) < NOTIFY_SIZE:
            raise Malformed(f"mqfs_notify needs {NOTIFY_SIZE} bytes, got {len(buffer)}")
        action, sigev_notify, signo, _, value = _NOTIFY.unpack_from(buffer)
        return cls(action, sigev_notify, signo, value)


BatchRecord = tuple[int, int, bytes]
"""(msg_len, msg_prio, data): one message of a batch, or the first chunk of one that alone
overflows it. Plain tuples: a dump decodes thousands per call."""


@dataclass(frozen=True, slots=True)
class Batch:
    """struct mqfs_batch: PEEK_BATCH, many messages per call for dumps.

    In: index (first message wanted), max_count (0 = as many as fit). Out: the records,
    next (index to ask for next), flags (BATCH_MORE) and generation (a counter that
    changes whenever the queue does: equal generations mean one consistent snapshot).
    """

    index: int = 0
    max_count: int = 0
    next: int = 0
    generation: int = 0
    flags: int = 0
    records: tuple[BatchRecord, ...] = ()

    def request(self) -> bytearray:
        """A request: index and max_count (the records are the daemon's to fill)."""
        fields = (self.index, 0, 0, self.max_count, 0, 0, 0)
        return _request(_BATCH_HEADER, fields, b"", BATCH_SIZE)

    @staticmethod
    def reply(
        index: int,
        max_count: int,
        generation: int,
        queued: int,
        segments: Iterable[tuple[int, Sequence[bytes]]],
    ) -> tuple[int, bytes]:
        """(count, reply) of a PEEK_BATCH from *index* on a queue of *queued* messages,
        as many of *segments* ((priority, payloads) runs) as fit in one call."""
        count, data = _batch_body(segments, CHUNK)
        following = index + count
        flags = BATCH_MORE if following < queued else 0
        fields = (index, following, generation, max_count, count, flags, len(data))
        return count, _BATCH_HEADER.pack(*fields) + data

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Batch:
        """A request or a reply. One struct call unpacks every record header, and the
        payloads are cut from one copy of the data (the client's side of a dump)."""
        if len(buffer) < _BATCH_HEADER.size:
            raise Malformed(f"mqfs_batch needs {_BATCH_HEADER.size} bytes, got {len(buffer)}")
        index, next_index, generation, max_count, count, flags, used = _BATCH_HEADER.unpack_from(
            buffer
        )
        start = _BATCH_HEADER.size
        end = start + used
        chunks_at = start + count * BATCH_RECORD_HEADER_SIZE
        if used > CHUNK or end > len(buffer) or chunks_at > end:
            raise Malformed("batch data beyond the buffer")
        # (msg_len, msg_prio, chunk_len) * count
        flat = struct.unpack_from(f"={count * 'QII'}", buffer, start) if count else ()
        totals, priorities, lengths = flat[0::3], flat[1::3], flat[2::3]
        offsets = list(itertools.accumulate(lengths, initial=0))
        if chunks_at + offsets[-1] > end or any(map(operator.gt, lengths, totals)):
            raise Malformed("batch record beyond the data")
        data = bytes(buffer[chunks_at : chunks_at + offsets[-1]])
        chunks = [data[a:b] for a, b in itertools.pairwise(offsets)]
        records = tuple(zip(totals, priorities, chunks, strict=True))
        return cls(index, max_count, next_index, generation, flags, records)


def _batch_body(
    segments: Iterable[tuple[int, Sequence[bytes]]], capacity: int
) -> tuple[int, bytes]:
    """(count, record headers + chunks) of as many messages of *segments* as fit.

    The hot path of a dump, so the per-message work is done by C-level map/accumulate
    over whole runs. A message too large for any batch is cut to its first chunk when
    it comes first (the reader completes it with PEEK).
    """
    headers: list[bytes] = []
    chunks: list[bytes] = []
    used = 0
    per_record = BATCH_RECORD_HEADER_SIZE
    for priority, run in segments:
        # In slices, so that a long run costs what fits, not what was offered.
        for start in range(0, len(run), _BATCH_SLICE):
            payloads = run[start : start + _BATCH_SLICE]
            lengths = list(map(len, payloads))
            ends = list(
                itertools.accumulate(
                    map(operator.add, lengths, itertools.repeat(per_record)), initial=used
                )
            )
            fitting = bisect.bisect_right(ends, capacity) - 1
            if fitting == 0 and not headers:
                first = payloads[0][: capacity - per_record]
                return 1, _BATCH_RECORD.pack(lengths[0], priority, len(first)) + first
            headers.extend(
                map(_BATCH_RECORD.pack, lengths[:fitting], itertools.repeat(priority), lengths)
            )
            chunks.extend(payloads[:fitting])
            used = ends[fitting]
            if fitting < len(payloads):
                return len(chunks), b"".join(headers) + b"".join(chunks)
    return len(chunks), b"".join(headers) + b"".join(chunks)


@dataclass(frozen=True, slots=True)
class Wait:
    """struct mqfs_wait: block until the queue's generation differs from the one given
    (or the XFER_TIMED deadline passes); out: the current generation, and in flags
    WAIT_UNLINKED once the queue is unlinked."""

    generation: int = 0
    tv_sec: int = 0
    tv_nsec: int = 0
    flags: int = 0

    @property
    def unlinked(self) -> bool:
        return bool(self.flags & WAIT_UNLINKED)

    def pack(self) -> bytes:
        return _WAIT.pack(self.generation, self.tv_sec, self.tv_nsec, self.flags, 0)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Wait:
        if len(buffer) < WAIT_SIZE:
            raise Malformed(f"mqfs_wait needs {WAIT_SIZE} bytes, got {len(buffer)}")
        generation, tv_sec, tv_nsec, flags, _ = _WAIT.unpack_from(buffer)
        return cls(generation, tv_sec, tv_nsec, flags)


@dataclass(frozen=True, slots=True)
class NotifyWait:
    """struct mqfs_notify_wait: in the id of a SIGEV_THREAD registration (what NOTIFY
    returned); out NOTIFY_FIRED or NOTIFY_ENDED and the registration's sigev_value."""

    id: int = 0
    outcome: int = 0
    sigev_value: int = 0

    def pack(self) -> bytes:
        return _NOTIFY_WAIT.pack(self.id, self.outcome, self.sigev_value)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> NotifyWait:
        if len(buffer) < NOTIFY_WAIT_SIZE:
            raise Malformed(f"mqfs_notify_wait needs {NOTIFY_WAIT_SIZE} bytes, got {len(buffer)}")
        return cls(*_NOTIFY_WAIT.unpack_from(buffer))


@dataclass(frozen=True, slots=True)
class Remove:
    """struct mqfs_remove: in index and the generation the caller saw the queue at
    (PEEK_BATCH, WAIT); out the generation after the removal and what was removed: its
    length, priority and first REMOVE_HEAD bytes (``copied`` of them valid)."""

    index: int = 0
    generation: int = 0
    msg_len: int = 0
    msg_prio: int = 0
    data: bytes = b""

    def _fields(self) -> tuple[int, ...]:
        if len(self.data) > REMOVE_HEAD:
            raise Malformed(f"a REMOVE reply holds at most {REMOVE_HEAD} bytes of data")
        return self.index, self.generation, self.msg_len, self.msg_prio, len(self.data)

    def pack(self) -> bytes:
        """A reply: the header and the bytes copied, nothing after them."""
        return _REMOVE_HEADER.pack(*self._fields()) + self.data

    def request(self) -> bytearray:
        """A request buffer of the whole struct (the reply lands in it)."""
        return _request(_REMOVE_HEADER, self._fields(), self.data, REMOVE_SIZE)

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Remove:
        if len(buffer) < _REMOVE_HEADER.size:
            raise Malformed(f"mqfs_remove needs {_REMOVE_HEADER.size} bytes, got {len(buffer)}")
        index, generation, msg_len, msg_prio, copied = _REMOVE_HEADER.unpack_from(buffer)
        if copied > REMOVE_HEAD or copied > msg_len:
            raise Malformed(f"mqfs_remove copied {copied} bytes of a {msg_len}-byte message")
        data = _payload(buffer, _REMOVE_HEADER.size, copied)
        return cls(index, generation, msg_len, msg_prio, data)


# -- framed I/O ---------------------------------------------------------------------

FRAMED_IO = 1
"""The version of framed I/O this daemon reads, in its mount root's LIMITS_XATTR as
"framed_io": clients check it before a framed write, which an older daemon would take for
one message."""
FRAMED = 1 << 62
"""The lowest file offset with a framed meaning; below it read/write are unchanged."""
FRAMED_SEND = FRAMED
"""pwrite() offset of a batch send."""
FRAMED_RECEIVE = FRAMED
"""pread() offset of a batch receive."""
FRAMED_PEEK = FRAMED + (1 << 60)
"""pread() offset of a batch peek from index 0; see :func:`framed_peek_offset`."""
FRAMED_STRIDE = 1 << 32
"""Peek offsets are this far apart, more than any one read: the kernel's continuation
of a larger read lands between them and gets 0 bytes, never another index's frames."""
FRAMED_RECEIVE_ONE = FRAMED_RECEIVE + FRAMED_STRIDE
"""pread() offset of a receive of one message: mq_receive under the shim."""
FRAMES_MORE = 1
"""mqfs_frames.flags: the queue holds messages after the frames of this reply."""

_FRAME = struct.Struct("=2I")
_FRAMES = struct.Struct("=Q2I")
FRAME_HEADER_SIZE = _FRAME.size
FRAMES_HEADER_SIZE = _FRAMES.size
_ZEROS = bytes(8)

Run = tuple[int, list[bytes]]
"""(priority, payloads): consecutive messages of one priority, as the store keeps them."""


def plain_io_limit() -> int:
    """The largest read()/write() that always reaches the daemon as one FUSE request
    (plain_io_max): the most a plain write may send as one message, and a framed
    read or write may carry.

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


def framed_receive_offset(max_count: int = 0) -> int:
    """The pread() offset of a batch receive of at most *max_count* messages (0: as
    many as fit)."""
    if not 0 <= max_count < (1 << 28):
        raise Malformed(f"receive count {max_count} is outside 0..2**28-1")
    return FRAMED_RECEIVE + max_count * FRAMED_STRIDE


def framed_receive_count(offset: int) -> int | None:
    """The count limit a receive offset names (0: none), or None between them."""
    count, rest = divmod(offset - FRAMED_RECEIVE, FRAMED_STRIDE)
    return None if rest else count


def framed_peek_offset(index: int) -> int:
    """The pread() offset of a batch peek from message *index*."""
    if not 0 <= index < (1 << 28):
        raise Malformed(f"peek index {index} is outside 0..2**28-1")
    return FRAMED_PEEK + index * FRAMED_STRIDE


def framed_peek_index(offset: int) -> int | None:
    """The index a peek offset names, or None for an offset between them."""
    index, rest = divmod(offset - FRAMED_PEEK, FRAMED_STRIDE)
    return None if rest else index


def frame_size(length: int) -> int:
    """Bytes of the frame of a *length*-byte message (header, payload, padding)."""
    return FRAME_HEADER_SIZE + length + (-length & 7)


def record_size(length: int) -> int:
    """Bytes a *length*-byte message takes in a receive or peek reply (record, payload)."""
    return FRAME_HEADER_SIZE + length


def reply_room(size: int) -> int:
    """The longest message a reply of *size* bytes can hold (-1 if none)."""
    return size - FRAMES_HEADER_SIZE - FRAME_HEADER_SIZE


def _same(values: Sequence[int]) -> bool:
    """Whether all of *values* (at least one) are equal: one C-level count."""
    return values.count(values[0]) == len(values)


def _frames_struct(length: int, count: int) -> struct.Struct:
    """*count* frames of *length*-byte payloads: (msg_len, msg_prio, payload[, padding])
    each, so that one C call unpacks them all. Not the struct module's cache:
    it would keep up to 100 of these large formats alive."""
    padding = -length & 7
    return struct.Struct("=" + (f"2I{length}s{padding}s" if padding else f"2I{length}s") * count)


def encode_frames(messages: Iterable[tuple[bytes, int]]) -> bytes:
    """The frames of (payload, priority) *messages*: a batch send's buffer."""
    messages = list(messages)
    if not messages:
        return b""
    lengths = list(map(len, map(operator.itemgetter(0), messages)))
    priorities = list(map(operator.itemgetter(1), messages))
    if _same(lengths):
        # Messages of one size (the usual batch): within a run of one priority every frame
        # starts with the same header, so one join with "padding + header" as the
        # separator frames the whole run.
        padding = _ZEROS[: -lengths[0] & 7]
        payloads = list(map(operator.itemgetter(0), messages))
        runs: list[bytes] = []
        start = 0
        for priority, group in itertools.groupby(priorities):
            stop = start + len(list(group))
            header = _FRAME.pack(lengths[0], priority)
            runs.append(header + (padding + header).join(payloads[start:stop]) + padding)
            start = stop
        return b"".join(runs)
    pack = _FRAME.pack  # (a plain loop for messages of many sizes)
    parts: list[bytes] = []
    append = parts.append
    for payload, priority in messages:
        length = len(payload)
        append(pack(length, priority))
        append(payload)
        if length & 7:
            append(_ZEROS[: -length & 7])
    return b"".join(parts)


def _records(priority: int, payloads: Sequence[bytes]) -> bytes:
    """The mqfs_frame records of one run of a reply."""
    lengths = list(map(len, payloads))
    if _same(lengths):
        return _FRAME.pack(lengths[0], priority) * len(lengths)
    fields = itertools.chain.from_iterable(zip(lengths, repeat(priority)))
    return struct.Struct(f"={2 * len(lengths)}I").pack(*fields)


def encode_reply(generation: int, runs: Sequence[Run], more: bool) -> bytes:
    """A receive or peek reply: the mqfs_frames header, the records, the payloads."""
    count = sum(len(payloads) for _, payloads in runs)
    header = _FRAMES.pack(generation, count, FRAMES_MORE if more else 0)
    records = [_records(priority, payloads) for priority, payloads in runs if payloads]
    payloads = itertools.chain.from_iterable(payloads for _, payloads in runs)
    return b"".join(itertools.chain((header,), records, payloads))


def single_frame(buffer: bytes) -> tuple[bytes, int] | None:
    """(payload, priority) if *buffer* is exactly one well-formed frame (what mq_send
    under the shim writes), else None: decode_frames then decides."""
    if len(buffer) < FRAME_HEADER_SIZE:
        return None
    length, priority = _FRAME.unpack_from(buffer)
    end = FRAME_HEADER_SIZE + length
    if frame_size(length) != len(buffer) or buffer[end:] != _ZEROS[: len(buffer) - end]:
        return None
    return buffer[FRAME_HEADER_SIZE:end], priority


def single_reply(generation: int, payload: bytes, priority: int, more: bool) -> bytes:
    """The receive reply of one message (what mq_receive under the shim reads)."""
    return (
        _FRAMES.pack(generation, 1, FRAMES_MORE if more else 0)
        + _FRAME.pack(len(payload), priority)
        + payload
    )


def decode_frames(buffer: bytes | bytearray | memoryview) -> list[Run]:
    """The messages framed in *buffer*, as runs of one priority.

    Strict: a frame past the end, nonzero padding or a partial header is Malformed, so
    that a batch send can refuse the whole write before sending anything.
    """
    view = memoryview(buffer)
    if len(view) >= FRAME_HEADER_SIZE:
        length = _FRAME.unpack_from(view)[0]
        count, rest = divmod(len(view), frame_size(length))
        if not rest:  # perhaps frames of one size (the usual case): one unpack for all
            fields = _frames_struct(length, count).unpack_from(view)
            padding = _ZEROS[: -length & 7]
            step = 4 if padding else 3
            if _same(fields[0::step]) and (not padding or fields[3::4].count(padding) == count):
                return _runs(fields[1::step], fields[2::step])
    return _decode_each(view)


def _runs(priorities: Sequence[int], payloads: Sequence[bytes]) -> list[Run]:
    if _same(priorities):
        return [(priorities[0], list(payloads))]
    runs: list[Run] = []
    start = 0
    for priority, group in itertools.groupby(priorities):  # run lengths, C-level
        stop = start + len(list(group))
        runs.append((priority, list(payloads[start:stop])))
        start = stop
    return runs


def _decode_each(view: memoryview) -> list[Run]:
    """:func:`decode_frames` frame by frame, for messages of different sizes."""
    end = len(view)
    unpack = _FRAME.unpack_from
    runs: list[Run] = []
    current: list[bytes] = []
    current_priority = -1
    offset = 0
    while offset < end:
        if offset + FRAME_HEADER_SIZE > end:
            raise Malformed(f"a partial frame header at byte {offset}")
        length, priority = unpack(view, offset)
        offset += FRAME_HEADER_SIZE
        stop = offset + length
        padded = stop + (-length & 7)
        if padded > end:
            raise Malformed(f"a frame of {length} bytes runs past the end of the buffer")
        if padded != stop and any(view[stop:padded]):
            raise Malformed(f"nonzero padding after the frame at byte {offset}")
        if priority != current_priority:
            current = []
            runs.append((priority, current))
            current_priority = priority
        current.append(bytes(view[offset:stop]))
        offset = padded
    return runs


def decode_reply(buffer: bytes | bytearray) -> tuple[int, bool, list[tuple[bytes, int]]]:
    """(generation, more, [(payload, priority), ...]) of a receive or peek reply."""
    if len(buffer) < FRAMES_HEADER_SIZE:
        raise Malformed(f"a framed reply needs {FRAMES_HEADER_SIZE} bytes, got {len(buffer)}")
    generation, count, flags = _FRAMES.unpack_from(buffer)
    more = bool(flags & FRAMES_MORE)
    start = FRAMES_HEADER_SIZE + count * FRAME_HEADER_SIZE
    if start > len(buffer):
        raise Malformed(f"{count} records do not fit a reply of {len(buffer)} bytes")
    records = buffer[FRAMES_HEADER_SIZE:start]
    if count and records == records[:FRAME_HEADER_SIZE] * count:
        # One size and one priority (the usual reply): one comparison checks every record.
        length, priority = _FRAME.unpack_from(records)
        if start + count * length != len(buffer):
            raise Malformed("the reply's payloads do not add up to its length")
        payloads = struct.Struct("=" + f"{length}s" * count).unpack_from(buffer, start)
        return generation, more, list(zip(payloads, repeat(priority, count), strict=True))
    fields = struct.Struct(f"={2 * count}I").unpack_from(buffer, FRAMES_HEADER_SIZE)
    lengths = fields[0::2]
    if start + sum(lengths) != len(buffer):
        raise Malformed("the reply's payloads do not add up to its length")
    if not count:
        return generation, more, []
    # One C call cuts every payload: a format of "<len>s" per message.
    if _same(lengths):
        layout = "=" + f"{lengths[0]}s" * count
    else:
        layout = "=" + "s".join(map(str, lengths)) + "s"
    payloads = struct.Struct(layout).unpack_from(buffer, start)
    return generation, more, list(zip(payloads, fields[1::2], strict=True))


def fitting(runs: Iterable[Run], capacity: int) -> tuple[int, int]:
    """(count, bytes) of the messages of *runs*, from the first on, that fit a reply's
    *capacity* bytes (after its header): each takes :func:`record_size` bytes."""
    count = 0
    used = 0
    for _, payloads in runs:
        # Messages of one size (the usual case): how many fit is one division, checked
        # by one C-level count over their lengths.
        first = record_size(len(payloads[0])) if payloads else 0
        take = min(len(payloads), (capacity - used) // first) if first <= capacity - used else 0
        if take and list(map(len, payloads[:take])).count(first - FRAME_HEADER_SIZE) == take:
            count += take
            used += take * first
        else:
            take = 0
        for start in range(take, len(payloads), _BATCH_SLICE):
            part = payloads[start : start + _BATCH_SLICE]
            ends = list(
                itertools.accumulate(
                    map(operator.add, map(len, part), repeat(FRAME_HEADER_SIZE)), initial=used
                )
            )
            fit = bisect.bisect_right(ends, capacity) - 1
            count += fit
            used = ends[fit]
            if fit < len(part):
                return count, used
    return count, used


def frame_batches(
    messages: Sequence[tuple[bytes, int]], limit: int
) -> Iterable[Sequence[tuple[bytes, int]]]:
    """*messages* in consecutive slices whose frames fit *limit* bytes each (a message too
    long for any batch comes alone: the daemon refuses it). The frames' running sizes are
    summed by C-level maps, and each cut is a bisection."""
    # frame_size(n) = 8 + n rounded up to 8 = (n + 15) & ~7
    lengths = map(len, map(operator.itemgetter(0), messages))
    sizes = map(operator.and_, map(operator.add, lengths, repeat(15)), repeat(~7))
    ends = list(itertools.accumulate(sizes, initial=0))
    start = 0
    while start < len(messages):
        stop = bisect.bisect_right(ends, ends[start] + limit) - 1
        stop = max(stop, start + 1)
        yield messages[start:stop]
        start = stop


def encode_prio(priority: int) -> bytes:
    """The SETPRIO argument (an unsigned int, as mq_send's msg_prio)."""
    return _PRIO.pack(priority)


def decode_prio(buffer: bytes | bytearray) -> int:
    if len(buffer) < PRIO_SIZE:
        raise Malformed(f"SETPRIO needs {PRIO_SIZE} bytes, got {len(buffer)}")
    value: int = _PRIO.unpack_from(buffer)[0]
    return value


@dataclass(frozen=True, slots=True)
class Map:
    """struct mqfs_map (MAP's reply): the queue's geometry, the mapping layout's version
    (fastq.h's FASTQ_VERSION) and the mapping file's absolute path."""

    maxmsg: int
    msgsize: int
    version: int
    path: str

    def pack(self) -> bytes:
        encoded = self.path.encode()
        if len(encoded) >= MAP_PATH_SIZE or b"\0" in encoded:
            raise Malformed("a mapping path must fit mqfs_map.path with its NUL")
        return _MAP_HEADER.pack(self.maxmsg, self.msgsize, self.version, 0) + encoded.ljust(
            MAP_PATH_SIZE, b"\0"
        )

    @classmethod
    def unpack(cls, buffer: bytes | bytearray) -> Map:
        if len(buffer) < MAP_SIZE:
            raise Malformed(f"mqfs_map needs {MAP_SIZE} bytes, got {len(buffer)}")
        maxmsg, msgsize, version, _ = _MAP_HEADER.unpack_from(buffer)
        raw = bytes(buffer[_MAP_HEADER.size : MAP_SIZE])
        return cls(maxmsg, msgsize, version, raw.split(b"\0", 1)[0].decode(errors="replace"))

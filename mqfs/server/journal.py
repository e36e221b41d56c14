"""The journal behind ``-o state=DIR``: every change to the queues, on disk before the reply.

This is Redis's append-only file applied to message queues. The queues live in the
daemon's memory; the journal is how they outlive it (a crash, ``kill -9``, an OOM kill, a
restart to upgrade mqfs). Pure: no trio, no pyfuse3; waiting for fsync and compacting in
the background are :mod:`mqfs.server.state`'s.

What is written, and when
-------------------------
The queue layer calls this module at its commit points, *before* the change is made and
so before anyone can see it or be answered; a write that fails raises
:class:`~mqfs.errors.StateError` and nothing changes. One record per change:

* ``CREATE`` qid, mode, uid, gid, the charged uid, maxmsg, msgsize, atime, mtime, ctime,
  name: a queue was created.
* ``SETATTR`` qid, mode, uid, gid, atime, mtime, ctime: chmod, chown or utimes.
* ``UNLINK`` qid: the name went. The queue is gone from the journal from here on; it
  lives on only in memory while it is open, as with the kernel (and dies with the daemon).
* ``SEND`` qid, priority, payload: a message entered the queue's store.
* ``RECEIVE`` qid: the message at the head of receive order left it.
* ``REMOVE`` qid, index: the message at *index* in receive order left it (``mqfs rm-msg``;
  format version 2). Replaying the SENDs, RECEIVEs and REMOVEs through the same
  :class:`~mqfs.server.store.MessageStore` therefore rebuilds each queue exactly, receive
  order included, without naming messages: an index means the same message on replay as
  it did when it was written, because the store is the same at that point.
* ``END`` next qid: the last record of a snapshot (below), so a whole one can be told
  from a cut one.

A send handed straight to a receiver that was already waiting writes nothing: its net
effect on the queues is none, and if the daemon dies before the receiver is answered the
message is lost either way (a SEND and a RECEIVE written together would replay to the
same empty queue). A receive (or a removal) that admits a blocked sender writes its
RECEIVE (or REMOVE) and the sender's SEND in one write(2).

So after a crash every message whose send returned is back, and no message whose receive
returned comes back. The window left open is a receive's: the message is gone from the
journal when the receive is written, before the reply reaches the receiver; if the daemon
dies in between, that message is lost (at most once, never twice).

Durability is a level, as Redis's ``appendfsync``: records are written with write(2)
only, which a crashed or killed daemon cannot lose (the kernel has them) but a power loss
can; ``-o state_sync`` adds an fsync that every reply waits for, one fsync for every
reply waiting at the time (group commit, in :mod:`mqfs.server.state`).

Files
-----
``DIR/snapshot.G`` holds the live queues at the start of generation G, ``DIR/log.G``
every record since; a journal is the newest snapshot (if any), then the logs of its
generation and later, in order. Each file starts with a header ``<8sIIQ``: the magic
``MQFSJRNL``, the format version (:data:`VERSION`), the file's kind (1 snapshot, 2 log)
and its generation. Then records, each a frame ``<II`` (the length of the body and the
CRC-32 of the body) and the body: a kind byte and little-endian fields (``_CREATE``,
``_SETATTR``, ``_QID``, ``_SEND``, ``_REMOVE``, ``_END`` below; payloads and names are
the rest of the body). A snapshot is written as the records that rebuild the live state:
a CREATE per queue, a SEND per message in receive order, an END, so the replay is one
code path.
Everything is 0600 in a directory that must belong to the daemon's user (root) and may
not be writable by anyone else; the directory is locked (flock) while a daemon uses it.

Compaction (Redis's AOF rewrite)
--------------------------------
The size of the journal is held to at most ``2 x live + COMPACT_SLACK`` bytes, where
*live* is the size of a snapshot of the queues now (their records and payloads; kept
exactly, record by record), whatever the history: once the snapshot and the logs pass it,
the log is rotated (a new log file, generation G+1, takes the records from now on) and a
snapshot of the live queues at that instant is written to ``snapshot.G+1.tmp``, fsynced,
renamed to ``snapshot.G+1`` and the directory fsynced; only then do the older files go.
The new snapshot is at most *live*, so each rewrite is paid for by at least
``live + COMPACT_SLACK`` bytes of log since the last (Redis's rewrite at 100% growth).
While a rewrite runs the new snapshot exists beside the old files, up to *live* more.
A daemon that dies at any point leaves a journal that loads: the older snapshot and every
log since it until the rename, the new one after.

Recovery
--------
:meth:`Journal.open` replays the newest snapshot and the logs since it. A record that is
cut short or fails its CRC ends its file: every complete record before it is kept, one
line is logged, and a log is truncated to that point (a daemon killed mid-write, a
power loss). A header of a newer format version is refused with
:class:`~mqfs.errors.NewerJournal`, so an older mqfs never cuts off records it does not
know; a file that is not a journal at all with :class:`~mqfs.errors.StateError`. Files of
an older version (down to :data:`OLDEST_VERSION`, whose records are a subset) are read as
they are and never appended to: a daemon that finds its newest log in an older version
starts the next log (its generation + 1) in this one, so that an older mqfs, finding that
log, refuses the journal instead of cutting off its REMOVEs. Records that name a queue
the journal no longer has (or a message it does not hold) are skipped, with one line for
all of them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
import stat
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mqfs import errors
from mqfs.posix import MQ_PRIO_MAX
from mqfs.server.store import MessageStore

log = logging.getLogger(__name__)

MAGIC = b"MQFSJRNL"
VERSION = 2
"""The format written: version 2 added REMOVE to version 1's records."""
OLDEST_VERSION = 1
"""The oldest format read."""
SNAPSHOT_FILE, LOG_FILE = 1, 2
_HEADER = struct.Struct("<8sIIQ")  # magic, version, kind of file, generation
HEADER_SIZE = _HEADER.size

_FRAME = struct.Struct("<II")  # body length, CRC-32 of the body
CREATE, SETATTR, UNLINK, SEND, RECEIVE, END, REMOVE = range(1, 8)
# kind, qid, mode, uid, gid, charged uid, maxmsg, msgsize, atime, mtime, ctime; then the name
_CREATE = struct.Struct("<BQIIIIIIqqq")
_SETATTR = struct.Struct("<BQIIIqqq")  # kind, qid, mode, uid, gid, atime, mtime, ctime
_QID = struct.Struct("<BQ")  # UNLINK, RECEIVE
_SEND = struct.Struct("<BQH")  # kind, qid, priority; then the payload
_END = struct.Struct("<BQ")  # kind, next qid
_REMOVE = struct.Struct("<BQQ")  # kind, qid, index in receive order
_RECEIVE_FRAMED = struct.Struct("<IIBQ")

SEND_OVERHEAD = _FRAME.size + _SEND.size
"""Bytes a SEND record adds to its payload: what a queued message costs in a snapshot."""
EMPTY_SNAPSHOT = HEADER_SIZE + _FRAME.size + _END.size
"""The size of a snapshot of no queues: header and END."""
# The longest body: a SEND of the largest message (16 MiB, queue.HARD_MSGSIZEMAX).
MAX_BODY = 16 * 1024 * 1024 + _SEND.size

COMPACT_SLACK = 4 * 1024 * 1024
"""The constant in "the journal stays within 2 x live + COMPACT_SLACK bytes"."""
_WRITE_CHUNK = 1 << 20  # a snapshot is written in pieces of about this many bytes
LOCK_WAIT = 20.0  # seconds a daemon waits for DIR's lock before giving up (StateInUse)
_LOCK_POLL = 0.01

_FILE_NAME = re.compile(r"(snapshot|log)\.([0-9]{1,19})(\.tmp)?")


@dataclass(slots=True)
class QueueRecord:
    """A queue as its CREATE record (and later SETATTRs) describe it."""

    qid: int
    name: str
    mode: int
    uid: int
    gid: int
    owner_uid: int  # the user charged for its memory: the creator
    maxmsg: int
    msgsize: int
    atime: int
    mtime: int
    ctime: int

    def encoded_size(self) -> int:
        return _FRAME.size + _CREATE.size + len(os.fsencode(self.name))


QueueImage = tuple[QueueRecord, Sequence[tuple[int, Sequence[bytes]]]]
"""A live queue as a snapshot takes it: its record and its (priority, payloads) runs in
receive order (lists the queue no longer changes: copies)."""


@dataclass(slots=True)
class RecoveredQueue:
    record: QueueRecord
    store: MessageStore


@dataclass
class Recovered:
    """What a journal held: the named queues by qid, and the next qid to hand out."""

    queues: dict[int, RecoveredQueue] = field(default_factory=dict)
    next_qid: int = 1


# -- records ---------------------------------------------------------------------------------


def _framed(body: bytes) -> bytes:
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def create_record(record: QueueRecord) -> bytes:
    fields = _CREATE.pack(
        CREATE,
        record.qid,
        record.mode,
        record.uid,
        record.gid,
        record.owner_uid,
        record.maxmsg,
        record.msgsize,
        record.atime,
        record.mtime,
        record.ctime,
    )
    return _framed(fields + os.fsencode(record.name))


def setattr_record(qid: int, mode: int, uid: int, gid: int, times: tuple[int, int, int]) -> bytes:
    return _framed(_SETATTR.pack(SETATTR, qid, mode, uid, gid, *times))


def unlink_record(qid: int) -> bytes:
    return _framed(_QID.pack(UNLINK, qid))


def send_record(qid: int, priority: int, payload: bytes) -> bytes:
    head = _SEND.pack(SEND, qid, priority)
    crc = zlib.crc32(payload, zlib.crc32(head))
    return _FRAME.pack(_SEND.size + len(payload), crc) + head + payload


def receive_record(qid: int) -> bytes:
    return _RECEIVE_FRAMED.pack(_QID.size, zlib.crc32(_QID.pack(RECEIVE, qid)), RECEIVE, qid)


def remove_record(qid: int, index: int) -> bytes:
    return _framed(_REMOVE.pack(REMOVE, qid, index))


def end_record(next_qid: int) -> bytes:
    return _framed(_END.pack(END, next_qid))


def snapshot_size(images: Iterable[QueueImage]) -> int:
    """The size of the snapshot :func:`write_snapshot` writes for *images*."""
    total = EMPTY_SNAPSHOT
    for record, runs in images:
        total += record.encoded_size()
        for _, payloads in runs:
            total += len(payloads) * SEND_OVERHEAD + sum(map(len, payloads))
    return total


# -- replay ----------------------------------------------------------------------------------


class _Replay:
    """Applies records in order to the queues they name."""

    def __init__(self) -> None:
        self.state = Recovered()
        self.by_name: dict[str, int] = {}
        self.skipped = 0  # records naming a queue that is not (or no longer) there
        self.ended = False  # the file held an END record

    def apply(self, body: memoryview) -> bool:  # noqa: PLR0915 (one flat dispatch: the replay's loop)
        """Apply one record; False if it is not a record of this format."""
        kind = body[0]
        length = len(body)
        queues = self.state.queues
        if kind == SEND and length >= _SEND.size:
            _, qid, priority = _SEND.unpack_from(body)
            queue = queues.get(qid)
            if queue is None or priority >= MQ_PRIO_MAX:
                self.skipped += 1
            else:
                queue.store.push(bytes(body[_SEND.size :]), priority)
        elif kind == RECEIVE and length == _QID.size:
            queue = queues.get(_QID.unpack_from(body)[1])
            if queue is None or not queue.store:
                self.skipped += 1
            else:
                queue.store.pop()
        elif kind == REMOVE and length == _REMOVE.size:
            _, qid, index = _REMOVE.unpack_from(body)
            queue = queues.get(qid)
            if queue is None or index >= len(queue.store):
                self.skipped += 1
            else:
                queue.store.remove(index)
        elif kind == CREATE and length >= _CREATE.size:
            fields = _CREATE.unpack_from(body)
            record = QueueRecord(fields[1], os.fsdecode(bytes(body[_CREATE.size :])), *fields[2:])
            replaced = self.by_name.pop(record.name, None)
            if replaced is not None:  # a name is never in two queues: the older one went
                del queues[replaced]
            queues[record.qid] = RecoveredQueue(record, MessageStore())
            self.by_name[record.name] = record.qid
            self.state.next_qid = max(self.state.next_qid, record.qid + 1)
        elif kind == SETATTR and length == _SETATTR.size:
            _, qid, mode, uid, gid, atime, mtime, ctime = _SETATTR.unpack_from(body)
            queue = queues.get(qid)
            if queue is None:
                self.skipped += 1
            else:
                record = queue.record
                record.mode, record.uid, record.gid = mode, uid, gid
                record.atime, record.mtime, record.ctime = atime, mtime, ctime
        elif kind == UNLINK and length == _QID.size:
            queue = queues.pop(_QID.unpack_from(body)[1], None)
            if queue is None:
                self.skipped += 1
            else:
                del self.by_name[queue.record.name]
        elif kind == END and length == _END.size:
            self.state.next_qid = max(self.state.next_qid, _END.unpack_from(body)[1])
            self.ended = True
        else:
            return False
        return True

    def records(self, data: mmap.mmap, size: int) -> tuple[int, str | None]:
        """Apply the records of a file mapped as *data* from after its header; return
        where the complete records end, and what follows them if that is not the end."""
        position = HEADER_SIZE
        with memoryview(data) as view:
            while position < size:
                if size - position < _FRAME.size:
                    return position, "a cut record"
                length, crc = _FRAME.unpack_from(data, position)
                start = position + _FRAME.size
                if not 0 < length <= MAX_BODY:
                    return position, "a corrupt record length"
                if start + length > size:
                    return position, "a cut record"
                with view[start : start + length] as body:
                    if zlib.crc32(body) != crc:
                        return position, "a record whose CRC does not match"
                    if not self.apply(body):
                        return position, "a record of an unknown kind"
                position = start + length
        return position, None


# -- the state directory ----------------------------------------------------------------------


def open_state_directory(directory: Path) -> int:
    """DIR, created 0700 if missing, checked and locked: its descriptor (O_RDONLY)."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise errors.StateError(
            f"cannot create the state directory {directory}: {exc.strerror}",
            errno_value=exc.errno,
        ) from None
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.StateError(
            f"cannot open the state directory {directory}: {exc.strerror}", errno_value=exc.errno
        ) from None
    try:
        _check_directory(fd, directory)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_directory(fd: int, directory: Path) -> None:
    """Refuse a DIR someone else could write to; lock it against a second daemon."""
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise errors.UnsafeStateDirectory(
            f"the state directory {directory} belongs to uid {info.st_uid}, not to the "
            f"daemon's user ({os.geteuid()})"
        )
    if info.st_mode & 0o022:
        raise errors.UnsafeStateDirectory(
            f"the state directory {directory} is writable by others (mode "
            f"{stat.S_IMODE(info.st_mode):04o}): anyone who can write there can plant "
            f"queues; chmod go-w {directory}"
        )
    _lock(fd, directory)


def _lock(fd: int, directory: Path) -> None:
    """flock DIR. A daemon that was just unmounted may still be writing its last snapshot
    (``mqfs umount`` returns before it exits): wait for it, up to LOCK_WAIT seconds."""
    deadline = time.monotonic() + LOCK_WAIT
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise errors.StateInUse(
                    f"the state directory {directory} is in use by another mqfs daemon"
                ) from None
        if not waited:
            log.info("state: waiting for the daemon that holds %s to let go", directory)
            waited = True
        time.sleep(_LOCK_POLL)


def _open_file(dir_fd: int, name: str, flags: int) -> int:
    """A journal file of DIR: a regular file of the daemon's user, made 0600 if it was not."""
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        _check_file(fd, name)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_file(fd: int, name: str) -> None:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
        raise errors.UnsafeStateDirectory(f"{name} in the state directory is not our file")
    if info.st_mode & 0o077:
        os.fchmod(fd, 0o600)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> int:
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])
    return done


def _create_log(dir_fd: int, generation: int) -> int:
    """A new, empty log of *generation* (its header written), open for appending."""
    name = f"log.{generation}"
    fd = _open_file(dir_fd, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
    try:
        _write_all(fd, _HEADER.pack(MAGIC, VERSION, LOG_FILE, generation))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _listing(dir_fd: int) -> tuple[dict[int, str], dict[int, str], list[str]]:
    """Snapshots and logs of DIR by generation, and leftover temporary files."""
    snapshots: dict[int, str] = {}
    logs: dict[int, str] = {}
    temporary: list[str] = []
    for name in os.listdir(dir_fd):
        match = _FILE_NAME.fullmatch(name)
        if match is None:
            continue
        if match.group(3):
            temporary.append(name)
        elif match.group(1) == "snapshot":
            snapshots[int(match.group(2))] = name
        else:
            logs[int(match.group(2))] = name
    return snapshots, logs, temporary


def _superseded(dir_fd: int, generation: int) -> list[str]:
    """Files a complete snapshot of *generation* makes useless: every older snapshot and
    log, and temporary files of older rewrites."""
    snapshots, logs, temporary = _listing(dir_fd)
    older = [name for g, name in (*snapshots.items(), *logs.items()) if g < generation]
    stale = [name for name in temporary if int(name.split(".")[1]) < generation]
    return older + stale


class _Loader:
    """Replays the files of a journal, repairing what a crash can leave."""

    def __init__(self, directory: Path, dir_fd: int) -> None:
        self.directory = directory
        self.dir_fd = dir_fd
        self.replay = _Replay()
        self.versions: dict[str, int] = {}  # the format version of each file loaded

    def load(self, name: str, kind: int, generation: int) -> int:
        """Apply file *name*; return its size once repaired (a log is cut after its last
        complete record; a log whose header was cut gets a fresh one)."""
        path = self.directory / name
        writable = kind == LOG_FILE
        fd = _open_file(self.dir_fd, name, os.O_RDWR if writable else os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, HEADER_SIZE, 0)
            problem = self._check_header(path, header, kind, generation)
            if problem is not None:
                log.warning("state: %s: %s; it holds no records", path, problem)
                if writable:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, _HEADER.pack(MAGIC, VERSION, LOG_FILE, generation), 0)
                    self.versions[name] = VERSION
                    return HEADER_SIZE
                return size
            self.versions[name] = _HEADER.unpack(header)[1]
            if size == HEADER_SIZE:
                end, damage = size, None
            else:
                with mmap.mmap(fd, size, access=mmap.ACCESS_READ) as data:
                    end, damage = self.replay.records(data, size)
            if damage is not None:
                action = "cut off" if writable else "ignored"
                log.warning(
                    "state: %s: %s at byte %d: kept every complete record before it, %s "
                    "the %d bytes from there",
                    path,
                    damage,
                    end,
                    action,
                    size - end,
                )
                if writable:
                    os.ftruncate(fd, end)
                    size = end
            elif kind == SNAPSHOT_FILE and not self.replay.ended:
                log.warning("state: %s: the snapshot has no END record: it was cut", path)
            self.replay.ended = False
            return size
        finally:
            os.close(fd)

    @staticmethod
    def _check_header(path: Path, header: bytes, kind: int, generation: int) -> str | None:
        """None for a good header; what is wrong with a damaged one; raises for a file that
        is not a journal or is of a newer format."""
        if len(header) < HEADER_SIZE or header == bytes(HEADER_SIZE):
            return "its header was cut"
        magic, version, file_kind, file_generation = _HEADER.unpack(header)
        if magic != MAGIC:
            raise errors.StateError(f"{path} is not an mqfs journal file")
        if version > VERSION:
            raise errors.NewerJournal(
                f"{path} is in journal format version {version}, written by a newer mqfs; "
                f"this mqfs reads versions {OLDEST_VERSION} to {VERSION}: run the newer mqfs "
                "(its `mqfs dump` makes a portable copy)"
            )
        if version < OLDEST_VERSION or (file_kind, file_generation) != (kind, generation):
            return "its header is corrupt"
        return None


# -- the journal -----------------------------------------------------------------------------


@dataclass
class Compaction:
    """A rewrite: the live queues at the rotation to *generation*, to be written as
    ``snapshot.<generation>``. :meth:`write` touches only its own files (a thread may run
    it while records go on being appended to the new log)."""

    directory: Path
    dir_fd: int
    generation: int
    images: list[QueueImage] = field(repr=False)
    next_qid: int
    expected_size: int  # the journal's *live* at the rotation: what write() must write
    superseded_log_bytes: int  # the log bytes this snapshot replaces

    def write(self) -> int:
        """Write, fsync and rename the snapshot, fsync DIR, remove the older files;
        return the snapshot's size. On an error nothing older is removed."""
        name = f"snapshot.{self.generation}"
        temporary = name + ".tmp"
        fd = _open_file(self.dir_fd, temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            size = write_snapshot(fd, self.generation, self.images, self.next_qid)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(temporary, dir_fd=self.dir_fd)
            raise
        os.close(fd)
        os.rename(temporary, name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        os.fsync(self.dir_fd)
        for old in _superseded(self.dir_fd, self.generation):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(old, dir_fd=self.dir_fd)
        return size


def write_snapshot(fd: int, generation: int, images: Iterable[QueueImage], next_qid: int) -> int:
    """Write the records that rebuild *images* to *fd*; return the bytes written."""
    out = bytearray(_HEADER.pack(MAGIC, VERSION, SNAPSHOT_FILE, generation))
    total = 0
    frame, send_size = _FRAME.pack, _SEND.size
    for record, runs in images:
        out += create_record(record)
        for priority, payloads in runs:
            head = _SEND.pack(SEND, record.qid, priority)
            head_crc = zlib.crc32(head)
            for payload in payloads:
                out += frame(send_size + len(payload), zlib.crc32(payload, head_crc))
                out += head
                out += payload
                if len(out) >= _WRITE_CHUNK:
                    total += _write_all(fd, out)
                    out.clear()
    out += end_record(next_qid)
    return total + _write_all(fd, out)


class Journal:
    """The open journal of one state directory: appends records, rotates, compacts.

    ``size`` (every file) stays within ``2 * live + slack`` bytes: past it
    ``compaction_wanted`` turns true and ``on_oversize`` is called, once, for someone to
    :meth:`compact` (or :meth:`begin_compaction` ... :meth:`end_compaction`).
    """

    __slots__ = (
        "_fd",
        "_receive_records",
        "_retry_above",
        "_size",
        "broken",
        "compacting",
        "compaction_wanted",
        "dir_dirty",
        "dir_fd",
        "directory",
        "generation",
        "live",
        "log_bytes",
        "on_oversize",
        "retired",
        "slack",
        "snapshot_bytes",
        "written",
    )

    def __init__(
        self,
        directory: Path,
        dir_fd: int,
        generation: int,
        fd: int,
        sizes: tuple[int, int, int],
        live: int,
        slack: int,
    ) -> None:
        self.directory = directory
        self.dir_fd = dir_fd
        self.generation = generation  # of the log records are appended to
        self._fd = fd
        self._size, self.log_bytes, self.snapshot_bytes = sizes
        self.live = live  # the size of a snapshot of the queues now
        self.slack = slack
        self.written = 0  # bytes appended since open, for waiting on fsync
        self.retired: list[int] = []  # logs rotated away, still open (state_sync fsyncs them)
        self.dir_dirty = False  # a file was created in DIR since the last fsync of DIR
        self.compacting: Compaction | None = None
        self.compaction_wanted = False
        self.on_oversize: Callable[[], object] | None = None
        self._retry_above = 0  # after a failed rewrite, the next waits for the log to grow
        self._receive_records: dict[int, bytes] = {}  # RECEIVE of each qid, made once
        self.broken: OSError | None = None

    @classmethod
    def open(cls, directory: Path, slack: int = COMPACT_SLACK) -> tuple[Journal, Recovered]:
        """Check, lock and load DIR (see the module docstring); the journal, open for
        appending, and what it held."""
        dir_fd = open_state_directory(directory)
        try:
            return cls._load(directory, dir_fd, slack)
        except BaseException:
            os.close(dir_fd)
            raise

    @classmethod
    def _load(cls, directory: Path, dir_fd: int, slack: int) -> tuple[Journal, Recovered]:
        snapshots, logs, temporary = _listing(dir_fd)
        loader = _Loader(directory, dir_fd)
        base = max(snapshots, default=0)
        snapshot_bytes = loader.load(snapshots[base], SNAPSHOT_FILE, base) if base else 0
        generations = sorted(g for g in logs if g >= base)
        log_bytes = sum(loader.load(logs[g], LOG_FILE, g) for g in generations)
        if loader.replay.skipped:
            log.warning(
                "state: %s: skipped %d records of queues the journal does not hold",
                directory,
                loader.replay.skipped,
            )
        for name in [*temporary, *_superseded(dir_fd, base)]:
            os.unlink(name, dir_fd=dir_fd)
        if generations and loader.versions[logs[generations[-1]]] == VERSION:
            generation = generations[-1]
            fd = _open_file(dir_fd, logs[generation], os.O_WRONLY | os.O_APPEND)
            size = os.fstat(fd).st_size
        else:  # no log, or one of an older format: records go to a new one
            generation = max(base, generations[-1] + 1 if generations else 1)
            fd = _create_log(dir_fd, generation)
            size = HEADER_SIZE
            log_bytes += size
            os.fsync(dir_fd)
        recovered = loader.replay.state
        live = snapshot_size(
            (queue.record, list(queue.store.segments_from(0, len(queue.store))))
            for queue in recovered.queues.values()
        )
        sizes = (size, log_bytes, snapshot_bytes)
        return cls(directory, dir_fd, generation, fd, sizes, live, slack), recovered

    @property
    def size(self) -> int:
        """Bytes in the journal's files (a snapshot being written not counted)."""
        return self.snapshot_bytes + self.log_bytes

    # -- appending ---------------------------------------------------------------------------
    def _append(self, data: bytes, live_change: int = 0) -> None:
        """Write *data* (whole records) at the end of the log and add *live_change* to
        the live size, or raise StateError having written nothing (a partial write is cut
        off again)."""
        if self.broken is not None:
            raise errors.StateError(
                f"the journal in {self.directory} is unusable since a write failed "
                f"({self.broken.strerror}); restart the daemon",
                errno_value=self.broken.errno,
            )
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                written += _write_all(self._fd, memoryview(data)[written:])
        except OSError as exc:
            self._undo(exc)
        self._size += written
        self.log_bytes += written
        self.written += written
        self.live += live_change
        if self.snapshot_bytes + self.log_bytes > 2 * self.live + self.slack:
            self._outgrown()

    def _outgrown(self) -> None:
        """The journal is past its bound: ask for a rewrite, unless one is under way or
        the last one failed and the journal has not grown by ``slack`` since."""
        if not self.compaction_wanted and self.compacting is None and self.size > self._retry_above:
            self.compaction_wanted = True
            if self.on_oversize is not None:
                self.on_oversize()

    def _undo(self, exc: OSError) -> None:
        """A write failed: cut the log back to its last whole record and raise."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError:
            self.broken = exc
        raise errors.StateError(
            f"cannot write to the journal in {self.directory}: {exc.strerror}",
            errno_value=exc.errno or errno.EIO,
        ) from exc

    def create(self, record: QueueRecord) -> None:
        self._append(create_record(record), record.encoded_size())

    def setattr(self, qid: int, mode: int, uid: int, gid: int, times: tuple[int, int, int]) -> None:
        self._append(setattr_record(qid, mode, uid, gid, times))

    def unlink(self, record: QueueRecord, messages: int, payload_bytes: int) -> None:
        """Queue *record* lost its name, with *messages* of *payload_bytes* in it."""
        live = record.encoded_size() + messages * SEND_OVERHEAD + payload_bytes
        self._append(unlink_record(record.qid), -live)

    # send and receive are the hot path: a pair of them is what a 64 B write/read costs more.
    def send(self, qid: int, priority: int, payload: bytes) -> None:
        head = _SEND.pack(SEND, qid, priority)
        crc = zlib.crc32(payload, zlib.crc32(head))
        record = _FRAME.pack(_SEND.size + len(payload), crc) + head + payload
        self._append(record, SEND_OVERHEAD + len(payload))

    def receive(self, qid: int, length: int, admitted: tuple[int, bytes] | None = None) -> None:
        """The head of queue *qid* (*length* bytes) is taken; a receive that frees a slot
        for a blocked sender writes that sender's (priority, payload) with it."""
        record = self._receive_records.get(qid)
        if record is None:
            if len(self._receive_records) > 4096:
                self._receive_records.clear()  # held for the queues in use, not for all
            record = self._receive_records[qid] = receive_record(qid)
        if admitted is None:
            self._append(record, -SEND_OVERHEAD - length)
            return
        priority, payload = admitted
        self._append(record + send_record(qid, priority, payload), len(payload) - length)

    def remove(
        self, qid: int, index: int, length: int, admitted: tuple[int, bytes] | None = None
    ) -> None:
        """Message *index* of queue *qid* (*length* bytes) is taken out of the middle; a
        sender admitted into its slot is written with it, as with :meth:`receive`."""
        record = remove_record(qid, index)
        if admitted is None:
            self._append(record, -SEND_OVERHEAD - length)
            return
        priority, payload = admitted
        self._append(record + send_record(qid, priority, payload), len(payload) - length)

    # -- durability --------------------------------------------------------------------------
    def sync_targets(self) -> list[int]:
        """The descriptors an fsync must cover for everything written so far to be on disk:
        the logs rotated away and not yet closed, the current one, and DIR if a file was
        created in it since."""
        fds = [*self.retired, self._fd]
        if self.dir_dirty:
            self.dir_dirty = False
            fds.append(self.dir_fd)
        return fds

    def sync(self) -> None:
        """fsync everything written so far, now (this thread waits)."""
        fsync_all(self.sync_targets())

    def close_retired(self, fds: Iterable[int] | None = None) -> None:
        """Close the rotated-away logs (those among *fds*, or all): no fsync is using them."""
        covered = set(self.retired if fds is None else fds)
        keep = [fd for fd in self.retired if fd not in covered]
        for fd in self.retired:
            if fd not in keep:
                os.close(fd)
        self.retired = keep

    # -- compaction --------------------------------------------------------------------------
    def begin_compaction(self, images: list[QueueImage], next_qid: int) -> Compaction:
        """Rotate to a new log; *images* are the live queues at this instant (no record
        may be appended between taking them and this call)."""
        generation = self.generation + 1
        try:
            fd = _create_log(self.dir_fd, generation)
        except OSError as exc:
            self.compaction_wanted = False
            self._retry_above = self.size + self.slack
            raise errors.StateError(
                f"cannot start a new log in {self.directory}: {exc.strerror}",
                errno_value=exc.errno or errno.EIO,
            ) from exc
        self.retired.append(self._fd)
        self._fd, self._size, self.generation = fd, HEADER_SIZE, generation
        self.dir_dirty = True
        superseded = self.log_bytes
        self.log_bytes += HEADER_SIZE
        self.compaction_wanted = False
        self.compacting = Compaction(
            self.directory, self.dir_fd, generation, images, next_qid, self.live, superseded
        )
        return self.compacting

    def end_compaction(self, compaction: Compaction, size: int | None) -> None:
        """The rewrite wrote *size* bytes, or failed (None): then the older files stay and
        the next attempt waits until the journal has grown by ``slack`` more."""
        self.compacting = None
        if size is None:
            self._retry_above = self.size + self.slack
            return
        self.snapshot_bytes = size
        self.log_bytes -= compaction.superseded_log_bytes
        if self.size > 2 * self.live + self.slack:  # the log grew that much meanwhile
            self._outgrown()

    def compact(self, images: list[QueueImage], next_qid: int) -> None:
        """A whole rewrite, in this thread."""
        compaction = self.begin_compaction(images, next_qid)
        try:
            size = compaction.write()
        except BaseException:
            self.end_compaction(compaction, None)
            raise
        self.end_compaction(compaction, size)

    def close(self) -> None:
        """fsync and close everything; DIR is unlocked."""
        try:
            self.sync()
        finally:
            self.close_retired()
            os.close(self._fd)
            os.close(self.dir_fd)


def fsync_all(fds: Iterable[int]) -> None:
    for fd in fds:
        os.fsync(fd)

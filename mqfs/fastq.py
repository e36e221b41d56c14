"""The fast path's queue core (fastq/fastq.c) from Python, through ctypes.

With ``-o fastpath`` a queue's messages live in a shared mapping that its owner's processes
use directly. fastq.c is the one implementation of that queue: the LD_PRELOAD shim compiles
it in, and the daemon (mqfs.server) and the Python client (mqfs.client) load it from
``libmqfs-fastq.so`` here.

Why ctypes: it is in the standard library, so the daemon and the client need nothing
built against CPython (a cffi or extension module would tie the library to one Python's
ABI and add a build step to every install); ctypes releases the GIL around each call, so
a receive that sleeps on the queue's futex blocks only its own thread; and a call costs
about a microsecond, less than the system call the kernel's mq_send costs (bench row v).
The library itself is built by ``scripts/build-preload`` with the shim.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import math
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mqfs import errors

_ROOT = Path(__file__).resolve().parents[1]
LIBRARY = Path(os.environ.get("MQFS_FASTQ_LIBRARY", _ROOT / ".venv" / "lib" / "libmqfs-fastq.so"))
"""Where scripts/build-preload puts the core (MQFS_FASTQ_LIBRARY overrides)."""

VERSION = 1
"""The mapping layout's version (fastq.h's FASTQ_VERSION): the MAP ioctl reports it."""
NOTIFY_PENDING = 1
NOTIFY_FIRED = 2
NONBLOCK = 1
TIMED = 2
UPTO = 4
PRIO_MAX = 32768
CRASH_POINTS = 10  # fastq.h FASTQ_CRASH_POINTS: the CRASH_POINT(n) of fastq.c


class _Fastq(ctypes.Structure):
    _fields_ = [
        ("base", ctypes.c_void_p),
        ("size", ctypes.c_size_t),
        ("maxmsg", ctypes.c_uint32),
        ("msgsize", ctypes.c_uint32),
        ("slot_size", ctypes.c_size_t),
        ("ring_offset", ctypes.c_size_t),
        ("free_offset", ctypes.c_size_t),
        ("slots_offset", ctypes.c_size_t),
        ("broken", ctypes.c_int),
    ]


class _State(ctypes.Structure):
    _fields_ = [
        ("generation", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("head_length", ctypes.c_uint32),
        ("recv_waiters", ctypes.c_uint32),
        ("send_waiters", ctypes.c_uint32),
        ("daemon_interest", ctypes.c_uint32),
        ("notify_pending", ctypes.c_uint32),
        ("change_seq", ctypes.c_uint32),
        ("recovered", ctypes.c_uint32),
        ("last_sender", ctypes.c_uint32),
        ("last_receiver", ctypes.c_uint32),
        ("change_ns", ctypes.c_int64),
    ]


class _Sleeper(ctypes.Structure):
    _fields_ = [
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("receiving", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("since_ns", ctypes.c_int64),
    ]


SLEEPER_SLOTS = 32


@dataclass(frozen=True, slots=True)
class Sleeper:
    """A thread asleep in the mapping: its process, thread, direction and since when."""

    pid: int
    tid: int
    receiving: bool
    since_ns: int


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


@dataclass(frozen=True, slots=True)
class State:
    """A snapshot of a mapped queue, taken under its mutex."""

    generation: int
    bytes: int
    count: int
    head_length: int
    recv_waiters: int
    send_waiters: int
    daemon_interest: bool
    notify_pending: bool
    change_seq: int
    recovered: int
    last_sender: int
    last_receiver: int
    change_ns: int


_loaded: list[ctypes.CDLL] = []  # the library, once loaded
_lib_lock = threading.Lock()


def _build() -> None:
    script = _ROOT / "scripts" / "build-preload"
    if script.exists() and "MQFS_FASTQ_LIBRARY" not in os.environ:
        subprocess.run([script], check=True, capture_output=True)


def library() -> ctypes.CDLL:
    """libmqfs-fastq.so, built first if it is missing or older than its sources."""
    with _lib_lock:
        if not _loaded:
            _build()
            lib = ctypes.CDLL(str(LIBRARY), use_errno=False)
            p = ctypes.POINTER(_Fastq)
            vp, sz, u32, u64, i64 = (
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint32,
                ctypes.c_uint64,
                ctypes.c_int64,
            )
            u32p, u64p = ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint64)
            ts = ctypes.POINTER(_Timespec)
            signatures: dict[str, tuple[object, list[object]]] = {
                "fastq_create": (ctypes.c_int, [ctypes.c_int, u32, u32]),
                "fastq_attach": (ctypes.c_int, [p, ctypes.c_int, u32, u32]),
                "fastq_detach": (None, [p]),
                "fastq_send": (ctypes.c_int, [p, vp, sz, ctypes.c_uint, ctypes.c_uint, ts]),
                "fastq_receive": (ctypes.c_ssize_t, [p, vp, sz, u32p, ctypes.c_uint, ts]),
                "fastq_peek": (ctypes.c_ssize_t, [p, u64, u64, vp, sz, u32p, u32p, u64p]),
                "fastq_remove": (ctypes.c_ssize_t, [p, u64, u64, vp, sz, u32p]),
                "fastq_clear": (ctypes.c_int, [p]),
                "fastq_state": (ctypes.c_int, [p, ctypes.POINTER(_State)]),
                "fastq_set_interest": (ctypes.c_int, [p, ctypes.c_int, ctypes.c_int]),
                "fastq_wait_change": (i64, [p, u32, i64]),
                "fastq_take_notify": (ctypes.c_int, [p]),
                "fastq_set_notification": (
                    ctypes.c_int,
                    [p, u32, ctypes.c_int32, ctypes.c_int32, u64],
                ),
                "fastq_set_daemon": (None, []),
                "fastq_wake_all": (None, [p]),
                "fastq_guard_install": (ctypes.c_int, []),
                "fastq_set_lock_timeout": (None, [i64]),
                "fastq_crash_at": (None, [ctypes.c_int]),
                "fastq_check": (ctypes.c_int, [p]),
                "fastq_adopt": (ctypes.c_int, [p, ctypes.c_char_p]),
                "fastq_sleepers": (ctypes.c_int, [p, ctypes.POINTER(_Sleeper), ctypes.c_int]),
                "fastq_lock": (ctypes.c_int, [p]),
                "fastq_unlock": (None, [p]),
            }
            for name, (restype, argtypes) in signatures.items():
                function = getattr(lib, name)
                function.restype = restype
                function.argtypes = argtypes
            _loaded.append(lib)
        return _loaded[0]


def _unchecked(lib: ctypes.CDLL, name: str) -> ctypes._NamedFuncPointer:
    """*name* without argtypes, for send and receive: converting six arguments through
    argtypes costs about 0.7 µs a call, more than the operation itself, and every
    argument these two are given converts exactly without it (a byref, bytes or a
    c_char array as a pointer, None as NULL, and ints below 2**31, which ctypes passes
    sign-extended in a 64-bit register). The restype is the declared one's."""
    function: ctypes._NamedFuncPointer = lib[name]  # a new function object, not the checked one
    function.restype = getattr(lib, name).restype
    return function


def guard_faults(lock_timeout: float) -> None:
    """For the daemon: a mapping truncated under it, or a mutex held longer than
    *lock_timeout* seconds, fails that queue's call (CorruptQueue, Busy) instead of
    crashing or stalling the process; and its sends leave mq_notify to it (fastq_set_daemon)."""
    lib = library()
    _check(lib.fastq_guard_install(), "map", "")
    lib.fastq_set_lock_timeout(int(lock_timeout * 1e9))
    lib.fastq_set_daemon()


def _check(result: int, operation: str, name: str) -> int:
    if result < 0:
        raise errors.from_errno(-result, operation, name)
    return result


def create(path: Path, maxmsg: int, msgsize: int, uid: int, gid: int) -> None:
    """Make the mapping file of a new queue at *path*: owned by *uid*:*gid*, mode 0600,
    sized and holding an empty queue. Raises FileExistsError if *path* exists."""
    lib = library()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        _check(lib.fastq_create(fd, maxmsg, msgsize), "create", path.name)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


Deadline = float | tuple[int, int] | None
"""An absolute CLOCK_REALTIME deadline: time.time() seconds, or exactly as a (tv_sec,
tv_nsec) timespec (the caller has checked it is valid); None: none."""


def _deadline(deadline: Deadline) -> tuple[int, object]:
    """FASTQ flags and (a reference to) the timespec of an absolute *deadline* (None:
    none)."""
    if deadline is None:
        return 0, None
    if isinstance(deadline, tuple):
        return TIMED, ctypes.byref(_Timespec(*deadline))
    if math.isinf(deadline):
        return 0, None
    seconds = math.floor(deadline)
    return TIMED, ctypes.byref(_Timespec(seconds, int((deadline - seconds) * 1e9)))


class MappedQueue:
    """One queue's mapping, attached read-write with geometry the caller trusts.

    Errors are the exceptions of :mod:`mqfs.errors` for the errno the core returns, named
    after *name* (the queue's name, for messages)."""

    def __init__(self, path: Path | str, maxmsg: int, msgsize: int, name: str = "") -> None:
        self._lib = lib = library()
        self.name = name
        self.maxmsg = maxmsg
        self.msgsize = msgsize
        self._q = _Fastq()
        self._ref = ctypes.byref(self._q)
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            _check(lib.fastq_attach(self._ref, fd, maxmsg, msgsize), "map", name)
        finally:
            os.close(fd)
        self._buffer = ctypes.create_string_buffer(max(msgsize, 1))
        self._prio = ctypes.c_uint32()
        self._spares: list[tuple[ctypes.Array[ctypes.c_char], ctypes.c_uint32, object]] = []
        self._length = ctypes.c_uint32()
        self._generation = ctypes.c_uint64()
        self._send, self._receive = _unchecked(lib, "fastq_send"), _unchecked(lib, "fastq_receive")

    def core(self) -> tuple[ctypes._NamedFuncPointer, ctypes._NamedFuncPointer, object]:
        """(fastq_send, fastq_receive, this queue's reference), for a caller that makes the
        checks :meth:`send` and :meth:`receive` make (priority and length within bounds,
        the deadline a byref timespec or None) and can spare no Python call between it and
        the core (the client's fast path): ``send(ref, bytes, len, prio, flags, until)``
        gives 0 or -errno, ``receive(ref, c_char array, len, byref(c_uint32), flags,
        until)`` the length or -errno. Valid until :meth:`close`."""
        return self._send, self._receive, self._ref

    def close(self) -> None:
        if self._q.base:
            self._lib.fastq_detach(self._ref)

    def __enter__(self) -> MappedQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def broken(self) -> bool:
        return bool(self._q.broken)

    def send(
        self,
        payload: bytes,
        priority: int,
        *,
        nonblock: bool = False,
        deadline: Deadline = None,
        restart: bool = True,
    ) -> None:
        """mq_timedsend: waits for room unless *nonblock*; *deadline* is absolute.
        Raises MessageTooLong, WouldBlock, TimedOut, SignalError, ... A wait a signal
        interrupts is resumed once the handlers have run (as PEP 475), unless not
        *restart*: then SignalError, as mq_timedsend under a handler without SA_RESTART."""
        flags, until = (0, None) if deadline is None else _deadline(deadline)
        if nonblock:
            flags |= NONBLOCK
        if not 0 <= priority < PRIO_MAX:  # ints below 2**31, as _unchecked needs
            _check(-errno.EINVAL, "send", self.name)
        if len(payload) > self.msgsize:  # fastq_send's first check, made here
            _check(-errno.EMSGSIZE, "send", self.name)
        while True:
            r = self._send(self._ref, payload, len(payload), priority, flags, until)
            if r == 0:
                return
            if r == -errno.EINTR and restart:
                _interrupted()  # a Python handler that raises ends the send, else retry
                continue
            _check(r, "send", self.name)

    def receive(
        self, *, nonblock: bool = False, deadline: Deadline = None, restart: bool = True
    ) -> tuple[bytes, int]:
        """mq_timedreceive: (payload, priority). *restart* as :meth:`send`'s."""
        flags, until = (0, None) if deadline is None else _deadline(deadline)
        if nonblock:
            flags |= NONBLOCK
        spares = self._spares  # threads receiving at once each need their own buffer
        try:
            buffer, prio, prio_ref = spares.pop()
        except IndexError:
            prio = ctypes.c_uint32()
            buffer, prio_ref = ctypes.create_string_buffer(self.msgsize or 1), ctypes.byref(prio)
        try:
            while True:
                r = self._receive(self._ref, buffer, len(buffer), prio_ref, flags, until)
                if r >= 0:
                    # a c_char array's slice is bytes (typeshed says list[bytes])
                    return buffer[:r], prio.value  # type: ignore[return-value]
                if r == -errno.EINTR and restart:
                    _interrupted()
                    continue
                _check(r, "receive", self.name)
        finally:
            spares.append((buffer, prio, prio_ref))

    def receive_upto(self, size: int) -> tuple[bytes, int] | None:
        """Take the head if it is at most *size* bytes long: (payload, priority); None if
        it is longer (nothing taken). WouldBlock if the queue is empty."""
        buffer = self._buffer
        r = self._receive(
            self._ref, buffer, min(size, len(buffer)), ctypes.byref(self._prio), NONBLOCK | UPTO,
            None,
        )  # fmt: skip
        if r == -errno.EMSGSIZE:
            return None
        _check(r, "receive", self.name)
        return buffer.raw[:r], self._prio.value

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Hold the queue's mutex for the block: its calls see one instant. Nothing in the
        block may wait (a blocking send or receive would deadlock)."""
        _check(self._lib.fastq_lock(self._ref), "lock", self.name)
        try:
            yield
        finally:
            self._lib.fastq_unlock(self._ref)

    def peek(
        self, index: int, offset: int = 0, size: int | None = None
    ) -> tuple[bytes, int, int, int]:
        """Message *index* in receive order, not taken: (bytes from *offset*, up to *size*;
        its priority; its whole length; the queue's generation)."""
        buffer = self._buffer
        if size is not None and size > len(buffer):
            buffer = ctypes.create_string_buffer(size)
        want = len(buffer) if size is None else size
        r = self._lib.fastq_peek(
            self._ref, index, offset, buffer, want, ctypes.byref(self._length),
            ctypes.byref(self._prio), ctypes.byref(self._generation),
        )  # fmt: skip
        _check(r, "peek", self.name)
        return buffer.raw[:r], self._prio.value, self._length.value, self._generation.value

    def generation(self) -> int:
        return self.state().generation

    def remove(self, index: int, generation: int = 0) -> tuple[bytes, int]:
        """Take message *index* out if the queue is still at *generation* (0: any):
        (payload, priority). QueueChanged (ESTALE) if it changed."""
        buffer = self._buffer
        r = self._lib.fastq_remove(
            self._ref, index, generation, buffer, len(buffer), ctypes.byref(self._prio)
        )
        _check(r, "remove", self.name)
        return buffer.raw[:r], self._prio.value

    def clear(self) -> None:
        _check(self._lib.fastq_clear(self._ref), "clear", self.name)

    def state(self) -> State:
        out = _State()
        _check(self._lib.fastq_state(self._ref, ctypes.byref(out)), "state", self.name)
        return State(
            out.generation, out.bytes, out.count, out.head_length, out.recv_waiters,
            out.send_waiters, bool(out.daemon_interest), bool(out.notify_pending),
            out.change_seq, out.recovered, out.last_sender, out.last_receiver, out.change_ns,
        )  # fmt: skip

    def sleepers(self) -> list[Sleeper]:
        """The threads asleep in the mapping now (the first SLEEPER_SLOTS)."""
        out = (_Sleeper * SLEEPER_SLOTS)()
        n = _check(self._lib.fastq_sleepers(self._ref, out, SLEEPER_SLOTS), "who", self.name)
        return [Sleeper(s.pid, s.tid, bool(s.receiving), s.since_ns) for s in out[:n]]

    def set_interest(self, interested: bool, notify_armed: bool = False) -> None:
        _check(
            self._lib.fastq_set_interest(self._ref, int(interested), int(notify_armed)),
            "watch",
            self.name,
        )

    def wait_change(self, seen: int, timeout: float) -> int | None:
        """Sleep until the change counter differs from *seen* (the new value), or None after
        *timeout* seconds. Blocks its thread (ctypes releases the GIL)."""
        r = int(self._lib.fastq_wait_change(self._ref, seen, int(timeout * 1e9)))
        if r in (-errno.ETIMEDOUT, -errno.EINTR):
            return None
        return _check(r, "watch", self.name)

    def take_notify(self) -> int:
        """What a send that made the queue non-empty did to the armed notification: 0
        nothing, NOTIFY_PENDING (deliver it), NOTIFY_FIRED (the sender did); disarms."""
        return _check(self._lib.fastq_take_notify(self._ref), "notify", self.name)

    def set_notification(self, pid: int, sigev_notify: int, signo: int, value: int) -> None:
        """The registration a send fires (pid 0: leave it to whoever takes the notify)."""
        _check(
            self._lib.fastq_set_notification(self._ref, pid, sigev_notify, signo, value),
            "notify",
            self.name,
        )

    def wake_all(self) -> None:
        self._lib.fastq_wake_all(self._ref)

    def adopt(self) -> bool:
        """For the daemon, on attaching: if the mapping was last used in another boot
        (state=DIR after a reboot), renew its mutex and replay its undo record; True then."""
        return bool(_check(self._lib.fastq_adopt(self._ref, _boot_id()), "map", self.name))

    def check(self) -> None:
        """Raise CorruptQueue unless every invariant of the mapping holds (tests)."""
        _check(self._lib.fastq_check(self._ref), "check", self.name)


@functools.cache
def _boot_id() -> bytes:
    """This boot's id (read once: every queue a daemon creates or restores is adopted)."""
    return uuid.UUID(Path("/proc/sys/kernel/random/boot_id").read_text().strip()).bytes


def _interrupted() -> None:
    """After EINTR: run Python's signal handlers now (one that raises ends the call), then
    the caller retries, as PEP 475 has Python's own blocking calls do."""
    ctypes.pythonapi.PyErr_CheckSignals()

"""The mq_* calls with two backends: an mqfs mount, and the kernel's own mqueue.

Both speak exactly the POSIX API, down to the errno: ``open`` takes mq_open's "/name",
oflag, mode and attributes and returns a descriptor (an ``int`` in both cases: on Linux an
``mqd_t`` is a file descriptor, so ``poll``/``select`` work on either); every failure is an
``OSError`` carrying the errno the C call would set. Deadlines are absolute
CLOCK_REALTIME ``(tv_sec, tv_nsec)`` pairs, passed through unvalidated so that an invalid
timespec gets the callee's own EINVAL. The side-by-side conformance tests run one scenario
on both and compare; :class:`mqfs.MessageQueue` is the friendly layer over either.

Why ctypes into librt for the kernel and not posix_ipc: posix_ipc folds errno values into
its own exception classes, always receives with a buffer of exactly msgsize and has no way
to pass an invalid timespec or read the status line, and the conformance tests need every
one of those raw behaviours. librt is part of glibc; nothing extra to install.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mqfs import errors, fastq, mounts, posix, wire
from mqfs.client import calls
from mqfs.client.calls import Deadline
from mqfs.posix import SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD
from mqfs.wire import Attr


@dataclass(frozen=True, slots=True)
class Notification:
    """The parts of struct sigevent that mq_notify uses."""

    sigev_notify: int = SIGEV_SIGNAL
    signo: int = 0
    value: int = 0


class Backend(Protocol):
    """The mq_* calls. Names are mq_open's ("/name")."""

    kind: str

    def spec(self) -> str:
        """A string :func:`from_spec` turns back into this backend (for subprocesses)."""
        ...

    def open(
        self, name: str, oflag: int, mode: int = 0o600, attr: tuple[int, int] | None = None
    ) -> int: ...

    def close(self, mqd: int) -> None: ...

    def unlink(self, name: str) -> None: ...

    def send(
        self, mqd: int, message: bytes, priority: int = 0, deadline: Deadline | None = None
    ) -> None: ...

    def receive(
        self, mqd: int, bufsize: int, deadline: Deadline | None = None
    ) -> tuple[bytes, int]: ...

    def getattr(self, mqd: int) -> Attr: ...

    def setattr(self, mqd: int, flags: int) -> Attr:
        """Set mq_flags; return the previous attributes (mq_setattr's omqstat)."""
        ...

    def notify(self, mqd: int, request: Notification | None) -> None: ...

    def notify_thread(self, mqd: int, function: Callable[[], object]) -> None:
        """mq_notify(SIGEV_THREAD): *function* runs once, in another thread, when the
        registration fires; not at all if it ends first (mq_notify(NULL), a close)."""
        ...

    def status(self, name: str) -> bytes:
        """The queue's status line, as ``cat /dev/mqueue/NAME`` prints it."""
        ...

    def queue_file(self, name: str) -> Path:
        """The file that carries the queue's mode, owner and times (chmod/chown/stat)."""
        ...


def _raise(code: int, what: str) -> None:
    raise OSError(code, os.strerror(code), what)


# -- the kernel, through librt -------------------------------------------------------


class _MqAttr(ctypes.Structure):
    _fields_ = (
        ("mq_flags", ctypes.c_long),
        ("mq_maxmsg", ctypes.c_long),
        ("mq_msgsize", ctypes.c_long),
        ("mq_curmsgs", ctypes.c_long),
        ("reserved", ctypes.c_long * 4),
    )


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _SigEvent(ctypes.Structure):
    """glibc's struct sigevent on 64-bit Linux (64 bytes)."""

    _fields_ = (
        ("sigev_value", ctypes.c_uint64),
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("sigev_notify_function", ctypes.c_void_p),  # SIGEV_THREAD's
        ("sigev_notify_attributes", ctypes.c_void_p),
        ("pad", ctypes.c_int * 8),
    )


# SIGEV_THREAD on the kernel: glibc calls one C function with the sigev_value, here a key
# to the Python function, taken out when it runs (or when the registration is withdrawn).
# The trampoline lives for good: glibc may call it after any registration is forgotten.
_thread_functions: dict[int, Callable[[], object]] = {}
_thread_keys = itertools.count(1)
_thread_lock = threading.Lock()


def _run_thread_notification(value: int | None) -> None:
    with _thread_lock:
        function = _thread_functions.pop(value or 0, None)
    if function is not None:
        function()


_THREAD_TRAMPOLINE = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_run_thread_notification)


def _librt() -> ctypes.CDLL:
    library = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
    c_int, c_uint, c_size_t, c_char_p = (
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_size_t,
        ctypes.c_char_p,
    )
    signatures: dict[str, tuple[type, list[type]]] = {
        "mq_open": (c_int, [c_char_p, c_int, c_uint, ctypes.POINTER(_MqAttr)]),
        "mq_close": (c_int, [c_int]),
        "mq_unlink": (c_int, [c_char_p]),
        "mq_timedsend": (
            c_int,
            [c_int, c_char_p, c_size_t, c_uint, ctypes.POINTER(_Timespec)],
        ),
        "mq_timedreceive": (
            ctypes.c_ssize_t,
            [c_int, c_char_p, c_size_t, ctypes.POINTER(c_uint), ctypes.POINTER(_Timespec)],
        ),
        "mq_getattr": (c_int, [c_int, ctypes.POINTER(_MqAttr)]),
        "mq_setattr": (c_int, [c_int, ctypes.POINTER(_MqAttr), ctypes.POINTER(_MqAttr)]),
        "mq_notify": (c_int, [c_int, ctypes.POINTER(_SigEvent)]),
    }
    for function, (restype, argtypes) in signatures.items():
        getattr(library, function).restype = restype
        getattr(library, function).argtypes = argtypes
    return library


class KernelBackend:
    """The kernel's mqueue through glibc. *mqueue_dir* is a ``mount -t mqueue`` (for status)."""

    kind = "kernel"

    def __init__(self, mqueue_dir: Path | str = "/dev/mqueue") -> None:
        self.mqueue_dir = Path(mqueue_dir)
        self._rt = _librt()
        self._thread_key_of: dict[int, int] = {}  # mqd -> its SIGEV_THREAD function's key

    def spec(self) -> str:
        return f"kernel:{self.mqueue_dir}"

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            _raise(ctypes.get_errno(), what)
        return result

    @staticmethod
    def _timespec(deadline: Deadline | None) -> ctypes._Pointer[_Timespec] | None:
        return None if deadline is None else ctypes.pointer(_Timespec(*deadline))

    def open(
        self, name: str, oflag: int, mode: int = 0o600, attr: tuple[int, int] | None = None
    ) -> int:
        pointer = None if attr is None else ctypes.pointer(_MqAttr(0, attr[0], attr[1], 0))
        return self._check(self._rt.mq_open(os.fsencode(name), oflag, mode, pointer), "mq_open")

    def close(self, mqd: int) -> None:
        self._check(self._rt.mq_close(mqd), "mq_close")
        self._forget_thread_function(mqd)

    def unlink(self, name: str) -> None:
        self._check(self._rt.mq_unlink(os.fsencode(name)), "mq_unlink")

    def send(
        self, mqd: int, message: bytes, priority: int = 0, deadline: Deadline | None = None
    ) -> None:
        result = self._rt.mq_timedsend(
            mqd, message, len(message), priority, self._timespec(deadline)
        )
        self._check(result, "mq_timedsend")

    def receive(
        self, mqd: int, bufsize: int, deadline: Deadline | None = None
    ) -> tuple[bytes, int]:
        buffer = ctypes.create_string_buffer(max(bufsize, 1))
        priority = ctypes.c_uint()
        length = self._rt.mq_timedreceive(
            mqd, buffer, bufsize, ctypes.byref(priority), self._timespec(deadline)
        )
        self._check(length, "mq_timedreceive")
        return buffer.raw[:length], priority.value

    def getattr(self, mqd: int) -> Attr:
        attr = _MqAttr()
        self._check(self._rt.mq_getattr(mqd, ctypes.byref(attr)), "mq_getattr")
        return Attr(attr.mq_flags, attr.mq_maxmsg, attr.mq_msgsize, attr.mq_curmsgs)

    def setattr(self, mqd: int, flags: int) -> Attr:
        new, old = _MqAttr(flags, 0, 0, 0), _MqAttr()
        self._check(self._rt.mq_setattr(mqd, ctypes.byref(new), ctypes.byref(old)), "mq_setattr")
        return Attr(old.mq_flags, old.mq_maxmsg, old.mq_msgsize, old.mq_curmsgs)

    def notify(self, mqd: int, request: Notification | None) -> None:
        pointer = None
        if request is not None:
            event = _SigEvent(request.value, request.signo, request.sigev_notify)
            pointer = ctypes.pointer(event)
        self._check(self._rt.mq_notify(mqd, pointer), "mq_notify")
        if request is None:
            self._forget_thread_function(mqd)

    def notify_thread(self, mqd: int, function: Callable[[], object]) -> None:
        key = next(_thread_keys)
        trampoline = ctypes.cast(_THREAD_TRAMPOLINE, ctypes.c_void_p).value
        event = _SigEvent(key, 0, SIGEV_THREAD, trampoline)
        with _thread_lock:
            _thread_functions[key] = function
        try:
            self._check(self._rt.mq_notify(mqd, ctypes.pointer(event)), "mq_notify")
        except OSError:
            with _thread_lock:
                _thread_functions.pop(key, None)
            raise
        self._thread_key_of[mqd] = key

    def _forget_thread_function(self, mqd: int) -> None:
        key = self._thread_key_of.pop(mqd, 0)
        with _thread_lock:
            _thread_functions.pop(key, None)

    def queue_file(self, name: str) -> Path:
        return self.mqueue_dir / posix.strip_posix_name(name)

    def status(self, name: str) -> bytes:
        return self.queue_file(name).read_bytes()


# -- mqfs ---------------------------------------------------------------------------------


DEFAULT_MOUNT = "/run/mqfs"


def default_mount() -> Path:
    """Where mqfs is mounted unless told otherwise: $MQFS_MOUNT, else /run/mqfs."""
    return Path(os.environ.get("MQFS_MOUNT") or DEFAULT_MOUNT)


class _Mapped:
    """An mqfs descriptor whose queue this process maps (``-o fastpath``): send, receive
    and curmsgs go to the mapping with no daemon round trip, after the checks the kernel
    makes before its queue's lock, in its order (the timespec's and the priority's
    EINVAL, EBADF for the access mode, EMSGSIZE). The access mode and O_NONBLOCK are the
    descriptor's, known here from mq_open's flags and from every mq_setattr made through
    the backend (which the daemon is told too, for what still goes through it: framed
    I/O, read/write, peeks). An untimed call goes straight to the core (every Python call
    on the way costs about as much as the core's send itself); a timed one through
    MappedQueue.

    A close while another thread waits in a call on the mapping does not unmap it under
    that thread: as the kernel keeps a closed descriptor's file until its calls return,
    the last call out unmaps (``calls`` holds one token per call in flight; list appends
    and pops are atomic under the GIL, a lock would cost more than the send)."""

    __slots__ = (
        "_core_receive",
        "_core_send",
        "_ref",
        "_spares",
        "_unmapping",
        "calls",
        "closed",
        "flags",
        "maxmsg",
        "msgsize",
        "queue",
        "readable",
        "writable",
    )

    def __init__(self, queue: fastq.MappedQueue, oflag: int) -> None:
        self.queue = queue
        self._core_send, self._core_receive, self._ref = queue.core()
        self.maxmsg, self.msgsize = queue.maxmsg, queue.msgsize
        access = oflag & os.O_ACCMODE
        self.readable = access in (os.O_RDONLY, os.O_RDWR)
        self.writable = access in (os.O_WRONLY, os.O_RDWR)
        self.flags = fastq.NONBLOCK if oflag & os.O_NONBLOCK else 0
        self.calls: list[None] = []
        self.closed = False
        self._unmapping = threading.Lock()
        # receive buffers: one per thread receiving at once
        self._spares: list[tuple[ctypes.Array[ctypes.c_char], ctypes.c_uint32, object]] = []

    @property
    def nonblock(self) -> bool:
        return bool(self.flags & fastq.NONBLOCK)

    @nonblock.setter
    def nonblock(self, value: bool) -> None:
        self.flags = fastq.NONBLOCK if value else 0

    def send(self, message: bytes, priority: int, deadline: Deadline | None) -> None:
        if deadline is not None:
            _check_timespec(deadline)
        priority &= 0xFFFFFFFF  # an unsigned int, as in C
        if priority >= posix.MQ_PRIO_MAX:
            _raise(errno.EINVAL, "mq_timedsend")
        if not self.writable:
            _raise(errno.EBADF, "mq_timedsend")
        if type(message) is not bytes:  # the core takes bytes (a bytearray, a memoryview)
            message = bytes(message)
        length = len(message)
        if length > self.msgsize:  # the core's first check, made here (lengths < 2**31)
            _raise(errno.EMSGSIZE, "mq_timedsend")
        calls = self.calls
        calls.append(None)
        try:
            if self.closed:
                _raise(errno.EBADF, "mq_timedsend")
            if deadline is None:
                result = self._core_send(self._ref, message, length, priority, self.flags, None)
            else:
                self.queue.send(
                    message, priority, nonblock=self.nonblock, deadline=deadline, restart=False
                )
                return
        finally:
            calls.pop()
            if self.closed and not calls:
                self._unmap()
        if result:
            _raise(-result, "mq_timedsend")

    def receive(self, bufsize: int, deadline: Deadline | None) -> tuple[bytes, int]:
        if deadline is not None:
            _check_timespec(deadline)
        if not self.readable:
            _raise(errno.EBADF, "mq_timedreceive")
        if bufsize < self.msgsize:
            _raise(errno.EMSGSIZE, "mq_timedreceive")
        calls = self.calls
        calls.append(None)
        try:
            if self.closed:
                _raise(errno.EBADF, "mq_timedreceive")
            if deadline is not None:
                return self.queue.receive(nonblock=self.nonblock, deadline=deadline, restart=False)
            spares = self._spares
            try:
                buffer, prio, prio_ref = spares.pop()
            except IndexError:
                prio = ctypes.c_uint32()
                buffer = ctypes.create_string_buffer(self.msgsize or 1)
                prio_ref = ctypes.byref(prio)
            try:
                length = self._core_receive(
                    self._ref, buffer, len(buffer), prio_ref, self.flags, None
                )
                if length < 0:
                    _raise(-length, "mq_timedreceive")
                # a c_char array's slice is bytes (typeshed says list[bytes])
                return buffer[:length], prio.value  # type: ignore[return-value]
            finally:
                spares.append((buffer, prio, prio_ref))
        finally:
            calls.pop()
            if self.closed and not calls:
                self._unmap()

    def curmsgs(self) -> int:
        calls = self.calls
        calls.append(None)
        try:
            if self.closed:
                _raise(errno.EBADF, "mq_getattr")
            return self.queue.state().count
        finally:
            calls.pop()
            if self.closed and not calls:
                self._unmap()

    def close(self) -> None:
        """The descriptor is closed: unmap now, or when the last call in flight returns."""
        self.closed = True
        if not self.calls:
            self._unmap()

    def _unmap(self) -> None:
        with self._unmapping:  # both a closer and a last call may get here
            self.queue.close()


def _check_timespec(deadline: Deadline) -> None:
    """EINVAL for an abs_timeout the kernel's timespec64_valid refuses."""
    tv_sec, tv_nsec = deadline
    if tv_sec < 0 or not 0 <= tv_nsec < 1_000_000_000:
        _raise(errno.EINVAL, "abs_timeout")


def _attach(fd: int, oflag: int, name: str) -> _Mapped | None:
    """The mapping of the queue open on *fd*, if the daemon offers it to this process
    (MAP) and it is what GETATTR says; None otherwise: then everything goes through the
    daemon, as on a mount without ``-o fastpath`` or for a caller not the queue's owner."""
    try:
        where = calls.map(fd)
    except OSError:  # EOPNOTSUPP (no fast path), EACCES (not the owner), ENOTTY (older)
        return None
    if not os.path.isabs(where.path) or where.version != fastq.VERSION:
        return None
    try:
        attributes = calls.get_attributes(fd)
        if (attributes.maxmsg, attributes.msgsize) != (where.maxmsg, where.msgsize):
            return None
        queue = fastq.MappedQueue(where.path, where.maxmsg, where.msgsize, name)
    except (OSError, errors.MqfsError):
        return None  # gone or refused meanwhile, or a mapping that fails its check
    return _Mapped(queue, oflag)


OPEN_ATTEMPTS = 64
"""Creates and opens one mq_open(O_CREAT) tries while the name keeps being unlinked."""


class MqfsBackend:
    """Queues on an mqfs mount: mq_open is CREATE on the root plus open(MNT/name/queue)."""

    kind = "mqfs"

    def __init__(self, mount: Path | str | None = None) -> None:
        self.mount = Path(mount) if mount is not None else default_mount()
        self._mapped: dict[int, _Mapped] = {}  # descriptors on the fast path

    def mapped(self, mqd: int) -> bool:
        """Whether *mqd*'s sends and receives go to the queue's shared mapping directly
        (an ``-o fastpath`` mount, a caller who owns the queue) rather than the daemon."""
        return mqd in self._mapped

    def spec(self) -> str:
        return f"mqfs:{self.mount}"

    def _name(self, posix_name: str) -> str:
        try:
            return posix.strip_posix_name(posix_name)
        except errors.MqfsError as exc:
            code = exc.errno or errno.EINVAL
            raise OSError(code, os.strerror(code), posix_name) from None

    def queue_file(self, name: str) -> Path:
        return self.mount / self._name(name) / "queue"

    def open(
        self, name: str, oflag: int, mode: int = 0o600, attr: tuple[int, int] | None = None
    ) -> int:
        try:
            return self._open(name, oflag, mode, attr)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTTY, errno.ENOTCONN):
                mounts.require_mqfs(self.mount)  # say so if the mount is what is wrong
            raise

    def _open(self, name: str, oflag: int, mode: int, attr: tuple[int, int] | None) -> int:
        """mq_open is a CREATE then an open(2) here (FUSE has no call that makes a directory
        and opens a file in it), so a name unlinked in between would be ENOENT where the
        kernel's mq_open gives a descriptor: with O_CREAT that makes the queue again, a
        bounded number of times, as the shim does (preload/lookup.c). O_EXCL stays on each
        attempt: EEXIST then means someone else made the name since, so the descriptor
        returned is always of a queue this call created."""
        attempts = OPEN_ATTEMPTS if oflag & os.O_CREAT else 1
        while True:
            attempts -= 1
            try:
                return self._create_and_open(name, oflag, mode, attr)
            except FileNotFoundError:
                if attempts == 0:
                    raise

    def _create_and_open(
        self, name: str, oflag: int, mode: int, attr: tuple[int, int] | None
    ) -> int:
        bare = self._name(name)
        no_access = oflag & os.O_ACCMODE == os.O_ACCMODE
        if no_access:
            # The kernel's prepare_open: O_RDWR|O_WRONLY is EINVAL on an existing queue
            # (after O_CREAT|O_EXCL's EEXIST), but a new queue is made and opened.
            invalid = OSError(errno.EINVAL, os.strerror(errno.EINVAL), name)
            if not oflag & os.O_CREAT:
                os.stat(self.mount / bare / "queue")  # ENOENT comes first
                raise invalid
            try:
                self._create(bare, oflag | os.O_EXCL, mode, attr)
            except FileExistsError:
                if oflag & os.O_EXCL:
                    raise
                raise invalid from None
        elif oflag & os.O_CREAT:
            self._create(bare, oflag, mode, attr)
        # open(2)'s own O_CREAT/O_EXCL must not reach the queue file: CREATE did that.
        flags = oflag & ~(os.O_CREAT | os.O_EXCL) | os.O_CLOEXEC
        fd = os.open(self.mount / bare / "queue", flags)
        self._forget(fd)  # a number closed behind the backend's back (os.close) and reused
        mapped = _attach(fd, oflag, name)
        if mapped is not None:
            self._mapped[fd] = mapped
        return fd

    def _forget(self, mqd: int) -> None:
        mapped = self._mapped.pop(mqd, None)
        if mapped is not None:
            mapped.close()

    def _create(self, bare: str, oflag: int, mode: int, attr: tuple[int, int] | None) -> None:
        if oflag & os.O_CREAT:
            umask = os.umask(0)
            os.umask(umask)
            calls.create_at(
                self.mount,
                bare,
                mode & 0o7777 & ~umask,
                maxmsg=attr[0] if attr else None,
                msgsize=attr[1] if attr else None,
                exclusive=bool(oflag & os.O_EXCL),
            )
        else:  # no O_CREAT: only the kernel's answer for a missing queue
            os.stat(self.mount / bare / "queue")

    def close(self, mqd: int) -> None:
        self._forget(mqd)
        os.close(mqd)

    def unlink(self, name: str) -> None:
        try:
            os.rmdir(self.mount / self._name(name))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTCONN):
                mounts.require_mqfs(self.mount)
            raise

    def send(
        self, mqd: int, message: bytes, priority: int = 0, deadline: Deadline | None = None
    ) -> None:
        mapped = self._mapped.get(mqd)
        if mapped is None:
            calls.send(mqd, message, priority, deadline=deadline)
        else:
            mapped.send(message, priority, deadline)

    def receive(
        self, mqd: int, bufsize: int, deadline: Deadline | None = None
    ) -> tuple[bytes, int]:
        mapped = self._mapped.get(mqd)
        if mapped is None:
            return calls.receive(mqd, bufsize, deadline=deadline)
        return mapped.receive(bufsize, deadline)

    def peek(self, mqd: int, index: int = 0) -> tuple[bytes, int]:
        """Message *index* in receive order, left in the queue (mqfs's extension)."""
        return calls.peek(mqd, index)

    def getattr(self, mqd: int) -> Attr:
        mapped = self._mapped.get(mqd)
        if mapped is None:
            return calls.get_attributes(mqd)
        flags = os.O_NONBLOCK if mapped.nonblock else 0
        return Attr(flags, mapped.maxmsg, mapped.msgsize, mapped.curmsgs())

    def setattr(self, mqd: int, flags: int) -> Attr:
        previous = calls.set_attributes(mqd, flags)  # the daemon checks, and keeps it too
        mapped = self._mapped.get(mqd)
        if mapped is not None:
            mapped.nonblock = bool(flags & os.O_NONBLOCK)
        return previous

    def notify(self, mqd: int, request: Notification | None) -> None:
        if request is None:
            calls.notify(mqd, None)
        else:
            calls.notify(mqd, request.sigev_notify, request.signo, request.value)

    def notify_thread(self, mqd: int, function: Callable[[], object]) -> None:
        """The registration, then a thread waiting in NOTIFY_WAIT on a dup of *mqd* (so
        that *mqd* may be closed at once) that runs *function* if it fires, as the shim's
        helper does. A failure after the registration withdraws it."""
        registration = calls.notify(mqd, SIGEV_THREAD)
        try:
            waiting = os.dup(mqd)
        except OSError:
            calls.notify(mqd, None)
            raise
        waiter = threading.Thread(
            target=_run_when_fired,
            args=(waiting, registration, function),
            name=f"mqfs-notify-{mqd}",
            daemon=True,
        )
        try:
            waiter.start()
        except RuntimeError as exc:
            calls.notify(mqd, None)
            os.close(waiting)
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN)) from exc

    def status(self, name: str) -> bytes:
        return (self.mount / self._name(name) / "status").read_bytes()


def _run_when_fired(fd: int, registration: int, function: Callable[[], object]) -> None:
    """A SIGEV_THREAD waiter: every signal blocked (they are the main thread's to take),
    EINTR and EAGAIN (its user's blocked_max) wait again; *fd* closed before *function*
    runs, as that close would otherwise be taken for one by the program."""
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    fired = False
    try:
        while True:
            try:
                fired = calls.notify_wait(fd, registration).outcome == wire.NOTIFY_FIRED
            except InterruptedError:
                continue
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:
                pass  # ENOTCONN: the daemon is stopping; as an end
            break
    finally:
        os.close(fd)
    if fired:
        function()


def from_spec(spec: str) -> KernelBackend | MqfsBackend:
    """The backend a :meth:`Backend.spec` string names ("kernel:DIR" or "mqfs:MNT")."""
    kind, _, where = spec.partition(":")
    if kind == "kernel":
        return KernelBackend(where or "/dev/mqueue")
    if kind == "mqfs":
        return MqfsBackend(where or None)
    raise ValueError(f"unknown backend {spec!r}")


__all__ = [
    "SIGEV_NONE",
    "SIGEV_SIGNAL",
    "SIGEV_THREAD",
    "Attr",
    "Backend",
    "Deadline",
    "KernelBackend",
    "MqfsBackend",
    "Notification",
    "default_mount",
    "from_spec",
]

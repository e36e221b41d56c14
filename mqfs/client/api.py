"""A posix_ipc-shaped client: :class:`MessageQueue`, plus :class:`AsyncMessageQueue` for trio.

Code written for ``posix_ipc.MessageQueue`` ports with an import change; on an mqfs mount
it can also look at queued messages without consuming them::

    from mqfs.client.api import O_CREAT, BusyError, MessageQueue

    with MessageQueue("/jobs", O_CREAT, max_messages=10, max_message_size=1024) as q:
        q.send("hello", priority=5)              # str is sent as UTF-8
        q.send(b"world")
        print(q.current_messages, q.peek())      # 2 (b'hello', 5) -- still queued
        print(q.peek_all())                      # [(b'hello', 5), (b'world', 0)]
        print(q.receive())                       # (b'hello', 5)
        try:
            q.receive(timeout=0.5)               # b'world'; then 0.5 s on an empty queue
            q.receive(timeout=0.5)
        except BusyError as exc:
            print(exc.errno, exc)                # 110 queue '/jobs' is still empty (ETIMEDOUT)
        q.unlink()

and under trio (``async with`` works too)::

    with AsyncMessageQueue("/jobs", O_CREAT) as q:
        message, priority = await q.receive()    # waits on the fd's readiness, cancellable
        with trio.move_on_after(2):
            await q.send(b"reply")

**Where the queues live.** The *backend* argument is an object from :mod:`mqfs.client.backends`:
``MqfsBackend(mount)`` (the default, whose mount is ``$MQFS_MOUNT`` or ``/run/mqfs``) or
``KernelBackend()`` for the kernel's own queues. ``mount=PATH`` is a shorthand for
``backend=MqfsBackend(PATH)``. Names are mq_open's ``"/name"`` and are passed on as they are
(a name without the slash gets mq_open's EINVAL); ``name=None`` with ``O_CREX`` creates a
queue with a new random name, as posix_ipc does.

**Attributes.** ``max_messages``/``max_message_size`` left as None mean the backend's
defaults (mq_open with ``attr=NULL``: the mount's ``msg_default``/``msgsize_default``, or
the kernel's ``/proc/sys/fs/mqueue``). mq_open needs both or neither, so when only one is
given the other is posix_ipc's default (:data:`QUEUE_MESSAGES_MAX_DEFAULT` = 10 messages,
:data:`QUEUE_MESSAGE_SIZE_MAX_DEFAULT` = 8192 bytes). ``flags`` may also carry
``os.O_NONBLOCK``, which is the same as ``block=False`` from the start.

**Timeouts**, as posix_ipc: ``None`` waits for as long as it takes, ``0`` tries once, a
positive number waits at most that many seconds (an absolute CLOCK_REALTIME deadline, as
mq_timedsend/mq_timedreceive take it). A negative or NaN timeout is a ``ValueError``. With
``block = False`` the timeout does not matter: a full or empty queue fails at once.

**Exceptions** are :mod:`mqfs.errors`' one tree: every failure is an :class:`Error`, an
``OSError`` whose ``errno`` is the one the C call set and whose ``str()`` names the queue
and the errno, e.g. ``queue '/q' is full (EAGAIN)``. posix_ipc's classes group them, and
three are *also* the built-in exception posix_ipc raises in their place, so ``except
ValueError`` keeps working:

=====================  ==============================================================
``ExistentialError``   EEXIST (O_CREX on an existing name), ENOENT (no such queue),
                       EBADF (the queue was closed); ``NoSuchMessage`` among them is
                       also an ``IndexError``: peek or remove past the last message
                       (ENOENT)
``BusyError``          EAGAIN (full/empty with ``block = False``, timeout 0) and
                       ETIMEDOUT (the timeout passed)
``PermissionsError``   EACCES, EPERM; and EBADF for sending on a queue opened with
                       ``write=False`` or receiving/peeking with ``read=False``
                       (checked before the call, as posix_ipc does)
``SignalError``        EINTR: a signal interrupted the wait (on mqfs too: a FUSE
                       request is not restarted, even under SA_RESTART)
``InvalidArgument``    also a ``ValueError``: EINVAL (bad name, attributes,
                       priority >= 32768, ...); ``NameTooLong`` (ENAMETOOLONG) too
``MessageTooLong``     also a ``ValueError``: EMSGSIZE (message > max_message_size)
``NotSupported``       also a ``NotImplementedError``: peek on the kernel backend
                       (errno ENOTTY, what the kernel's mqueue says to an unknown
                       ioctl); peek needs an mqfs mount
``QueueChanged``       ESTALE: ``remove`` with a generation the queue has left
``Error``              anything else (ENOSPC, EMFILE, ...), errno kept
=====================  ==============================================================

**Waiting without the GIL.** A blocking ``send``/``receive`` is one call that waits in the
kernel (or the mqfs daemon) with the GIL released, as mq_timedsend/receive do; other
threads keep running.

**Peek** (mqfs only) never blocks and never changes the queue: ``peek(i)`` is message *i* in
receive order (``BusyError``/EAGAIN on an empty queue, ``NoSuchMessage`` past the end);
``peek_all()`` is every message as one consistent snapshot (``[]`` when empty).
``remove(i, generation)`` takes message *i* out of the middle only if the queue is still
at the ``generation`` read before looking at it (``QueueChanged``/ESTALE otherwise).

**trio.** :class:`AsyncMessageQueue` takes the same arguments, opens its descriptor with
``O_NONBLOCK`` and, when a call gets EAGAIN, waits in ``trio.lowlevel.wait_readable`` /
``wait_writable`` on the descriptor (the queue file's POLLIN/POLLOUT) and tries again: no
syscall ever blocks the trio thread, nothing busy-polls, and cancellation can only happen
while waiting, never halfway through a send or a receive, so no message is lost. Its
``block`` is a plain attribute (False: fail with BusyError instead of waiting).
"""

from __future__ import annotations

import errno
import functools
import math
import os
import secrets
import signal
import string
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self, TypeVar

import trio

from mqfs import __version__, wire
from mqfs.client import calls
from mqfs.client.backends import Backend, MqfsBackend, Notification
from mqfs.client.calls import Deadline
from mqfs.errors import (
    BusyError,
    Error,
    ExistentialError,
    InvalidArgument,
    MessageTooLong,
    MqfsError,
    NoSuchMessage,
    NotSupported,
    PermissionsError,
    QueueChanged,
    SignalError,
    from_errno,
)
from mqfs.posix import MQ_PRIO_MAX, SIGEV_SIGNAL

O_CREAT: int = os.O_CREAT
O_EXCL: int = os.O_EXCL
O_CREX: int = os.O_CREAT | os.O_EXCL
O_NONBLOCK: int = os.O_NONBLOCK
O_RDONLY: int = os.O_RDONLY
O_WRONLY: int = os.O_WRONLY
O_RDWR: int = os.O_RDWR
O_TRUNC: int = os.O_TRUNC
PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")
USER_SIGNAL_MIN: int = signal.SIGRTMIN
USER_SIGNAL_MAX: int = signal.SIGRTMAX
VERSION: str = __version__

QUEUE_MESSAGES_MAX_DEFAULT = 10
QUEUE_MESSAGE_SIZE_MAX_DEFAULT = 8192
QUEUE_PRIORITY_MAX = MQ_PRIO_MAX - 1
MESSAGE_QUEUES_SUPPORTED = True

Message = bytes | bytearray | memoryview | str
_T = TypeVar("_T")


# -- errors: the classes are mqfs.errors' (posix_ipc's names among them) -------------


def _call(operation: str, name: str | None, function: Callable[[], _T]) -> _T:
    try:
        return function()
    except MqfsError:
        raise
    except OSError as exc:
        if exc.errno is None:
            raise
        raise from_errno(exc.errno, operation, name or "") from exc


# -- helpers ------------------------------------------------------------------------------


def _resolve_backend(backend: Backend | None, mount: Path | str | None) -> Backend:
    if backend is not None and mount is not None:
        raise ValueError("give backend= or mount=, not both")
    if backend is not None:
        return backend
    return MqfsBackend(mount)


def _encode(message: Message) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if not isinstance(message, bytes | bytearray | memoryview):  # bytes(5) would be 5 NULs
        raise TypeError(f"the message must be bytes or str, not {type(message).__name__}")
    return bytes(message)


def _prioritized(message: Message | tuple[Message, int]) -> tuple[bytes, int]:
    """(payload, priority) of a send_many item: a message, or (message, priority)."""
    if isinstance(message, tuple):
        payload, priority = message
        return _encode(payload), priority
    return _encode(message), 0


def _send_all(mqd: int, items: list[tuple[bytes, int]]) -> int:
    """Framed writes until all *items* are sent or the queue is full (O_NONBLOCK): a
    short write of a blocking descriptor was a signal, after which it goes on."""
    sent = 0
    while sent < len(items):
        try:
            sent += calls.send_many(mqd, items[sent:] if sent else items)
        except BlockingIOError:
            if not sent:
                raise
            break
    return sent


def _deadline(timeout: float | None) -> Deadline | None:
    if timeout is None:
        return None
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"the timeout must be None or a non-negative number, not {timeout!r}")
    return calls.deadline_after(timeout)


def _random_name() -> str:
    return "/" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(12))


def _attributes(max_messages: int | None, max_message_size: int | None) -> tuple[int, int] | None:
    if max_messages is None and max_message_size is None:
        return None
    return (
        QUEUE_MESSAGES_MAX_DEFAULT if max_messages is None else max_messages,
        QUEUE_MESSAGE_SIZE_MAX_DEFAULT if max_message_size is None else max_message_size,
    )


# -- the synchronous queue ----------------------------------------------------------------


class MessageQueue:
    """A POSIX message queue, opened (or created) like ``posix_ipc.MessageQueue``.

    Blocking calls release the GIL while they wait, so other threads keep running.
    Close it (``close()`` or ``with``); the queue itself lives on until ``unlink()``.
    """

    def __init__(
        self,
        name: str | None,
        flags: int = 0,
        mode: int = 0o600,
        max_messages: int | None = None,
        max_message_size: int | None = None,
        read: bool = True,
        write: bool = True,
        *,
        backend: Backend | None = None,
        mount: Path | str | None = None,
    ) -> None:
        if flags & O_EXCL and not flags & O_CREAT:
            raise ValueError("O_EXCL must be combined with O_CREAT")
        if name is None and flags & O_CREX != O_CREX:
            raise ValueError("name can only be None with O_CREX")
        if not read and not write:
            raise ValueError("at least one of read or write must be True")
        self._backend = _resolve_backend(backend, mount)
        self._readable = read
        self._writable = write
        self.mode = mode
        access = os.O_RDWR if read and write else os.O_RDONLY if read else os.O_WRONLY
        oflag = flags & ~(os.O_ACCMODE) | access
        attr = _attributes(max_messages, max_message_size) if flags & O_CREAT else None
        while True:
            self._name = _random_name() if name is None else name
            try:
                self._mqd = _call(
                    "open",
                    self._name,
                    lambda: self._backend.open(self._name, oflag, mode, attr),
                )
                break
            except ExistentialError as exc:
                if name is not None or exc.errno != errno.EEXIST:
                    raise
        try:
            attributes = self._getattr()
        except BaseException:
            self._backend.close(self._mqd)
            raise
        self._max_messages = attributes.maxmsg
        self._max_message_size = attributes.msgsize

    # -- descriptor and attributes

    @property
    def name(self) -> str:
        """The name the queue was opened by ("/name")."""
        return self._name

    @property
    def mqd(self) -> int:
        """The message queue descriptor (a file descriptor); -1 once closed."""
        return self._mqd

    @property
    def backend(self) -> Backend:
        return self._backend

    def fileno(self) -> int:
        """The descriptor, for select/poll/epoll/``selectors`` (readable = a message waits)."""
        return self._open_mqd()

    def _open_mqd(self) -> int:
        if self._mqd < 0:
            raise from_errno(errno.EBADF, "use", self._name)
        return self._mqd

    def _getattr(self) -> wire.Attr:
        mqd = self._open_mqd()
        return _call("mq_getattr", self._name, lambda: self._backend.getattr(mqd))

    @property
    def max_messages(self) -> int:
        """mq_maxmsg: how many messages the queue holds."""
        return self._max_messages

    @property
    def max_message_size(self) -> int:
        """mq_msgsize: the longest message the queue takes."""
        return self._max_message_size

    @property
    def current_messages(self) -> int:
        """mq_curmsgs: how many messages are queued now."""
        return self._getattr().curmsgs

    @property
    def block(self) -> bool:
        """False if this descriptor is in non-blocking mode (mq_setattr's O_NONBLOCK)."""
        return not self._getattr().flags & O_NONBLOCK

    @block.setter
    def block(self, value: bool) -> None:
        mqd = self._open_mqd()
        flags = 0 if value else O_NONBLOCK
        _call("mq_setattr", self._name, lambda: self._backend.setattr(mqd, flags))

    # -- messages

    def _check_direction(self, writing: bool) -> int:
        mqd = self._open_mqd()
        if writing and not self._writable:
            raise PermissionsError(
                f"queue {self._name!r} is not open for writing", errno_value=errno.EBADF
            )
        if not writing and not self._readable:
            raise PermissionsError(
                f"queue {self._name!r} is not open for reading", errno_value=errno.EBADF
            )
        return mqd

    def send(self, message: Message, timeout: float | None = None, priority: int = 0) -> None:
        """mq_timedsend: queue *message* (bytes, or str as UTF-8) with *priority* (0..32767).

        Waits while the queue is full: for ever (None), not at all (0) or *timeout* seconds.
        """
        # The common case without a call to spare: an open, writable queue and bytes (the
        # fast path's send costs less than the Python calls around it).
        mqd = self._mqd if self._mqd >= 0 and self._writable else self._check_direction(True)
        payload = message if type(message) is bytes else _encode(message)
        deadline = None if timeout is None else _deadline(timeout)
        try:
            self._backend.send(mqd, payload, priority, deadline)
        except MqfsError:
            raise
        except OSError as exc:  # as _call's, without its two calls
            self._reraise(exc, "send")

    def receive(self, timeout: float | None = None) -> tuple[bytes, int]:
        """mq_timedreceive: the oldest message of the highest priority, as (bytes, priority)."""
        mqd = self._mqd if self._mqd >= 0 and self._readable else self._check_direction(False)
        deadline = None if timeout is None else _deadline(timeout)
        try:
            return self._backend.receive(mqd, self._max_message_size, deadline)
        except MqfsError:
            raise
        except OSError as exc:  # as _call's, without its two calls
            self._reraise(exc, "receive")

    def _reraise(self, exc: OSError, operation: str) -> NoReturn:
        """*exc* (being handled) as the exception tree's class for its errno."""
        if exc.errno is None:
            raise exc
        raise from_errno(exc.errno, operation, self._name) from exc

    def send_many(self, messages: Iterable[Message | tuple[Message, int]]) -> int:
        """Send *messages* (each bytes/str, or (bytes/str, priority)) in order, each as
        one mq_send would, in as few requests as fit (framed writes of about 1 MiB on
        mqfs; one mq_send each on the kernel's). Blocking, waits until all are sent;
        with ``block = False`` sends as many as fit. Returns how many were sent;
        BusyError (EAGAIN) if none could be. Every message is checked before any of a
        framed write is sent (a bad one: InvalidArgument or EMSGSIZE, nothing of it sent).
        """
        mqd = self._check_direction(True)
        items = [_prioritized(message) for message in messages]
        backend = self._backend
        if not isinstance(backend, MqfsBackend):
            sent = 0
            for payload, priority in items:
                try:
                    _call(
                        "send", self._name, functools.partial(backend.send, mqd, payload, priority)
                    )
                except BusyError:
                    if not sent:
                        raise
                    break
                sent += 1
            return sent
        return _call("send", self._name, lambda: _send_all(mqd, items))

    def receive_many(self, max_count: int | None = None) -> list[tuple[bytes, int]]:
        """Receive at least one message and at most *max_count* (None: as many as one
        framed read of about 1 MiB holds), in receive order, each as one mq_receive
        would; waits (unless ``block = False``: BusyError) only for the first."""
        mqd = self._check_direction(False)
        if max_count is not None and max_count < 1:
            raise ValueError(f"max_count must be at least 1, not {max_count}")
        limit = min(max_count or 0, (1 << 28) - 1)
        size = calls.FRAMED_IO_MAX
        framed = isinstance(self._backend, MqfsBackend)
        if framed and wire.reply_room(size) >= self._max_message_size:
            return _call("receive", self._name, lambda: calls.receive_many(mqd, limit, size))
        received = [self.receive()]
        while max_count is None or len(received) < max_count:
            try:
                received.append(self.receive(timeout=0))
            except BusyError:
                break
        return received

    def _peeking_backend(self) -> MqfsBackend:
        if not isinstance(self._backend, MqfsBackend):
            raise NotSupported(
                f"cannot peek into queue {self._name!r}: the {self._backend.kind} backend"
                " has no peek; it needs an mqfs mount"
            )
        return self._backend

    def peek(self, index: int = 0) -> tuple[bytes, int]:
        """Message *index* in receive order (0 = what receive() returns next), unconsumed.

        Never waits: BusyError (EAGAIN) on an empty queue, NoSuchMessage (ENOENT) for
        an index past the last message. mqfs only (NotSupported on the kernel's).
        """
        mqd = self._check_direction(False)
        backend = self._peeking_backend()
        if index < 0:
            raise InvalidArgument(f"peek index must be >= 0, not {index}")
        return _call("peek", self._name, lambda: backend.peek(mqd, index))

    def peek_all(self) -> list[tuple[bytes, int]]:
        """Every queued message in receive order, as one consistent snapshot, unconsumed."""
        mqd = self._check_direction(False)
        self._peeking_backend()
        return _call("peek", self._name, lambda: calls.peek_all(mqd))

    @property
    def generation(self) -> int:
        """A number that changes with every send, receive and removal of this queue (mqfs
        only; needs read access): read it before looking at a message to :meth:`remove`."""
        mqd = self._check_direction(False)
        self._peeking_backend()
        return _call("peek", self._name, lambda: calls.current_generation(mqd))

    def remove(self, index: int, generation: int) -> RemovedMessage:
        """Remove message *index* in receive order, wherever it is (a poison message in the
        middle: mqfs can, the kernel cannot), if the queue is still at *generation*::

            generation = q.generation
            message, priority = q.peek(3)         # look at it first
            q.remove(3, generation)               # exactly that one, or QueueChanged

        Raises QueueChanged (ESTALE), removing nothing, if the queue changed since
        *generation* was read (its index may name another message by now); NoSuchMessage
        (ENOENT) past the last message. Removing consumes, so it needs read access, as
        receive does. A sender blocked on the full queue takes the freed slot. mqfs only.
        """
        mqd = self._check_direction(False)
        self._peeking_backend()
        if not 0 <= index < 1 << 64 or not 0 <= generation < 1 << 64:
            raise InvalidArgument(f"index {index} or generation {generation} is out of range")
        reply = _call("remove", self._name, lambda: calls.remove(mqd, index, generation))
        return RemovedMessage(reply.msg_prio, reply.msg_len, reply.data, reply.generation)

    # -- lifetime

    def request_notification(
        self, notification: int | tuple[Callable[[Any], object], Any] | None = None
    ) -> None:
        """mq_notify, as posix_ipc's: when a message arrives on the empty queue (and no
        receive is waiting for it), a signal number asks for that signal (SIGEV_SIGNAL,
        si_code SI_MESGQ), and ``(callback, param)`` for ``callback(param)`` in a new
        thread (SIGEV_THREAD), once: request again for the next. None cancels."""
        mqd = self._open_mqd()
        if notification is None or isinstance(notification, int):
            request = None if notification is None else Notification(SIGEV_SIGNAL, notification)
            _call("notify", self._name, lambda: self._backend.notify(mqd, request))
            return
        if not (
            isinstance(notification, tuple) and len(notification) == 2 and callable(notification[0])
        ):
            raise ValueError("notification must be a signal number, (callback, param) or None")
        callback, param = notification
        _call(
            "notify",
            self._name,
            lambda: self._backend.notify_thread(mqd, lambda: callback(param)),
        )

    def close(self) -> None:
        """mq_close. Closing twice is harmless; every other call afterwards is EBADF."""
        mqd, self._mqd = self._mqd, -1
        if mqd >= 0:
            _call("close", self._name, lambda: self._backend.close(mqd))

    def unlink(self) -> None:
        """mq_unlink the name; open descriptors keep working until closed."""
        unlink_message_queue(self._name, backend=self._backend)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}({self._name!r}, "
            f"mode={self.mode:#o}, max_message_size={self._max_message_size}, "
            f"max_messages={self._max_messages}, read={self._readable}, "
            f"write={self._writable}, backend={self._backend.spec()!r})"
        )


def unlink_message_queue(
    name: str, *, backend: Backend | None = None, mount: Path | str | None = None
) -> None:
    """mq_unlink(*name*): ExistentialError (ENOENT) if there is no such queue."""
    chosen = _resolve_backend(backend, mount)
    _call("unlink", name, lambda: chosen.unlink(name))


@dataclass(frozen=True, slots=True)
class RemovedMessage:
    """What :meth:`MessageQueue.remove` took out: the message's priority, its length, its
    first bytes (up to 224) and the queue's generation right after the removal."""

    priority: int
    length: int
    head: bytes
    generation: int


# -- trio ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """What :meth:`AsyncMessageQueue.statistics` reports (trio's ``statistics()`` shape)."""

    current_messages: int
    max_messages: int
    max_message_size: int
    tasks_waiting_send: int
    tasks_waiting_receive: int


class AsyncMessageQueue(trio.abc.AsyncResource):
    """The same queue for trio: ``await send/receive/peek`` wait on the descriptor's readiness.

    Takes MessageQueue's arguments; the descriptor is always non-blocking underneath, and
    ``block`` is this object's own switch (False: BusyError instead of waiting). Timeouts
    as the synchronous queue (0 tries once), or use trio's own ``move_on_after``/
    ``fail_after`` around a call. A task waiting when the queue is closed, and any call
    after :meth:`aclose`, gets ``trio.ClosedResourceError``, as trio's own resources do.
    ``send_nowait``/``receive_nowait`` raise ``trio.WouldBlock`` instead of waiting, ``async
    for message in queue`` receives until the queue is closed, and :meth:`statistics`
    says how many tasks wait in each direction.
    """

    def __init__(
        self,
        name: str | None,
        flags: int = 0,
        mode: int = 0o600,
        max_messages: int | None = None,
        max_message_size: int | None = None,
        read: bool = True,
        write: bool = True,
        *,
        backend: Backend | None = None,
        mount: Path | str | None = None,
    ) -> None:
        self.block = not flags & O_NONBLOCK
        self._receive_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._waiting = {True: 0, False: 0}  # tasks waiting to send (True) / receive
        self._queue = MessageQueue(
            name,
            flags | O_NONBLOCK,
            mode,
            max_messages,
            max_message_size,
            read,
            write,
            backend=backend,
            mount=mount,
        )

    @property
    def sync(self) -> MessageQueue:
        """The underlying (non-blocking) MessageQueue."""
        return self._queue

    @property
    def name(self) -> str:
        return self._queue.name

    @property
    def mqd(self) -> int:
        return self._queue.mqd

    @property
    def backend(self) -> Backend:
        return self._queue.backend

    @property
    def max_messages(self) -> int:
        return self._queue.max_messages

    @property
    def max_message_size(self) -> int:
        return self._queue.max_message_size

    @property
    def current_messages(self) -> int:
        return self._queue.current_messages

    def fileno(self) -> int:
        return self._queue.fileno()

    async def _retry(
        self,
        attempt: Callable[[], _T],
        timeout: float | None,
        writing: bool,
    ) -> _T:
        """Run *attempt* (a non-blocking call); on EAGAIN wait for readiness and retry.

        trio lets one task at a time wait for each direction of a descriptor, so waiters
        queue up on a lock per direction (FIFO) and take turns waiting on the fd.
        """
        _deadline(timeout)  # validates
        self._check_open()
        operation = "send" if writing else "receive"
        wait = trio.lowlevel.wait_writable if writing else trio.lowlevel.wait_readable
        lock = self._send_lock if writing else self._receive_lock
        await trio.lowlevel.checkpoint_if_cancelled()
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            while True:
                try:
                    result = attempt()
                except BusyError as exc:
                    if exc.errno != errno.EAGAIN or not self.block or timeout == 0:
                        raise
                    self._waiting[writing] += 1
                    try:
                        async with lock:
                            await wait(self._queue.fileno())
                    finally:
                        self._waiting[writing] -= 1
                    continue
                await trio.lowlevel.cancel_shielded_checkpoint()
                return result
        assert scope.cancelled_caught
        raise from_errno(errno.ETIMEDOUT, operation, self.name)

    async def send(self, message: Message, timeout: float | None = None, priority: int = 0) -> None:
        """Queue *message*, waiting (cancellably) while the queue is full."""
        queue = self._queue
        await self._retry(
            lambda: queue.send(message, priority=priority),
            timeout,
            writing=True,
        )

    async def receive(self, timeout: float | None = None) -> tuple[bytes, int]:
        """Take the next message, waiting (cancellably) while the queue is empty."""
        return await self._retry(self._queue.receive, timeout, writing=False)

    async def peek(self, index: int = 0) -> tuple[bytes, int]:
        """Message *index* in receive order, unconsumed; never waits, as the synchronous
        peek: BusyError (EAGAIN) on an empty queue, NoSuchMessage past the last message."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._queue.peek(index)

    @property
    def generation(self) -> int:
        """As :attr:`MessageQueue.generation` (never waits)."""
        self._check_open()
        return self._queue.generation

    async def remove(self, index: int, generation: int) -> RemovedMessage:
        """As :meth:`MessageQueue.remove`: never waits."""
        self._check_open()
        await trio.lowlevel.checkpoint()
        return self._queue.remove(index, generation)

    async def send_many(
        self, messages: Iterable[Message | tuple[Message, int]], timeout: float | None = None
    ) -> int:
        """Send every one of *messages* in order, as the synchronous send_many, waiting
        (cancellably; at most *timeout* seconds for each wait) while the queue is full.
        Returns how many were sent: all, or those sent before a wait timed out
        (BusyError if none was); with ``block = False`` as many as fit. Cancelled part
        way, it raises as trio code does: the messages sent so far stay sent."""
        items = [_prioritized(message) for message in messages]
        queue = self._queue
        sent = 0
        while sent < len(items):
            rest = items[sent:]
            try:
                attempt = functools.partial(queue.send_many, rest)
                sent += await self._retry(attempt, timeout, writing=True)
            except BusyError:
                if not sent:
                    raise
                break
            if not self.block:
                break
        return sent

    async def receive_many(self, max_count: int | None = None) -> list[tuple[bytes, int]]:
        """At least one message, at most *max_count*, as the synchronous receive_many,
        waiting (cancellably) while the queue is empty."""
        return await self._retry(lambda: self._queue.receive_many(max_count), None, writing=False)

    def send_nowait(self, message: Message, priority: int = 0) -> None:
        """Queue *message* now, or raise trio.WouldBlock if the queue is full."""
        self._check_open()
        try:
            self._queue.send(message, priority=priority)
        except BusyError as exc:
            raise trio.WouldBlock from exc

    def receive_nowait(self) -> tuple[bytes, int]:
        """The next message now, or trio.WouldBlock if the queue is empty."""
        self._check_open()
        try:
            return self._queue.receive()
        except BusyError as exc:
            raise trio.WouldBlock from exc

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> tuple[bytes, int]:
        """``async for message, priority in queue``: receives until the queue is closed."""
        try:
            return await self.receive()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None

    def statistics(self) -> QueueStatistics:
        """A snapshot: messages queued, the queue's limits, tasks waiting each way."""
        return QueueStatistics(
            current_messages=self.current_messages,
            max_messages=self.max_messages,
            max_message_size=self.max_message_size,
            tasks_waiting_send=self._waiting[True],
            tasks_waiting_receive=self._waiting[False],
        )

    def _check_open(self) -> None:
        if self._queue.mqd < 0:
            raise trio.ClosedResourceError(f"queue {self.name!r} is closed")

    async def peek_all(self) -> list[tuple[bytes, int]]:
        """Every queued message, unconsumed (never waits; ``[]`` when empty)."""
        await trio.lowlevel.checkpoint()
        return self._queue.peek_all()

    def close(self) -> None:
        """Close the descriptor; tasks waiting on it get trio.ClosedResourceError."""
        if self._queue.mqd >= 0:
            with suppress(RuntimeError):  # outside trio.run nobody can be waiting
                trio.lowlevel.notify_closing(self._queue.mqd)
        self._queue.close()

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def unlink(self) -> None:
        self._queue.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__module__}.AsyncMessageQueue({self._queue!r}, block={self.block})"


__all__ = [
    "MESSAGE_QUEUES_SUPPORTED",
    "O_CREAT",
    "O_CREX",
    "O_EXCL",
    "O_NONBLOCK",
    "O_RDONLY",
    "O_RDWR",
    "O_TRUNC",
    "O_WRONLY",
    "PAGE_SIZE",
    "QUEUE_MESSAGES_MAX_DEFAULT",
    "QUEUE_MESSAGE_SIZE_MAX_DEFAULT",
    "QUEUE_PRIORITY_MAX",
    "USER_SIGNAL_MAX",
    "USER_SIGNAL_MIN",
    "VERSION",
    "AsyncMessageQueue",
    "BusyError",
    "Error",
    "ExistentialError",
    "InvalidArgument",
    "MessageQueue",
    "MessageTooLong",
    "NoSuchMessage",
    "NotSupported",
    "PermissionsError",
    "QueueChanged",
    "QueueStatistics",
    "RemovedMessage",
    "SignalError",
    "unlink_message_queue",
]

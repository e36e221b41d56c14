"""The exceptions of mqfs: one tree for the daemon, the client and the CLI.

Every class carries the errno a POSIX caller would see. The server raises them and its
FUSE operations turn them into that errno (``mqfs.server.ops``); the client turns an
errno that comes back into the same class with :func:`from_errno`; the CLI prints
``str(exc)``: the message, then the errno's name. The middle layer holds posix_ipc's
names, so code written for ``posix_ipc`` catches what it always caught::

    MqfsError (an OSError: .errno, .strerror; posix_ipc's Error)
    ├── ExistentialError         posix_ipc's
    │   ├── NoSuchQueue          ENOENT        no queue of that name
    │   ├── NoSuchMessage        ENOENT        peek index >= curmsgs (also an IndexError)
    │   ├── QueueExists          EEXIST        O_CREAT|O_EXCL on an existing name
    │   └── BadDescriptor        EBADF         closed, or not open for that direction
    ├── BusyError                posix_ipc's
    │   ├── WouldBlock           EAGAIN        empty/full queue with O_NONBLOCK
    │   ├── TimedOut             ETIMEDOUT     the deadline passed while waiting
    │   └── Busy                 EBUSY         a notification is already registered
    ├── PermissionsError         posix_ipc's
    │   └── PermissionDenied     EACCES        mode bits, or a name the kernel refuses
    ├── SignalError              EINTR         posix_ipc's: a signal interrupted the wait
    ├── QueueChanged             ESTALE        REMOVE: the queue changed since the
    │                                          generation given (look again)
    ├── InvalidArgument          EINVAL        also a ValueError, as posix_ipc raises
    │   ├── NameTooLong          ENAMETOOLONG  name longer than NAME_MAX
    │   └── BadDump              EINVAL        a dump file that is not a valid dump
    ├── MessageTooLong           EMSGSIZE      also a ValueError
    ├── TooManyQueues            ENOSPC        queues_max reached
    ├── OverQuota                EMFILE        the user's RLIMIT_MSGQUEUE bytes exhausted
    ├── OutOfMemory              ENOMEM        a user's unfinished transfers at their limit
    ├── NotSupported             ENOTTY        no such ioctl here (also NotImplementedError)
    ├── StateError               EIO           the journal of -o state=DIR (a write's errno)
    │   ├── UnsafeStateDirectory EPERM         DIR writable by others, or not the daemon's
    │   ├── StateInUse           EBUSY         another daemon journals to DIR
    │   └── NewerJournal         EPROTONOSUPPORT  written by a newer journal format
    └── MountError                             the mount point, not a queue
        ├── NotMounted           ENOENT        mqfs is not mounted at that path
        ├── MountpointMissing    ENOENT        the directory to mount on does not exist
        ├── AlreadyMounted       EBUSY         something is mounted there already
        ├── DeadMount            ENOTCONN      mounted, but its daemon is gone
        └── MountFailed          EIO           fusermount3 or the daemon refused
"""

from __future__ import annotations

import errno
import os


class MqfsError(OSError):
    """Base class: an operation failed with ``self.errno``; ``str()`` is the message and
    the errno's name."""

    default_errno: int = errno.EIO

    def __init__(self, message: str = "", *, errno_value: int | None = None) -> None:
        code = self.default_errno if errno_value is None else errno_value
        super().__init__(code, message or os.strerror(code))

    @property
    def message(self) -> str:
        return str(self.strerror)

    def __str__(self) -> str:
        name = errno.errorcode.get(self.errno or 0)
        return f"{self.strerror} ({name})" if name else str(self.strerror)


Error = MqfsError
"""posix_ipc's name for the base class."""


class ExistentialError(MqfsError):
    default_errno = errno.ENOENT


class NoSuchQueue(ExistentialError):
    default_errno = errno.ENOENT


class NoSuchMessage(ExistentialError, IndexError):
    default_errno = errno.ENOENT


class QueueExists(ExistentialError):
    default_errno = errno.EEXIST


class BadDescriptor(ExistentialError):
    default_errno = errno.EBADF


class BusyError(MqfsError):
    default_errno = errno.EAGAIN


class WouldBlock(BusyError):
    default_errno = errno.EAGAIN


class TimedOut(BusyError):
    default_errno = errno.ETIMEDOUT


class Busy(BusyError):
    default_errno = errno.EBUSY


class PermissionsError(MqfsError):
    default_errno = errno.EPERM


class PermissionDenied(PermissionsError):
    default_errno = errno.EACCES


class SignalError(MqfsError):
    default_errno = errno.EINTR


class QueueChanged(MqfsError):
    """A REMOVE (``mqfs rm-msg``) named a message by its index in a queue as it was at a
    generation the queue has since left: the index may name another message now, so
    nothing was removed."""

    default_errno = errno.ESTALE


class InvalidArgument(MqfsError, ValueError):
    default_errno = errno.EINVAL


class BadDump(InvalidArgument):
    """A dump that cannot be restored; the message says where and what."""


class NameTooLong(InvalidArgument):
    default_errno = errno.ENAMETOOLONG


class MessageTooLong(MqfsError, ValueError):
    default_errno = errno.EMSGSIZE


class TooManyQueues(MqfsError):
    default_errno = errno.ENOSPC


class OverQuota(MqfsError):
    default_errno = errno.EMFILE


class OutOfMemory(MqfsError):
    default_errno = errno.ENOMEM


class NotSupported(MqfsError, NotImplementedError):
    default_errno = errno.ENOTTY


class CorruptQueue(MqfsError):
    """A fast-path queue's shared mapping holds values no queue can have (a process of the
    owner's wrote into it, or truncated it): the queue is unusable, other queues are not."""

    default_errno = errno.EUCLEAN


class StateError(MqfsError):
    """The journal of ``-o state=DIR`` cannot be used: at mount, or a write that failed
    (then with that write's errno, ENOSPC for a full disk)."""

    default_errno = errno.EIO


class UnsafeStateDirectory(StateError):
    default_errno = errno.EPERM


class StateInUse(StateError):
    default_errno = errno.EBUSY


class NewerJournal(StateError):
    default_errno = errno.EPROTONOSUPPORT


class MountError(MqfsError):
    """Something is wrong with the mount point rather than with a queue."""


class NotMounted(MountError):
    default_errno = errno.ENOENT


class MountpointMissing(MountError):
    default_errno = errno.ENOENT


class AlreadyMounted(MountError):
    default_errno = errno.EBUSY


class DeadMount(MountError):
    default_errno = errno.ENOTCONN


class MountFailed(MountError):
    default_errno = errno.EIO


_BY_ERRNO: dict[int, type[MqfsError]] = {
    errno.ENOENT: NoSuchQueue,
    errno.EEXIST: QueueExists,
    errno.EBADF: BadDescriptor,
    errno.EAGAIN: WouldBlock,
    errno.ETIMEDOUT: TimedOut,
    errno.EBUSY: Busy,
    errno.EPERM: PermissionsError,
    errno.EACCES: PermissionDenied,
    errno.EINTR: SignalError,
    errno.ESTALE: QueueChanged,
    errno.EINVAL: InvalidArgument,
    errno.ENAMETOOLONG: NameTooLong,
    errno.EMSGSIZE: MessageTooLong,
    errno.ENOSPC: TooManyQueues,
    errno.EMFILE: OverQuota,
    errno.ENOMEM: OutOfMemory,
    errno.ENOTTY: NotSupported,
    errno.EUCLEAN: CorruptQueue,
}


_BY_INDEX = frozenset({"peek", "remove"})
"""Operations that name a message by its index: their ENOENT is NoSuchMessage."""


def describe(code: int, operation: str, queue: str) -> str:
    """What errno *code* means for *operation* ("send", "receive", "peek", "create", ...)
    on *queue* (as the user named it), in the user's words."""
    waiting_on = "full" if operation == "send" else "empty"
    match code:
        case errno.ENOENT if operation in _BY_INDEX:
            return f"queue {queue!r} has no message at that index"
        case errno.ESTALE:
            return (
                f"queue {queue!r} changed since its messages were looked at: nothing was "
                "removed; look again"
            )
        case errno.ENOENT:
            return f"no queue named {queue!r}"
        case errno.EEXIST:
            return f"queue {queue!r} already exists"
        case errno.EAGAIN:
            return f"queue {queue!r} is {waiting_on}"
        case errno.ETIMEDOUT:
            return f"timed out: queue {queue!r} is still {waiting_on}"
        case errno.EBADF:
            return f"queue {queue!r} is closed"
        case errno.EINTR:
            return f"{operation} on queue {queue!r} was interrupted by a signal"
        case errno.EMSGSIZE if operation == "send":
            return f"the message is longer than the msgsize of queue {queue!r}"
        case errno.EACCES:
            return f"permission denied on queue {queue!r}"
        case errno.EMFILE:
            return (
                f"queue {queue!r} would exceed your RLIMIT_MSGQUEUE (ulimit -q): remove "
                "queues, use smaller ones, or mount with -o ignore_rlimit"
            )
        case errno.ENOSPC:
            return f"cannot create queue {queue!r}: the mount's queues_max is reached"
        case errno.EUCLEAN:
            return f"queue {queue!r} is corrupt: its shared mapping was damaged"
    return f"{operation} on queue {queue!r} failed: {os.strerror(code)}"


def from_errno(code: int, operation: str, queue: str, message: str | None = None) -> MqfsError:
    """The exception for errno *code* from *operation* on *queue*: the class of the
    tree for that errno (NoSuchMessage for the ENOENT of a peek or a remove), with
    *message* or else :func:`describe`'s text."""
    by_index = code == errno.ENOENT and operation in _BY_INDEX
    cls = NoSuchMessage if by_index else _BY_ERRNO.get(code)
    text = message if message is not None else describe(code, operation, queue)
    return (cls or MqfsError)(text, errno_value=code)

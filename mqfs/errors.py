"""The exceptions of mqfs, each carrying the errno a POSIX caller would see.

Layers below the filesystem (store, queue) raise these; ``fs.py`` is the only place
that turns them into ``pyfuse3.FUSEError``, and the client turns errno values coming
back from the kernel into them again. One tree::

    MqfsError (errno attribute; OSError subclass so ``.errno``/``strerror`` work)
    ├── InvalidArgument      EINVAL        bad priority, attribute, flag, timeout
    ├── MessageTooLong       EMSGSIZE      message > msgsize, or buffer < msgsize
    ├── WouldBlock           EAGAIN        empty/full queue with O_NONBLOCK
    ├── TimedOut             ETIMEDOUT     deadline passed while waiting
    ├── Interrupted          EINTR         wait cancelled by a FUSE interrupt
    ├── BadDescriptor        EBADF         wrong access direction for the call
    ├── NoSuchMessage        ENOENT        peek index >= curmsgs
    ├── NoSuchQueue          ENOENT        no queue of that name
    ├── QueueExists          EEXIST        O_CREAT|O_EXCL on an existing name
    ├── TooManyQueues        ENOSPC        queues_max reached
    ├── OverQuota            EMFILE        the user's RLIMIT_MSGQUEUE bytes exhausted
    ├── OutOfMemory          ENOMEM        a user's unfinished multi-chunk transfers are
    │                                      at their limit
    ├── NameTooLong          ENAMETOOLONG  name longer than NAME_MAX
    ├── PermissionDenied     EACCES        mode bits, or a name the kernel refuses
    ├── Busy                 EBUSY         notify already registered
    └── NotSupported         ENOTTY        unknown ioctl
"""

from __future__ import annotations

import errno
import os


class MqfsError(OSError):
    """Base class: an operation failed with ``self.errno``."""

    default_errno: int = errno.EIO

    def __init__(self, message: str = "", *, errno_value: int | None = None) -> None:
        code = self.default_errno if errno_value is None else errno_value
        super().__init__(code, message or os.strerror(code))

    @property
    def message(self) -> str:
        return str(self.strerror)


class InvalidArgument(MqfsError):
    default_errno = errno.EINVAL


class MessageTooLong(MqfsError):
    default_errno = errno.EMSGSIZE


class WouldBlock(MqfsError):
    default_errno = errno.EAGAIN


class TimedOut(MqfsError):
    default_errno = errno.ETIMEDOUT


class Interrupted(MqfsError):
    default_errno = errno.EINTR


class BadDescriptor(MqfsError):
    default_errno = errno.EBADF


class NoSuchMessage(MqfsError):
    default_errno = errno.ENOENT


class NoSuchQueue(MqfsError):
    default_errno = errno.ENOENT


class QueueExists(MqfsError):
    default_errno = errno.EEXIST


class TooManyQueues(MqfsError):
    default_errno = errno.ENOSPC


class OverQuota(MqfsError):
    default_errno = errno.EMFILE


class OutOfMemory(MqfsError):
    default_errno = errno.ENOMEM


class NameTooLong(MqfsError):
    default_errno = errno.ENAMETOOLONG


class PermissionDenied(MqfsError):
    default_errno = errno.EACCES


class Busy(MqfsError):
    default_errno = errno.EBUSY


class NotSupported(MqfsError):
    default_errno = errno.ENOTTY

"""The one exception tree: errno in, class and one-line text out, posix_ipc's groups."""

from __future__ import annotations

import errno

import pytest

from mqfs import errors


@pytest.mark.parametrize(
    ("code", "operation", "cls", "group"),
    [
        (errno.ENOENT, "open", errors.NoSuchQueue, errors.ExistentialError),
        (errno.ENOENT, "peek", errors.NoSuchMessage, IndexError),
        (errno.ENOENT, "remove", errors.NoSuchMessage, IndexError),
        (errno.ESTALE, "remove", errors.QueueChanged, errors.Error),
        (errno.EEXIST, "create", errors.QueueExists, errors.ExistentialError),
        (errno.EBADF, "send", errors.BadDescriptor, errors.ExistentialError),
        (errno.EAGAIN, "send", errors.WouldBlock, errors.BusyError),
        (errno.ETIMEDOUT, "receive", errors.TimedOut, errors.BusyError),
        (errno.EBUSY, "notify", errors.Busy, errors.BusyError),
        (errno.EACCES, "open", errors.PermissionDenied, errors.PermissionsError),
        (errno.EPERM, "open", errors.PermissionsError, errors.Error),
        (errno.EINTR, "receive", errors.SignalError, errors.Error),
        (errno.EINVAL, "send", errors.InvalidArgument, ValueError),
        (errno.ENAMETOOLONG, "open", errors.NameTooLong, ValueError),
        (errno.EMSGSIZE, "send", errors.MessageTooLong, ValueError),
        (errno.ENOTTY, "peek", errors.NotSupported, NotImplementedError),
        (errno.EMFILE, "create", errors.OverQuota, errors.Error),
        (errno.EXDEV, "open", errors.MqfsError, OSError),  # no class of its own: errno kept
    ],
)
def test_from_errno_picks_the_class_of_the_tree(
    code: int, operation: str, cls: type[errors.MqfsError], group: type[Exception]
) -> None:
    error = errors.from_errno(code, operation, "/q")
    assert type(error) is cls
    assert isinstance(error, group)
    assert error.errno == code
    assert str(error).endswith(f"({errno.errorcode[code]})")
    assert "/q" in str(error)


def test_the_text_says_what_to_do_about_the_rlimit() -> None:
    text = str(errors.from_errno(errno.EMFILE, "create", "big"))
    assert "ulimit -q" in text and "-o ignore_rlimit" in text


def test_a_raised_class_keeps_its_errno_and_prints_one_line() -> None:
    error = errors.QueueExists("queue 'q' already exists")
    assert (error.errno, str(error)) == (errno.EEXIST, "queue 'q' already exists (EEXIST)")
    assert errors.MountpointMissing("x").errno == errno.ENOENT
    assert isinstance(errors.AlreadyMounted("x"), errors.MountError)
    assert not isinstance(errors.NotMounted("x"), errors.NoSuchQueue)

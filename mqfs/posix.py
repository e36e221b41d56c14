"""POSIX message-queue constants and name rules, as Linux has them (pure; shared by both halves)."""

from __future__ import annotations

import os

from mqfs import errors

NAME_MAX = 255
"""The longest queue name in bytes, after glibc strips the leading '/'."""

MQ_PRIO_MAX = 32768
"""Priorities are 0 .. MQ_PRIO_MAX-1, as Linux's (sysconf(_SC_MQ_PRIO_MAX))."""

# sigevent.sigev_notify: <signal.h>'s values (Python's os module does not export them).
SIGEV_SIGNAL = 0
SIGEV_NONE = 1
SIGEV_THREAD = 2

SI_MESGQ = -3
"""siginfo.si_code of a signal sent by mq_notify (the kernel's SI_MESGQ)."""


def check_name(name: str) -> None:
    """A queue name as the kernel's mqueue filesystem takes it (after glibc strips '/'),
    with the kernel's errno and a message that says what is wrong with it."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise errors.NameTooLong(
            f"queue name of {len(os.fsencode(name))} bytes: at most {NAME_MAX} bytes"
        )
    if name == "":
        raise errors.NoSuchQueue("empty queue name: give a name such as 'jobs' or '/jobs'")
    if name in (".", ".."):
        raise errors.PermissionDenied(f"queue name {name!r} is reserved")
    if "/" in name:
        raise errors.PermissionDenied(
            f"queue name {name!r} contains '/': only one leading '/' is allowed"
        )
    if "\0" in name:
        raise errors.PermissionDenied(f"queue name {name!r} contains a NUL byte")


def strip_posix_name(posix_name: str) -> str:
    """mq_open's "/name" -> "name", with glibc's and the kernel's errors."""
    if not posix_name.startswith("/"):
        raise errors.InvalidArgument(f"queue name {posix_name!r} does not start with '/'")
    name = posix_name[1:]
    check_name(name)
    return name


def queue_name(text: str) -> str:
    """A name as a person types it, "jobs" or POSIX's "/jobs": the bare, checked name."""
    name = text[1:] if text.startswith("/") else text
    check_name(name)
    return name

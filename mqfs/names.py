"""Queue names, checked as Linux checks them (pure; shared by the daemon and the clients)."""

from __future__ import annotations

import os

from mqfs import errors

NAME_MAX = 255


def check_name(name: str) -> None:
    """A queue name as the kernel's mqueue filesystem takes it (after glibc strips '/')."""
    if len(os.fsencode(name)) > NAME_MAX:
        raise errors.NameTooLong(f"queue name longer than {NAME_MAX} bytes")
    if name == "":
        raise errors.NoSuchQueue("empty queue name")
    if name in (".", "..") or "/" in name or "\0" in name:
        raise errors.PermissionDenied(f"invalid queue name {name!r}")


def strip_posix_name(posix_name: str) -> str:
    """mq_open's "/name" -> "name", with glibc's and the kernel's errors."""
    if not posix_name.startswith("/"):
        raise errors.InvalidArgument(f"queue name {posix_name!r} does not start with '/'")
    name = posix_name[1:]
    check_name(name)
    return name

"""What is mounted where, from /proc/self/mounts (pure: no trio, no pyfuse3)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from mqfs import errors

FSTYPE = "fuse.mqfs"
"""The type /proc/self/mounts shows for an mqfs mount."""


def _unescape(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _table() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount of this mount namespace."""
    with open("/proc/self/mounts") as mounts:
        rows = [line.split() for line in mounts]
    return [(_unescape(row[1]), row[2]) for row in rows if len(row) > 2]


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace."""
    return [point for point, _ in _table()]


def require_mqfs(path: Path | str) -> Path:
    """*path* if an mqfs daemon is serving there; else the mount error that says what is
    wrong (not mounted, not mqfs, or mounted but its daemon is gone)."""
    where = os.path.realpath(path)
    types = [fstype for point, fstype in _table() if point == where]
    if not types:
        raise errors.NotMounted(f"mqfs is not mounted at {path}")
    if types[-1] != FSTYPE:
        raise errors.NotMounted(f"{path} is not an mqfs mount (it is {types[-1]})")
    try:
        os.stat(where)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise errors.DeadMount(
                f"the mqfs daemon at {path} is gone (the mount is dead): "
                f"run 'mqfs umount {path}', then mount again"
            ) from None
        raise
    return Path(path)


def is_mounted(path: Path | str) -> bool:
    """True if something is mounted exactly at *path* (symlinks resolved)."""
    return os.path.realpath(path) in mount_points()


def mounts_under(root: Path | str) -> list[str]:
    """The mount points strictly below directory *root*."""
    prefix = f"{root}/"
    return [point for point in mount_points() if point.startswith(prefix)]

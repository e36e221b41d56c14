"""What is mounted where, from /proc/self/mounts (pure: no trio, no pyfuse3)."""

from __future__ import annotations

import os
from pathlib import Path


def mount_points() -> list[str]:
    """Every mount point of this process's mount namespace."""
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if len(line.split()) > 1]


def is_mounted(path: Path | str) -> bool:
    """True if something is mounted exactly at *path* (symlinks resolved)."""
    return os.path.realpath(path) in mount_points()


def mounts_under(root: Path | str) -> list[str]:
    """The mount points strictly below directory *root*."""
    prefix = f"{root}/"
    return [point for point in mount_points() if point.startswith(prefix)]

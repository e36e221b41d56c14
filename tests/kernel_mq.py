"""The kernel's mqueue filesystem for side-by-side tests (the mq_* calls themselves are
mqfs.client.backends.KernelBackend).

Mounts ``-t mqueue`` at a temporary directory so the kernel's status line can be read;
``available()`` says why the kernel side cannot run here, so tests skip with that reason.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def available() -> str | None:
    """None if the kernel's mqueue can be used and mounted here, else why not."""
    if os.geteuid() != 0:
        return "mounting the kernel's mqueue needs root"
    if "mqueue" not in Path("/proc/filesystems").read_text():
        return "this kernel has no mqueue filesystem"
    return None


@contextmanager
def mqueue_mount() -> Iterator[Path]:
    """The kernel's mqueue filesystem mounted at a temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="kernel-mqueue-"))
    done = subprocess.run(
        ["mount", "-t", "mqueue", "none", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        path.rmdir()
        raise RuntimeError(f"mount -t mqueue failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()

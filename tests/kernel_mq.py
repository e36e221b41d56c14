"""The kernel's POSIX message queues through ctypes, for side-by-side tests.

Talks to librt's mq_* directly (no extra package), and mounts ``-t mqueue`` at a
temporary directory so the kernel's status line can be read. ``available()`` says
why the kernel side cannot run here, so tests skip with that reason.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class MqAttr(ctypes.Structure):
    _fields_ = [
        ("mq_flags", ctypes.c_long),
        ("mq_maxmsg", ctypes.c_long),
        ("mq_msgsize", ctypes.c_long),
        ("mq_curmsgs", ctypes.c_long),
        ("pad", ctypes.c_long * 4),
    ]


_rt = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
_rt.mq_open.restype = ctypes.c_int
_rt.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(MqAttr)]
_rt.mq_send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint]
_rt.mq_receive.restype = ctypes.c_ssize_t
_rt.mq_receive.argtypes = [
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_uint),
]
_rt.mq_unlink.argtypes = [ctypes.c_char_p]
_rt.mq_close.argtypes = [ctypes.c_int]


def _check(result: int) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def mq_open(name: str, flags: int, mode: int = 0o600, maxmsg: int = 0, msgsize: int = 0) -> int:
    attr = MqAttr(0, maxmsg, msgsize, 0) if maxmsg else None
    pointer = ctypes.pointer(attr) if attr is not None else None
    return _check(_rt.mq_open(name.encode(), flags, mode, pointer))


def mq_send(mqd: int, message: bytes, priority: int = 0) -> None:
    _check(_rt.mq_send(mqd, message, len(message), priority))


def mq_receive(mqd: int, bufsize: int) -> tuple[bytes, int]:
    buffer = ctypes.create_string_buffer(bufsize)
    priority = ctypes.c_uint()
    length = _check(_rt.mq_receive(mqd, buffer, bufsize, ctypes.byref(priority)))
    return buffer.raw[:length], priority.value


def mq_close(mqd: int) -> None:
    _check(_rt.mq_close(mqd))


def mq_unlink(name: str) -> None:
    _check(_rt.mq_unlink(name.encode()))


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

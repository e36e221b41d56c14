"""libc calls that Python's os and signal modules lack (Python 3.11), through ctypes."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from mqfs.client.backends import _Timespec

CLONE_NEWIPC = 0x08000000

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), what)


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread, e.g. CLONE_NEWIPC."""
    _check(libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    """setns(2): move the calling thread into the namespace open at *fd*."""
    _check(libc.setns(fd, nstype), "setns")


def sigtimedwait(signo: int, timeout: float) -> tuple[int, int, int, int, int] | None:
    """(si_signo, si_code, si_value, si_pid, si_uid) of a pending *signo*, or None.

    ctypes on a whole 128-byte siginfo_t: Python's signal.sigtimedwait has no si_value.
    """
    sigset = (ctypes.c_ubyte * 128)()
    libc.sigemptyset(sigset)
    libc.sigaddset(sigset, signo)
    info = (ctypes.c_ubyte * 128)()
    seconds = int(timeout)
    wait = _Timespec(seconds, int((timeout - seconds) * 1e9))
    while True:
        if libc.sigtimedwait(sigset, info, ctypes.byref(wait)) >= 0:
            break
        code = ctypes.get_errno()
        if code == errno.EAGAIN:
            return None
        if code != errno.EINTR:
            raise OSError(code, os.strerror(code), "sigtimedwait")
    raw = bytes(info)
    si_signo, _, si_code = struct.unpack_from("iii", raw, 0)
    si_pid, si_uid = struct.unpack_from("iI", raw, 16)
    (si_value,) = struct.unpack_from("Q", raw, 24)
    return si_signo, si_code, si_value, si_pid, si_uid

"""What the daemon learns about and does to its callers' processes, through /proc and signals.

FUSE tells the daemon the *thread* id of each caller; the kernel's mqueue thinks in
processes (thread groups): a registration belongs to a process, a signal is sent to a
process, si_pid names a process. These helpers bridge that, and deliver mq_notify's
SIGEV_SIGNAL the way the kernel does: ``rt_sigqueueinfo`` with si_code SI_MESGQ, the
registered si_value and the sender's pid and uid (a negative si_code other than SI_TKILL
may be sent to another process, so the signal looks exactly like the kernel's).
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING

from mqfs import wire

if TYPE_CHECKING:
    from mqfs.queue import Caller, Notification

log = logging.getLogger(__name__)

SI_MESGQ = -3
_SYS_RT_SIGQUEUEINFO = {"x86_64": 129, "aarch64": 138, "i686": 178, "riscv64": 138}


def tgid_of(tid: int) -> int:
    """The process (thread group) a thread belongs to; *tid* itself if /proc cannot say."""
    try:
        for line in Path(f"/proc/{tid}/status").read_text().splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return tid


def msgqueue_rlimit(pid: int) -> float:
    """The soft RLIMIT_MSGQUEUE of process *pid* in bytes (inf if unlimited or unknown)."""
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max msgqueue size"):
                soft = line.split()[3]
                return math.inf if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        pass
    return math.inf


class _SigInfo(ctypes.Structure):
    """The rt (sigqueue) layout of siginfo_t on 64-bit Linux: 128 bytes."""

    _fields_ = (
        ("si_signo", ctypes.c_int),
        ("si_errno", ctypes.c_int),
        ("si_code", ctypes.c_int),
        ("pad0", ctypes.c_int),
        ("si_pid", ctypes.c_int),
        ("si_uid", ctypes.c_uint),
        ("si_value", ctypes.c_uint64),
        ("pad", ctypes.c_byte * 96),
    )


_libc = ctypes.CDLL(None, use_errno=True)


def queue_signal(pid: int, signo: int, value: int, sender_pid: int, sender_uid: int) -> None:
    """Send *signo* to process *pid* as the kernel's mqueue notification does."""
    number = _SYS_RT_SIGQUEUEINFO.get(platform.machine())
    info = _SigInfo(signo, 0, SI_MESGQ, 0, sender_pid, sender_uid, value & 0xFFFFFFFFFFFFFFFF)
    if number is None:  # an architecture we have no number for: a plain signal
        os.kill(pid, signo)
        return
    if _libc.syscall(number, pid, signo, ctypes.byref(info)) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def deliver_notification(registration: Notification, sender: Caller | None) -> None:
    """Fire an mq_notify registration: SIGEV_SIGNAL sends its signal, SIGEV_NONE nothing."""
    if registration.sigev_notify != wire.SIGEV_SIGNAL or registration.signo == 0:
        return
    sender_pid = tgid_of(sender.pid) if sender else 0
    sender_uid = sender.uid if sender else 0
    try:
        queue_signal(
            registration.pid, registration.signo, registration.value, sender_pid, sender_uid
        )
    except OSError as exc:  # the registered process is gone: nothing to tell
        log.debug("notification to pid %d not delivered: %s", registration.pid, exc)

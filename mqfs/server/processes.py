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

from mqfs import posix

if TYPE_CHECKING:
    from mqfs.server.queue import Caller, Notification

log = logging.getLogger(__name__)

_SYS_RT_SIGQUEUEINFO = {"x86_64": 129, "aarch64": 138, "i686": 178, "riscv64": 138}


def _status_field(pid: int, name: str) -> str | None:
    """The value of field *name* ("Tgid", "CapEff", ...) of /proc/PID/status, or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
    except OSError:
        pass
    return None


def tgid_of(tid: int) -> int:
    """The process (thread group) a thread belongs to; *tid* itself if /proc cannot say."""
    value = _status_field(tid, "Tgid")
    return int(value) if value and value.isdigit() else tid


def command_of(pid: int) -> str | None:
    """The command name of process *pid* (/proc/PID/comm), or None if it cannot be read."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")
    except OSError:
        return None


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


_libc = ctypes.CDLL(None, use_errno=True)
_libc.process_vm_readv.restype = ctypes.c_ssize_t
CAP_SYS_RESOURCE = 24


def has_sys_resource(pid: int) -> bool:
    """Whether process *pid* has CAP_SYS_RESOURCE in its effective set (which the kernel's
    mqueue checks with capable()); False if /proc cannot say."""
    value = _status_field(pid, "CapEff")
    try:
        return value is not None and bool(int(value, 16) >> CAP_SYS_RESOURCE & 1)
    except ValueError:
        return False


# System calls that write a caller's buffer to a file, by (x86-64) number: where the
# length argument is, or that it is an iovec array (address, count).
# write pwrite64 sendfile splice copy_file_range; writev pwritev pwritev2
_SYS_WRITE_LENGTH = {"x86_64": {1: 2, 18: 2, 40: 3, 275: 4, 326: 4}}
_SYS_WRITEV = {"x86_64": {20, 296, 328}}
_IOV_MAX = 1024


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


def pending_write_size(tid: int) -> int | None:
    """How many bytes thread *tid* asked to write in the system call it is blocked in
    (the whole of it, however the kernel cuts it into FUSE requests); None when that
    cannot be known: not a write call we know, another architecture, another PID
    namespace (FUSE then reports pid 0), or no permission to look."""
    machine = platform.machine()
    if tid <= 0 or machine not in _SYS_WRITE_LENGTH:
        return None
    try:
        fields = Path(f"/proc/{tid}/syscall").read_text().split()
        number, arguments = int(fields[0]), [int(field, 16) for field in fields[1:7]]
    except (OSError, ValueError, IndexError):
        return None
    if number in _SYS_WRITE_LENGTH[machine]:
        return arguments[_SYS_WRITE_LENGTH[machine][number]]
    if number in _SYS_WRITEV[machine]:
        return _iovec_total(tid, arguments[1], arguments[2])
    return None


def _iovec_total(tid: int, address: int, count: int) -> int | None:
    """The summed lengths of the *count* iovecs at *address* in *tid*'s memory."""
    if not 0 < count <= _IOV_MAX:
        return None
    vectors = (_IoVec * count)()
    local = _IoVec(ctypes.addressof(vectors), ctypes.sizeof(vectors))
    remote = _IoVec(address, ctypes.sizeof(vectors))
    copied = _libc.process_vm_readv(tid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if copied != ctypes.sizeof(vectors):
        return None
    return sum(int(vector.length) for vector in vectors)


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


def queue_signal(pid: int, signo: int, value: int, sender_pid: int, sender_uid: int) -> None:
    """Send *signo* to process *pid* as the kernel's mqueue notification does."""
    number = _SYS_RT_SIGQUEUEINFO.get(platform.machine())
    info = _SigInfo(signo, 0, posix.SI_MESGQ, 0, sender_pid, sender_uid, value & 0xFFFFFFFFFFFFFFFF)
    if number is None:  # an architecture we have no number for: a plain signal
        os.kill(pid, signo)
        return
    if _libc.syscall(number, pid, signo, ctypes.byref(info)) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def deliver_notification(registration: Notification, sender: Caller | None) -> None:
    """Fire an mq_notify registration: SIGEV_SIGNAL sends its signal, SIGEV_NONE nothing."""
    if registration.sigev_notify != posix.SIGEV_SIGNAL or registration.signo == 0:
        return
    sender_pid = tgid_of(sender.pid) if sender else 0
    sender_uid = sender.uid if sender else 0
    try:
        queue_signal(
            registration.pid, registration.signo, registration.value, sender_pid, sender_uid
        )
    except OSError as exc:  # the registered process is gone: nothing to tell
        log.debug("notification to pid %d not delivered: %s", registration.pid, exc)

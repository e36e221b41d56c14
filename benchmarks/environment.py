"""What is measured and where: the kernel's queues, mqfs daemons, CPU placement, RSS guard.

The process moves into a private IPC namespace (``unshare(CLONE_NEWIPC)``), so the kernel
queues it makes are invisible to, and cannot collide with, the rest of the machine (if
that fails, the names carry the pid and are unlinked at the end). mqfs daemons are started
in the foreground at temporary mount points, each in its own session and told to die with
this process, and are always stopped and unmounted in ``finally`` — after an error, Ctrl-C
or SIGTERM too. Single-threaded figures run with this process and the daemon pinned to one
CPU (``--no-pin`` to leave them free): a FUSE round trip between two CPUs costs about twice
one on a shared CPU, and unpinned the scheduler flips between the two mid-run. The 2+2
runs use every CPU; the runs of 1-64 queues put the daemon alone on the pinned CPU and
their processes on the others (``set_apart``).

A daemon whose RSS grows by 1 GiB (RSS_GROWTH_GUARD) while a loop creates queues in it is
stopped early (``guarded_loop``), so that a leaking daemon cannot take the machine's memory.

Importing this module puts the repository on ``sys.path``, so that a measurement can use
the tests' helpers (``tests.support``) rather than a copy of them.
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqfs import errors
from mqfs.cli import launch
from mqfs.client import calls
from mqfs.client.backends import KernelBackend
from mqfs.mounts import mounts_under
from report import progress
from timing import Scale

ROOT = Path(__file__).resolve().parent.parent  # the repository
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

CLONE_NEWIPC = 0x08000000
PR_SET_PDEATHSIG = 1
MOUNT_OPTIONS = ("msg_max=65536", "msgsize_max=8192", "ignore_rlimit")
SMALL, LARGE = 64, 8192  # message sizes, in bytes
PAIR_QUEUE_DEPTH = 10  # the kernel's msg_max in a fresh IPC namespace
RSS_GROWTH_GUARD = 1 << 30  # stop creating queues once the daemon's RSS grew by 1 GiB
GUARD_TEXT = f"RSS grew by {RSS_GROWTH_GUARD / 2**30:g} GiB"
RSS_CHECK_EVERY = 256  # queues or cycles between two looks at the daemon's RSS

_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """The benchmark could not run (not a target that failed)."""


# -- the run as a whole --------------------------------------------------------------------


@dataclass
class Workspace:
    """Where a run puts things; all of it is removed at the end."""

    kernel: KernelQueues  # the kernel queues made (unlinked at the end)
    workdir: Path  # mount points and daemon logs
    baseline_dir: Path  # tmpfs: the files the mqfs commands are compared with


@contextmanager
def workspace() -> Iterator[Workspace]:
    """Temporary directories and a kernel queue namer; unlink and remove all at the end (a
    workdir that still has a mount below it is left alone rather than emptied through it)."""
    kernel = KernelQueues(KernelBackend(), f"mqfs-bench-{os.getpid()}")
    workdir = Path(tempfile.mkdtemp(prefix="mqfs-bench-"))
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    baseline_dir = Path(tempfile.mkdtemp(prefix="mqfs-bench-", dir=shm))
    try:
        yield Workspace(kernel, workdir, baseline_dir)
    finally:
        kernel.unlink_all()
        shutil.rmtree(baseline_dir, ignore_errors=True)
        if not mounts_under(workdir):
            shutil.rmtree(workdir, ignore_errors=True)


def describe(
    scale: Scale, quick: bool, pin: set[int] | None, private: bool, commit: tuple[str, bool]
) -> dict[str, Any]:
    """The run's meta data: machine, code, scale and set-up."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": commit[0],
        "dirty": commit[1],
        "quick": quick,
        "repetitions": scale.repetitions,
        "rep_seconds": scale.rep_seconds,
        "private_ipc_namespace": private,
        "pinned_cpus": sorted(pin) if pin else None,
        "mount_options": list(MOUNT_OPTIONS),
    }


def git_commit() -> tuple[str, bool]:
    """The checkout's short commit, and whether tracked files have local changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False
    return commit, bool(dirty)


@contextmanager
def placed(pids: Sequence[int], cpus: set[int] | None) -> Iterator[None]:
    """Run with this process (and forks) and *pids* on *cpus*; None leaves them free.

    A FUSE round trip costs about twice as much when the caller and the daemon sit on
    different CPUs (a cross-CPU wake-up, expensive in a VM) as when they share one, and
    the scheduler moves them between the two placements at will: unpinned, a figure and
    its baseline can be measured in different placements. So single-threaded figures run
    with both on one CPU (a synchronous round trip never uses two at once).
    """
    everywhere = os.sched_getaffinity(0)
    for pid in (0, *pids):
        os.sched_setaffinity(pid, cpus or everywhere)
    try:
        yield
    finally:
        _free(pids, everywhere)


def _free(pids: Sequence[int], everywhere: set[int]) -> None:
    """This process and *pids* may run on every CPU again."""
    for pid in (0, *pids):
        with suppress(OSError):  # the daemon may be gone after an error
            os.sched_setaffinity(pid, everywhere)


@contextmanager
def set_apart(pids: Sequence[int], cpus: set[int] | None) -> Iterator[None]:
    """Run *pids* (a daemon) alone on *cpus*, and this process and what it forks on every
    other CPU; None, or no other CPU, leaves all of them free.

    For many client processes against one single-threaded daemon: the daemon's CPU is
    what bounds the total, and unpinned the scheduler hands part of it to whichever of
    the clients (or anything else on the machine) is runnable, differently at each count
    of clients. Apart, a figure is about what the daemon does with more clients.
    """
    everywhere = os.sched_getaffinity(0)
    others = everywhere - cpus if cpus else set()
    if not cpus or not others:
        yield
        return
    for pid in pids:
        os.sched_setaffinity(pid, cpus)
    os.sched_setaffinity(0, others)
    try:
        yield
    finally:
        _free(pids, everywhere)


# -- the kernel side -----------------------------------------------------------------------


def private_ipc_namespace() -> bool:
    """Move into a fresh IPC namespace (the machine's queues stay untouched)."""
    if _libc.unshare(CLONE_NEWIPC) == 0:
        return True
    code = ctypes.get_errno()
    progress(f"unshare(CLONE_NEWIPC) failed ({os.strerror(code)}): using unique queue names")
    return False


def die_with_parent() -> None:
    """In a forked worker: be SIGKILLed when the benchmark process dies, so that a worker
    blocked in a receive cannot outlive it (PR_SET_PDEATHSIG)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def lift_msgqueue_rlimit() -> None:
    """RLIMIT_MSGQUEUE is per user: other kernel queues of root must not make us fail."""
    with suppress(ValueError, OSError):
        unlimited = resource.RLIM_INFINITY
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (unlimited, unlimited))


@dataclass
class KernelQueues:
    backend: KernelBackend
    prefix: str
    names: list[str] = field(default_factory=list)

    def open(self, name: str, msgsize: int) -> int:
        full = f"/{self.prefix}-{name}"
        mqd = self.backend.open(full, os.O_RDWR | os.O_CREAT, 0o600, (PAIR_QUEUE_DEPTH, msgsize))
        self.names.append(full)
        return mqd

    def unlink_all(self) -> None:
        for name in self.names:
            with suppress(OSError):
                self.backend.unlink(name)


# -- the mqfs side -------------------------------------------------------------------------


@dataclass
class Daemon:
    path: Path
    process: subprocess.Popen[bytes]
    log: Path

    def rss(self) -> int:
        """The daemon's resident set size in bytes (VmRSS)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise BenchError("no VmRSS in the daemon's /proc status")
        return int(match.group(1)) * 1024

    def create(self, name: str, maxmsg: int, msgsize: int) -> Path:
        calls.create_at(self.path, name, 0o600, maxmsg=maxmsg, msgsize=msgsize)
        return self.path / name


@contextmanager
def mqfs_daemon(workdir: Path, options: Sequence[str]) -> Iterator[Daemon]:
    """Mount a foreground mqfs daemon at a new directory; always stop and unmount it."""
    path = Path(tempfile.mkdtemp(prefix="mnt-", dir=workdir))
    log_path = path.with_name(path.name + ".log")
    try:
        with launch.running(path, options, log_path) as process:
            yield Daemon(path, process, log_path)
    except errors.MountFailed as exc:
        raise BenchError(str(exc)) from None
    finally:
        if log_path.exists() and "Traceback" in log_path.read_text(errors="replace"):
            progress(f"warning: the daemon at {path} logged an exception, see {log_path}")
        with suppress(OSError):
            path.rmdir()


def open_queue(queue_dir: Path, flags: int = os.O_RDWR) -> int:
    """An open queue file whose read() receives (RECEIVE_ON_READ)."""
    fd = os.open(queue_dir / "queue", flags | os.O_CLOEXEC)
    calls.receive_on_read(fd)
    return fd


def fill(fd: int, count: int) -> None:
    """Queue *count* distinct 64-byte messages (message i is its index, zero-padded)."""
    for index in range(count):
        os.write(fd, b"%064d" % index)


# -- the RSS guard -------------------------------------------------------------------------


def rss_guard_tripped(daemon: Daemon, fresh_rss: int) -> bool:
    """Whether the daemon's RSS grew by more than RSS_GROWTH_GUARD since *fresh_rss*.

    A daemon that leaks on every queue would otherwise take the machine's memory with
    it: 100,000 queues at 256 KiB each are 26 GB.
    """
    return daemon.rss() - fresh_rss > RSS_GROWTH_GUARD


def guarded_loop(
    daemon: Daemon, fresh_rss: int, first: int, stop: int, step: Callable[[int], object]
) -> int:
    """step(first) .. step(stop - 1), looking at the RSS guard every RSS_CHECK_EVERY steps;
    returns the index reached: short of *stop* if the guard tripped."""
    for index in range(first, stop):
        if (index - first) % RSS_CHECK_EVERY == 0 and rss_guard_tripped(daemon, fresh_rss):
            return index
        step(index)
    return stop

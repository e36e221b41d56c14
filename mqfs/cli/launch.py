"""Start an mqfs daemon: the one launcher, for `mqfs mount`, the tests and the benchmark.

:func:`spawn` runs ``mqfs mount --foreground`` with the write end of a pipe on which the
daemon says ``ready`` once it has mounted, and returns then; if the daemon dies or hangs
first, it raises :class:`~mqfs.errors.MountFailed` with the last line of its log. The
daemon runs in a session of its own, so a Ctrl-C at the caller's terminal is the
caller's to handle.

``mqfs mount`` lets the daemon go on alone. :func:`running` (tests, benchmark) ties it
to the caller instead: it dies with the caller (PR_SET_PDEATHSIG: SIGTERM, on which it
unmounts), so a caller that is killed leaves no live mount behind, and it is stopped when
the block ends (SIGTERM, SIGKILL if wedged, then a lazy unmount if still mounted).
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from mqfs import errors
from mqfs.mounts import is_mounted

READY_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def daemon_command(mountpoint: Path, options: Sequence[str], ready_fd: int) -> list[str]:
    """The command line of a foreground daemon that writes "ready" to *ready_fd*."""
    # -P: not the current directory first on sys.path, where a checkout's folder `mqfs`
    # would hide the installed package.
    command = [sys.executable, "-P", "-m", "mqfs", "mount", "--foreground"]
    command += ["--ready-fd", str(ready_fd), str(mountpoint.resolve())]
    for option in options:
        command += ["-o", option]
    return command


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    mountpoint: Path, options: Sequence[str], log: BinaryIO, *, tied: bool
) -> subprocess.Popen[bytes]:
    """Start a daemon mounting *mountpoint*, its output appended to *log* (a file open
    for reading and writing), and return once it has mounted. *tied*: it dies with us."""
    read_end, write_end = os.pipe()
    try:
        process = subprocess.Popen(
            daemon_command(mountpoint, options, write_end),
            pass_fds=(write_end,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if tied else None,  # noqa: PLW1509 (prctl only)
        )
    finally:
        os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
        said = os.read(read_end, 64) if ready else b""  # b"" also if it died
    finally:
        os.close(read_end)
    if said != b"ready\n":
        stop(process, mountpoint)
        raise errors.MountFailed(_last_line(log, process) or f"mqfs did not mount at {mountpoint}")
    if not tied:
        # Nobody waits for a daemon left to run alone: tell Popen so, or it warns at
        # collection that the subprocess is still running (init reaps it in the end).
        process.returncode = 0
    return process


def _last_line(log: BinaryIO, process: subprocess.Popen[bytes]) -> str:
    log.flush()
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    if lines:
        return lines[-1].removeprefix("mqfs: mount: ")
    code = process.returncode
    return f"the daemon exited with status {code}" if code is not None else ""


@contextmanager
def running(
    mountpoint: Path, options: Sequence[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A daemon mounted at *mountpoint* for the length of the block, tied to us; its
    output goes to *log_path*."""
    with open(log_path, "w+b") as log:
        process = spawn(mountpoint, options, log, tied=True)
    try:
        yield process
    finally:
        stop(process, mountpoint)


def stop(process: subprocess.Popen[bytes], mountpoint: Path) -> None:
    """SIGTERM and wait; SIGKILL if wedged; then a lazy unmount if still mounted."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if is_mounted(mountpoint):
        subprocess.run(
            ["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False
        )

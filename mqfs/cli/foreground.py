"""A foreground mqfs daemon for the length of a ``with`` block (tests and the benchmark).

The daemon runs ``mqfs mount --foreground`` in its own session (a Ctrl-C at the terminal is
the caller's to handle) and dies with its parent (PR_SET_PDEATHSIG: SIGTERM, on which it
unmounts), so a caller that is killed leaves no live mount behind. The block starts once
the daemon wrote its ready line, and the mount is always stopped in ``finally``: SIGTERM,
SIGKILL if it is wedged, then a lazy unmount if the mount is still there.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mqfs.cli import daemon_command
from mqfs.mounts import is_mounted

READY_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


class DaemonNotReady(RuntimeError):
    """The daemon exited or hung before it had mounted."""


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@contextmanager
def foreground_daemon(
    path: Path, options: Sequence[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Mount mqfs at the directory *path*; its stdout and stderr go to *log_path*."""
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                daemon_command(path, options, write_end),
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (only prctl, async-signal-safe)
            )
    finally:
        os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], READY_TIMEOUT)
        if (os.read(read_end, 64) if ready else b"") != b"ready\n":
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise DaemonNotReady(f"mqfs did not mount at {path}: {' / '.join(tail)}")
        yield process
    finally:
        os.close(read_end)
        stop(process, path)


def stop(process: subprocess.Popen[bytes], path: Path) -> None:
    """SIGTERM and wait; SIGKILL if wedged; then a lazy unmount if still mounted."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)

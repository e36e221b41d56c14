"""Fixtures shared by the test tiers.

``mqfs_mount`` mounts a real mqfs in a child process (``mqfs mount --foreground``) at a
fresh temporary directory, waits for the child's ready line (no sleeping), and always
unmounts in ``finally``: politely with SIGTERM, then lazily with ``fusermount3 -u -z``
if the daemon is wedged. Each test daemon dies with the pytest process that started it
(PR_SET_PDEATHSIG), so a run that is killed leaves only dead mounts (ENOTCONN), and those
are swept at session start. Live mounts are left alone: they belong to another test run
on the same machine.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqfs import wire
from mqfs.foreground import DaemonNotReady, foreground_daemon
from mqfs.mounts import mounts_under

MOUNT_ROOT = Path(tempfile.gettempdir()) / "mqfs-test-mounts"


def fuse_usable() -> str | None:
    """None if this machine can mount FUSE, else the reason it cannot."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    return None


def _lazy_unmount(path: str) -> None:
    subprocess.run(["fusermount3", "-u", "-z", path], capture_output=True, check=False)


def _is_dead(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def pytest_sessionstart(session: pytest.Session) -> None:
    for stale in filter(_is_dead, mounts_under(MOUNT_ROOT)):
        _lazy_unmount(stale)


@dataclass
class Mount:
    path: Path
    process: subprocess.Popen[bytes]

    def queue_dir(self, name: str) -> Path:
        return self.path / name

    def blocked_on(self, name: str) -> int:
        """How many callers the daemon has parked in send/receive on queue *name*."""
        info = json.loads(os.getxattr(self.path / name, wire.INFO_XATTR))
        return sum(opener["blocked"] for opener in info["openers"])

    def make_queue(self, name: str, mode: int = 0o600) -> Path:
        os.mkdir(self.path / name, mode)
        return self.path / name


def wait_until(condition: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll *condition* (a callable) until true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


@contextmanager
def mounted(options: tuple[str, ...] = ()) -> Iterator[Mount]:
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)
    MOUNT_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="mnt-", dir=MOUNT_ROOT))
    log_path = path.with_name(path.name + ".log")
    try:
        try:
            with foreground_daemon(path, options, log_path) as process:
                yield Mount(path, process)
        except DaemonNotReady as exc:
            pytest.fail(str(exc))
        logged = log_path.read_text(errors="replace")
        if "Traceback" in logged:
            pytest.fail(f"the mqfs daemon logged an exception:\n{logged}")
    finally:
        log_path.unlink(missing_ok=True)
        with suppress(OSError):
            path.rmdir()


@pytest.fixture
def mqfs_mount() -> Iterator[Mount]:
    with mounted() as mount:
        yield mount


@pytest.fixture
def mount_factory() -> Iterator[object]:
    """Call with mount options; every mount made is unmounted at teardown."""
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted(tuple(options)))

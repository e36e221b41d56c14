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
import pickle
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mqfs import wire
from mqfs.cli.foreground import DaemonNotReady, foreground_daemon
from mqfs.mounts import mounts_under

T = TypeVar("T")
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


TEST_USER = "mqfs-tester"
"""A real unprivileged account for tests of what other users can and cannot do."""


def unprivileged_user() -> pwd.struct_passwd:
    """The unprivileged test account, created (as a system user, no home) if missing."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(TEST_USER)


def run_as_user(
    argv: list[str], timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run *argv* as the unprivileged test user; output captured as text."""
    account = unprivileged_user()
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def as_user(function: Callable[[], T]) -> T:
    """Call *function* in a forked child running as the unprivileged test user (real and
    effective uid and gid, no supplementary groups); its result or exception comes back."""
    account = unprivileged_user()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            try:
                outcome: tuple[bool, object] = (True, function())
            except BaseException as exc:
                outcome = (False, exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        pytest.fail("the child running as the test user died")
    succeeded, value = pickle.loads(data)
    if not succeeded:
        raise value  # type: ignore[misc]
    return value  # type: ignore[no-any-return]


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
    log_path: Path

    def queue_dir(self, name: str) -> Path:
        return self.path / name

    def info(self, name: str) -> dict[str, Any]:
        """The daemon's view of queue *name* (its ``user.mq.info`` xattr), as root sees it."""
        return json.loads(os.getxattr(self.path / name, wire.INFO_XATTR))  # type: ignore[no-any-return]

    def blocked_on(self, name: str) -> int:
        """How many callers the daemon has parked in send/receive on queue *name*."""
        return int(self.info(name)["blocked"])

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
def mount_point(prefix: str = "mnt-") -> Iterator[tuple[Path, Path]]:
    """A fresh empty directory under MOUNT_ROOT to mount a filesystem on, and a log path
    beside it; both are removed afterwards. Skips where this machine cannot mount FUSE."""
    reason = fuse_usable()
    if reason:
        pytest.skip(reason)
    MOUNT_ROOT.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=MOUNT_ROOT))
    log_path = path.with_name(path.name + ".log")
    try:
        yield path, log_path
    finally:
        log_path.unlink(missing_ok=True)
        with suppress(OSError):
            path.rmdir()


@contextmanager
def mounted(options: tuple[str, ...] = (), allow_logged_errors: bool = False) -> Iterator[Mount]:
    """A real mqfs mount; the test fails if the daemon logged a traceback (unless the
    test provokes one on purpose: *allow_logged_errors*)."""
    with mount_point() as (path, log_path):
        try:
            with foreground_daemon(path, options, log_path) as process:
                yield Mount(path, process, log_path)
        except DaemonNotReady as exc:
            pytest.fail(str(exc))
        logged = log_path.read_text(errors="replace")
        if "Traceback" in logged and not allow_logged_errors:
            pytest.fail(f"the mqfs daemon logged an exception:\n{logged}")


@pytest.fixture
def mqfs_mount() -> Iterator[Mount]:
    with mounted() as mount:
        yield mount


@pytest.fixture
def mount_factory() -> Iterator[object]:
    """Call with mount options; every mount made is unmounted at teardown."""
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted(tuple(options)))

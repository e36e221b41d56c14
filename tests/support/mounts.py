"""Real mqfs mounts for tests, and the directories other FUSE test filesystems mount on.

``mounted()`` runs ``mqfs mount --foreground`` (mqfs.cli.launch.running, the
one place the tests start a daemon) at a fresh directory under MOUNT_ROOT, waits for its
ready line (no sleeping), and always unmounts: politely with SIGTERM, then lazily with
``fusermount3 -u -z`` if the daemon is wedged. Each test daemon dies with the pytest
process that started it (PR_SET_PDEATHSIG), so a run that is killed leaves only dead mounts
(ENOTCONN); ``sweep_dead_mounts()`` removes those at session start. Live mounts are left
alone: they belong to another test run on the same machine.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mqfs import errors, wire
from mqfs.cli import launch
from mqfs.mounts import mounts_under

MOUNT_ROOT = Path(tempfile.gettempdir()) / "mqfs-test-mounts"


def why_fuse_unusable() -> str | None:
    """None if this machine can mount FUSE, else the reason it cannot."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not accessible"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (apt install fuse3)"
    return None


def lazy_unmount(path: str | Path) -> None:
    """``fusermount3 -u -z``: detach a FUSE mount even if its daemon is wedged or gone."""
    subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True, check=False)


def _is_dead(path: str) -> bool:
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def sweep_dead_mounts() -> None:
    """Unmount the dead mounts (daemon gone: ENOTCONN) a killed run left under MOUNT_ROOT."""
    for stale in filter(_is_dead, mounts_under(MOUNT_ROOT)):
        lazy_unmount(stale)


FASTPATH_READY = True
"""Whether the daemon serves ``-o fastpath`` yet (issue 17): the shim's half is in."""

MOUNT_KINDS: dict[str, tuple[tuple[str, ...], list[pytest.MarkDecorator]]] = {
    "plain": ((), []),
    "fastpath": (
        ("fastpath",),
        []
        if FASTPATH_READY
        else [pytest.mark.skip(reason="the daemon's side of -o fastpath (issue 17) is not in yet")],
    ),
}
"""The kinds of mount a test can be run on: their mount options and marks. On a fastpath
mount the queues live in shared mappings that the owner's processes use directly."""


@dataclass
class Mount:
    """A live mqfs mount: its directory, its daemon and the daemon's log."""

    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def info(self, name: str) -> dict[str, Any]:
        """The daemon's view of queue *name* (its ``user.mq.info`` xattr), as root sees it."""
        return json.loads(os.getxattr(self.path / name, wire.INFO_XATTR))  # type: ignore[no-any-return]

    def blocked_on(self, name: str) -> int:
        """How many callers the daemon has parked in send/receive on queue *name*."""
        return int(self.info(name)["blocked"])

    def make_queue(self, name: str, mode: int = 0o600) -> Path:
        os.mkdir(self.path / name, mode)
        return self.path / name


@contextmanager
def mount_point(prefix: str = "mnt-") -> Iterator[tuple[Path, Path]]:
    """A fresh empty directory under MOUNT_ROOT to mount a filesystem on, and a log path
    beside it; both are removed afterwards. Skips where this machine cannot mount FUSE."""
    reason = why_fuse_unusable()
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


FASTPATH_UNAVAILABLE: str | None = None
"""Why the ``-o fastpath`` variants are skipped (None: they run)."""

MOUNT_VARIANTS: dict[str, tuple[str, ...]] = {"plain": (), "fastpath": ("fastpath",)}
"""The mount options of each variant every suite that mounts mqfs runs on: as today, and
with the shared-memory fast path (queues in mappings their owner's processes use)."""


def variant_params(*extra: object) -> list[object]:
    """pytest params of the mount variants (ids ``plain``/``fastpath``, the value their
    options), then *extra* params (e.g. a kernel one), for ``@pytest.fixture(params=)``."""
    fastpath_marks = [pytest.mark.skip(reason=FASTPATH_UNAVAILABLE)] if FASTPATH_UNAVAILABLE else []
    return [
        pytest.param(MOUNT_VARIANTS["plain"], id="plain"),
        pytest.param(MOUNT_VARIANTS["fastpath"], id="fastpath", marks=fastpath_marks),
        *extra,
    ]


@contextmanager
def mounted(options: tuple[str, ...] = (), allow_logged_errors: bool = False) -> Iterator[Mount]:
    """A real mqfs mount; the test fails if the daemon logged a traceback (unless the
    test provokes one on purpose: *allow_logged_errors*)."""
    with mount_point() as (path, log_path):
        try:
            with launch.running(path, options, log_path) as process:
                yield Mount(path, process, log_path)
        except errors.MountFailed as exc:
            pytest.fail(str(exc))
        logged = log_path.read_text(errors="replace")
        if "Traceback" in logged and not allow_logged_errors:
            pytest.fail(f"the mqfs daemon logged an exception:\n{logged}")

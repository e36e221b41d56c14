"""Programs that only open and read files never consume a message (issue: file tools).

Each tool runs over a mount holding messages in several queues, the way a backup job, an
indexer or a virus scanner would; afterwards every message is still queued, in order. A
queue file reads as its status line, byte for byte what /dev/mqueue/NAME shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mqfs.client import calls
from mqfs.client.backends import KernelBackend
from tests.support.kernel import mqueue_mount, why_kernel_mqueue_unusable
from tests.support.mounts import Mount

QUEUES = {
    "jobs": [(b"first job\n", 1), (b"urgent job\n", 9), (b"second job\n", 1)],
    "logs": [(b"something happened\n", 0), (b"something else\n", 0)],
    "binary": [(bytes(range(256)), 3)],
}
TOOLS = {
    "grep -r": "grep -r something {mnt} || true",
    "cp -r": "cp -r {mnt}/. {out}/copy",
    "tar c": "tar cf {out}/all.tar -C {mnt} . || true",  # 'file shrank' is tar's warning
    "find -exec cat": "find {mnt} -type f -exec cat {{}} + > /dev/null",
    # rsync reads st_size bytes, 80 as on /dev/mqueue, and the status line is shorter: it
    # reports the short read (23) for the queue files, as it does on the kernel's.
    "rsync -a": "rsync -a {mnt}/ {out}/mirror/ || test $? = 23",
    "python rglob": (
        f"{sys.executable} -c 'import pathlib, sys; "
        '[f.read_bytes() for f in pathlib.Path(sys.argv[1]).rglob("*") if f.is_file()]'
        "' {mnt}"
    ),
}


def queued(mount: Mount) -> dict[str, list[tuple[bytes, int]]]:
    """Every queue's messages in receive order, read without consuming them."""
    snapshot = {}
    for name in QUEUES:
        fd = os.open(mount.path / name / "queue", os.O_RDONLY)
        try:
            snapshot[name] = calls.peek_all(fd)
        finally:
            os.close(fd)
    return snapshot


@pytest.fixture
def filled(mqfs_mount: Mount) -> Mount:
    for name, messages in QUEUES.items():
        mqfs_mount.make_queue(name)
        fd = os.open(mqfs_mount.path / name / "queue", os.O_WRONLY)
        try:
            for payload, priority in messages:
                calls.send(fd, payload, priority)
        finally:
            os.close(fd)
    return mqfs_mount


@pytest.mark.parametrize("tool", TOOLS)
def test_a_file_tool_consumes_nothing(filled: Mount, tool: str, tmp_path: Path) -> None:
    if shutil.which(tool.split(maxsplit=1)[0]) is None and tool != "python rglob":
        pytest.fail(f"{tool.split(maxsplit=1)[0]} is missing: scripts/setup installs it")
    before = queued(filled)
    assert sum(map(len, before.values())) == 6
    command = TOOLS[tool].format(mnt=filled.path, out=tmp_path)
    done = subprocess.run(["sh", "-c", command], capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert queued(filled) == before


def test_reading_the_queue_file_is_the_status_line(filled: Mount) -> None:
    status = (filled.path / "jobs" / "status").read_bytes()
    assert (filled.path / "jobs" / "queue").read_bytes() == status
    assert status.startswith(b"QSIZE:32 ")


def test_receiving_is_one_ioctl_per_open_away(filled: Mount) -> None:
    fd = os.open(filled.path / "jobs" / "queue", os.O_RDONLY)
    other = os.open(filled.path / "jobs" / "queue", os.O_RDONLY)
    try:
        assert os.read(fd, 8192).startswith(b"QSIZE:")
        calls.receive_on_read(fd)
        assert os.read(fd, 8192) == b"urgent job\n"
        assert os.read(other, 8192).startswith(b"QSIZE:")  # only that descriptor opted in
    finally:
        os.close(other)
        os.close(fd)


@pytest.mark.kernel
def test_the_queue_file_reads_as_the_kernels_does(filled: Mount) -> None:
    if reason := why_kernel_mqueue_unusable(mounting=True):
        pytest.skip(reason)
    backend = KernelBackend()
    name = f"/filetools-{os.getpid()}"
    with mqueue_mount() as kernel:
        mqd = backend.open(name, os.O_CREAT | os.O_RDWR, 0o600, (10, 8192))
        try:
            for payload, priority in QUEUES["jobs"]:
                backend.send(mqd, payload, priority, None)
            kernel_file = kernel / name[1:]
            mqfs_file = filled.path / "jobs" / "queue"
            assert mqfs_file.read_bytes() == kernel_file.read_bytes()
            assert mqfs_file.stat().st_size == kernel_file.stat().st_size
        finally:
            backend.close(mqd)
            backend.unlink(name)

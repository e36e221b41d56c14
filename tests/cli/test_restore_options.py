"""restore keeps the dump's mode, says what it restored, and appends, replaces or does all
or nothing as asked."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from mqfs import errors
from mqfs.client import calls, dump
from tests.support.cli import run_cli
from tests.support.mounts import Mount


def dumped(name: str, messages: list[tuple[bytes, int]], mode: int = 0o660) -> str:
    queue = dump.QueueDump(name, mode, os.getuid(), os.getgid(), 10, 64, messages)
    return dump.to_json([queue])


def queued(mount: Mount, name: str) -> list[tuple[bytes, int]]:
    fd = os.open(mount.path / name / "queue", os.O_RDONLY)
    try:
        return calls.peek_all(fd)
    finally:
        os.close(fd)


def test_a_restored_queue_keeps_its_mode_whatever_the_umask(
    mqfs_mount: Mount, tmp_path: Path
) -> None:
    (tmp_path / "d.json").write_text(dumped("q", [(b"a", 1)], mode=0o660))
    old = os.umask(0o027)
    try:
        done = run_cli(mqfs_mount.path, "restore", str(tmp_path / "d.json"))
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"restored 1 message into 1 queue\n"
    assert stat.S_IMODE(os.stat(mqfs_mount.path / "q" / "queue").st_mode) == 0o660


def test_force_appends_and_replace_replaces(mqfs_mount: Mount, tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(dumped("q", [(b"new", 1)]))
    calls.create_at(mqfs_mount.path, "q", maxmsg=10, msgsize=64)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_WRONLY)
    calls.send(fd, b"old", 5)
    os.close(fd)
    refused = run_cli(mqfs_mount.path, "restore", str(tmp_path / "d.json"))
    assert refused.returncode == 1 and b"--force adds" in refused.stderr
    assert run_cli(mqfs_mount.path, "restore", str(tmp_path / "d.json"), "--force").returncode == 0
    assert queued(mqfs_mount, "q") == [(b"old", 5), (b"new", 1)]
    assert (
        run_cli(mqfs_mount.path, "restore", str(tmp_path / "d.json"), "--replace").returncode == 0
    )
    assert queued(mqfs_mount, "q") == [(b"new", 1)]


class FailingBackend:
    """An mqfs backend whose sends fail after *limit* messages (a queue filled meanwhile)."""

    def __init__(self, real: dump.Backend, limit: int) -> None:
        self.real, self.limit = real, limit

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def send(self, mqd: int, message: bytes, priority: int = 0, deadline: object = None) -> None:
        if self.limit == 0:
            raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        self.limit -= 1
        self.real.send(mqd, message, priority)


@pytest.mark.parametrize("atomic", [False, True])
def test_an_interrupted_restore_says_how_far_it_got(mqfs_mount: Mount, atomic: bool) -> None:
    from mqfs.client.backends import MqfsBackend

    calls.create_at(mqfs_mount.path, "q", maxmsg=10, msgsize=64)
    queues = dump.from_json(dumped("q", [(b"m%d" % i, 0) for i in range(5)]))
    backend = FailingBackend(MqfsBackend(mqfs_mount.path), limit=3)
    with pytest.raises(errors.WouldBlock) as failure:
        dump.restore(queues, backend, atomic=atomic)  # type: ignore[arg-type]
    assert f"after {0 if atomic else 3} of 5 messages" in str(failure.value)
    left = queued(mqfs_mount, "q")
    assert left == ([] if atomic else [(b"m0", 0), (b"m1", 0), (b"m2", 0)])


def test_atomic_refuses_an_append_it_could_not_undo(mqfs_mount: Mount, tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(dumped("q", [(b"new", 1)]))
    calls.create_at(mqfs_mount.path, "q", maxmsg=10, msgsize=64)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_WRONLY)
    calls.send(fd, b"old", 5)
    os.close(fd)
    done = run_cli(mqfs_mount.path, "restore", str(tmp_path / "d.json"), "--force", "--atomic")
    assert done.returncode == 1 and b"cannot undo an append" in done.stderr
    assert queued(mqfs_mount, "q") == [(b"old", 5)]

"""Tools for a stuck queue: purge drains it, move requeues messages with their
priorities and loses nothing when the target fills."""

from __future__ import annotations

import os

from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import Mount


def fill(mount: Mount, name: str, messages: list[tuple[bytes, int]], maxmsg: int = 10) -> None:
    calls.create_at(mount.path, name, maxmsg=maxmsg, msgsize=64)
    fd = os.open(mount.path / name / "queue", os.O_WRONLY)
    for payload, priority in messages:
        calls.send(fd, payload, priority)
    os.close(fd)


def queued(mount: Mount, name: str) -> list[tuple[bytes, int]]:
    fd = os.open(mount.path / name / "queue", os.O_RDONLY)
    try:
        return calls.peek_all(fd)
    finally:
        os.close(fd)


def test_purge_drains_and_counts(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "stuck", [(b"poison", 9), (b"a", 1), (b"b", 1)])
    done = run_cli(mqfs_mount.path, "purge", "stuck")
    assert (done.returncode, done.stdout) == (0, b"purged 3 messages from 'stuck'\n")
    assert queued(mqfs_mount, "stuck") == []


def test_move_keeps_priorities_and_stops_when_the_target_is_full(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "src", [(b"hi", 9), (b"lo1", 1), (b"lo2", 1)])
    fill(mqfs_mount, "dst", [(b"there", 5)], maxmsg=3)
    done = run_cli(mqfs_mount.path, "move", "src", "/dst")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"moved 2 messages from 'src' to 'dst'\n"
    assert queued(mqfs_mount, "dst") == [(b"hi", 9), (b"there", 5), (b"lo1", 1)]
    assert queued(mqfs_mount, "src") == [(b"lo2", 1)]  # nothing lost
    done = run_cli(mqfs_mount.path, "move", "src", "missing")
    assert done.returncode == 1 and b"no queue named 'missing'" in done.stderr
    assert queued(mqfs_mount, "src") == [(b"lo2", 1)]


def test_watch_json_lines_and_a_closed_pipe(mqfs_mount: Mount) -> None:
    import json
    import subprocess
    import sys

    fill(mqfs_mount, "w", [(b"x", 4)])
    done = run_cli(mqfs_mount.path, "watch", "w", "--json", "--changes", "1")
    record = json.loads(done.stdout)
    assert (record["change"], record["curmsgs"], record["head"]) == (
        "now",
        1,
        {"priority": 4, "length": 1},
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` once it has exited: every write is EPIPE
    try:
        piped = subprocess.run(
            [sys.executable, "-m", "mqfs", "watch", "w", "--mount", str(mqfs_mount.path)],
            stdout=write_end, stderr=subprocess.PIPE, timeout=30, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert (piped.returncode, piped.stderr) == (0, b"")

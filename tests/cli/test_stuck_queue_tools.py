"""Tools for a stuck queue: purge drains it, rm-msg removes one poison message from the
middle and never another, move requeues messages with their priorities and loses nothing
when the target fills."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from collections.abc import Callable
from typing import TypeVar

from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import Mount

T = TypeVar("T")


def fill(mount: Mount, name: str, messages: list[tuple[bytes, int]], maxmsg: int = 10) -> None:
    calls.create_at(mount.path, name, maxmsg=maxmsg, msgsize=64)
    fd = os.open(mount.path / name / "queue", os.O_WRONLY)
    for payload, priority in messages:
        calls.send(fd, payload, priority)
    os.close(fd)


def queued(mount: Mount, name: str) -> list[tuple[bytes, int]]:
    return read_queue(mount, name, calls.peek_all)


def read_queue(mount: Mount, name: str, read: Callable[[int], T]) -> T:
    """*read* applied to a read-only descriptor of queue *name*."""
    fd = os.open(mount.path / name / "queue", os.O_RDONLY)
    try:
        return read(fd)
    finally:
        os.close(fd)


def test_purge_drains_and_counts(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "stuck", [(b"poison", 9), (b"a", 1), (b"b", 1)])
    done = run_cli(mqfs_mount.path, "purge", "stuck")
    assert (done.returncode, done.stdout) == (0, b"purged 3 messages from 'stuck'\n")
    assert queued(mqfs_mount, "stuck") == []
    fill(mqfs_mount, "one", [(b"x", 0)])
    done = run_cli(mqfs_mount.path, "purge", "one")
    assert (done.returncode, done.stdout) == (0, b"purged 1 message from 'one'\n")


def test_peek_of_a_missing_queue_names_the_queue_not_an_index(mqfs_mount: Mount) -> None:
    for argv in (("missing", "0"), ("missing", "--all")):
        done = run_cli(mqfs_mount.path, "peek", *argv)
        assert (done.returncode, done.stderr) == (
            1,
            b"mqfs: peek: no queue named 'missing' (ENOENT)\n",
        )


def test_move_keeps_priorities_and_stops_when_the_target_is_full(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "src", [(b"hi", 9), (b"lo1", 1), (b"lo2", 1)])
    fill(mqfs_mount, "dst", [(b"there", 5)], maxmsg=3)
    done = run_cli(mqfs_mount.path, "move", "src", "/dst")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (  # why it stopped, and what is left
        b"moved 2 messages from 'src' to 'dst'; stopped: 'dst' is full, 1 message left in 'src'\n"
    )
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


def test_rm_msg_removes_the_message_shown_and_only_it(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "stuck", [(b"ok", 9), (b"poison", 1), (b"ok too", 1)])
    done = run_cli(mqfs_mount.path, "rm-msg", "stuck", "1", "--yes")
    assert done.returncode == 0, done.stderr
    shown, removed = done.stdout.decode().splitlines()
    assert shown.startswith("message 1 of 'stuck' (generation ")
    assert shown.endswith("): priority 1, 6 bytes: 'poison'")
    assert removed.startswith("removed message 1 of 'stuck': priority 1, 6 bytes: 'poison'")
    assert queued(mqfs_mount, "stuck") == [(b"ok", 9), (b"ok too", 1)]


def test_rm_msg_never_removes_from_a_queue_that_changed(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "stuck", [(b"a", 1), (b"poison", 1), (b"c", 1)])
    look = run_cli(mqfs_mount.path, "rm-msg", "/stuck", "1")  # no terminal, no --yes
    assert look.returncode == 1
    assert b"priority 1, 6 bytes: 'poison'" in look.stdout
    (hint,) = look.stderr.decode().splitlines()
    assert hint.startswith("mqfs: rm-msg: nothing removed: confirm with --yes, or run ")
    generation = hint.rsplit("--generation ", 1)[1].rstrip("`")
    assert queued(mqfs_mount, "stuck") == [(b"a", 1), (b"poison", 1), (b"c", 1)]
    fd = os.open(mqfs_mount.path / "stuck" / "queue", os.O_RDONLY)
    try:
        assert calls.receive(fd, 64) == (b"a", 1)  # now index 1 is c
    finally:
        os.close(fd)
    stale = run_cli(mqfs_mount.path, "rm-msg", "stuck", "1", "--generation", generation)
    assert (stale.returncode, stale.stdout) == (1, b"")
    assert stale.stderr.startswith(b"mqfs: rm-msg: queue 'stuck' changed since message 1")
    assert stale.stderr.endswith(b"nothing was removed; look again (ESTALE)\n")
    assert queued(mqfs_mount, "stuck") == [(b"poison", 1), (b"c", 1)]
    now = str(calls_generation(mqfs_mount, "stuck"))
    done = run_cli(mqfs_mount.path, "rm-msg", "stuck", "0", "--generation", now)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"removed message 0 of 'stuck': priority 1, 6 bytes: 'poison'")
    assert queued(mqfs_mount, "stuck") == [(b"c", 1)]


def calls_generation(mount: Mount, name: str) -> int:
    return read_queue(mount, name, calls.current_generation)


def test_rm_msg_asks_on_a_terminal_and_checks_the_generation_after(mqfs_mount: Mount) -> None:
    """The queue changes while the user reads the prompt: the yes removes nothing."""
    fill(mqfs_mount, "stuck", [(b"a", 1), (b"poison", 1), (b"c", 1)])
    controller, terminal = pty.openpty()
    asking = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "rm-msg", "stuck", "1", "--mount", str(mqfs_mount.path)],
        stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    os.close(terminal)
    try:
        assert asking.stdout is not None
        shown = b""
        while not shown.endswith(b"remove it? [y/N] "):
            ready, _, _ = select.select([asking.stdout], [], [], 30)
            assert ready, f"no prompt; so far {shown!r}"
            chunk = os.read(asking.stdout.fileno(), 4096)
            assert chunk, f"rm-msg ended before asking: {shown!r}"
            shown += chunk
        assert b"priority 1, 6 bytes: 'poison'" in shown
        fd = os.open(mqfs_mount.path / "stuck" / "queue", os.O_RDONLY)
        try:
            calls.receive(fd, 64)  # `a` goes: index 1 is now `c`
        finally:
            os.close(fd)
        os.write(controller, b"y\n")
        _, error = asking.communicate(timeout=30)
    finally:
        os.close(controller)
        if asking.poll() is None:
            asking.kill()
            asking.wait()
    assert asking.returncode == 1
    assert b"changed since message 1 was looked at" in error and b"Traceback" not in error
    assert queued(mqfs_mount, "stuck") == [(b"poison", 1), (b"c", 1)]


def test_rm_msg_bad_input_is_one_line_and_a_failure(mqfs_mount: Mount) -> None:
    fill(mqfs_mount, "stuck", [(b"only", 0)])
    for argv, words in [
        (("stuck", "1", "--yes"), b"queue 'stuck' has no message at index 1 (ENOENT)"),
        (("stuck", "7", "--generation", "0"), b"changed since message 7"),
        (("missing", "0", "--yes"), b"no queue named 'missing'"),
        (("stuck", "-1"), b"must not be negative"),
        (("stuck", "x"), b"invalid"),
        (("stuck", str(1 << 64)), b"below 2**64"),
        (("stuck", "0", "--generation", "-5"), b"--generation"),
        (("a/b", "0", "--yes"), b"a/b"),
    ]:
        done = run_cli(mqfs_mount.path, "rm-msg", *argv)
        assert done.returncode != 0, argv
        assert words in done.stderr, (argv, done.stderr)
        assert b"Traceback" not in done.stderr, argv
    assert queued(mqfs_mount, "stuck") == [(b"only", 0)]

"""No input makes the CLI print a traceback: every command over every state a mount can be
in (missing, a plain directory, dead, empty, with a queue) ends with exit 0, or with one
line on stderr and a non-zero status."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import mounted
from tests.support.waiting import wait_until

COMMANDS = [
    ["ls"],
    ["ls", "-l"],
    ["ls", "--json"],
    ["who", "q"],
    ["create", "fresh"],
    ["create", "big", "--maxmsg", "100", "--msgsize", "64"],
    ["create", "/slash"],
    ["rm", "nope"],
    ["send", "q", "hello"],
    ["send", "q", "x", "--prio", "40000"],
    ["recv", "q", "--nonblock"],
    ["recv", "missing", "--nonblock"],
    ["peek", "q"],
    ["peek", "q", "-1"],
    ["peek", "q", "99"],
    ["peek", "q", "x"],
    ["peek", "../etc"],
    ["dump", "q"],
    ["dump", "--all"],
    ["dump"],
    ["restore", "/nonexistent/dump.json"],
    ["who", ""],
]


@pytest.fixture(params=["missing", "plain", "dead", "empty", "queue"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    kind = request.param
    if kind == "missing":
        yield kind, tmp_path / "nowhere"
    elif kind == "plain":
        yield kind, tmp_path
    else:
        with mounted() as mount:
            if kind == "queue":
                fd = os.open(mount.make_queue("q") / "queue", os.O_WRONLY)
                calls.send(fd, b"queued", 1)
                os.close(fd)
            if kind == "dead":
                mount.process.send_signal(signal.SIGKILL)
                mount.process.wait(timeout=30)
                wait_until(lambda: not os.path.exists(mount.path / "."), what="a dead mount")
            yield kind, mount.path


def test_no_command_prints_a_traceback_in_any_mount_state(state: tuple[str, Path]) -> None:
    kind, mount = state
    for argv in COMMANDS:
        done = run_cli(mount, *argv)
        where = f"mqfs {' '.join(argv)} on a {kind} mount"
        assert "Traceback" not in done.stderr.decode(), f"{where}:\n{done.stderr.decode()}"
        if done.returncode == 0:
            continue
        assert done.returncode in (1, 2), where
        lines = done.stderr.decode().strip().splitlines()
        if done.returncode == 1:
            assert len(lines) == 1 and lines[0].startswith("mqfs: "), f"{where}: {lines}"
        if kind in ("missing", "plain") and done.returncode == 1:
            # A bad argument or name may be refused first; anything else is about the mount.
            about_arguments = (
                "(EINVAL)" in done.stderr.decode() or "queue name" in done.stderr.decode()
            )
            assert "not mounted" in done.stderr.decode() or about_arguments, where


def test_a_dead_mount_says_how_to_clear_it() -> None:
    with mounted() as mount:
        mount.process.send_signal(signal.SIGKILL)
        mount.process.wait(timeout=30)
        wait_until(lambda: not os.path.exists(mount.path / "."), what="a dead mount")
        done = run_cli(mount.path, "ls")
        assert done.returncode == 1
        assert done.stderr.decode() == (
            f"mqfs: ls: the mqfs daemon at {mount.path} is gone (the mount is dead): "
            f"run 'mqfs umount {mount.path}', then mount again (ENOTCONN)\n"
        )

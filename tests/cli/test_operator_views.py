"""What an operator reads about a stuck queue (issue 16, items 10-12): `mqfs who` says
what each caller is blocked in and for how long, `mqfs ls` the last sender and receiver
(lsipc's LSPID/LRPID), `mqfs limits` the use of the limits per user, and `mqfs watch`
the cause of each change, ending when the queue is unlinked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from mqfs.client import calls
from mqfs.server.queue import memory_charge
from tests.support.cli import run_cli
from tests.support.mounts import Mount
from tests.support.waiting import wait_until

# A process with one O_RDWR descriptor (posix_ipc's default) and N threads blocked on it.
BLOCKERS = """
import os, sys, threading
from mqfs.client import calls
path, what, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(path, os.O_RDWR)
call = (lambda: calls.receive(fd, 8192)) if what == "receive" else (lambda: calls.send(fd, b"x"))
threads = [threading.Thread(target=call) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def blockers(mount: Mount, name: str, what: str, count: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKERS, str(mount.path / name / "queue"), what, str(count)]
    )
    wait_until(lambda: mount.blocked_on(name) == count, what=f"{count} callers to block")
    return process


def test_who_shows_the_direction_and_for_how_long_not_the_open_mode(mqfs_mount: Mount) -> None:
    calls.create_at(mqfs_mount.path, "empty", maxmsg=4, msgsize=64)
    receivers = blockers(mqfs_mount, "empty", "receive", 2)
    try:
        command = Path(f"/proc/{receivers.pid}/comm").read_text().strip()
        done = run_cli(mqfs_mount.path, "who", "empty")
        header, row = done.stdout.decode().splitlines()
        assert header.split() == ["PID", "COMMAND", "ACCESS", "BLOCKED", "FOR"]
        cells = row.split()
        assert cells[:5] == [str(receivers.pid), command, "read/write", "receive", "x2"]
        assert re.fullmatch(r"\d+\.\ds", cells[5]), row
        (opener,) = json.loads(run_cli(mqfs_mount.path, "who", "empty", "--json").stdout)
        assert (opener["pid"], opener["command"], opener["access"]) == (
            receivers.pid,
            command,
            "rw",
        )
        assert opener["blocked"] == "receive" and opener["blocked_for"] >= 0
        assert opener["waiting"] == {"receive": 2}
        for _ in range(2):
            run_cli(mqfs_mount.path, "send", "empty", "wake")
        assert receivers.wait(timeout=20) == 0
    finally:
        receivers.kill()
        receivers.wait()
    calls.create_at(mqfs_mount.path, "full", maxmsg=1, msgsize=64)
    run_cli(mqfs_mount.path, "send", "full", "first")
    sender = blockers(mqfs_mount, "full", "send", 1)
    try:
        row = run_cli(mqfs_mount.path, "who", "full").stdout.decode().splitlines()[1]
        assert row.split()[2:4] == ["read/write", "send"]
        run_cli(mqfs_mount.path, "recv", "full")
        assert sender.wait(timeout=20) == 0
    finally:
        sender.kill()
        sender.wait()
    idle = run_cli(mqfs_mount.path, "who", "full")  # nobody has it open now
    assert idle.stdout.decode().splitlines() == ["PID  COMMAND  ACCESS  BLOCKED  FOR"]


def test_ls_shows_the_last_sender_and_receiver(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    done = run_cli(mqfs_mount.path, "ls", "q", "-o", "name,lspid,lrpid")
    assert done.stdout.decode().splitlines() == ["NAME  LSPID  LRPID", "q     -      -"]
    sender = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "send", "q", "hi", "--mount", str(mqfs_mount.path)]
    )
    assert sender.wait(timeout=30) == 0
    receiver = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "recv", "q", "--mount", str(mqfs_mount.path)],
        stdout=subprocess.DEVNULL,
    )
    assert receiver.wait(timeout=30) == 0
    done = run_cli(mqfs_mount.path, "ls", "q", "-o", "lspid,lrpid", "--noheadings", "--raw")
    assert done.stdout.decode() == f"{sender.pid} {receiver.pid}\n"
    (row,) = json.loads(run_cli(mqfs_mount.path, "ls", "q", "--json").stdout)
    assert (row["lspid"], row["lrpid"]) == (sender.pid, receiver.pid)


def test_limits_show_queues_used_and_bytes_charged_per_user(mqfs_mount: Mount) -> None:
    calls.create_at(mqfs_mount.path, "a", maxmsg=2, msgsize=128)
    calls.create_at(mqfs_mount.path, "b", maxmsg=3, msgsize=64)
    charged = memory_charge(2, 128) + memory_charge(3, 64)
    values = json.loads(run_cli(mqfs_mount.path, "limits", "--json").stdout)
    assert values["queues_used"] == 2
    assert values["users"] == [{"user": "root", "uid": 0, "queues": 2, "bytes": charged}]
    table = run_cli(mqfs_mount.path, "limits").stdout.decode()
    assert "queues_used      2 of 256\n" in table
    assert table.endswith(f"\nUSER  QUEUES  BYTES\nroot  2       {charged}\n")
    assert run_cli(mqfs_mount.path, "ls", "-g").stdout.decode() == table


def test_watch_names_each_cause_and_ends_when_the_queue_is_unlinked(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "watch", "q", "--json", "--mount", str(mqfs_mount.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    me = os.getpid()
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["change"] == "now"
        wait_until(lambda: mqfs_mount.blocked_on("q") == 1, what="watch to wait")
        os.chmod(mqfs_mount.path / "q", 0o640)
        record = json.loads(watcher.stdout.readline())
        assert (record["kind"], record["pid"], record["changes"]) == ("attributes", me, 1)
        assert record["change"] == f"mode/owner by pid {me}"
        # A burst while the watcher cannot run: one line tells how many, and the last.
        wait_until(lambda: mqfs_mount.blocked_on("q") == 1, what="watch to wait")
        watcher.send_signal(signal.SIGSTOP)
        fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
        try:
            calls.send(fd, b"one", 1)
            calls.send(fd, b"two", 2)
            calls.receive(fd, 8192)
        finally:
            os.close(fd)
        watcher.send_signal(signal.SIGCONT)
        line = watcher.stdout.readline()
        assert line, watcher.communicate()
        record = json.loads(line)
        assert record["change"] == f"3 changes; last: receive by pid {me}"
        assert (record["curmsgs"], record["head"]) == (1, {"priority": 1, "length": 3})
        os.rmdir(mqfs_mount.path / "q")
        record = json.loads(watcher.stdout.readline())
        assert (record["change"], record["unlinked"]) == (f"unlinked by pid {me}", True)
        out, err = watcher.communicate(timeout=20)
        assert (watcher.returncode, out, err) == (0, b"", b"mqfs: watch: queue 'q' was unlinked\n")
    finally:
        watcher.kill()
        watcher.communicate()

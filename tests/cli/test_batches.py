"""`mqfs send --lines`, `mqfs recv --count N` and restore through framed I/O, as a user runs them."""

from __future__ import annotations

import json

from tests.support.cli import run_cli
from tests.support.mounts import Mount


def test_send_lines_sends_each_line_as_one_message(mqfs_mount: Mount) -> None:
    mount = mqfs_mount.path
    assert run_cli(mount, "create", "q", "--maxmsg", "10", "--msgsize", "64").returncode == 0
    sent = run_cli(mount, "send", "q", "--lines", "--prio", "3", stdin=b"one\n\nthree\nfour")
    assert sent.returncode == 0, sent.stderr
    peeked = run_cli(mount, "peek", "q", "--all", "--json")
    records = [json.loads(line) for line in peeked.stdout.splitlines()]
    assert [(r["text"], r["priority"]) for r in records] == [
        ("one", 3),
        ("", 3),
        ("three", 3),
        ("four", 3),
    ]
    got = run_cli(mount, "recv", "q", "--count", "3", "--show-prio")
    assert (got.returncode, got.stdout) == (0, b"3\tone\n3\t\n3\tthree\n")


def test_send_lines_into_a_full_queue_says_how_far_it_got(mqfs_mount: Mount) -> None:
    mount = mqfs_mount.path
    run_cli(mount, "create", "q", "--maxmsg", "2", "--msgsize", "64")
    full = run_cli(mount, "send", "q", "--lines", "--nonblock", stdin=b"a\nb\nc\n")
    assert full.returncode == 1
    assert full.stderr.decode() == "mqfs: send: queue 'q' is full, after 2 of 3 messages (EAGAIN)\n"
    late = run_cli(mount, "send", "q", "--lines", "--timeout", "0.1", stdin=b"d\n")
    assert late.returncode == 1
    assert b"ETIMEDOUT" in late.stderr and b"Traceback" not in late.stderr
    missing = run_cli(mount, "send", "r", "--lines", stdin=b"x\n")
    assert missing.returncode == 1 and b"Traceback" not in missing.stderr


def test_recv_count_takes_messages_in_batches_and_waits_for_the_rest(mqfs_mount: Mount) -> None:
    mount = mqfs_mount.path
    run_cli(mount, "create", "q", "--maxmsg", "10", "--msgsize", "64")
    run_cli(mount, "send", "q", "--lines", stdin=b"1\n2\n3\n")
    short = run_cli(mount, "recv", "q", "--count", "5", "--timeout", "0.2")
    assert short.returncode == 1
    assert short.stdout == b"1\n2\n3\n"
    assert b"after 3 of 5 messages" in short.stderr
    empty = run_cli(mount, "recv", "q", "--count", "2", "--nonblock")
    assert empty.returncode == 1 and b"EAGAIN" in empty.stderr


def test_restore_of_many_messages_round_trips(mqfs_mount: Mount) -> None:
    mount = mqfs_mount.path
    run_cli(mount, "create", "q", "--maxmsg", "10", "--msgsize", "8192")
    lines = b"".join(b"%d\n" % i for i in range(7))
    run_cli(mount, "send", "q", "--lines", "--prio", "2", stdin=lines)
    run_cli(mount, "send", "q", "urgent", "--prio", "9")
    dumped = run_cli(mount, "dump", "q")
    assert dumped.returncode == 0
    run_cli(mount, "rm", "q")
    restored = run_cli(mount, "restore", "-", stdin=dumped.stdout)
    assert restored.returncode == 0, restored.stderr
    assert run_cli(mount, "dump", "q").stdout == dumped.stdout
    got = run_cli(mount, "recv", "q", "--count", "8")
    assert got.stdout == b"urgent\n" + lines

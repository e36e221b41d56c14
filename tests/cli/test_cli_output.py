"""What `mqfs recv`/`peek` print, names as people type them, and errors that say how to fix
them (first use of the README on a default mount)."""

from __future__ import annotations

import base64
import json
import os

import pytest

from mqfs import wire
from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import Mount

MESSAGES = [(b"one", 2), (b"two\n", 1), (b"\xff\x00bin", 0)]


@pytest.fixture
def mount_options() -> tuple[str, ...]:
    """A plain mount only: formatting, the same on a fast-path mount (see conftest.py)."""
    return ()


@pytest.fixture
def queued(mqfs_mount: Mount) -> Mount:
    fd = os.open(mqfs_mount.make_queue("q") / "queue", os.O_WRONLY)
    for payload, priority in MESSAGES:
        calls.send(fd, payload, priority)
    os.close(fd)
    return mqfs_mount


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], b"one\ntwo\n\xff\x00bin\n"),  # a newline unless the message ends in one
        (["--show-prio"], b"2\tone\n1\ttwo\n0\t\xff\x00bin\n"),
        (["-0"], b"one\0two\n\0\xff\x00bin\0"),
        (["--raw"], b"onetwo\n\xff\x00bin"),
        (["--hex"], b"6f6e65\n74776f0a\nff0062696e\n"),
        (["--base64"], b"b25l\ndHdvCg==\n/wBiaW4=\n"),
    ],
)
def test_peek_and_recv_keep_messages_apart(
    queued: Mount, options: list[str], expected: bytes
) -> None:
    peeked = run_cli(queued.path, "peek", "q", "--all", *options)
    assert (peeked.returncode, peeked.stdout) == (0, expected), peeked.stderr
    received = run_cli(queued.path, "recv", "/q", "--count", "3", *options)
    assert (received.returncode, received.stdout) == (0, expected), received.stderr


def test_json_lines_say_text_or_base64(queued: Mount) -> None:
    done = run_cli(queued.path, "peek", "q", "--all", "--json")
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records == [
        {"priority": 2, "length": 3, "text": "one"},
        {"priority": 1, "length": 4, "text": "two\n"},
        {"priority": 0, "length": 5, "base64": base64.b64encode(b"\xff\x00bin").decode()},
    ]


def test_formats_exclude_each_other(queued: Mount) -> None:
    done = run_cli(queued.path, "peek", "q", "--hex", "--json")
    assert done.returncode == 2 and b"not allowed with" in done.stderr


def test_a_leading_slash_names_the_same_queue(mqfs_mount: Mount) -> None:
    assert run_cli(mqfs_mount.path, "create", "/jobs").returncode == 0
    assert run_cli(mqfs_mount.path, "send", "/jobs", "hi").returncode == 0
    assert run_cli(mqfs_mount.path, "peek", "jobs").stdout == b"hi\n"
    assert run_cli(mqfs_mount.path, "rm", "/jobs").returncode == 0


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty queue name: give a name such as 'jobs' or '/jobs' (ENOENT)"),
        ("a/b", "queue name 'a/b' contains '/': only one leading '/' is allowed (EACCES)"),
        ("x" * 256, "queue name of 256 bytes: at most 255 bytes (ENAMETOOLONG)"),
        ("..", "queue name '..' is reserved (EACCES)"),
    ],
)
def test_a_bad_name_says_what_is_wrong(mqfs_mount: Mount, name: str, says: str) -> None:
    done = run_cli(mqfs_mount.path, "create", name)
    assert done.returncode == 1
    assert done.stderr.decode() == f"mqfs: create: {says}\n"


def test_attributes_over_the_mounts_limits_name_the_limit(mqfs_mount: Mount) -> None:
    done = run_cli(mqfs_mount.path, "create", "jobs", "--maxmsg", "100", "--msgsize", "1024")
    assert done.returncode == 1
    assert done.stderr.decode() == (
        "mqfs: create: queue 'jobs': maxmsg 100 > msg_max 10 of this mount; "
        "mount with -o msg_max=100 to allow it (EINVAL)\n"
    )
    limits = json.loads(os.getxattr(mqfs_mount.path, wire.LIMITS_XATTR))
    assert (limits["msg_max"], limits["msgsize_max"]) == (10, 8192)


def test_version(mqfs_mount: Mount) -> None:
    done = run_cli(mqfs_mount.path, "--version")
    assert done.stdout.decode().startswith("mqfs 0.")

"""`mqfs ls` as lsipc -Q: single queues by name, -o columns, --noheadings, --raw, aligned
wide names; `mqfs limits` shows the mount's limits and usage."""

from __future__ import annotations

import json
import os

from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import Mount


def test_ls_names_columns_and_raw(mqfs_mount: Mount) -> None:
    for name in ("alpha", "beta"):
        calls.create_at(mqfs_mount.path, name, 0o640, maxmsg=5, msgsize=64)
    fd = os.open(mqfs_mount.path / "beta" / "queue", os.O_WRONLY)
    calls.send(fd, b"hello", 1)
    os.close(fd)
    done = run_cli(mqfs_mount.path, "ls", "/beta", "-o", "name,msgs,bytes")
    assert done.stdout.decode() == "NAME  MSGS  BYTES\nbeta  1/5   5\n"
    done = run_cli(mqfs_mount.path, "ls", "-o", "NAME,MODE", "--noheadings", "--raw")
    assert done.stdout.decode() == "alpha 0640\nbeta 0640\n"
    done = run_cli(mqfs_mount.path, "ls", "-o", "NAME,MTIME")
    assert done.stdout.decode().splitlines()[0] == "NAME   MTIME"
    missing = run_cli(mqfs_mount.path, "ls", "gamma")
    assert missing.returncode == 1
    assert missing.stderr.decode() == "mqfs: ls: no queue named 'gamma' (ENOENT)\n"
    bad = run_cli(mqfs_mount.path, "ls", "-o", "NAME,COLOUR")
    assert bad.returncode == 1 and b"unknown column 'COLOUR'" in bad.stderr


def test_wide_names_stay_aligned(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("队列")  # two characters, four terminal columns
    mqfs_mount.make_queue("abcde")
    lines = run_cli(mqfs_mount.path, "ls", "-o", "NAME,MODE").stdout.decode().splitlines()
    assert lines == ["NAME   MODE", "abcde  0600", "队列   0600"]


def test_limits_show_the_mounts_limits_and_use(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("one")
    values = json.loads(run_cli(mqfs_mount.path, "limits", "--json").stdout)
    assert values["msg_max"] == 10 and values["msgsize_max"] == 8192
    assert values["queues_used"] == 1
    table = run_cli(mqfs_mount.path, "limits").stdout.decode()
    assert "queues_max" in table and table.startswith("LIMIT")

"""Mounting like other filesystems: mount(8) and fstab through mount.fuse3, the systemd
unit, and a mount point that is already mqfs."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mqfs.mounts import FSTYPE, is_mounted
from tests.support.cli import run_cli
from tests.support.mounts import Mount, lazy_unmount, mount_point
from tests.support.paths import ROOT
from tests.support.waiting import wait_until

UNIT = ROOT / "systemd" / "mqfs.service"


def fstype(path: Path) -> str | None:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(path):
            return fields[2]
    return None


def test_the_mount_helper_convention_takes_limits_and_drops_generic_options(
    tmp_path: Path,
) -> None:
    """What `mount -t fuse.mqfs mqfs DIR -o ...` and an fstab line run: mount.fuse3 calls
    `mqfs SOURCE DIR -o OPTIONS` (mount(8) itself calls /sbin/mount.fuse.mqfs with the same
    words, which scripts/run links to the same program)."""
    helper = shutil.which("mount.fuse3")
    if helper is None:
        pytest.fail("mount.fuse3 is missing: scripts/setup installs fuse3")
    bin_dir = tmp_path / "bin"  # mount.fuse3 finds the `mqfs` program on PATH
    bin_dir.mkdir()
    (bin_dir / "mqfs").symlink_to(Path(sys.executable).with_name("mqfs"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    with mount_point() as (path, _log):
        done = subprocess.run(
            [helper, "mqfs", str(path), "-t", "mqfs", "-o", "rw,nosuid,nodev,msg_max=64"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            assert done.returncode == 0, done.stderr
            assert fstype(path) == FSTYPE
            created = run_cli(path, "create", "big", "--maxmsg", "64", "--msgsize", "64")
            assert created.returncode == 0, created.stderr  # msg_max=64 reached the daemon
        finally:
            if is_mounted(path):
                subprocess.run(["fusermount3", "-u", str(path)], check=False)
            wait_until(lambda: not is_mounted(path), what="the unmount")


def test_mounting_on_an_mqfs_mount_says_so(mqfs_mount: Mount) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mqfs", "mount", str(mqfs_mount.path)],
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.decode() == (
        f"mqfs: mount: mqfs is already mounted at {mqfs_mount.path} (EBUSY)\n"
    )


def test_the_systemd_unit_is_well_formed_and_its_exec_start_serves() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    assert unit["Service"]["Type"] == "simple"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    command = shlex.split(unit["Service"]["ExecStart"])
    assert command[:3] == ["/usr/local/bin/mqfs", "mount", "--foreground"]
    with mount_point() as (path, log_path):
        # The same command line, with this checkout's mqfs and a private mount point.
        argv = [sys.executable, "-m", "mqfs", *command[1:]]
        argv[argv.index("/run/mqfs")] = str(path)
        with open(log_path, "wb") as log:
            daemon = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        try:
            wait_until(lambda: fstype(path) == FSTYPE, what="the unit's daemon to mount")
            daemon.send_signal(signal.SIGTERM)  # systemctl stop: KillSignal
            assert daemon.wait(timeout=30) == 0
            assert not is_mounted(path)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait(timeout=30)
            if is_mounted(path):
                lazy_unmount(str(path))


def test_a_folder_named_mqfs_in_the_current_directory_does_not_hide_the_package(
    tmp_path: Path,
) -> None:
    """`mqfs mount` (and so `mount -t fuse.mqfs`) run from the folder that holds a checkout
    named `mqfs`: the daemon must import the installed package, not that folder (it was
    `ImportError: cannot import name '__version__' from 'mqfs'`)."""
    (tmp_path / "mqfs").mkdir()
    program = Path(sys.executable).with_name("mqfs")
    with mount_point() as (path, _log):
        done = subprocess.run(
            [program, "mount", str(path)],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        try:
            assert done.returncode == 0, done.stderr
            assert fstype(path) == FSTYPE
        finally:
            if is_mounted(path):
                subprocess.run(["fusermount3", "-u", str(path)], check=False)
            wait_until(lambda: not is_mounted(path), what="the unmount")

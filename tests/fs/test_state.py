"""-o state=DIR on real mounts: a restart brings every queue back exactly, kill -9 loses
no acknowledged message and duplicates none, and DIR is refused when others could write it.
With ``state=DIR,fastpath`` ([fastpath]) the messages live in DIR/fastpath's mappings, not
the journal, and survive the same way."""

from __future__ import annotations

import errno
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mqfs import errors, fastq
from mqfs.cli import launch
from mqfs.cli.main import main
from mqfs.client import calls, dump
from mqfs.server.journal import _HEADER, MAGIC, VERSION
from tests.fs.test_fastpath import map_of
from tests.support import crash
from tests.support.mounts import MOUNT_VARIANTS, Mount, mount_point, mounted
from tests.support.waiting import wait_until

MESSAGES = [(b"low", 0), (b"urgent", 9), (b"second low", 0), (b"", 3), (b"x" * 200, 9)]


def state(directory: Path, *more: str) -> tuple[str, ...]:
    return (f"state={directory}", *more)


kinds = pytest.mark.parametrize("kind", list(MOUNT_VARIANTS))
"""Run on a plain and on a fast-path mount: ``state(directory, *MOUNT_VARIANTS[kind])``."""


def fill(mount: Mount) -> None:
    calls.create_at(mount.path, "jobs", 0o640, maxmsg=8, msgsize=256)
    calls.create_at(mount.path, "secret", 0o600, maxmsg=3, msgsize=128)
    os.mkdir(mount.path / "defaults", 0o604)
    os.chown(mount.path / "jobs" / "queue", 1234, 4321)
    fd = os.open(mount.path / "jobs" / "queue", os.O_RDWR)
    try:
        for payload, priority in MESSAGES:
            calls.send(fd, payload, priority)
        assert calls.receive(fd, 256) == (b"urgent", 9)
    finally:
        os.close(fd)
    fd = os.open(mount.path / "secret" / "queue", os.O_WRONLY)
    try:
        calls.send(fd, b"only root may read this on disk", 1)
    finally:
        os.close(fd)


def look(mount: Mount) -> tuple[str, dict[str, tuple[int, ...]]]:
    """The dump of every queue, and each queue file's mode, owner and times."""
    stats = {}
    for name in sorted(os.listdir(mount.path)):
        info = os.stat(mount.path / name / "queue")
        stats[name] = (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns, info.st_ctime_ns)
    return dump.to_json(dump.dump_all(mount.path)), stats


def unmount_with_the_command(mount: Mount) -> None:
    assert main(["umount", str(mount.path)]) == 0
    assert mount.process.wait(timeout=60) == 0


def leave_to_sigterm(mount: Mount) -> None:
    """Leaving mounted() stops the daemon with SIGTERM."""


@kinds
@pytest.mark.parametrize("stop", [leave_to_sigterm, unmount_with_the_command])
def test_a_restart_brings_every_queue_back_exactly(tmp_path: Path, stop: object, kind: str) -> None:
    directory = tmp_path / "state"
    with mounted(state(directory, *MOUNT_VARIANTS[kind])) as mount:
        fill(mount)
        before = look(mount)
        stop(mount)  # type: ignore[operator]
    with mounted(state(directory)) as mount:
        assert look(mount) == before
        fd = os.open(mount.path / "jobs" / "queue", os.O_RDONLY)
        try:  # receive order included
            assert [calls.receive(fd, 256) for _ in range(4)] == [
                (b"x" * 200, 9),
                (b"", 3),
                (b"low", 0),
                (b"second low", 0),
            ]
        finally:
            os.close(fd)


@kinds
def test_the_journal_is_readable_by_root_only(tmp_path: Path, kind: str) -> None:
    """Every queue's messages, a 0600 queue's too, are in files only root can read. On a
    fast-path mount DIR is 0711 so that owners reach DIR/fastpath (0711, not listable),
    where each queue's mapping is its owner's, 0600; the journal's files stay root's."""
    directory = tmp_path / "state"
    fastpath = kind == "fastpath"

    def check() -> None:
        for path in [directory, *directory.iterdir()]:
            info = os.stat(path)
            assert info.st_uid == 0, path
            if path == directory or path.name == "fastpath":
                assert stat.S_IMODE(info.st_mode) == (0o711 if fastpath else 0o700), path
            else:
                assert stat.S_IMODE(info.st_mode) == 0o600, path
        mappings = directory / "fastpath"
        assert mappings.is_dir() == fastpath
        if fastpath:
            owners = sorted(os.stat(entry).st_uid for entry in mappings.iterdir())
            assert owners == [0, 0, 1234]  # defaults, secret; jobs was given to 1234
            assert {stat.S_IMODE(os.stat(e).st_mode) for e in mappings.iterdir()} == {0o600}

    with mounted(state(directory, *MOUNT_VARIANTS[kind])) as mount:
        fill(mount)
        check()  # the log as it is written
    check()  # the snapshot a clean stop writes


@kinds
@pytest.mark.parametrize("moment", ["early", "random"])
def test_kill_9_loses_no_acknowledged_message_and_duplicates_none(
    tmp_path: Path, moment: str, kind: str
) -> None:
    """Early: while the backlog the producers made lasts (the consumers catch up later),
    so that messages are queued at the kill; else at a random point."""
    directory = tmp_path / "state"
    messages = 5000
    kill_after = 100 if moment == "early" else random.Random(7).randrange(1, messages)
    with mounted(state(directory, "msg_max=500", *MOUNT_VARIANTS[kind])) as mount:
        # A tenth of the messages fit, and fill the queue before the consumers start: a
        # backlog to bring back, and senders blocked.
        calls.create_at(mount.path, "q", 0o600, maxmsg=messages // 10, msgsize=128)
        traffic = crash.run_until_killed(
            mount.path / "q",
            mount.process,
            messages=messages,
            kill_after=kill_after,
            msgsize=128,
            backlog=messages // 10,
        )
    # mounted() lazily unmounted the dead mount; a new daemon reads the journal.
    with mounted(state(directory)) as mount:
        drained = crash.drain(mount.path / "q", 128)
    count = crash.count(traffic, drained)
    assert count.received >= kill_after
    assert count.drained > 0 or moment != "early"  # the backlog came back
    assert count.duplicated == 0 and count.phantoms == 0, count
    assert count.lost <= count.in_flight <= 4, count


def test_state_sync_keeps_what_was_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    with mounted(state(directory, "state_sync")) as mount:
        calls.create_at(mount.path, "q", 0o600, maxmsg=10, msgsize=128)
        fd = os.open(mount.path / "q" / "queue", os.O_RDWR)
        calls.receive_on_read(fd)
        for index in range(6):
            os.write(fd, b"%d" % index)
        assert os.read(fd, 128) == b"0"
        os.close(fd)
        mount.process.kill()
        mount.process.wait()
    with mounted(state(directory, "state_sync")) as mount:
        assert crash.drain(mount.path / "q", 128) == [b"1", b"2", b"3", b"4", b"5"]


def _refused(options: tuple[str, ...]) -> str:
    with (
        mount_point() as (path, log_path),
        pytest.raises(errors.MountFailed) as failed,
        launch.running(path, options, log_path),
    ):
        pass
    return str(failed.value)


def test_a_state_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(0o777)
    assert "is writable by others" in _refused(state(directory))


def test_a_journal_of_a_newer_format_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    (directory / "log.1").write_bytes(_HEADER.pack(MAGIC, VERSION + 1, 2, 1))
    assert f"journal format version {VERSION + 1}, written by a newer mqfs" in _refused(
        state(directory)
    )


@pytest.mark.parametrize("ending", ["kill -9", "umount"])
def test_a_removed_message_stays_removed_after_a_restart(tmp_path: Path, ending: str) -> None:
    """rm-msg from the middle, with a blocked sender admitted into the freed slot: the
    journal's REMOVE replays to the same queue (kill -9), as the snapshot does (umount)."""
    directory = tmp_path / "state"
    with mounted(state(directory)) as mount:
        calls.create_at(mount.path, "q", 0o600, maxmsg=4, msgsize=128)
        fd = os.open(mount.path / "q" / "queue", os.O_RDWR)
        try:
            for payload, priority in [(b"a", 2), (b"poison", 1), (b"b", 1), (b"c", 0)]:
                calls.send(fd, payload, priority)
            path = str(mount.path / "q" / "queue")
            writer = subprocess.Popen(
                [sys.executable, "-c", f"import os; os.write(os.open({path!r}, os.O_WRONLY), b'w')"]
            )
            wait_until(lambda: mount.blocked_on("q"), what="the writer to block")
            removed = calls.remove(fd, 1, calls.current_generation(fd))
            assert removed.data == b"poison"
            assert writer.wait(timeout=30) == 0
            # The admitted send is part of the removal's generation: nothing moved since.
            assert calls.remove(fd, 3, removed.generation).data == b"w"
            calls.send(fd, b"after", 5)
            expected = calls.peek_all(fd)
        finally:
            os.close(fd)
        assert expected == [(b"after", 5), (b"a", 2), (b"b", 1), (b"c", 0)]
        if ending == "kill -9":
            mount.process.kill()
            mount.process.wait()
        else:
            unmount_with_the_command(mount)
    with mounted(state(directory)) as mount:
        fd = os.open(mount.path / "q" / "queue", os.O_RDONLY)
        try:
            assert calls.peek_all(fd) == expected
        finally:
            os.close(fd)


def test_fastpath_messages_survive_kill_9_with_no_journal_record(tmp_path: Path) -> None:
    """Messages sent through mqfs and straight into the mapping are in DIR/fastpath only
    (MAP_SHARED on disk): they come back after kill -9, and the queue stays a fast-path
    queue on a remount without -o fastpath (new queues there do not get a mapping)."""
    directory = tmp_path / "state"
    through_mqfs = [b"fs-MARK-%d" % index for index in range(5)]
    direct = [b"direct-MARK-%d" % index for index in range(4)]
    with mounted(state(directory, "fastpath")) as mount:
        calls.create_at(mount.path, "q", 0o600, maxmsg=10, msgsize=128)
        fd = os.open(mount.path / "q" / "queue", os.O_RDWR)
        try:
            for payload in through_mqfs:
                calls.send(fd, payload, 0)
            where = map_of(fd)
        finally:
            os.close(fd)
        assert Path(where.path).parent == directory / "fastpath"
        with fastq.MappedQueue(where.path, where.maxmsg, where.msgsize, "q") as queue:
            for payload in direct:
                queue.send(payload, 0)
            assert queue.receive(nonblock=True) == (through_mqfs[0], 0)
        mount.process.kill()
        mount.process.wait()
    journal = [path for path in directory.iterdir() if path.is_file()]
    assert journal and not any(b"MARK" in path.read_bytes() for path in journal)
    with mounted(state(directory)) as mount:
        fd = os.open(mount.path / "q" / "queue", os.O_RDONLY)
        try:
            assert map_of(fd).path == where.path  # still a fast-path queue
        finally:
            os.close(fd)
        calls.create_at(mount.path, "new", 0o600, maxmsg=4, msgsize=128)
        fd = os.open(mount.path / "new" / "queue", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as plain:
                map_of(fd)
            assert plain.value.errno == errno.EOPNOTSUPP
        finally:
            os.close(fd)
        assert crash.drain(mount.path / "q", 128) == through_mqfs[1:] + direct

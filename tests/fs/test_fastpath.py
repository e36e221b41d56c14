"""What only a ``-o fastpath`` mount has: the MAP ioctl, and a daemon that serves the
filesystem from a mapping its owner's processes change without asking it.

The test process (root, the owner of the queues it makes) attaches the mapping MAP names
with mqfs.fastq.MappedQueue and sends or receives in it directly; every view and every
waiter of the daemon must see those changes as if they had come through it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mqfs import fastq, wire
from mqfs.client import calls
from tests.support.cli import run_cli
from tests.support.mounts import Mount, mounted
from tests.support.procs import blocked_in_mq_call
from tests.support.users import as_user, unprivileged_user
from tests.support.waiting import wait_until


@pytest.fixture
def mount_options() -> tuple[str, ...]:
    """A fast-path mount only (the conftest's [plain] variant has nothing to map)."""
    return ("fastpath", "allow_other")


def map_of(fd: int) -> wire.Map:
    """The MAP ioctl: where the queue's mapping is, and its geometry."""
    buffer = bytearray(wire.MAP_SIZE)
    fcntl.ioctl(fd, wire.IOC_MAP, buffer)
    return wire.Map.unpack(buffer)


@contextmanager
def attached(mount: Mount, name: str) -> Iterator[fastq.MappedQueue]:
    """Queue *name*'s mapping, attached as its owner's own programs attach it."""
    fd = os.open(mount.path / name / "queue", os.O_RDONLY)
    try:
        where = map_of(fd)
    finally:
        os.close(fd)
    with fastq.MappedQueue(where.path, where.maxmsg, where.msgsize, name) as queue:
        yield queue


def make(mount: Mount, name: str = "q", maxmsg: int = 10, msgsize: int = 64) -> Path:
    calls.create_at(mount.path, name, 0o666, maxmsg=maxmsg, msgsize=msgsize)
    return mount.path / name


def open_receiving(mount: Mount, name: str = "q", flags: int = os.O_RDWR) -> int:
    fd = os.open(mount.path / name / "queue", flags)
    calls.receive_on_read(fd)
    return fd


def interested(queue: fastq.MappedQueue) -> bool:
    return queue.state().daemon_interest


# -- MAP: who gets the mapping ------------------------------------------------------------


def test_map_gives_the_owner_a_mapping_it_attaches(mqfs_mount: Mount) -> None:
    make(mqfs_mount, maxmsg=7, msgsize=100)
    fd = open_receiving(mqfs_mount)
    try:
        where = map_of(fd)
        assert (where.maxmsg, where.msgsize, where.version) == (7, 100, fastq.VERSION)
        info = os.stat(where.path)
        assert stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == 0
        assert stat.S_IMODE(os.stat(Path(where.path).parent).st_mode) == 0o711
        with fastq.MappedQueue(where.path, where.maxmsg, where.msgsize, "q") as queue:
            queue.send(b"direct", 3)
            assert os.read(fd, 100) == b"direct"  # the daemon receives from the mapping
            calls.send(fd, b"through mqfs", 5)
            assert queue.receive(nonblock=True) == (b"through mqfs", 5)
            queue.check()
    finally:
        os.close(fd)


def test_map_is_eopnotsupp_on_a_plain_mount() -> None:
    with mounted() as mount:
        make(mount)
        fd = os.open(mount.path / "q" / "queue", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as refused:
                map_of(fd)
        finally:
            os.close(fd)
    assert refused.value.errno == errno.EOPNOTSUPP


def test_another_user_gets_eacces_and_uses_the_queue_through_mqfs(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    queue_file = mqfs_mount.path / "q" / "queue"
    with attached(mqfs_mount, "q") as queue:
        mapping = Path(map_of_path(mqfs_mount))
        queue.send(b"from the owner", 1)

        def as_other() -> tuple[int, int, tuple[bytes, int]]:
            fd = os.open(queue_file, os.O_RDWR)
            try:
                try:
                    map_of(fd)
                    map_errno = 0
                except OSError as exc:
                    map_errno = exc.errno or 0
                try:
                    os.open(mapping, os.O_RDWR)
                    open_errno = 0
                except OSError as exc:
                    open_errno = exc.errno or 0
                received = calls.receive(fd, 64)
                calls.send(fd, b"from another user", 2)
                return map_errno, open_errno, received
            finally:
                os.close(fd)

        assert as_user(as_other) == (errno.EACCES, errno.EACCES, (b"from the owner", 1))
        assert queue.receive(nonblock=True) == (b"from another user", 2)
    assert unprivileged_user().pw_uid != 0


def map_of_path(mount: Mount, name: str = "q") -> str:
    fd = os.open(mount.path / name / "queue", os.O_RDONLY)
    try:
        return map_of(fd).path
    finally:
        os.close(fd)


# -- every view sees direct changes ---------------------------------------------------------


def test_direct_sends_are_seen_by_every_view(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    sent = [(b"low", 1), (b"high", 9), (b"", 4)]
    with attached(mqfs_mount, "q") as queue:
        for payload, priority in sent:
            queue.send(payload, priority)
    order = [(b"high", 9), (b"", 4), (b"low", 1)]
    q = mqfs_mount.path / "q"
    assert sorted(os.listdir(q / "msgs")) == ["0", "1", "2"]
    assert (q / "msgs" / "0").read_bytes() == b"high"
    assert (q / "queue").read_bytes().startswith(b"QSIZE:7 ")
    fd = os.open(q / "queue", os.O_RDONLY)
    try:
        assert [calls.peek(fd, index) for index in range(3)] == order
        assert [(data, prio) for _, prio, data in calls.peek_batch(fd).records] == order
        assert calls.get_attributes(fd).curmsgs == 3
    finally:
        os.close(fd)
    info = mqfs_mount.info("q")
    assert (info["curmsgs"], info["qsize"]) == (3, 7)
    dumped = run_cli(mqfs_mount.path, "dump", "q")
    assert dumped.returncode == 0, dumped.stderr
    assert [m["priority"] for m in json.loads(dumped.stdout)["queues"][0]["messages"]] == [9, 4, 1]
    who = run_cli(mqfs_mount.path, "who", "q")
    assert who.returncode == 0, who.stderr


# -- waiters in the daemon wake for direct changes -------------------------------------------


def test_a_blocked_read_wakes_for_a_direct_send(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    fd = open_receiving(mqfs_mount)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(os.read(fd, 64)))
    try:
        with attached(mqfs_mount, "q") as queue:
            reader.start()
            wait_until(lambda: mqfs_mount.blocked_on("q"), what="the reader to block")
            assert interested(queue)
            queue.send(b"wake up", 0)
            reader.join(timeout=10)
            assert got == [b"wake up"]
            assert queue.state().count == 0
    finally:
        reader.join(timeout=10)
        os.close(fd)


def test_a_blocked_receive_ioctl_wakes_for_a_direct_send(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    got: list[tuple[bytes, int]] = []
    receiver = threading.Thread(target=lambda: got.append(calls.receive(fd, 64, timeout=20)))
    try:
        with attached(mqfs_mount, "q") as queue:
            receiver.start()
            wait_until(lambda: mqfs_mount.blocked_on("q"), what="the receiver to block")
            queue.send(b"ioctl", 6)
            receiver.join(timeout=10)
            assert got == [(b"ioctl", 6)]
    finally:
        receiver.join(timeout=10)
        os.close(fd)


def test_a_blocked_sender_wakes_for_a_direct_receive(mqfs_mount: Mount) -> None:
    make(mqfs_mount, maxmsg=1)
    queue_path = str(mqfs_mount.path / "q" / "queue")
    with attached(mqfs_mount, "q") as queue:
        queue.send(b"first", 0)
        code = f"import os; os.write(os.open({queue_path!r}, os.O_WRONLY), b'late')"
        writer = subprocess.Popen([sys.executable, "-c", code])
        try:
            wait_until(lambda: mqfs_mount.blocked_on("q"), what="the writer to block")
            assert queue.receive(nonblock=True) == (b"first", 0)
            assert writer.wait(timeout=10) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert queue.receive(nonblock=True) == (b"late", 0)


def poll_woken_by(fd: int, event: int, queue: fastq.MappedQueue, change: object) -> object:
    """What a poll() for *event* asleep on *fd* returns once *change* runs."""
    poller = select.poll()
    poller.register(fd, event)
    assert poller.poll(0) == []
    result: list[object] = []
    tid: list[int] = []

    def wait() -> None:
        tid.append(threading.get_native_id())
        result.append(poller.poll(20_000))

    thread = threading.Thread(target=wait)
    thread.start()
    try:
        wait_until(
            lambda: tid and "poll" in Path(f"/proc/{tid[0]}/wchan").read_text(),
            what="the poller to sleep",
        )
        wait_until(lambda: interested(queue), what="the daemon's interest")
        change()  # type: ignore[operator]
    finally:
        thread.join(timeout=15)
    return result


def test_poll_wakes_for_a_direct_send_and_a_direct_receive(mqfs_mount: Mount) -> None:
    make(mqfs_mount, maxmsg=1)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
    try:
        with attached(mqfs_mount, "q") as queue:
            readable = poll_woken_by(fd, select.POLLIN, queue, lambda: queue.send(b"x", 0))
            assert readable == [[(fd, select.POLLIN)]]
            writable = poll_woken_by(
                fd, select.POLLOUT, queue, lambda: queue.receive(nonblock=True)
            )
            assert writable == [[(fd, select.POLLOUT)]]
            r, w, _ = select.select([fd], [fd], [], 0)
            assert (r, w) == ([], [fd])
    finally:
        os.close(fd)


def test_wait_and_watch_see_direct_changes(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    watch = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "watch", "q", "--mount", str(mqfs_mount.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watch.stdout is not None
        assert b"0/10 msgs" in watch.stdout.readline()  # the state it started from
        with attached(mqfs_mount, "q") as queue:
            generation = calls.current_generation(fd)
            result: list[int] = []
            tid: list[int] = []

            def wait() -> None:
                tid.append(threading.get_native_id())
                result.append(calls.wait_changed(fd, generation, timeout=20).generation)

            waiter = threading.Thread(target=wait)
            waiter.start()
            try:
                # Parked in the daemon: this WAIT and the watch's.
                wait_until(lambda: mqfs_mount.blocked_on("q") == 2, what="WAIT to block")
                assert tid and blocked_in_mq_call(tid[0])
                assert not result  # nothing changed yet: no spurious wake-up
                queue.send(b"seen", 2)
            finally:
                waiter.join(timeout=15)
            # One change: the generation moved once, not again when the daemon saw it.
            assert result and result[0] != generation
            assert calls.current_generation(fd) == result[0]
            line = watch.stdout.readline()  # then the send it was woken for
            assert b"send" in line and b"1/10 msgs" in line, line
    finally:
        watch.terminate()
        watch.communicate(timeout=10)
        os.close(fd)


def test_notify_fires_for_a_direct_send_into_an_empty_queue(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    fired: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signo, _: fired.append(signo))
    try:
        with attached(mqfs_mount, "q") as queue:
            calls.notify(fd, 0, signal.SIGUSR1)  # SIGEV_SIGNAL
            assert interested(queue)
            # (user.mq.info, not the status line: this process closing a descriptor of
            # the queue would remove its registration, as the kernel's flush does)
            assert mqfs_mount.info("q")["notify"]["signo"] == signal.SIGUSR1
            queue.send(b"ring", 0)
            wait_until(lambda: fired, what="the notification's signal")
            # Fired once, then gone: nothing left for the daemon to wait on.
            wait_until(lambda: not interested(queue), what="the interest to go")
            assert mqfs_mount.info("q")["notify"] is None
            assert fired == [signal.SIGUSR1]
            queue.send(b"no second signal", 0)
            assert calls.get_attributes(fd).curmsgs == 2 and fired == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)
        os.close(fd)


def test_nothing_pending_leaves_the_daemon_asleep(mqfs_mount: Mount) -> None:
    """With no poller, WAIT, watch or notification the interest flag is off: direct sends
    and receives never wake the daemon (its change counter does not move)."""
    make(mqfs_mount)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    try:
        with attached(mqfs_mount, "q") as queue:
            assert not interested(queue)
            generation = calls.current_generation(fd)
            assert calls.wait_changed(fd, generation, timeout=0.2).generation == generation
            wait_until(lambda: not interested(queue), what="the last watcher to go")
            before = queue.state().change_seq
            for index in range(100):
                queue.send(b"%d" % index, 0)
                queue.receive(nonblock=True)
            assert queue.state().change_seq == before
            assert not interested(queue)
    finally:
        os.close(fd)


# -- the mapping file follows the queue -------------------------------------------------------


def test_chown_of_a_queue_chowns_its_mapping(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    path = map_of_path(mqfs_mount)
    os.chown(mqfs_mount.path / "q", 1234, 4321)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (1234, 4321, 0o600)


def test_unlink_while_mapped_keeps_the_mapping_and_a_new_queue_gets_a_fresh_one(
    mqfs_mount: Mount,
) -> None:
    make(mqfs_mount)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
    try:
        with attached(mqfs_mount, "q") as old:
            old_path = map_of(fd).path
            old.send(b"kept", 1)
            os.rmdir(mqfs_mount.path / "q")
            assert not os.path.exists(mqfs_mount.path / "q")
            assert not os.path.exists(old_path)
            old.send(b"after unlink", 0)
            assert calls.peek(fd, 1) == (b"after unlink", 0)  # the daemon's view of it
            assert old.receive(nonblock=True) == (b"kept", 1)
            make(mqfs_mount)
            with attached(mqfs_mount, "q") as new:
                assert map_of_path(mqfs_mount) != old_path
                assert new.state().count == 0
                new.send(b"new queue", 0)
                assert old.receive(nonblock=True) == (b"after unlink", 0)
                assert old.state().count == 0 and new.state().count == 1
    finally:
        os.close(fd)


def test_refused_creations_leave_no_mapping(mount_factory: object) -> None:
    mount = mount_factory("queues_max=1,msg_max=5,msgsize_max=128")  # type: ignore[operator]
    make(mount, "one", maxmsg=5, msgsize=128)
    directory = Path(map_of_path(mount, "one")).parent
    for name, maxmsg, msgsize, code in [
        ("two", 5, 128, errno.ENOSPC),  # queues_max
        ("one-more", 6, 129, errno.ENOSPC),  # ENOSPC before EINVAL, as the kernel
    ]:
        with pytest.raises(OSError) as refused:
            calls.create_at(mount.path, name, 0o600, maxmsg=maxmsg, msgsize=msgsize)
        assert refused.value.errno == code
    os.rmdir(mount.path / "one")
    for maxmsg, msgsize in [(6, 128), (5, 129)]:  # msg_max, msgsize_max
        with pytest.raises(OSError) as refused:
            calls.create_at(mount.path, "big", 0o600, maxmsg=maxmsg, msgsize=msgsize)
        assert refused.value.errno == errno.EINVAL
    assert list(directory.iterdir()) == []


# -- a corrupt mapping is its owner's problem only -----------------------------------------------


@pytest.mark.parametrize("damage", ["random bytes", "truncate"])
def test_a_corrupt_mapping_fails_only_its_queue(mqfs_mount: Mount, damage: str) -> None:
    make(mqfs_mount, "broken")
    make(mqfs_mount, "fine")
    fd = os.open(mqfs_mount.path / "broken" / "queue", os.O_RDWR)
    try:
        calls.send(fd, b"before", 0)
        path = map_of(fd).path
        if damage == "truncate":
            os.truncate(path, 0)
        else:
            size = os.stat(path).st_size
            with open(path, "r+b") as mapping:
                mapping.write(os.urandom(size))
        for call in (
            lambda: calls.receive(fd, 64, timeout=1),
            lambda: calls.send(fd, b"x", 0, timeout=1),
            lambda: calls.peek(fd, 0),
        ):
            with pytest.raises(OSError) as failed:
                call()
            assert failed.value.errno == errno.EUCLEAN
    finally:
        os.close(fd)
    other = os.open(mqfs_mount.path / "fine" / "queue", os.O_RDWR)
    try:
        calls.send(other, b"still served", 3)
        assert calls.receive(other, 64) == (b"still served", 3)
    finally:
        os.close(other)

    def as_other() -> tuple[bytes, int]:
        calls.create_at(mqfs_mount.path, "theirs", 0o600, maxmsg=2, msgsize=16)
        user_fd = os.open(mqfs_mount.path / "theirs" / "queue", os.O_RDWR)
        try:
            calls.send(user_fd, b"mine", 1)
            return calls.receive(user_fd, 16)
        finally:
            os.close(user_fd)

    assert as_user(as_other) == (b"mine", 1)
    os.rmdir(mqfs_mount.path / "broken")  # and the broken queue can still be removed
    assert mqfs_mount.process.poll() is None


def test_a_new_daemon_removes_the_mapping_directories_of_dead_ones() -> None:
    """A daemon killed by SIGKILL leaves its private directory (and the messages in it) in
    /dev/shm, which is memory: the next fast-path daemon removes it. A live daemon's, and
    anything not named, not owned or not made like ours, stays."""
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid no process has now (reuse within the test is not a concern)
    dead = shm / f"mqfs-fastpath-{child.pid}-test"
    alive = shm / f"mqfs-fastpath-{os.getpid()}-test"
    unnamed = shm / "mqfs-fastpath-nopid"
    for directory in (dead, alive, unnamed):
        directory.mkdir()
        (directory / "1.q").write_bytes(b"x" * 64)
    try:
        with mounted(("fastpath",)):
            assert not dead.exists()
            assert alive.exists() and unnamed.exists()
    finally:
        for directory in (dead, alive, unnamed):
            shutil.rmtree(directory, ignore_errors=True)

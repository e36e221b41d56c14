"""What an unprivileged, hostile or careless user can do to the daemon: never crash it,
wedge it, grow it without bound, or learn what is not theirs (issue "No user can crash,
wedge or exhaust the daemon"). Each test fails on the code before its fix."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqfs import wire
from mqfs.client import calls
from tests.support.mounts import Mount, mounted
from tests.support.paths import INCLUDE
from tests.support.users import as_user, run_as_user, unprivileged_user
from tests.support.waiting import wait_until

HERE = Path(__file__).parent


def rss(mount: Mount) -> int:
    """The daemon's resident set, bytes."""
    for line in Path(f"/proc/{mount.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def shared_mount(mount_options: tuple[str, ...]) -> Iterator[Mount]:
    """A mount other users can reach, as a root-run mqfs for everyone would be."""
    unprivileged_user()
    with mounted((*mount_options, "allow_other")) as mount:
        yield mount


@pytest.fixture(scope="module")
def blockers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("blockers") / "blockers"
    subprocess.run(
        ["gcc", "-O2", "-pthread", "-I", INCLUDE, "-o", binary, HERE / "blockers.c"],
        check=True,
    )
    return binary


# -- 1 and 2: inode numbers -------------------------------------------------------------
@pytest.mark.parametrize(
    "index", ["18446744073709551616", "16777216", "16777200", str(2**40), "99999999999999999999999"]
)
def test_a_huge_message_index_is_enoent_and_aliases_nothing(
    shared_mount: Mount, index: str
) -> None:
    shared_mount.make_queue("first")  # qid 1
    mine = shared_mount.make_queue("mine", 0o644)  # qid 2; "secret" is qid 3 = 2 | 1
    secret = shared_mount.make_queue("secret", 0o600)
    client_fd = os.open(secret / "queue", os.O_WRONLY)
    calls.send(client_fd, b"root's secret", 5)
    os.close(client_fd)
    # Any user who can read a queue: before the fix the first index killed the daemon and
    # 16777216 showed message 0 of "secret" (a 0600 queue of root's).
    probe = run_as_user(["stat", "-c", "%s %u %F", str(mine / "msgs" / index)])
    assert probe.returncode == 1 and "No such file or directory" in probe.stderr, probe
    with pytest.raises(FileNotFoundError):
        os.stat(mine / "msgs" / index)
    assert os.stat(secret / "msgs" / "0").st_size == len(b"root's secret")  # still serving


def test_no_two_files_share_an_inode(mqfs_mount: Mount) -> None:
    seen: dict[int, Path] = {}
    for name in ("a", "b"):
        queue = mqfs_mount.make_queue(name)
        fd = os.open(queue / "queue", os.O_WRONLY)
        for _ in range(3):
            calls.send(fd, b"x", 0)
        os.close(fd)
    for directory, _, files in os.walk(mqfs_mount.path):
        for path in [Path(directory), *(Path(directory) / f for f in files)]:
            inode = os.stat(path).st_ino
            assert inode not in seen or seen[inode] == path, (path, seen.get(inode))
            seen[inode] = path


def test_a_bug_in_a_handler_answers_eio_and_the_daemon_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inject a bug: attributes of a queue named "boom" raise RuntimeError (not FUSEError).
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import mqfs.server.ops

            _attributes = mqfs.server.ops.MqueueFS._attributes

            def faulty(self, inode):
                if inode != 1 and self._queue_of(inode).name == "boom":
                    raise RuntimeError("injected fault")
                return _attributes(self, inode)

            mqfs.server.ops.MqueueFS._attributes = faulty
            """
        )
    )
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )
    with mounted(allow_logged_errors=True) as mount:
        with pytest.raises(OSError) as failure:
            os.mkdir(mount.path / "boom")
        assert failure.value.errno == errno.EIO
        for _ in range(3):  # it keeps failing, and keeps serving everything else
            with pytest.raises(OSError, match="Input/output error"):
                os.stat(mount.path / "boom")
        os.mkdir(mount.path / "fine")
        assert stat.S_ISDIR(os.stat(mount.path / "fine").st_mode)
        with open(mount.path / "fine" / "queue", "wb", buffering=0) as queue:
            queue.write(b"still serving")
        assert (mount.path / "fine" / "msgs" / "0").read_bytes() == b"still serving"
        assert mount.process.poll() is None
        log = mount.log_path.read_text()
        assert "bug in the mkdir handler" in log and "RuntimeError: injected fault" in log


# -- 3: memory that grows with history ---------------------------------------------------
def test_create_unlink_churn_does_not_grow_the_daemon(mqfs_mount: Mount) -> None:
    def churn(cycles: int) -> None:
        for _ in range(cycles):
            os.mkdir(mqfs_mount.path / "q")
            os.rmdir(mqfs_mount.path / "q")

    churn(300)  # warm up allocator pools
    before = rss(mqfs_mount)
    churn(3000)
    growth = rss(mqfs_mount) - before
    # Before the fix each cycle kept ~263 KB (3000 cycles: ~790 MB).
    assert growth < 2 * 1024 * 1024, f"RSS grew by {growth} bytes over 3000 cycles"


# -- 4: staged sends -----------------------------------------------------------------------
def test_a_staged_send_never_holds_more_than_the_length_it_named(mount_factory: object) -> None:
    mount: Mount = mount_factory("msgsize_max=65536,msg_max=4")  # type: ignore[operator]
    fd = calls.create_at(mount.path, "big", maxmsg=4, msgsize=40000)
    queue_fd = os.open(mount.path / "big" / "queue", os.O_RDWR)
    try:
        first = wire.Xfer(msg_len=20000, msg_prio=1, data=b"a" * wire.CHUNK)
        _, reply = calls._call(queue_fd, wire.IOC_SEND, first.pack())
        transfer = wire.Xfer.unpack(reply).xfer_id
        assert transfer
        # A later chunk that claims a larger msg_len must not stretch the transfer: before
        # the fix a user made one transfer hold 311 MiB on a default mount.
        rest = 20000 - wire.CHUNK
        greedy = wire.Xfer(
            msg_len=10**9, offset=wire.CHUNK, xfer_id=transfer, data=b"b" * (rest + 1)
        )
        with pytest.raises(OSError) as failure:
            calls._call(queue_fd, wire.IOC_SEND, greedy.pack())
        assert failure.value.errno == errno.EINVAL
        honest = wire.Xfer(msg_len=20000, offset=wire.CHUNK, xfer_id=transfer, data=b"b" * rest)
        calls._call(queue_fd, wire.IOC_SEND, honest.pack())
        assert calls.receive(queue_fd, 40000) == (b"a" * wire.CHUNK + b"b" * rest, 1)
    finally:
        os.close(queue_fd)
        del fd


# -- 6: many blocked callers ---------------------------------------------------------------
def test_twenty_thousand_blocked_readers_wedge_nothing(
    mount_factory: object, blockers: Path
) -> None:
    count = 20_000
    mount: Mount = mount_factory("allow_other", f"blocked_max={count}")  # type: ignore[operator]
    mount.make_queue("sink", 0o644)
    os.chmod(mount.make_queue("other"), 0o666)
    with subprocess.Popen(
        [blockers, mount.path / "sink" / "queue", str(count)], stdout=subprocess.PIPE, text=True
    ) as parker:
        try:
            assert parker.stdout is not None
            assert parker.stdout.readline() == f"started {count}\n"
            wait_until(
                lambda: mount.blocked_on("sink") == count,
                what=f"{count} parked readers",
                timeout=60,
            )

            # Another user's send and receive still go through, promptly.
            def exchange() -> bytes:
                fd = os.open(mount.path / "other" / "queue", os.O_RDWR)
                try:
                    os.write(fd, b"hi\n")
                    return calls.receive(fd, 8192)[0]
                finally:
                    os.close(fd)

            started = time.monotonic()
            assert as_user(exchange) == b"hi\n"
            elapsed = time.monotonic() - started
            assert elapsed < 2.0, f"send+receive took {elapsed:.2f}s with {count} callers blocked"
        finally:
            parker.kill()
            parker.wait(timeout=60)  # every thread answered: before the fix they stayed in D state
    wait_until(
        lambda: mount.blocked_on("sink") == 0, what="the blocked count to drop to 0", timeout=30
    )
    assert mount.info("sink")["open"] == 0


def test_past_blocked_max_a_user_gets_eagain_and_others_still_block(
    mount_factory: object, blockers: Path
) -> None:
    mount: Mount = mount_factory("blocked_max=50")  # type: ignore[operator]
    mount.make_queue("sink")
    with subprocess.Popen(
        [blockers, mount.path / "sink" / "queue", "50"], stdout=subprocess.PIPE
    ) as parker:
        try:
            wait_until(lambda: mount.blocked_on("sink") == 50, what="50 parked readers", timeout=30)
            fd = os.open(mount.path / "sink" / "queue", os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):
                    calls.receive(fd, 8192)  # the 51st blocked caller of the same user
            finally:
                os.close(fd)
        finally:
            parker.kill()
            parker.wait(timeout=30)


# -- 7: stopping with callers blocked --------------------------------------------------------
def test_sigterm_with_blocked_callers_answers_them_and_exits(
    tmp_path: Path, mount_options: tuple[str, ...]
) -> None:
    with mounted(mount_options) as mount:
        full = calls.create_at(mount.path, "full", maxmsg=1, msgsize=128)
        del full
        mount.make_queue("empty")
        fd = os.open(mount.path / "full" / "queue", os.O_WRONLY)
        os.write(fd, b"fills it")
        os.close(fd)
        script = textwrap.dedent(
            """
            import os, sys
            from mqfs.client import calls
            fd = os.open(sys.argv[1], os.O_RDWR)
            calls.receive_on_read(fd)
            try:
                if sys.argv[2] == "read":
                    os.read(fd, 8192)
                else:
                    os.write(fd, b"one more")
            except OSError as exc:
                print(exc.errno)
            """
        )
        callers = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(mount.path / q / "queue"), how],
                stdout=subprocess.PIPE,
                text=True,
            )
            for q, how in (("empty", "read"), ("full", "write"), ("empty", "read"))
        ]
        try:
            wait_until(
                lambda: mount.blocked_on("empty") == 2 and mount.blocked_on("full") == 1,
                what="blocked callers",
                timeout=10,
            )
            started = time.monotonic()
            mount.process.send_signal(signal.SIGTERM)
            assert mount.process.wait(timeout=5) == 0
            assert time.monotonic() - started < 2.0
            for caller in callers:
                out, _ = caller.communicate(timeout=5)
                assert out.strip() == str(errno.ENOTCONN)
            assert not any(
                mount.path == Path(line.split()[1])
                for line in Path("/proc/self/mounts").read_text().splitlines()
            )
        finally:
            if mount.process.poll() is None:  # it did not stop: free the callers it holds
                mount.process.kill()
                mount.process.wait()
            for caller in callers:
                caller.kill()
                caller.wait()


# -- 8: writev is one message or none -----------------------------------------------------------
def test_writev_of_many_small_buffers_is_refused_whole(mqfs_mount: Mount) -> None:
    queue = mqfs_mount.make_queue("q")
    fd = os.open(queue / "queue", os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(OSError) as failure:
            os.writev(fd, [b"x" * 20] * 300)  # the kernel cuts it after 256 iovecs
        assert failure.value.errno == errno.EMSGSIZE
        assert calls.get_attributes(fd).curmsgs == 0
        assert os.writev(fd, [b"y" * 20] * 200) == 4000  # one request: one message
        assert calls.receive(fd, 8192) == (b"y" * 4000, 0)
        # Nearly full, nonblocking: still nothing sent, no short write.
        for _ in range(9):
            os.write(fd, b"z")
        with pytest.raises(OSError) as failure:
            os.writev(fd, [b"x" * 20] * 300)
        assert failure.value.errno == errno.EMSGSIZE
        assert calls.get_attributes(fd).curmsgs == 9
    finally:
        os.close(fd)


def test_a_buffer_straddling_pages_is_one_message(mqfs_mount: Mount) -> None:
    import mmap

    queue = calls.create_at(mqfs_mount.path, "q", maxmsg=2, msgsize=8192)
    del queue
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
    page = mmap.PAGESIZE
    area = mmap.mmap(-1, 3 * page)
    try:
        area[page - 100 : 2 * page + 100] = b"s" * (page + 200)
        view = memoryview(area)[page - 100 : 2 * page + 100]
        assert os.writev(fd, [view[:50], view[50:]]) == page + 200
        assert calls.receive(fd, 8192) == (b"s" * (page + 200), 0)
        view.release()
    finally:
        area.close()
        os.close(fd)


# -- 11: who sees what -----------------------------------------------------------------------
def test_openers_pids_are_shown_to_the_owner_and_root_only(shared_mount: Mount) -> None:
    shared_mount.make_queue("q", 0o644)
    fd = os.open(shared_mount.path / "q" / "queue", os.O_RDONLY)
    try:
        as_root = shared_mount.info("q")
        assert as_root["open"] == 1 and as_root["openers"] == [
            {
                "pid": os.getpid(),
                "command": Path("/proc/self/comm").read_text().strip(),
                "access": "r",
                "nonblock": False,
                "blocked": None,
                "blocked_since_ns": None,
                "waiting": {},
            }
        ]
        seen = as_user(lambda: os.getxattr(shared_mount.path / "q", wire.INFO_XATTR))
        as_other = json.loads(seen)
        assert as_other["open"] == 1 and as_other["openers"] is None
        assert str(os.getpid()).encode() not in seen
    finally:
        os.close(fd)

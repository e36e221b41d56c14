"""The tree a shell sees: queues as directories, status, msgs/, names and limits."""

from __future__ import annotations

import errno
import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mqfs import wire
from mqfs.client import calls
from mqfs.client.backends import KernelBackend
from tests.support.kernel import mqueue_mount, why_kernel_mqueue_unusable
from tests.support.mounts import Mount
from tests.support.waiting import wait_until


def sh(command: str, mount: Mount) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", command],
        cwd=mount.path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


MQFS = Path(sys.executable).with_name("mqfs")  # the command scripts/setup installs


def send_all(mount: Mount, name: str, messages: list[tuple[bytes, int]]) -> None:
    fd = os.open(mount.path / name / "queue", os.O_WRONLY)
    try:
        for payload, priority in messages:
            calls.send(fd, payload, priority)
    finally:
        os.close(fd)


def test_the_shell_session_from_the_readme(mqfs_mount: Mount) -> None:
    steps = sh(
        "mkdir q && echo hello > q/queue && echo world > q/queue && ls q && "
        "ls q/msgs && cat q/msgs/0 && cat q/status && cat q/msgs/1",
        mqfs_mount,
    )
    assert steps.returncode == 0, steps.stderr
    assert steps.stdout == (
        "msgs\nqueue\nstatus\n0\n1\nhello\n"
        "QSIZE:12         NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"
        "world\n"
    )
    # Reading the queue file is the status line, as on /dev/mqueue: nothing is consumed.
    assert sh("cat q/queue", mqfs_mount).stdout == (
        "QSIZE:12         NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"
    )
    assert sh("ls q/msgs", mqfs_mount).stdout == "0\n1\n"
    # Receiving is an explicit act.
    received = sh(f"{MQFS} recv q --mount .", mqfs_mount)
    assert received.stdout == "hello\n", received.stderr
    assert sh("ls q/msgs", mqfs_mount).stdout == "0\n"


def test_ls_lists_queues_and_rmdir_removes_them(mqfs_mount: Mount) -> None:
    for name in ("alpha", "beta"):
        mqfs_mount.make_queue(name)
    assert sorted(os.listdir(mqfs_mount.path)) == ["alpha", "beta"]
    os.rmdir(mqfs_mount.path / "alpha")
    assert os.listdir(mqfs_mount.path) == ["beta"]
    with pytest.raises(FileNotFoundError):
        os.stat(mqfs_mount.path / "alpha")


def test_mkdir_sets_mode_and_owner_and_default_attributes(mqfs_mount: Mount) -> None:
    old_umask = os.umask(0o022)
    try:
        os.mkdir(mqfs_mount.path / "q", 0o666)
    finally:
        os.umask(old_umask)
    queue_file = os.stat(mqfs_mount.path / "q" / "queue")
    assert stat.S_IMODE(queue_file.st_mode) == 0o644
    assert stat.S_ISREG(queue_file.st_mode)
    assert (queue_file.st_uid, queue_file.st_gid) == (os.getuid(), os.getgid())
    assert queue_file.st_size == 80  # as the kernel's /dev/mqueue files
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    try:
        assert calls.get_attributes(fd) == wire.Attr(0, 10, 8192, 0)
    finally:
        os.close(fd)
    with pytest.raises(FileExistsError):
        os.mkdir(mqfs_mount.path / "q")


def test_msgs_lists_indexes_with_sizes_and_priorities(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    send_all(mqfs_mount, "q", [(b"a" * 5, 1), (b"b" * 300, 20), (b"", 1)])
    msgs = mqfs_mount.path / "q" / "msgs"
    assert sorted(os.listdir(msgs), key=int) == ["0", "1", "2"]
    assert [os.stat(msgs / str(i)).st_size for i in range(3)] == [300, 5, 0]
    assert [os.getxattr(msgs / str(i), "user.mq.priority") for i in range(3)] == [b"20", b"1", b"1"]
    assert os.listxattr(msgs / "0") == ["user.mq.priority"]
    listing = sh("ls -l q/msgs", mqfs_mount).stdout.splitlines()
    assert listing[0] == "total 1"
    assert [line.split()[4] for line in listing[1:]] == ["300", "5", "0"]
    assert [(msgs / str(i)).read_bytes() for i in range(3)] == [b"b" * 300, b"a" * 5, b""]
    assert os.stat(mqfs_mount.path / "q" / "queue").st_size == 80
    for missing in ("3", "00", "01", "-1", "x", "+1"):
        assert not (msgs / missing).exists(), missing


def test_msgs_are_read_without_consuming_and_follow_receives(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    send_all(mqfs_mount, "q", [(b"first", 0), (b"second", 0)])
    head = mqfs_mount.path / "q" / "msgs" / "0"
    assert head.read_bytes() == b"first"
    assert head.read_bytes() == b"first"
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    calls.receive_on_read(fd)
    try:
        assert os.read(fd, 8192) == b"first"
        assert head.read_bytes() == b"second"  # never the old head after a receive
        assert os.stat(head).st_size == 6
        snapshot = os.open(head, os.O_RDONLY)
        try:
            assert os.read(fd, 8192) == b"second"
            assert os.read(snapshot, 100) == b"second"  # what it was at open time
        finally:
            os.close(snapshot)
        assert not head.exists()
    finally:
        os.close(fd)


def test_virtual_files_are_read_only(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    send_all(mqfs_mount, "q", [(b"x", 0)])
    for path in ("q/status", "q/msgs/0"):
        with pytest.raises(PermissionError):
            os.open(mqfs_mount.path / path, os.O_WRONLY)
    for path in ("q/newfile", "newfile"):
        with pytest.raises(OSError) as creating:
            os.open(mqfs_mount.path / path, os.O_WRONLY | os.O_CREAT, 0o600)
        assert creating.value.errno == errno.EPERM
    with pytest.raises(OSError) as unlinking:
        os.unlink(mqfs_mount.path / "q" / "queue")
    assert unlinking.value.errno == errno.EPERM


def test_rename_link_symlink_mknod_are_eperm_everywhere(mqfs_mount: Mount) -> None:
    """As the kernel's mqueue (the conformance scenario compares the root with it)."""
    mqfs_mount.make_queue("q")
    q = mqfs_mount.path / "q"
    attempts = [
        lambda: os.rename(q / "queue", q / "other"),
        lambda: os.rename(q / "status", mqfs_mount.path / "r"),
        lambda: os.link(q / "status", q / "l"),
        lambda: os.symlink("queue", q / "s"),
        lambda: os.mknod(q / "n", stat.S_IFIFO | 0o600),
        lambda: os.mknod(mqfs_mount.path / "n", stat.S_IFREG | 0o600),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as failure:
            attempt()
        assert failure.value.errno == errno.EPERM
    assert sorted(os.listdir(q)) == ["msgs", "queue", "status"]


def test_rmdir_while_open_keeps_the_queue_for_open_descriptors(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
    calls.receive_on_read(fd)
    try:
        os.write(fd, b"survivor")
        os.rmdir(mqfs_mount.path / "q")
        assert not (mqfs_mount.path / "q").exists()
        mqfs_mount.make_queue("q")  # the name is free: a new, empty queue
        fresh = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY | os.O_NONBLOCK)
        calls.receive_on_read(fresh)
        try:
            with pytest.raises(BlockingIOError):
                os.read(fresh, 8192)
        finally:
            os.close(fresh)
        os.write(fd, b"still works")
        assert os.read(fd, 8192) == b"survivor"
        assert calls.peek(fd, 0) == (b"still works", 0)
    finally:
        os.close(fd)


def test_wait_wakes_on_unlink_and_says_so(mqfs_mount: Mount) -> None:
    """WAIT returns when the queue is unlinked, with WAIT_UNLINKED; the info stays
    readable through the open file, naming the unlink as the last change."""
    import concurrent.futures

    mqfs_mount.make_queue("q")
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDONLY)
    try:
        start = calls.wait_changed(fd, 0, timeout=0)
        assert not start.unlinked
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(calls.wait_changed, fd, start.generation, 30)
            wait_until(lambda: mqfs_mount.blocked_on("q") == 1, what="the WAIT to park")
            os.rmdir(mqfs_mount.path / "q")
            reply = waiting.result(timeout=20)
        assert reply.unlinked and reply.generation == start.generation + 1
        info = json.loads(os.getxattr(fd, wire.INFO_XATTR))
        assert info["unlinked"] and info["last_change"]["kind"] == "unlink"
        assert info["last_change"]["pid"] == os.getpid()
    finally:
        os.close(fd)


def test_queue_names_get_the_kernels_errno(mqfs_mount: Mount) -> None:
    with pytest.raises(OSError) as too_long:
        os.mkdir(mqfs_mount.path / ("n" * 256))
    assert too_long.value.errno == errno.ENAMETOOLONG
    os.mkdir(mqfs_mount.path / ("n" * 255))
    root = os.open(mqfs_mount.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, code in (
            ("", errno.ENOENT),
            (".", errno.EACCES),
            ("..", errno.EACCES),
            ("a/b", errno.EACCES),
            ("n" * 256, errno.ENAMETOOLONG),
        ):
            with pytest.raises(OSError) as bad:
                calls.create(root, name)
            assert bad.value.errno == code, name
    finally:
        os.close(root)


def test_create_ioctl_is_mq_open_o_creat(mqfs_mount: Mount) -> None:
    root = os.open(mqfs_mount.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        calls.create(root, "sized", 0o640, maxmsg=3, msgsize=64, exclusive=True)
        calls.create(root, "sized", 0o600, maxmsg=9, msgsize=9)  # exists: attr ignored
        with pytest.raises(FileExistsError):
            calls.create(root, "sized", exclusive=True)
        for maxmsg, msgsize in ((0, 64), (11, 64), (3, 0), (3, 8193), (-1, 64)):
            with pytest.raises(OSError) as bad_attr:
                calls.create(root, f"bad{maxmsg}x{msgsize}", maxmsg=maxmsg, msgsize=msgsize)
            assert bad_attr.value.errno == errno.EINVAL
        calls.create(root, "tiny", maxmsg=1, msgsize=1)
    finally:
        os.close(root)
    assert stat.S_IMODE(os.stat(mqfs_mount.path / "sized" / "queue").st_mode) == 0o640
    fd = os.open(mqfs_mount.path / "sized" / "queue", os.O_RDONLY)
    try:
        assert calls.get_attributes(fd) == wire.Attr(0, 3, 64, 0)
    finally:
        os.close(fd)


def test_unknown_flags_are_einval_through_the_kernel(mqfs_mount: Mount) -> None:
    """SEND, RECEIVE, WAIT and CREATE refuse a flag bit they do not know (fs_api checks
    each bit); here the same requests made by ioctl(2) on a mount."""
    mqfs_mount.make_queue("q")
    size = wire.XFER_HEADER_SIZE + 64
    root = os.open(mqfs_mount.path, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR | os.O_NONBLOCK)
    try:
        requests = [
            (fd, wire.sized(wire.IOC_SEND, size), wire.Xfer(msg_len=1, flags=2, data=b"x")),
            (fd, wire.sized(wire.IOC_RECEIVE, size), wire.Xfer(msg_len=64, flags=2)),
        ]
        for target, cmd, xfer in requests:
            with pytest.raises(OSError) as failure:
                calls._call(target, cmd, xfer.request(size))
            assert failure.value.errno == errno.EINVAL
        others = [
            (fd, wire.IOC_WAIT, wire.Wait(flags=2).pack()),
            (root, wire.IOC_CREATE, wire.Create(name=b"new", flags=4).pack()),
        ]
        for target, cmd, request in others:
            with pytest.raises(OSError) as failure:
                calls._call(target, cmd, request)
            assert failure.value.errno == errno.EINVAL
        assert calls.get_attributes(fd).curmsgs == 0
    finally:
        os.close(fd)
        os.close(root)
    assert os.listdir(mqfs_mount.path) == ["q"]


def test_mount_options_set_limits(mount_factory: object) -> None:
    mount = mount_factory("msg_default=3,msgsize_default=128,queues_max=2")  # type: ignore[operator]
    mount.make_queue("one")
    mount.make_queue("two")
    with pytest.raises(OSError) as too_many:
        mount.make_queue("three")
    assert too_many.value.errno == errno.ENOSPC
    fd = os.open(mount.path / "one" / "queue", os.O_RDONLY)
    try:
        assert calls.get_attributes(fd) == wire.Attr(0, 3, 128, 0)
        os.rmdir(mount.path / "one")
        with pytest.raises(OSError) as still_counted:  # unlinked but open: still counts
            mount.make_queue("three")
        assert still_counted.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    mount.make_queue("three")


@pytest.mark.kernel
def test_status_line_equals_the_kernels_byte_for_byte(mqfs_mount: Mount) -> None:
    reason = why_kernel_mqueue_unusable(mounting=True)
    if reason:
        pytest.skip(reason)
    scenario: list[tuple[bytes, int]] = [(b"", 0), (b"x" * 8192, 3), (b"hello", 32767)]
    name = f"mqfs-status-{os.getpid()}"
    with mqueue_mount() as kernel_root:
        kernel = KernelBackend(kernel_root)
        mqd = kernel.open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        mqfs_mount.make_queue(name)
        fd = os.open(mqfs_mount.path / name / "queue", os.O_RDWR)
        try:
            kernel_lines, mqfs_lines = [], []
            for payload, priority in scenario:
                kernel.send(mqd, payload, priority)
                calls.send(fd, payload, priority)
                kernel_lines.append((kernel_root / name).read_bytes())
                mqfs_lines.append((mqfs_mount.path / name / "status").read_bytes())
            received = [kernel.receive(mqd, 8192) for _ in scenario]
            assert [calls.receive(fd, 8192) for _ in scenario] == received
            kernel_lines.append((kernel_root / name).read_bytes())
            mqfs_lines.append((mqfs_mount.path / name / "status").read_bytes())
            assert mqfs_lines == kernel_lines
            assert mqfs_lines[1] == (
                b"QSIZE:8192       NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"
            )
            kernel_file = open(kernel_root / name, "rb", buffering=0)  # noqa: SIM115
            with kernel_file, open(mqfs_mount.path / name / "status", "rb", buffering=0) as ours:
                assert [ours.read(7) for _ in range(10)] == [kernel_file.read(7) for _ in range(10)]
        finally:
            os.close(fd)
            kernel.close(mqd)
            kernel.unlink("/" + name)


def test_queue_memory_is_charged_to_rlimit_msgqueue(mount_factory: object) -> None:
    # As the kernel: maxmsg*msgsize + 96 bytes per message against the creator's
    # RLIMIT_MSGQUEUE (819200 by default), released when the queue is destroyed.
    limit = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[0]
    if limit == resource.RLIM_INFINITY or limit > 50_000_000:
        pytest.skip(f"RLIMIT_MSGQUEUE is {limit}: too large to exhaust in a test")
    mount = mount_factory(f"msgsize_max={limit},msg_max=1")  # type: ignore[operator]
    half = limit // 2 - 96
    calls.create_at(mount.path, "a", 0o600, maxmsg=1, msgsize=half)
    calls.create_at(mount.path, "b", 0o600, maxmsg=1, msgsize=half)
    with pytest.raises(OSError) as over:
        calls.create_at(mount.path, "c", 0o600, maxmsg=1, msgsize=128)
    assert over.value.errno == errno.EMFILE
    assert sorted(os.listdir(mount.path)) == ["a", "b"]
    os.rmdir(mount.path / "a")  # destroyed (nobody has it open): the charge goes
    calls.create_at(mount.path, "c", 0o600, maxmsg=1, msgsize=128)


def test_cached_views_never_go_stale(mqfs_mount: Mount) -> None:
    # The kernel caches msgs/ names and attributes; every change must invalidate them.
    mqfs_mount.make_queue("q", 0o640)
    msgs = mqfs_mount.path / "q" / "msgs"
    send_all(mqfs_mount, "q", [(b"long first", 1), (b"2nd", 0)])
    assert [os.stat(msgs / name).st_size for name in sorted(os.listdir(msgs))] == [10, 3]
    assert subprocess.run(["ls", "-l", str(msgs)], capture_output=True, check=True).stdout
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
    try:
        calls.receive(fd, 8192)  # everything cached above is now wrong
        assert os.listdir(msgs) == ["0"]
        assert os.stat(msgs / "0").st_size == 3
        assert (msgs / "0").read_bytes() == b"2nd"
        assert not (msgs / "1").exists()
        calls.send(fd, b"urgent!", 9)  # a new head, and an index 1 again
        assert os.stat(msgs / "0").st_size == 7
        assert os.getxattr(msgs / "0", "user.mq.priority") == b"9"
        assert os.stat(msgs / "1").st_size == 3
        os.chmod(mqfs_mount.path / "q" / "queue", 0o600)  # modes show on every view
        assert stat.S_IMODE(os.stat(msgs / "0").st_mode) == 0o400
        assert stat.S_IMODE(os.stat(msgs).st_mode) == 0o500
        assert stat.S_IMODE(os.stat(mqfs_mount.path / "q").st_mode) == 0o700
    finally:
        os.close(fd)


def test_ls_l_asks_for_no_xattr_per_entry(mount_factory: object) -> None:
    # ls -l asks for security.selinux and system.posix_acl_access on every entry unless
    # the answer is EOPNOTSUPP, which it remembers for the whole device.
    mount = mount_factory("debug,msg_max=64")  # type: ignore[operator]
    calls.create_at(mount.path, "q", 0o600, maxmsg=40, msgsize=64)
    send_all(mount, "q", [(b"m%d" % index, index % 3) for index in range(40)])
    since = mount.log_path.stat().st_size
    listing = subprocess.run(
        ["ls", "-l", str(mount.path / "q" / "msgs")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    )
    with open(mount.log_path, "rb") as log:  # libfuse logs a request as it reads it
        log.seek(since)
        asked = log.read().count(b"opcode: GETXATTR")
    assert asked <= 2, f"{asked} GETXATTR requests for 40 entries"
    assert listing.stderr == ""
    lines = listing.stdout.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["-r--------"] * 40  # no '+' nor '.'
    assert [line.split()[-1] for line in lines] == sorted(map(str, range(40)))
    msgs = mount.path / "q" / "msgs"
    assert [os.getxattr(msgs / str(i), "user.mq.priority") for i in (0, 1, 39)] == [
        b"2",
        b"2",
        b"0",
    ]


@pytest.mark.kernel
def test_xattrs_outside_user_are_unsupported_as_on_the_kernels(mqfs_mount: Mount) -> None:
    if reason := why_kernel_mqueue_unusable(mounting=True):
        pytest.skip(reason)
    mqfs_mount.make_queue("q", 0o640)
    send_all(mqfs_mount, "q", [(b"x", 7)])
    names = ("security.selinux", "system.posix_acl_access", "system.posix_acl_default")
    backend = KernelBackend()
    kernel_name = f"/xattrs-{os.getpid()}"
    with mqueue_mount() as kernel:
        backend.close(backend.open(kernel_name, os.O_CREAT | os.O_RDWR, 0o640, (10, 64)))
        try:
            targets = {
                "kernel queue": kernel / kernel_name[1:],
                "mqfs queue": mqfs_mount.path / "q" / "queue",
                "mqfs msgs/0": mqfs_mount.path / "q" / "msgs" / "0",
                "mqfs root": mqfs_mount.path,
            }
            for name in (*names, "trusted.mq"):
                for what, path in targets.items():
                    with pytest.raises(OSError) as unsupported:
                        os.getxattr(path, name)
                    assert unsupported.value.errno == errno.EOPNOTSUPP, (what, name)
        finally:
            backend.unlink(kernel_name)
    # The user namespace keeps its names; permission checks and chmod use the mode bits.
    assert os.getxattr(mqfs_mount.path / "q" / "msgs" / "0", "user.mq.priority") == b"7"
    assert mqfs_mount.info("q")["curmsgs"] == 1
    with pytest.raises(OSError) as no_such_name:
        os.getxattr(mqfs_mount.path / "q" / "msgs" / "0", "user.other")
    assert no_such_name.value.errno == errno.ENODATA
    os.chmod(mqfs_mount.path / "q" / "queue", 0o604)
    assert stat.S_IMODE(os.stat(mqfs_mount.path / "q" / "queue").st_mode) == 0o604

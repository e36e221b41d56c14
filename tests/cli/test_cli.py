"""The `mqfs` command: main(argv) in-process against a real mount, and once end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mqfs.cli import main
from mqfs.client import calls, dump
from mqfs.client.backends import KernelBackend
from tests.support.kernel import mqueue_mount, why_kernel_mqueue_unusable
from tests.support.mounts import Mount, lazy_unmount
from tests.support.paths import INCLUDE, ROOT
from tests.support.waiting import wait_until


def run(mount: Mount, *argv: str, stdin: bytes = b"") -> tuple[int, bytes, str]:
    """Run `mqfs ARGV --mount MNT` in a subprocess-free way: main() with captured I/O."""
    result = subprocess.run(
        [sys.executable, "-m", "mqfs", *argv, "--mount", str(mount.path)],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode, result.stdout, result.stderr.decode()


def test_main_in_process_create_send_peek_recv(
    mqfs_mount: Mount, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    where = ["--mount", str(mqfs_mount.path)]
    assert main(["create", "q", "--maxmsg", "4", "--msgsize", "64", *where]) == 0
    assert main(["send", "q", "low", "--prio", "1", *where]) == 0
    assert main(["send", "q", "high", "--prio", "9", *where]) == 0
    capsysbinary.readouterr()
    assert main(["peek", "q", "--all", "--show-prio", *where]) == 0
    assert capsysbinary.readouterr().out == b"9\thigh\n1\tlow\n"
    assert main(["peek", "q", "1", *where]) == 0
    assert capsysbinary.readouterr().out == b"low\n"
    assert main(["recv", "q", "--show-prio", *where]) == 0
    assert capsysbinary.readouterr().out == b"9\thigh\n"
    assert main(["ls", "--json", *where]) == 0
    (row,) = json.loads(capsysbinary.readouterr().out)
    assert (row["name"], row["curmsgs"], row["maxmsg"], row["msgsize"], row["qsize"]) == (
        "q", 1, 4, 64, 3
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["send", "nope", "x"], "mqfs: send: no queue named 'nope' (ENOENT)"),
        (["recv", "q", "--nonblock"], "mqfs: recv: queue 'q' is empty (EAGAIN)"),
        (["recv", "q", "--timeout", "0.05"], "mqfs: recv: timed out: queue 'q' is still empty (ETIMEDOUT)"),
        (["peek", "q", "3"], "mqfs: peek: queue 'q' is empty (EAGAIN)"),
        (["create", "q", "--exclusive"], "mqfs: create: queue 'q' already exists (EEXIST)"),
        (["create", "big", "--maxmsg", "99", "--msgsize", "64"],
         "mqfs: create: queue 'big': maxmsg 99 > msg_max 10 of this mount; mount with -o msg_max=99 to allow it (EINVAL)"),
        (["send", "q", "x", "--prio", "40000"], "mqfs: send: priority 40000 is not in 0..32767 (EINVAL)"),
        (["rm", "../x"], "mqfs: rm: queue name '../x' contains '/': only one leading '/' is allowed (EACCES)"),
        (["who", ".."], "mqfs: who: queue name '..' is reserved (EACCES)"),
        (["rm", "nope"], "mqfs: rm: no queue named 'nope' (ENOENT)"),
        (["restore", "/nonexistent.json"], "mqfs: restore: cannot read /nonexistent.json: No such file or directory (ENOENT)"),
    ],
)  # fmt: skip
def test_errors_are_one_line_with_the_errno(
    mqfs_mount: Mount, argv: list[str], message: str
) -> None:
    mqfs_mount.make_queue("q")
    status, _, stderr = run(mqfs_mount, *argv)
    assert status == 1
    assert stderr == message + "\n"


def test_send_full_queue_names_the_problem(mqfs_mount: Mount) -> None:
    assert run(mqfs_mount, "create", "q", "--maxmsg", "1", "--msgsize", "16")[0] == 0
    assert run(mqfs_mount, "send", "q", "one")[0] == 0
    status, _, stderr = run(mqfs_mount, "send", "q", "two", "--nonblock")
    assert (status, stderr) == (1, "mqfs: send: queue 'q' is full (EAGAIN)\n")


def test_send_reads_standard_input_binary_safe(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    payload = bytes(range(256))
    assert run(mqfs_mount, "send", "q", "--prio", "4", stdin=payload)[0] == 0
    status, out, _ = run(mqfs_mount, "recv", "q", "--raw")
    assert (status, out) == (0, payload)


def test_ls_long_and_who_show_openers_and_blocked_receivers(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    receiver = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "recv", "q", "--mount", str(mqfs_mount.path)],
        stdout=subprocess.PIPE,
    )
    try:

        def blocked() -> bool:
            info = json.loads(os.getxattr(mqfs_mount.path / "q", "user.mq.info"))
            return any(o["blocked"] for o in info["openers"])

        wait_until(blocked, what="the receiver to block")
        status, out, _ = run(mqfs_mount, "who", "q")
        assert status == 0
        lines = out.decode().splitlines()
        assert lines[0].split() == ["PID", "COMMAND", "ACCESS", "BLOCKED", "FOR"]
        assert lines[1].split()[0] == str(receiver.pid)
        assert lines[1].split()[2:4] == ["read", "receive"]
        _, table, _ = run(mqfs_mount, "ls", "-l")
        header, row = table.decode().splitlines()
        assert header.split() == [
            "NAME",
            "MODE",
            "OWNER",
            "MSGS",
            "MSGSIZE",
            "BYTES",
            "NOTIFY",
            "OPEN",
        ]
        assert row.split() == ["q", "0600", "root", "0/10", "8192", "0", "-", f"{receiver.pid}r*"]
        assert run(mqfs_mount, "send", "q", "wake")[0] == 0
        assert receiver.communicate(timeout=10)[0] == b"wake\n"
    finally:
        receiver.kill()
        receiver.communicate()


def test_watch_follows_changes_without_polling(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "mqfs", "watch", "q", "--changes", "3", "--mount",
         str(mqfs_mount.path)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    me = os.getpid()
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline()[14:] == f"{'now':<26} 0/10 msgs  head: -\n"
        fd = os.open(mqfs_mount.path / "q" / "queue", os.O_RDWR)
        try:
            calls.send(fd, b"first", 2)
            line = watcher.stdout.readline()[14:]
            assert line == f"{f'send by pid {me}':<26} 1/10 msgs  head: [2] 'first'\n"
            calls.receive(fd, 8192)
            line = watcher.stdout.readline()[14:]
            assert line == f"{f'receive by pid {me}':<26} 0/10 msgs  head: -\n"
        finally:
            os.close(fd)
        assert watcher.wait(timeout=10) == 0
    finally:
        watcher.kill()
        watcher.communicate()


def test_dump_changes_nothing_and_restore_round_trips(mount_factory: object) -> None:
    source = mount_factory()  # type: ignore[operator]
    target = mount_factory()  # type: ignore[operator]
    assert run(source, "create", "q", "--maxmsg", "6", "--msgsize", "300", "--mode", "0640")[0] == 0
    fd = os.open(source.path / "q" / "queue", os.O_WRONLY)
    messages = [(b"\x00\xffbinary", 3), (b"", 0), (b"x" * 300, 9), (b"tail", 3)]
    try:
        for payload, priority in messages:
            calls.send(fd, payload, priority)
    finally:
        os.close(fd)
    status_before = (source.path / "q" / "status").read_bytes()
    stamp_before = os.stat(source.path / "q" / "queue").st_mtime_ns
    status, text, _ = run(source, "dump", "q")
    assert status == 0
    assert (source.path / "q" / "status").read_bytes() == status_before
    assert os.stat(source.path / "q" / "queue").st_mtime_ns == stamp_before
    (queue,) = dump.from_json(text.decode())
    assert queue.messages == sorted(messages, key=lambda m: -m[1])
    assert (queue.maxmsg, queue.msgsize, queue.mode) == (6, 300, 0o640)
    dump_file = Path(target.path).parent / "dump.json"
    dump_file.write_bytes(text)
    try:
        assert run(target, "restore", str(dump_file))[0] == 0
        assert dump.dump_queue(target.path, "q").messages == queue.messages
        assert os.stat(target.path / "q" / "queue").st_mode & 0o777 == 0o640
        status, _, stderr = run(target, "restore", str(dump_file))
        assert status == 1
        assert "already holds 4 messages" in stderr
    finally:
        dump_file.unlink()


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda text: text[: len(text) // 2], "truncated"),
        (lambda text: text.replace('"count": 2', '"count": 3'), "'count' says 3"),
        (lambda text: text.replace('"priority": 5', '"priority": 40000'), "out of range"),
        (lambda text: text.replace('"version": 1', '"version": 7'), "version 7"),
    ],
)
def test_corrupt_dumps_are_refused_before_touching_anything(
    mqfs_mount: Mount, tmp_path: Path, mangle: object, reason: str
) -> None:
    queue = dump.QueueDump("q", 0o600, 0, 0, 4, 64, [(b"a", 5), (b"b", 1)])
    broken = tmp_path / "broken.json"
    broken.write_text(mangle(dump.to_json([queue])))  # type: ignore[operator]
    status, _, stderr = run(mqfs_mount, "restore", str(broken))
    assert status == 1
    assert reason in stderr
    assert stderr.endswith("(EINVAL)\n")
    assert os.listdir(mqfs_mount.path) == []


def test_a_dump_restores_into_the_kernels_mqueue(mqfs_mount: Mount) -> None:
    reason = why_kernel_mqueue_unusable(mounting=True)
    if reason:
        pytest.skip(reason)
    queue = dump.QueueDump("mqfs-dump-test", 0o600, 0, 0, 5, 64, [(b"hi", 7), (b"a", 1), (b"b", 1)])
    with mqueue_mount() as mqueue_dir:
        kernel = KernelBackend(mqueue_dir)
        try:
            dump.restore(dump.from_json(dump.to_json([queue])), kernel)
            mqd = kernel.open("/mqfs-dump-test", os.O_RDONLY)
            try:
                assert [kernel.receive(mqd, 64) for _ in range(3)] == queue.messages
            finally:
                kernel.close(mqd)
        finally:
            kernel.unlink("/mqfs-dump-test")


def test_c_peek_example_compiles_and_prints_every_message(
    mqfs_mount: Mount, tmp_path: Path
) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    assert compiler
    program = tmp_path / "peek"
    subprocess.run(
        [compiler, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(INCLUDE),
         "-o", str(program), str(ROOT / "examples" / "peek.c")],
        check=True,
    )  # fmt: skip
    mqfs_mount.make_queue("q")
    fd = os.open(mqfs_mount.path / "q" / "queue", os.O_WRONLY)
    try:
        calls.send(fd, b"second", 1)
        calls.send(fd, b"first\n", 8)
    finally:
        os.close(fd)
    out = subprocess.run(
        [program, str(mqfs_mount.path / "q" / "queue")], capture_output=True, text=True, check=True
    ).stdout
    assert out == "0\t8\t6\tfirst\\x0a\n1\t1\t6\tsecond\n"
    assert (mqfs_mount.path / "q" / "status").read_text().startswith("QSIZE:12 ")


def test_installed_entry_point_end_to_end(mqfs_mount: Mount) -> None:
    entry = Path(sys.executable).parent / "mqfs"
    assert entry.exists(), "scripts/setup installs the mqfs command into .venv/bin"
    env = {**os.environ, "MQFS_MOUNT": str(mqfs_mount.path)}
    steps = [["create", "e2e"], ["send", "e2e", "hello"], ["peek", "e2e"], ["recv", "e2e"]]
    outputs = []
    for step in steps:
        done = subprocess.run([entry, *step], capture_output=True, env=env, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert outputs == [b"", b"", b"hello\n", b"hello\n"]


def test_mount_in_the_background_and_umount(tmp_path: Path) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    try:
        assert main(["mount", str(mountpoint), "-o", "msg_default=3"]) == 0
        assert os.path.ismount(mountpoint)
        os.mkdir(mountpoint / "q")
        fd = os.open(mountpoint / "q" / "queue", os.O_RDONLY)
        try:
            assert calls.get_attributes(fd).maxmsg == 3
        finally:
            os.close(fd)
        status, _, stderr = _cli("mount", str(mountpoint))
        assert (status, stderr) == (
            1,
            f"mqfs: mount: mqfs is already mounted at {mountpoint} (EBUSY)\n",
        )
        assert main(["umount", str(mountpoint)]) == 0
        assert not os.path.ismount(mountpoint)
    finally:
        if os.path.ismount(mountpoint):
            lazy_unmount(mountpoint)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mount", "/nonexistent/mnt"], "mqfs: mount: mount point /nonexistent/mnt does not exist (ENOENT)"),
        (["mount", "/etc/hostname"], "mqfs: mount: mount point /etc/hostname is not a directory (ENOTDIR)"),
        (["mount", "/tmp", "-o", "bogus=1"], "mqfs: mount: unknown mount option 'bogus' (EINVAL)"),
        (["mount", "/tmp", "-o", "msg_max=0"], "mqfs: mount: msg_max=0 is outside 1..65536 (EINVAL)"),
        (["umount", "/tmp"], "mqfs: umount: /tmp is not mounted (EINVAL)"),
    ],
)  # fmt: skip
def test_mount_errors_are_one_line(argv: list[str], message: str) -> None:
    status, _, stderr = _cli(*argv)
    assert (status, stderr) == (1, message + "\n")


def _cli(*argv: str) -> tuple[int, bytes, str]:
    done = subprocess.run(
        [sys.executable, "-m", "mqfs", *argv], capture_output=True, timeout=30, check=False
    )
    return done.returncode, done.stdout, done.stderr.decode()


def test_a_bad_mode_is_a_usage_error_not_a_traceback(mqfs_mount: Mount) -> None:
    status, _, stderr = run(mqfs_mount, "create", "q", "--mode", "abc")
    assert status == 2
    assert stderr.endswith("error: argument --mode: 'abc' is not an octal mode\n")
    assert "Traceback" not in stderr
    assert os.listdir(mqfs_mount.path) == []

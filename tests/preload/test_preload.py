"""The LD_PRELOAD shim (preload/*.c, preload/shim.h): unmodified programs' mq_* on an mqfs mount.

C programs in this folder are compiled into tmp_path and run twice: on the kernel's own
queues (no LD_PRELOAD, no MQFS_MOUNT; in a fresh IPC namespace where ``unshare`` works) and
under the shim against a real mount. Their transcripts must be identical. The shim is built
by ``scripts/build-preload`` (a no-op when up to date), as ``scripts/setup`` does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mqfs.client import calls
from tests.support.mounts import Mount
from tests.support.paths import ROOT
from tests.support.shim import (
    PROGRAM_TIMEOUT,
    build_c_program,
    on_kernel,
    run_program,
    shim_env,
    unique_queue_name,
)
from tests.support.users import run_as_user
from tests.support.waiting import wait_until

HERE = Path(__file__).parent
BENCHMARK_C = ROOT / "benchmarks" / "c"

Compile = Callable[[str], Path]


@pytest.fixture
def compile_c(tmp_path: Path) -> Compile:
    """Compile tests/preload/NAME.c into tmp_path."""
    return lambda name: build_c_program(HERE / f"{name}.c", tmp_path)


def test_transcript_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    program = compile_c("mq_transcript")
    prefix = unique_queue_name("t")
    kernel = on_kernel([program, prefix])
    shim = run_program([program, prefix], shim_env(preload_library, mqfs_mount.path))
    assert shim.splitlines() == kernel.splitlines()
    assert "receive SA_RESTART: 4 prio 2 'late'" in shim
    assert os.listdir(mqfs_mount.path) == []  # every queue was unlinked


def test_open_while_another_thread_unlinks_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """mq_open(O_CREAT) is a CREATE then an open under the shim: a name unlinked in between
    is created again (the kernel's mq_open never fails that way)."""
    program = compile_c("open_unlink_race")
    name = f"/{unique_queue_name('race')}"
    kernel = on_kernel([program, name, "2000"])
    shim = run_program([program, name, "2000"], shim_env(preload_library, mqfs_mount.path))
    assert kernel == "failures 0\ndone\n"
    assert shim == kernel
    assert os.listdir(mqfs_mount.path) == []


def test_stopped_and_continued_receive_restarts_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """SIGSTOP and SIGCONT call no handler: the kernel restarts a blocked mq_receive, and
    so does the shim (a plain read() gets EINTR: tests/fs/test_queue_file.py)."""
    program = compile_c("stop_continue")
    name = f"/{unique_queue_name('stop')}"
    kernel = on_kernel([program, name])
    shim = run_program([program, name], shim_env(preload_library, mqfs_mount.path))
    assert kernel == "stopped\nreceive: 5 prio 3 'after'\ndone\n"
    assert shim == kernel


def test_raw_mq_syscalls_are_ebadf_under_the_shim(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """A documented difference: syscall(SYS_mq_timedsend, ...) bypasses the shim and the
    kernel does not know an mqfs descriptor. glibc's functions on the same mqd_t work."""
    program = compile_c("raw_syscall")
    name = f"/{unique_queue_name('raw')}"
    kernel = on_kernel([program, name])
    shim = run_program([program, name], shim_env(preload_library, mqfs_mount.path))
    assert kernel.splitlines() == [
        "syscall mq_timedsend: ok",
        "mq_send: ok",
        "syscall mq_timedreceive: ok",
        "mq_receive: 3",
    ]
    assert shim.splitlines() == [
        "syscall mq_timedsend: EBADF",
        "mq_send: ok",
        "syscall mq_timedreceive: EBADF",
        "mq_receive: 4",
    ]


def test_sigev_thread_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """SIGEV_THREAD without any signal (notify_thread.c): the status line shows NOTIFY:2
    SIGNO:0 as the kernel's; nanosleep and poll are not interrupted when it fires; a program
    handling SIGRTMAX can use it; the function runs once per firing with its value and may
    register again; mq_notify(NULL) and mq_close end the shim's helper thread. The old shim
    rode on SIGRTMAX: NOTIFY:0 SIGNO:64, EINTR in nanosleep and poll, ENOSYS here."""
    program = compile_c("notify_thread")
    name = f"/{unique_queue_name('thread')}"
    kernel = on_kernel([program, name])
    shim = run_program([program, name], shim_env(preload_library, mqfs_mount.path))
    assert shim.splitlines() == kernel.splitlines()
    handling = run_program([program, name, "rtmax"], shim_env(preload_library, mqfs_mount.path))
    assert handling == shim
    for line in [
        "registered: QSIZE:0          NOTIFY:2     SIGNO:0     NOTIFY_PID:self",
        "nanosleep: 0",
        "poll: 0",
        "SIGRTMAX handled 0",
        "value 32",
        "threads back after unregister: 1",
        "threads back after close: 1",
        "calls 2 SIGRTMAX handled 0",
    ]:
        assert line in shim.splitlines()
    assert os.listdir(mqfs_mount.path) == []


def test_sigev_thread_in_a_forked_child(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """The child gets its own helper: the parent's must not take the child's notifications.
    Shim only: glibc 2.36's netlink SIGEV_THREAD often fails in the child on the kernel."""
    program = compile_c("mq_transcript")
    out = run_program(
        [program, unique_queue_name("f"), "fork-thread"], shim_env(preload_library, mqfs_mount.path)
    )
    assert "thread value 777" in out
    assert "child thread ran: 0\nchild thread value 888\n" in out
    assert "notify thread after child: 0" in out


def test_passthrough_without_mqfs_mount(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """LD_PRELOAD without MQFS_MOUNT: every call goes to glibc, nothing reaches the mount."""
    program = compile_c("mq_transcript")
    prefix = unique_queue_name("p")
    kernel = on_kernel([program, prefix])
    passed = on_kernel(["env", f"LD_PRELOAD={preload_library}", program, prefix])
    assert passed == kernel
    assert os.listdir(mqfs_mount.path) == []


def test_queues_visible_in_the_mount_while_running(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    program = compile_c("mq_hold")
    name = unique_queue_name("hold")
    holder = subprocess.Popen(
        [program, f"/{name}"],
        env=shim_env(preload_library, mqfs_mount.path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "ready\n"
        queue = mqfs_mount.path / name
        assert os.listdir(mqfs_mount.path) == [name]
        assert sorted(os.listdir(queue / "msgs")) == ["0", "1"]
        assert (queue / "msgs" / "0").read_bytes() == b"second"  # peek: nothing consumed
        assert os.getxattr(queue / "msgs" / "1", "user.mq.priority") == b"1"
        assert oct((queue / "queue").stat().st_mode & 0o777) == oct(0o640 & ~_umask())
        out, _ = holder.communicate("go\n", timeout=PROGRAM_TIMEOUT)
        assert out == "9 second\n1 first\n"
        assert holder.returncode == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert os.listdir(mqfs_mount.path) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_large_messages_same_as_kernel(
    preload_library: Path, compile_c: Compile, mount_factory: Callable[..., Mount]
) -> None:
    """Messages of several ioctl chunks go whole, with the kernel's EMSGSIZE and EAGAIN."""
    mount = mount_factory("msgsize_max=65536")
    program = compile_c("mq_large")
    name = f"/{unique_queue_name('large')}"
    kernel = on_kernel([program, name], msgsize_max=65536)
    shim = run_program([program, name], shim_env(preload_library, mount.path))
    assert shim == kernel
    assert "receive 3: 65536 prio 2 intact 1" in shim


def test_stress_many_processes_and_threads(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    procs, threads, count = 2, 3, 1000
    program = compile_c("mq_stress")
    name = unique_queue_name("stress")
    out = run_program(
        [program, f"/{name}", str(procs), str(threads), str(count)],
        shim_env(preload_library, mqfs_mount.path),
    )
    got = Counter(out.splitlines())
    expected = {
        f"s {p} {t} {i}" for p in range(procs) for t in range(threads) for i in range(count)
    }
    assert set(got) == expected, "lost or foreign messages"
    assert max(got.values()) == 1, "duplicated messages"
    assert os.listdir(mqfs_mount.path) == []


POSIX_IPC_PROGRAM = textwrap.dedent("""
    import posix_ipc, sys
    q = posix_ipc.MessageQueue(sys.argv[1], posix_ipc.O_CREX, max_messages=4,
                               max_message_size=64)
    q.send(b"hello from posix_ipc", priority=3)
    print("ready", flush=True)
    sys.stdin.readline()
    print(q.receive())
    q.close()
    q.unlink()
""")


def test_posix_ipc_unmodified(preload_library: Path, mqfs_mount: Mount) -> None:
    """A real third-party binding: posix_ipc's C extension calls glibc's mq_*."""
    check = subprocess.run([sys.executable, "-c", "import posix_ipc"], check=False)
    if check.returncode != 0:
        pytest.skip("posix_ipc is not installed (it belongs in the test extras)")
    name = unique_queue_name("posix-ipc")
    child = subprocess.Popen(
        [sys.executable, "-c", POSIX_IPC_PROGRAM, f"/{name}"],
        env=shim_env(preload_library, mqfs_mount.path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        wait_until(lambda: os.path.isdir(mqfs_mount.path / name), what="the queue")
        assert (mqfs_mount.path / name / "msgs" / "0").read_bytes() == b"hello from posix_ipc"
        out, _ = child.communicate("go\n", timeout=PROGRAM_TIMEOUT)
        assert out == "(b'hello from posix_ipc', 3)\n"
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert os.listdir(mqfs_mount.path) == []


def test_checks_before_the_descriptor_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """The kernel checks the timeout, the priority, mq_setattr's flags and mq_notify's
    sigevent before the descriptor: on a closed descriptor, -1, a pipe, a file and a kernel
    queue the shim hands every call to glibc, which answers in the kernel's order. Then
    every pointer of the mq_* calls as a PROT_NONE page: EFAULT, never SIGSEGV."""
    program = compile_c("mq_checks")
    name = f"/{unique_queue_name('checks')}"
    kernel = on_kernel([program, name])
    shim = run_program([program, name], shim_env(preload_library, mqfs_mount.path))
    assert shim.splitlines() == kernel.splitlines()
    assert "timedreceive nsec 1000000000 on -1: -1 EINVAL" in shim
    assert "send prio 32768 on pipe read end: -1 EINVAL" in shim
    assert "timedreceive past on closed: -1 EBADF" in shim
    assert "notify signal 65 on kernel queue: -1 EINVAL" in shim
    # Part two: bad pointers are EFAULT, in the kernel's place among the other errors.
    assert "send bad buffer, full on queue: -1 EFAULT" in shim
    assert "send bad buffer on read-only queue: -1 EBADF" in shim
    assert "receive bad msg_prio on queue: -1 EFAULT" in shim
    assert "setattr bad old on queue: -1 EFAULT" in shim
    assert os.listdir(mqfs_mount.path) == []


def test_bad_buffers_of_long_messages_same_as_kernel(
    preload_library: Path, compile_c: Compile, mount_factory: Callable[..., Mount]
) -> None:
    """Messages of several mqfs chunks: a send whose buffer fails part-way sends nothing; a
    receive whose buffer fails part-way loses the message (as the kernel's) and leaves
    nothing held in the daemon."""
    mount = mount_factory("msgsize_max=65536")
    program = compile_c("mq_checks")
    name = f"/{unique_queue_name('faults')}"
    kernel = on_kernel([program, name, "large"], msgsize_max=65536)
    shim = run_program([program, name, "large"], shim_env(preload_library, mount.path))
    assert shim.splitlines() == kernel.splitlines()
    assert "send half-bad buffer on queue: -1 EFAULT" in shim
    assert "70 receives into a half-bad buffer: 70 EFAULT, curmsgs 0" in shim
    assert os.listdir(mount.path) == []


FRAMED_OFFSET = 1 << 62  # include/mqfs.h MQFS_FRAMED


def test_send_and_receive_take_one_read_or_write_and_only_on_the_mount(
    tmp_path: Path, preload_library: Path, compile_c: Compile, mqfs_mount: Mount, mount_kind: str
) -> None:
    """mq_send and mq_receive without a deadline are one pwritev()/preadv() of the queue
    file at the framed offset (a plain write- and read-sized request, not the SEND and
    RECEIVE ioctls), with the kernel's results; on a fastpath mount they are neither: the
    queue's mapping (MAP ioctl) is used directly. A descriptor that is not on the mount is
    never written there: a regular file stays empty and gets EBADF as from the kernel."""
    program = compile_c("framed_path")
    name = f"/{unique_queue_name('framed')}"
    queue_results = [
        "send 'low' prio 1: 0",
        "send '' prio 7: 0",
        "send 64 bytes prio 3: 0",
        "send 65 bytes: -1 EMSGSIZE",
        "receive into 63 bytes: -1 EMSGSIZE",
        "receive: 0 prio 7 ''",
        "receive: 64 prio 3 '0123456789012345678901234567890123456789012345678901234567890123'",
        "receive: 3 prio 1 'low'",
        "receive from empty: -1 EAGAIN",
    ]
    not_queues = [
        "regular file mq_send: -1 EBADF",
        "regular file mq_receive: -1 EBADF",
        "regular file size: 0",
    ]
    kernel = on_kernel([program, name, tmp_path / "kernel-scratch"])
    assert kernel.splitlines() == queue_results + not_queues
    (mqfs_mount.path / "other").mkdir()
    traced = tmp_path / "strace.out"
    shim = run_program(
        [
            "strace", "-f", "-qq", "-e", "trace=preadv,pwritev,ioctl", "-o", traced,
            program, name, tmp_path / "shim-scratch", mqfs_mount.path / "other" / "status",
        ],
        shim_env(preload_library, mqfs_mount.path),
    )  # fmt: skip
    assert shim.splitlines() == queue_results + not_queues + [
        "status file mq_send: -1 EBADF",
        "status file mq_receive: -1 EBADF",
    ]
    # Framed calls, plain mount: the queue's 4 sends and 5 receives; the status file's send
    # (EBADF from the kernel: opened read-only) and receive (0 bytes: then the ioctl way,
    # ENOTTY, glibc). On a fastpath mount only the status file's: the queue's are on its
    # mapping, which the MAP ioctl (14) gave once, at mq_open.
    calls = traced.read_text().splitlines()
    framed_writes = [line for line in calls if "pwritev(" in line and f", {FRAMED_OFFSET})" in line]
    receive_one = FRAMED_OFFSET + (1 << 32)
    framed_reads = [line for line in calls if "preadv(" in line and f", {receive_one})" in line]
    fast = mount_kind == "fastpath"
    assert len(framed_writes) == (1 if fast else 5), framed_writes
    assert len(framed_reads) == (1 if fast else 6), framed_reads
    # SEND (5) and RECEIVE (6) ioctls only after a framed EMSGSIZE (the 65-byte send and
    # the 63-byte receive: the ioctl way decides, as a bad pointer may be behind it) and
    # where the descriptor was not a queue (ENOTTY).
    transfers = [line for line in calls if re.search(r"ioctl\(.*, 0x51, 0x[56],", line)]
    endings = Counter(line.rsplit(" (", 1)[0].rsplit("= ", 1)[1] for line in transfers)
    assert endings == ({} if fast else {"-1 EMSGSIZE": 2}) | {"-1 ENOTTY": 3}, transfers
    maps = [line for line in calls if re.search(r"ioctl\(.*, 0x51, 0xe,", line)]
    assert [line.endswith("= 0") for line in maps].count(True) == (1 if fast else 0), maps


def test_descriptors_closed_replaced_and_reused_same_as_kernel(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount
) -> None:
    """close, dup, dup2, dup3, close_range, closefrom and fork on queue descriptors, each
    followed by a send on a number that was another queue's: every message lands in the
    queue the kernel puts it in (the fast path's descriptor table forgets what is closed)."""
    program = compile_c("fd_reuse")
    prefix = unique_queue_name("fd")
    kernel = on_kernel([program, prefix])
    shim = run_program([program, prefix], shim_env(preload_library, mqfs_mount.path))
    assert shim.splitlines() == kernel.splitlines()
    assert "after fork: a=[a2,a3,a4,a5,] b=[b1,b2,b3,] c=[c1,c2,]" in shim
    assert os.listdir(mqfs_mount.path) == []


def test_another_user_goes_through_the_daemon(
    preload_library: Path, mount_factory: Callable[..., Mount], mount_kind: str
) -> None:
    """A user who does not own the queue may still use it (mode 0666) on an allow_other
    mount, through the daemon, which checks the permissions: the MAP ioctl refuses it the
    mapping (EACCES; EOPNOTSUPP on a plain mount), so its sends and receives are framed
    I/O of the queue file."""
    mount = mount_factory("allow_other")
    name = unique_queue_name("other")
    calls.create_at(mount.path, name, 0o666, maxmsg=10, msgsize=64)  # mq_pairs's size
    with tempfile.TemporaryDirectory() as directory:  # the test user can run it from here
        os.chmod(directory, 0o755)
        program = build_c_program(BENCHMARK_C / "mq_pairs.c", Path(directory))
        done = run_as_user(
            ["strace", "-f", "-qq", "-e", "trace=ioctl,pwritev,preadv",
             program, f"/{name}", "50"],
            env=shim_env(preload_library, mount.path),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0  # seconds per pair
    maps = [line for line in done.stderr.splitlines() if re.search(r"0x51, 0xe,", line)]
    refused = "EACCES" if mount_kind == "fastpath" else "EOPNOTSUPP"
    assert maps and all(f"= -1 {refused}" in line for line in maps), maps
    assert done.stderr.count(f", {FRAMED_OFFSET})") == 50  # framed sends
    assert done.stderr.count(f", {FRAMED_OFFSET + (1 << 32)})") == 50  # framed receives
    assert mount.info(name)["curmsgs"] == 0


def test_interrupted_with_sa_restart_beside_a_handler_without_it(
    preload_library: Path, compile_c: Compile, mqfs_mount: Mount, mount_kind: str
) -> None:
    """A blocked (timed or not) send or receive interrupted by a SA_RESTART handler while
    another handler lacks SA_RESTART: the kernel restarts it. So does the fast path, whose
    wait is the kernel's futex_waitv; the daemon's way cannot tell which signal came and
    fails with EINTR, as the README says."""
    program = compile_c("eintr_mixed")
    name = f"/{unique_queue_name('eintr')}"
    kernel = on_kernel([program, name]).splitlines()
    shim = run_program([program, name], shim_env(preload_library, mqfs_mount.path)).splitlines()
    assert kernel[0] == "receive: 4, handler ran 1"
    if mount_kind == "fastpath":
        assert shim == kernel
    else:
        assert shim[:4] == [
            f"{call}: -1 EINTR, handler ran 1"
            for call in ("receive", "timedreceive", "send", "timedsend")
        ]
        assert shim[4:] == kernel[4:]
    assert os.listdir(mqfs_mount.path) == []

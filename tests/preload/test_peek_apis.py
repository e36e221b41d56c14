"""The proposed kernel peek APIs on mqfs, through the LD_PRELOAD shim.

``fcntl(mqd, F_MQ_PEEK, &struct mq_peek_attr)`` (Shaurya Rane's RFC, March 2026) and
``mq_timedreceive2(mqd, &args, MQ_PEEK, index, timeout)`` (Mathura Kumar's series, x86-64
syscall 548) are not merged. ``include/mqfs/peek.h`` defines them as the patches do;
``tests/preload/peek_apis.c`` uses them the way the patches' own descriptions and selftest
do, compiled into tmp_path and run under the shim against a real mount. Each API keeps its
own text where the two disagree: F_MQ_PEEK truncates to ``buf_len`` and says ``ENOMSG`` for
any missing index (an empty queue too); mq_timedreceive2 says ``EMSGSIZE`` for a buffer
smaller than ``mq_msgsize``, ``EAGAIN`` for an empty queue and ``ENOENT`` past the end.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mqfs.client import calls
from tests.support.mounts import Mount
from tests.support.paths import ROOT
from tests.support.shim import (
    build_c_program,
    on_kernel,
    plain_env,
    run_program,
    shim_env,
    unique_queue_name,
)

HERE = Path(__file__).parent

API = ["fcntl", "syscall"]
EXAMPLE = ROOT / "examples" / "criu_dump_restore.c"

Compile = Callable[..., Path]

# What the scenario queue holds, (priority, payload) in send order, and in receive order:
# highest priority first, FIFO within a priority.
SENT = [(3, "alpha"), (7, "bravo"), (3, "charlie"), (0, "delta"), (7, "echo"), (31, "foxtrot"),
        (5, "")]  # fmt: skip
RECEIVE_ORDER = sorted(SENT, key=lambda message: -message[0])
PAST_END = {"fcntl": "ENOMSG", "syscall": "ENOENT"}
EMPTY = {"fcntl": "ENOMSG", "syscall": "EAGAIN"}


@pytest.fixture
def compile_peek(tmp_path: Path) -> Compile:
    """Compile a C file that includes <mqfs/peek.h> into tmp_path, as a user would."""
    return lambda source, *defines: build_c_program(source, tmp_path, *defines)


def scenarios(library: Path, build: Compile, mount: Mount, api: str) -> list[str]:
    program = build(HERE / "peek_apis.c")
    out = run_program([program, api, f"/{unique_queue_name(api)}"], shim_env(library, mount.path))
    assert os.listdir(mount.path) == []  # the program unlinked its queue
    return out.splitlines()


def peek_line(label: str, index: int, prio: int, payload: str) -> str:
    return f"{label} {index}: prio {prio} len {len(payload)} '{payload}'"


@pytest.mark.parametrize("api", API)
def test_peek_every_message_of_several_priorities(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    peeked = [line for line in lines if line.startswith("peek ") and line[5].isdigit()]
    expected = [peek_line("peek", i, p, text) for i, (p, text) in enumerate(RECEIVE_ORDER)]
    assert peeked == [*expected, f"peek 7: -1 {PAST_END[api]}"]
    assert peek_line("peek again", 2, 7, "echo") in lines
    # Nothing was consumed, and receive then returns exactly what the peeks showed.
    assert "curmsgs before peeks: 7" in lines
    assert "curmsgs after peeks: 7" in lines
    received = [line.split(" same as peek")[0] for line in lines if line.startswith("receive: ")]
    assert received[:7] == [
        f"receive: prio {p} len {len(text)} '{text}'" for p, text in RECEIVE_ORDER
    ]


@pytest.mark.parametrize("api", API)
def test_peek_then_receive_gives_the_same_message(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    same = [line for line in lines if "same as peek" in line]
    assert len(same) == 7
    assert all(line.endswith("same as peek 1") for line in same), same
    assert f"drained 0: -1 {EMPTY[api]}" in lines


@pytest.mark.parametrize("api", API)
def test_empty_queue(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    assert lines[:2] == [f"empty 0: -1 {EMPTY[api]}", f"empty 3: -1 {EMPTY[api]}"]


@pytest.mark.parametrize("api", API)
def test_index_past_the_end(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    assert lines[2:5] == [
        peek_line("one", 0, 4, "only"),
        f"past end 1: -1 {PAST_END[api]}",
        f"past end 1000: -1 {PAST_END[api]}",
    ]


@pytest.mark.parametrize("api", API)
def test_descriptor_opened_write_only(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    assert "write-only 0: -1 EBADF" in lines
    assert peek_line("read-only", 0, 6, "hello world") in lines


@pytest.mark.parametrize("api", API)
def test_buffer_too_small(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str
) -> None:
    """F_MQ_PEEK truncates to buf_len; mq_timedreceive2 wants msg_len >= mq_msgsize."""
    lines = scenarios(preload_library, compile_peek, mqfs_mount, api)
    full = peek_line("buffer msgsize", 0, 6, "hello world")
    if api == "fcntl":
        assert "small buffer 0: prio 6 len 4 'hell'" in lines
        assert peek_line("buffer msgsize-1", 0, 6, "hello world") in lines
    else:
        assert "small buffer 0: -1 EMSGSIZE" in lines
        assert "buffer msgsize-1 0: -1 EMSGSIZE" in lines  # the message would fit: no matter
    assert full in lines
    assert "curmsgs: 1" in lines


def test_fcntl_argument_checks(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """do_mq_peek's EINVAL for offset < 0, buf_len 0 and buf NULL; fcntl64 is the same."""
    lines = scenarios(preload_library, compile_peek, mqfs_mount, "fcntl")
    assert lines[-4:] == [
        "offset -1: -1 EINVAL",
        "buf_len 0: -1 EINVAL",
        "buf NULL: -1 EINVAL",
        "fcntl64: 5 prio 6 'hello'",
    ]


def test_mq_timedreceive2_without_peek_receives(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """Without MQ_PEEK it is mq_timedreceive (EMSGSIZE, EAGAIN, ETIMEDOUT); a peek ignores
    abs_timeout and never blocks; unknown flags and an index without MQ_PEEK are EINVAL."""
    lines = scenarios(preload_library, compile_peek, mqfs_mount, "syscall")
    assert lines[-8:] == [
        "unknown flag: -1 EINVAL",
        "index without MQ_PEEK: -1 EINVAL",
        "peek msg_prio NULL: 11 'hello world'",
        "receive msgsize-1: -1 EMSGSIZE",
        "receive: 11 prio 6 'hello world' curmsgs 0",
        "receive empty: -1 EAGAIN",
        "peek empty, blocking, deadline: -1 EAGAIN",
        "receive empty, blocking, deadline: -1 ETIMEDOUT",
    ]


@pytest.mark.parametrize("api", API)
def test_messages_of_several_chunks(
    preload_library: Path,
    compile_peek: Compile,
    mount_factory: Callable[..., Mount],
    api: str,
) -> None:
    """Longer than one PEEK ioctl (16320 bytes): read by offset, whole and unchanged."""
    mount = mount_factory("msgsize_max=65536")
    program = compile_peek(HERE / "peek_apis.c")
    out = run_program(
        [program, f"large-{api}", f"/{unique_queue_name('large')}"],
        shim_env(preload_library, mount.path),
    )
    expected = [
        "peek 0: 16321 prio 9 intact 1",
        "peek 1: 40000 prio 4 intact 1",
        "peek 2: 65536 prio 4 intact 1",
        "peek 3: 100 prio 1 intact 1",
    ]
    if api == "fcntl":
        expected.append("truncated: 20000 prio 4 intact 1 untouched 1")
    assert out.splitlines() == [*expected, "curmsgs: 4"]


FOREIGN = ["pipe", "-1", "closed", "file"]


def test_other_descriptors_are_ebadf_as_the_proposals_say(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """What is not a queue (a pipe, -1, a closed descriptor, a file) is EBADF for both
    proposals, so a program probing with syscall(548, -1, ...) finds the call present; without
    MQ_PEEK mq_timedreceive2 is mq_timedreceive there (EBADF) and on a kernel queue (made
    with syscall(SYS_mq_open), which the shim never sees); peeking a kernel queue is left to
    the kernel, which today cannot (EINVAL, ENOSYS)."""
    program = compile_peek(HERE / "peek_apis.c")
    out = run_program(
        [program, "foreign", f"/{unique_queue_name('foreign')}"],
        shim_env(preload_library, mqfs_mount.path),
    )
    expected = []
    for label in FOREIGN:
        expected += [
            f"{label} fcntl: -1 EBADF",
            f"{label} syscall: -1 EBADF",
            f"{label} syscall without MQ_PEEK: -1 EBADF",
        ]
    expected += [
        "kernel queue fcntl: -1 EINVAL",
        "kernel queue syscall: -1 ENOSYS",
        "kernel queue syscall without MQ_PEEK: 1 ",
        "queue fcntl: 1 ",
        "queue syscall: 1 ",
        "queue syscall without MQ_PEEK: 1 ",
    ]
    assert out.splitlines() == expected


def test_without_mqfs_mount_the_kernel_answers(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """On this kernel neither proposal exists: EINVAL and ENOSYS (EBADF from fcntl itself
    for -1 and a closed descriptor), with or without the shim when MQFS_MOUNT is unset."""
    program = compile_peek(HERE / "peek_apis.c")
    command: list[str | Path] = [program, "foreign", f"/{unique_queue_name('kernel')}"]
    kernel = on_kernel(command)
    expected = []
    for label in [*FOREIGN, "kernel queue", "queue"]:
        fcntl = "EBADF" if label in ("-1", "closed") else "EINVAL"
        expected += [
            f"{label} fcntl: -1 {fcntl}",
            f"{label} syscall: -1 ENOSYS",
            f"{label} syscall without MQ_PEEK: -1 ENOSYS",
        ]
    assert kernel.splitlines() == expected
    assert on_kernel(["env", f"LD_PRELOAD={preload_library}", *command]) == kernel
    assert os.listdir(mqfs_mount.path) == []


def test_fcntl_bad_pointers(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """F_MQ_PEEK: EFAULT for an unreadable struct (after EBADF), for a buf that cannot take
    the message (after ENOMSG) and for a struct whose msg_prio cannot be stored; no crash,
    and nothing is consumed."""
    program = compile_peek(HERE / "peek_apis.c")
    out = run_program(
        [program, "faults-fcntl", f"/{unique_queue_name('faults')}"],
        shim_env(preload_library, mqfs_mount.path),
    )
    assert out.splitlines() == [
        "bad buf, empty: -1 ENOMSG",
        "bad buf: -1 EFAULT",
        "bad attr: -1 EFAULT",
        "NULL attr: -1 EFAULT",
        "bad attr, write-only: -1 EBADF",
        "bad buf, past end: -1 ENOMSG",
        "attr read-only (msg_prio not stored): -1 EFAULT, buf 'hello'",
        "curmsgs: 1",
    ]
    assert os.listdir(mqfs_mount.path) == []


def test_mq_timedreceive2_bad_pointers(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """mq_timedreceive2: EFAULT for args (after the flag checks), msg_ptr (after EBADF,
    EMSGSIZE, EAGAIN and ENOENT; a zero-length message needs no buffer) and msg_prio; no
    crash. A peek consumes nothing; a receive whose msg_ptr is bad loses the message, as
    mq_timedreceive does."""
    program = compile_peek(HERE / "peek_apis.c")
    out = run_program(
        [program, "faults-syscall", f"/{unique_queue_name('faults')}"],
        shim_env(preload_library, mqfs_mount.path),
    )
    assert out.splitlines() == [
        "bad msg_ptr, empty: -1 EAGAIN",
        "bad msg_ptr: -1 EFAULT",
        "bad msg_ptr, past end: -1 ENOENT",
        "bad msg_ptr, small: -1 EMSGSIZE",
        "bad msg_ptr, write-only: -1 EBADF",
        "NULL msg_ptr: -1 EFAULT",
        "bad msg_prio: -1 EFAULT",
        "bad args: -1 EFAULT",
        "NULL args: -1 EFAULT",
        "bad args, unknown flag: -1 EINVAL",
        "bad args, fd -1: -1 EFAULT",
        "curmsgs: 1",
        "receive, bad msg_ptr: -1 EFAULT curmsgs 0",
        "zero-length, NULL msg_ptr: 0 prio 2",
        "curmsgs: 1",
    ]
    assert os.listdir(mqfs_mount.path) == []


def test_other_commands_and_syscalls_pass_through(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """fcntl with int and pointer arguments and syscall() with up to six: as without the
    shim, on an mqfs queue and on a plain file."""
    program = compile_peek(HERE / "peek_apis.c")
    command: list[str | Path] = [program, "passthrough", f"/{unique_queue_name('pass')}"]
    kernel = on_kernel(command)
    shim = run_program(command, shim_env(preload_library, mqfs_mount.path))
    assert shim == kernel
    assert "SYS_mmap six arguments: 1 'page two'" in shim
    assert "F_GETLK: 0 unlocked 1" in shim
    assert os.listdir(mqfs_mount.path) == []


def test_syscall_number_from_the_environment(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """The number is only proposed: MQFS_MQ_TIMEDRECEIVE2_NR follows a program built with
    another one, and 548 then passes through like any other syscall."""
    program = compile_peek(HERE / "peek_apis.c", "-D__NR_mq_timedreceive2=600")
    name = f"/{unique_queue_name('nr')}"
    env = shim_env(preload_library, mqfs_mount.path)
    assert "\nqueue syscall: -1 ENOSYS" in run_program([program, "foreign", name], env)
    env["MQFS_MQ_TIMEDRECEIVE2_NR"] = "600"
    assert "\nqueue syscall: 1 " in run_program([program, "foreign", name], env)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="getpid is syscall 39 on x86-64")
def test_a_kernel_that_has_the_call_answers_for_other_descriptors(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """The shim asks once whether the kernel has mq_timedreceive2 (anything but ENOSYS on
    fd -1) and then leaves every descriptor but mqfs queues to it. Played here by getpid
    (x86-64 number 39) standing in for a kernel's mq_timedreceive2."""
    getpid = 39
    program = compile_peek(HERE / "peek_apis.c", f"-D__NR_mq_timedreceive2={getpid}")
    env = shim_env(preload_library, mqfs_mount.path)
    env["MQFS_MQ_TIMEDRECEIVE2_NR"] = str(getpid)
    lines = run_program([program, "foreign", f"/{unique_queue_name('has')}"], env).splitlines()
    pipe = next(line for line in lines if line.startswith("pipe syscall: "))
    assert int(pipe.split()[2]) > 0  # the kernel's answer: a process id
    assert "queue syscall: 1 " in lines  # an mqfs queue is still the shim's


# -- a selftest written as the proposals' authors write theirs ------------------------------

SELFTEST = HERE / "timedreceive2_selftest.c"
SELFTEST_CASES = 30
KSFT_SKIP = 4


def test_selftest_passes_every_case_under_the_shim(
    preload_library: Path, compile_peek: Compile, mqfs_mount: Mount
) -> None:
    """timedreceive2_selftest.c probes each API first (syscall(548, -1, ...): ENOSYS means
    absent; F_MQ_PEEK on a pipe: EINVAL means absent) and then runs its cases; under the
    shim, unmodified, every one runs and passes, none is skipped."""
    program = compile_peek(SELFTEST)
    env = shim_env(preload_library, mqfs_mount.path)
    out = run_program([program, f"/{unique_queue_name('selftest')}"], env)
    lines = out.splitlines()
    assert f"1..{SELFTEST_CASES}" in lines
    assert f"# Totals: pass:{SELFTEST_CASES} fail:0 xfail:0 xpass:0 skip:0 error:0" in lines
    assert not [line for line in lines if line.startswith("not ok") or "SKIP" in line]
    assert os.listdir(mqfs_mount.path) == []


def test_selftest_skips_on_todays_kernel(compile_peek: Compile) -> None:
    """Without the shim the probes find neither call: the selftest skips both, as it would
    on any kernel without the series."""
    program = compile_peek(SELFTEST)  # skipping, it makes no queue: no namespace needed
    done = subprocess.run(
        [program, f"/{unique_queue_name('selftest')}"],
        env=plain_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == KSFT_SKIP, done.stdout + done.stderr
    assert "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:2 error:0" in done.stdout


# -- the CRIU use case ----------------------------------------------------------------------

CRIU_MESSAGES = [(2, b"first at 2"), (9, b"urgent"), (2, b"second at 2"), (0, b""),
                 (9, b"urgent too"), (5, bytes(range(256)) * 120), (2, b"third at 2")]  # fmt: skip


@contextmanager
def opened(path: Path, flags: int) -> Iterator[int]:
    fd = os.open(path, flags)
    try:
        yield fd
    finally:
        os.close(fd)


def drain(queue: Path, msgsize: int) -> list[tuple[int, bytes]]:
    got = []
    with opened(queue, os.O_RDONLY | os.O_NONBLOCK) as fd:
        while True:
            try:
                data, prio = calls.receive(fd, msgsize)
            except BlockingIOError:
                return got
            got.append((prio, data))


def test_criu_dump_and_restore(
    preload_library: Path,
    compile_peek: Compile,
    mount_factory: Callable[..., Mount],
    tmp_path: Path,
) -> None:
    """examples/criu_dump_restore.c: dump a queue through F_MQ_PEEK without changing it,
    restore it into a new queue with mq_send: same messages, order and priorities."""
    mount = mount_factory("msgsize_max=65536")
    program = compile_peek(EXAMPLE)
    source, target = unique_queue_name("criu"), unique_queue_name("criu-restored")
    calls.create_at(mount.path, source, 0o600, maxmsg=8, msgsize=40000)
    with opened(mount.path / source / "queue", os.O_WRONLY) as fd:
        for prio, data in CRIU_MESSAGES:  # one of them is two PEEK chunks long
            calls.send(fd, data, prio)
    status = mount.path / source / "status"
    status_before = status.read_text()
    with opened(mount.path / source / "queue", os.O_RDONLY) as fd:
        snapshot_before = calls.peek_all(fd)

    env = shim_env(preload_library, mount.path)
    dump = tmp_path / "queue.mqdump"
    out = run_program([program, "dump", f"/{source}", dump], env)
    assert out == "dumped 7 messages; curmsgs before 7 after 7\n"
    assert status.read_text() == status_before
    with opened(mount.path / source / "queue", os.O_RDONLY) as fd:
        assert calls.peek_all(fd) == snapshot_before
        assert calls.get_attributes(fd).curmsgs == 7

    assert run_program([program, "restore", f"/{target}", dump], env) == "restored 7 messages\n"
    with opened(mount.path / target / "queue", os.O_RDONLY) as fd:
        restored_attributes = calls.get_attributes(fd)
    assert (restored_attributes.maxmsg, restored_attributes.msgsize) == (8, 40000)
    assert (mount.path / target / "status").read_text() == status_before

    expected = sorted(CRIU_MESSAGES, key=lambda message: -message[0])
    assert drain(mount.path / target / "queue", 40000) == expected
    assert drain(mount.path / source / "queue", 40000) == expected
    again = subprocess.run(
        [program, "restore", f"/{target}", dump],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 1  # O_EXCL: a restore never mixes into an existing queue
    assert "File exists" in again.stderr


@pytest.mark.parametrize("api", API)
def test_peeks_on_a_fastpath_mount_read_the_mapping(
    tmp_path: Path, preload_library: Path, compile_peek: Compile, mqfs_mount: Mount, api: str,
    mount_kind: str,
) -> None:  # fmt: skip
    """The same scenarios under strace: on a plain mount every peek is the daemon's PEEK
    ioctl (4); on a fastpath mount none is (the queue's mapping is read directly)."""
    program = compile_peek(HERE / "peek_apis.c")
    traced = tmp_path / "strace.out"
    out = run_program(
        ["strace", "-f", "-qq", "-e", "trace=ioctl", "-o", traced,
         program, api, f"/{unique_queue_name(api)}"],
        shim_env(preload_library, mqfs_mount.path),
    )  # fmt: skip
    assert out.splitlines() == scenarios(preload_library, compile_peek, mqfs_mount, api)
    peeks = [line for line in traced.read_text().splitlines() if ", 0x51, 0x4," in line]
    assert (len(peeks) == 0) == (mount_kind == "fastpath"), peeks

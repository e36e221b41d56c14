"""MNT/NAME/queue through ordinary syscalls: send, receive, blocking, poll, ioctls."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqfs import wire
from mqfs.client import calls
from mqfs.server.ops import plain_io_limit
from tests.support.mounts import Mount
from tests.support.procs import blocked_in_mq_call, task_state
from tests.support.waiting import wait_until


def open_queue(mount: Mount, name: str, flags: int = os.O_RDWR) -> int:
    """An open queue file whose read() receives (RECEIVE_ON_READ), as these tests want."""
    fd = os.open(mount.path / name / "queue", flags)
    calls.receive_on_read(fd)
    return fd


@pytest.fixture
def queue_fd(mqfs_mount: Mount) -> object:
    mqfs_mount.make_queue("q")
    fd = open_queue(mqfs_mount, "q")
    yield fd
    os.close(fd)


def test_write_then_read_is_one_whole_message_each(queue_fd: int) -> None:
    assert os.write(queue_fd, b"first") == 5
    assert os.write(queue_fd, b"second message") == 14
    assert os.read(queue_fd, 8192) == b"first"
    assert os.read(queue_fd, 8192) == b"second message"


def test_zero_length_messages_go_through_the_ioctl(queue_fd: int) -> None:
    # The kernel never forwards a zero-byte write() to FUSE, so write(fd, "", 0) sends
    # nothing; mq_send of an empty message is the SEND ioctl's job.
    assert os.write(queue_fd, b"") == 0
    assert calls.get_attributes(queue_fd).curmsgs == 0
    calls.send(queue_fd, b"", 3)
    os.write(queue_fd, b"after")
    assert calls.get_attributes(queue_fd).curmsgs == 2
    assert calls.peek(queue_fd, 0) == (b"", 3)
    assert os.read(queue_fd, 8192) == b""  # the empty message (read() returns 0)
    assert os.read(queue_fd, 8192) == b"after"


def test_receive_order_is_priority_then_fifo(queue_fd: int) -> None:
    sent = [(b"low-1", 1), (b"high-1", 9), (b"low-2", 1), (b"zero", 0), (b"high-2", 9)]
    for payload, priority in sent:
        calls.send(queue_fd, payload, priority)
    expected = [(b"high-1", 9), (b"high-2", 9), (b"low-1", 1), (b"low-2", 1), (b"zero", 0)]
    assert [calls.receive(queue_fd, 8192) for _ in sent] == expected


def test_write_uses_the_descriptors_priority(mqfs_mount: Mount, queue_fd: int) -> None:
    other = open_queue(mqfs_mount, "q", os.O_WRONLY)
    try:
        calls.set_send_priority(other, 7)
        os.write(queue_fd, b"default")
        os.write(other, b"urgent")
    finally:
        os.close(other)
    assert calls.receive(queue_fd, 8192) == (b"urgent", 7)
    assert calls.receive(queue_fd, 8192) == (b"default", 0)


def test_peek_at_every_index_equals_what_receive_returns(queue_fd: int) -> None:
    for i, priority in enumerate([3, 0, 7, 3, 32767, 0, 7]):
        calls.send(queue_fd, f"m{i}".encode(), priority)
    peeked = [calls.peek(queue_fd, i) for i in range(7)]
    assert calls.get_attributes(queue_fd).curmsgs == 7  # peek consumed nothing
    assert [calls.receive(queue_fd, 8192) for _ in range(7)] == peeked


def test_peek_errors_follow_mq_timedreceive2(mqfs_mount: Mount, queue_fd: int) -> None:
    with pytest.raises(OSError) as empty:
        calls.peek(queue_fd, 0)
    assert empty.value.errno == errno.EAGAIN
    calls.send(queue_fd, b"only", 1)
    with pytest.raises(OSError) as past_end:
        calls.peek(queue_fd, 1)
    assert past_end.value.errno == errno.ENOENT
    write_only = open_queue(mqfs_mount, "q", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as not_readable:
            calls.peek(write_only, 0)
        assert not_readable.value.errno == errno.EBADF
    finally:
        os.close(write_only)


def test_peek_ioctl_return_value_is_bytes_copied(queue_fd: int) -> None:
    calls.send(queue_fd, b"0123456789", 4)
    buffer = bytearray(wire.Peek(index=0, offset=3).request())
    copied = fcntl.ioctl(queue_fd, wire.IOC_PEEK, buffer, True)
    reply = wire.Peek.unpack(buffer)
    assert (copied, reply.data, reply.msg_len, reply.msg_prio) == (7, b"3456789", 10, 4)


def test_receive_needs_a_buffer_of_msgsize(queue_fd: int) -> None:
    calls.send(queue_fd, b"tiny")
    for receive in (lambda: os.read(queue_fd, 8191), lambda: calls.receive(queue_fd, 100)):
        with pytest.raises(OSError) as small:
            receive()
        assert small.value.errno == errno.EMSGSIZE
    assert calls.get_attributes(queue_fd).curmsgs == 1  # nothing was taken


def test_send_errors(queue_fd: int) -> None:
    with pytest.raises(OSError) as too_long:
        os.write(queue_fd, b"x" * 8193)
    assert too_long.value.errno == errno.EMSGSIZE
    with pytest.raises(OSError) as bad_priority:
        calls.send(queue_fd, b"x", 32768)
    assert bad_priority.value.errno == errno.EINVAL
    with pytest.raises(OSError) as bad_priority_beats_length:  # the kernel's check order
        calls.send(queue_fd, b"x" * 8193, 32768)
    assert bad_priority_beats_length.value.errno == errno.EINVAL
    with pytest.raises(OSError) as set_bad:
        calls.set_send_priority(queue_fd, 40000)
    assert set_bad.value.errno == errno.EINVAL


def test_wrong_direction_is_ebadf(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    read_only = open_queue(mqfs_mount, "q", os.O_RDONLY)
    write_only = open_queue(mqfs_mount, "q", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as cannot_send:
            calls.send(read_only, b"x")
        assert cannot_send.value.errno == errno.EBADF
        with pytest.raises(OSError) as cannot_receive:
            calls.receive(write_only, 8192)
        assert cannot_receive.value.errno == errno.EBADF
    finally:
        os.close(read_only)
        os.close(write_only)


def test_nonblocking_empty_and_full_give_eagain(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    fd = open_queue(mqfs_mount, "q", os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            os.read(fd, 8192)
        for i in range(10):  # msg_default
            os.write(fd, b"%d" % i)
        with pytest.raises(BlockingIOError):
            os.write(fd, b"one too many")
        with pytest.raises(BlockingIOError):
            calls.send(fd, b"one too many", 5)
        assert calls.get_attributes(fd).curmsgs == 10
    finally:
        os.close(fd)


def test_getattr_and_setattr_are_per_descriptor(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    first = open_queue(mqfs_mount, "q")
    second = open_queue(mqfs_mount, "q")
    try:
        calls.send(first, b"x")
        assert calls.get_attributes(first) == wire.Attr(0, 10, 8192, 1)
        previous = calls.set_attributes(first, os.O_NONBLOCK)
        assert previous == wire.Attr(0, 10, 8192, 1)
        assert calls.get_attributes(first).flags == os.O_NONBLOCK
        assert calls.get_attributes(second).flags == 0
        calls.receive(first, 8192)
        with pytest.raises(BlockingIOError):
            calls.receive(first, 8192)  # the O_NONBLOCK set by SETATTR applies
        with pytest.raises(OSError) as other_flag:
            calls.set_attributes(first, os.O_NONBLOCK | os.O_APPEND)
        assert other_flag.value.errno == errno.EINVAL
    finally:
        os.close(first)
        os.close(second)


def test_unknown_ioctl_is_enotty(queue_fd: int) -> None:
    with pytest.raises(OSError) as unknown:
        fcntl.ioctl(queue_fd, (2 << 30) | (8 << 16) | (ord("Q") << 8) | 200, bytearray(8), True)
    assert unknown.value.errno == errno.ENOTTY


def test_poll_reports_readiness_and_wakes_on_send(mqfs_mount: Mount, queue_fd: int) -> None:
    poller = select.poll()
    # Ask for the *NORM bits too: poll reports only the events asked for.
    everything = select.POLLIN | select.POLLOUT | select.POLLRDNORM | select.POLLWRNORM
    poller.register(queue_fd, everything)
    assert poller.poll(0) == [(queue_fd, select.POLLOUT | select.POLLWRNORM)]
    reader = select.poll()
    reader.register(queue_fd, select.POLLIN | select.POLLRDNORM)
    assert reader.poll(0) == []
    sender = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import os
        fd = os.open({str(mqfs_mount.path / "q" / "queue")!r}, os.O_WRONLY)
        os.write(fd, b"wake up")
    """),
        ]
    )
    try:
        events = reader.poll(10_000)  # woken by the notify, well before the timeout
        assert events == [(queue_fd, select.POLLIN | select.POLLRDNORM)]
    finally:
        assert sender.wait(timeout=10) == 0
    for i in range(9):
        os.write(queue_fd, b"%d" % i)
    assert poller.poll(0) == [(queue_fd, select.POLLIN | select.POLLRDNORM)]  # full


def test_blocking_read_is_woken_by_a_send_from_another_process(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    queue_path = str(mqfs_mount.path / "q" / "queue")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import os,sys; from mqfs.client import calls; fd = os.open({queue_path!r}, "
            f"os.O_RDONLY); calls.receive_on_read(fd); sys.stdout.buffer.write(os.read(fd, 8192))",
        ],
        stdout=subprocess.PIPE,
    )
    fd = open_queue(mqfs_mount, "q")
    try:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="reader to block")
        os.write(fd, b"hello reader")
        out, _ = reader.communicate(timeout=10)
        assert out == b"hello reader"
        assert calls.get_attributes(fd).curmsgs == 0
    finally:
        os.close(fd)


@contextlib.contextmanager
def blocked_writer(mount: Mount, name: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process blocked writing b"late" to the full queue *name* (killed if it is still
    there at the end)."""
    queue_path = str(mount.path / name / "queue")
    code = f"import os; os.write(os.open({queue_path!r}, os.O_WRONLY), b'late')"
    writer = subprocess.Popen([sys.executable, "-c", code])
    try:
        wait_until(lambda: mount.blocked_on(name), what="the writer to block")
        yield writer
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()


def test_blocking_write_is_woken_by_a_receive(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    fd = open_queue(mqfs_mount, "q")
    for i in range(10):
        os.write(fd, b"%d" % i)
    try:
        with blocked_writer(mqfs_mount, "q") as writer:
            assert os.read(fd, 8192) == b"0"
            assert writer.wait(timeout=10) == 0
        assert [os.read(fd, 8192) for _ in range(10)][-1] == b"late"
    finally:
        os.close(fd)


@pytest.mark.parametrize("how", ["SIGKILL", "SIGUSR1 with a handler"])
def test_interrupted_reader_loses_nothing(mqfs_mount: Mount, how: str) -> None:
    mqfs_mount.make_queue("q")
    queue_path = str(mqfs_mount.path / "q" / "queue")
    program = textwrap.dedent(f"""
        import os, signal, sys
        from mqfs.client import calls
        class Interrupted(Exception): pass
        def handler(*_): raise Interrupted
        signal.signal(signal.SIGUSR1, handler)
        fd = os.open({queue_path!r}, os.O_RDONLY)
        calls.receive_on_read(fd)
        try:
            os.read(fd, 8192)
            print("received")
        except Interrupted:
            print("interrupted")
    """)
    reader = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: mqfs_mount.blocked_on("q"), what="reader to block")
    reader.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGUSR1)
    out, _ = reader.communicate(timeout=10)  # without interrupts this would hang
    assert out.strip() == ("" if how == "SIGKILL" else "interrupted")
    fd = open_queue(mqfs_mount, "q")
    try:
        os.write(fd, b"must not vanish")
        assert calls.get_attributes(fd).curmsgs == 1
        assert os.read(fd, 8192) == b"must not vanish"
    finally:
        os.close(fd)


def test_interrupted_ioctl_receive_returns_eintr(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    queue_path = str(mqfs_mount.path / "q" / "queue")
    program = textwrap.dedent(f"""
        import errno, os, signal
        from mqfs.client import calls
        signal.signal(signal.SIGUSR1, lambda *_: None)
        fd = os.open({queue_path!r}, os.O_RDONLY)
        try:
            calls.receive(fd, 8192)
        except InterruptedError:
            print("EINTR")
    """)
    reader = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    wait_until(lambda: mqfs_mount.blocked_on("q"), what="receiver to block")
    reader.send_signal(signal.SIGUSR1)
    out, _ = reader.communicate(timeout=10)
    assert out.strip() == "EINTR"


def test_stopped_and_continued_plain_read_returns_eintr(mqfs_mount: Mount) -> None:
    """A documented difference (FUSE's, not mqfs's): SIGSTOP then SIGCONT of a read()
    blocked on an opted-in queue file ends the FUSE request, and read() returns EINTR
    though no handler ran; the kernel restarts its mq_receive (as the shim restarts its
    own: tests/preload/stop_continue.c). Nothing is lost."""
    mqfs_mount.make_queue("q")
    queue_path = str(mqfs_mount.path / "q" / "queue")
    program = textwrap.dedent(f"""
        import ctypes, errno, os
        from mqfs.client import calls
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open({queue_path!r}, os.O_RDONLY)
        calls.receive_on_read(fd)
        buffer = ctypes.create_string_buffer(8192)
        got = libc.read(fd, buffer, 8192)  # os.read would retry EINTR itself (PEP 475)
        print(errno.errorcode[ctypes.get_errno()] if got < 0 else buffer.raw[:got])
    """)
    reader = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="reader to block")
        reader.send_signal(signal.SIGSTOP)
        wait_until(lambda: task_state(reader.pid) == "T", what="reader to stop")
        reader.send_signal(signal.SIGCONT)
        out, _ = reader.communicate(timeout=10)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate(timeout=10)
    assert out.strip() == "EINTR"
    fd = open_queue(mqfs_mount, "q")
    try:
        os.write(fd, b"kept")
        assert os.read(fd, 8192) == b"kept"
    finally:
        os.close(fd)


def test_timed_receive_and_send_time_out(mqfs_mount: Mount) -> None:
    mqfs_mount.make_queue("q")
    fd = open_queue(mqfs_mount, "q")
    try:
        with pytest.raises(TimeoutError):
            calls.receive(fd, 8192, timeout=0.05)
        with pytest.raises(TimeoutError):
            calls.receive(fd, 8192, timeout=0)  # a deadline already past
        for i in range(10):
            calls.send(fd, b"%d" % i, timeout=0)  # room: succeeds despite the deadline
        with pytest.raises(TimeoutError):
            calls.send(fd, b"full", timeout=0.05)
    finally:
        os.close(fd)


def test_invalid_timespec_is_einval_even_when_it_would_not_block(queue_fd: int) -> None:
    request = wire.Xfer(
        msg_len=1, tv_sec=0, tv_nsec=1_000_000_000, flags=wire.XFER_TIMED, data=b"x"
    )
    with pytest.raises(OSError) as invalid:
        fcntl.ioctl(queue_fd, wire.IOC_SEND, bytearray(request.request()), True)
    assert invalid.value.errno == errno.EINVAL
    assert calls.get_attributes(queue_fd).curmsgs == 0


def test_messages_larger_than_one_ioctl_are_atomic(mount_factory: object) -> None:
    mount = mount_factory("msgsize_max=200000")  # type: ignore[operator]
    calls.create_at(mount.path, "big", 0o600, maxmsg=4, msgsize=200000)
    fd = open_queue(mount, "big")
    try:
        big = bytes(range(256)) * 700  # 179,200 bytes: eleven chunks
        calls.send(fd, big, 5)
        calls.send(fd, b"small", 9)
        assert calls.get_attributes(fd).curmsgs == 2
        assert calls.peek(fd, 1) == (big, 5)
        assert calls.receive(fd, 200000) == (b"small", 9)
        assert calls.receive(fd, 200000) == (big, 5)
        os.write(fd, big)  # plain write(): one FUSE request up to the transfer size
        assert os.read(fd, 200000) == big
    finally:
        os.close(fd)


def test_write_too_large_for_one_fuse_request_sends_nothing(mount_factory: object) -> None:
    # The kernel would split such a write() into several FUSE requests; mqfs must not
    # turn one write() into several messages.
    limit = plain_io_limit()
    mount = mount_factory("msgsize_max=4000000,ignore_rlimit")  # type: ignore[operator]
    calls.create_at(mount.path, "huge", 0o600, maxmsg=4, msgsize=2_000_000)
    fd = open_queue(mount, "huge")
    try:
        for size in (limit + 1, 1 << 20, 2_000_000):
            with pytest.raises(OSError) as refused:
                os.write(fd, b"s" * size)
            assert refused.value.errno == errno.EMSGSIZE
            assert calls.get_attributes(fd).curmsgs == 0
        buffer = memoryview(bytearray(limit + 1))[1:]  # unaligned: the worst case
        assert os.write(fd, buffer) == limit
        assert calls.get_attributes(fd).curmsgs == 1
        huge = bytes(range(256)) * 7800  # 1,996,800 bytes
        calls.send(fd, huge, 3)
        with pytest.raises(OSError) as too_small:  # read() can never hold msgsize here
            os.read(fd, 2_000_000)
        assert too_small.value.errno == errno.EMSGSIZE
        assert calls.receive(fd, 2_000_000) == (huge, 3)
        assert calls.receive(fd, 2_000_000) == (bytes(limit), 0)
    finally:
        os.close(fd)


def test_peek_batch_returns_many_messages_per_call_in_receive_order(
    mount_factory: object,
) -> None:
    mount = mount_factory("msg_max=2000,msgsize_max=60000,ignore_rlimit")  # type: ignore[operator]
    calls.create_at(mount.path, "q", 0o600, maxmsg=2000, msgsize=60000)
    fd = open_queue(mount, "q")
    try:
        assert calls.peek_all(fd) == []
        expected = []
        for i in range(1500):
            payload, priority = b"m%d" % i, i % 7
            calls.send(fd, payload, priority)
            expected.append((payload, priority))
        expected.sort(key=lambda item: -item[1])  # stable: FIFO within a priority
        first = calls.peek_batch(fd, 0)
        assert first.flags & wire.BATCH_MORE
        assert 500 < len(first.records) < 1500  # many per call, bounded by the ioctl size
        assert [(data, prio) for _, prio, data in first.records] == expected[: len(first.records)]
        assert calls.peek_batch(fd, 10, max_count=3).next == 13
        assert calls.peek_all(fd) == expected
        huge = bytes(range(256)) * 200  # 51,200 bytes: more than one batch can carry
        calls.send(fd, huge, 9)
        assert calls.peek_all(fd) == [(huge, 9), *expected]
        assert calls.get_attributes(fd).curmsgs == 1501  # nothing consumed
        before = calls.peek_batch(fd, 0).generation
        calls.receive(fd, 60000)
        assert calls.peek_batch(fd, 0).generation != before
        with pytest.raises(OSError) as past_end:
            calls.peek_batch(fd, 1501)
        assert past_end.value.errno == errno.ENOENT
    finally:
        os.close(fd)
    write_only = os.open(mount.path / "q" / "queue", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as not_readable:
            calls.peek_batch(write_only, 0)
        assert not_readable.value.errno == errno.EBADF
    finally:
        os.close(write_only)


def test_a_blocking_receive_lets_other_threads_run(mqfs_mount: Mount, queue_fd: int) -> None:
    # The sender thread can only run if the blocked ioctl released the GIL; if it did
    # not, the receive would sit out its whole deadline and fail with ETIMEDOUT.
    def send_once_receiver_blocks() -> None:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="the receiver to block")
        os.write(queue_fd, b"from another thread")

    sender = threading.Thread(target=send_once_receiver_blocks)
    sender.start()
    try:
        assert calls.receive(queue_fd, 8192, timeout=20) == (b"from another thread", 0)
    finally:
        sender.join()


def test_sized_commands_move_only_what_they_need(queue_fd: int) -> None:
    calls.send(queue_fd, b"0123456789", 4)  # a 10-byte SEND struct after the header
    size = wire.PEEK_HEADER_SIZE + 4
    buffer = bytearray(wire.Peek(index=0, offset=2).request(size))
    copied = fcntl.ioctl(queue_fd, wire.sized(wire.IOC_PEEK, size), buffer, True)
    assert copied == 4
    assert wire.Peek.unpack(buffer) == wire.Peek(0, 2, 10, 4, b"2345")
    for too_small in (wire.PEEK_HEADER_SIZE, wire.PEEK_HEADER_SIZE - 8):
        with pytest.raises(OSError) as invalid:  # no room for a byte of data
            fcntl.ioctl(queue_fd, wire.sized(wire.IOC_PEEK, too_small), bytearray(too_small), True)
        assert invalid.value.errno == errno.EINVAL
    assert calls.receive(queue_fd, 8192) == (b"0123456789", 4)


# -- REMOVE: one message out of the middle (mqfs rm-msg) -------------------------------------


def _errno_of(call: object, *args: object) -> int:
    with pytest.raises(OSError) as failure:
        call(*args)  # type: ignore[operator]
    return failure.value.errno  # type: ignore[return-value]


def test_remove_takes_exactly_the_message_named_at_its_generation(
    mqfs_mount: Mount, queue_fd: int
) -> None:
    long = b"L" * 1000
    for payload, priority in [(b"head", 5), (long, 1), (b"tail", 1)]:
        calls.send(queue_fd, payload, priority)
    generation = calls.current_generation(queue_fd)
    assert _errno_of(calls.remove, queue_fd, 1, generation - 1) == errno.ESTALE
    assert _errno_of(calls.remove, queue_fd, 3, generation) == errno.ENOENT
    write_only = os.open(mqfs_mount.path / "q" / "queue", os.O_WRONLY)
    try:
        assert _errno_of(calls.remove, write_only, 1, generation) == errno.EBADF
    finally:
        os.close(write_only)
    assert calls.current_generation(queue_fd) == generation  # none of them changed a thing
    removed = calls.remove(queue_fd, 1, generation)
    assert (removed.msg_len, removed.msg_prio) == (1000, 1)
    assert removed.data == long[: wire.REMOVE_HEAD]  # the head of what went
    assert removed.generation == calls.current_generation(queue_fd) != generation
    assert calls.peek_all(queue_fd) == [(b"head", 5), (b"tail", 1)]
    assert os.read(queue_fd, 8192) == b"head"
    assert os.read(queue_fd, 8192) == b"tail"
    empty = calls.current_generation(queue_fd)
    assert _errno_of(calls.remove, queue_fd, 0, empty) == errno.ENOENT  # not EAGAIN


def test_remove_admits_a_blocked_writer(mqfs_mount: Mount, queue_fd: int) -> None:
    for i in range(10):  # the mount's default maxmsg: full
        os.write(queue_fd, b"%d" % i)
    with blocked_writer(mqfs_mount, "q") as writer:
        calls.remove(queue_fd, 4, calls.current_generation(queue_fd))
        assert writer.wait(timeout=10) == 0
    expected = [b"%d" % i for i in range(10) if i != 4] + [b"late"]
    assert [payload for payload, _ in calls.peek_all(queue_fd)] == expected


def test_remove_wakes_pollers_and_waiters(mqfs_mount: Mount, queue_fd: int) -> None:
    for i in range(10):
        os.write(queue_fd, b"%d" % i)
    generation = calls.current_generation(queue_fd)
    poller = select.poll()
    poller.register(queue_fd, select.POLLOUT)
    assert poller.poll(0) == []  # full
    threads: dict[str, int] = {}
    results: dict[str, object] = {}

    def poll_for_room() -> None:
        threads["poll"] = threading.get_native_id()
        results["poll"] = poller.poll(10_000)

    def wait_for_a_change() -> None:
        threads["wait"] = threading.get_native_id()
        results["wait"] = calls.wait_changed(queue_fd, generation, timeout=10).generation

    def asleep_in(thread: str, where: str) -> bool:
        tid = threads.get(thread)
        return tid is not None and where in Path(f"/proc/{tid}/wchan").read_text()

    workers = [threading.Thread(target=poll_for_room), threading.Thread(target=wait_for_a_change)]
    for worker in workers:
        worker.start()
    try:
        # Both parked before the removal, so that only the removal can wake them.
        wait_until(
            lambda: asleep_in("poll", "poll") and blocked_in_mq_call(threads["wait"]),
            what="the poll and the WAIT to block",
        )
        removed = calls.remove(queue_fd, 9, generation)
    finally:
        for worker in workers:
            worker.join(timeout=15)
    assert results == {"poll": [(queue_fd, select.POLLOUT)], "wait": removed.generation}

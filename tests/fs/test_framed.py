"""Framed I/O on MNT/NAME/queue: batch send, receive and peek by pread/pwrite offsets."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqfs import wire
from mqfs.client import calls
from tests.support.mounts import Mount, mounted
from tests.support.waiting import wait_until

MIXED = [(b"low-1", 1), (b"high-1", 9), (b"", 4), (b"low-2", 1), (b"x" * 100, 0), (b"high-2", 9)]


def open_queue(mount: Mount, name: str = "q", flags: int = os.O_RDWR) -> int:
    return os.open(mount.path / name / "queue", flags)


def make(mount: Mount, name: str = "q", maxmsg: int = 10, msgsize: int = 128) -> None:
    calls.create_at(mount.path, name, 0o600, maxmsg=maxmsg, msgsize=msgsize)


def flat(reply: bytes) -> list[tuple[bytes, int]]:
    return wire.decode_reply(reply)[2]


@pytest.fixture
def fd(mqfs_mount: Mount) -> object:
    make(mqfs_mount)
    descriptor = open_queue(mqfs_mount)
    yield descriptor
    os.close(descriptor)


def one_by_one(fd: int) -> list[tuple[bytes, int]]:
    got = []
    while calls.get_attributes(fd).curmsgs:
        got.append(calls.receive(fd, 8192))
    return got


def test_batch_send_and_receive_equal_one_by_one_calls(mqfs_mount: Mount, fd: int) -> None:
    frames = wire.encode_frames(MIXED)
    assert os.pwrite(fd, frames, wire.FRAMED_SEND) == len(frames)
    batch_peeked = calls.peek_all(fd)
    received = flat(os.pread(fd, 1 << 16, wire.FRAMED_RECEIVE))
    for payload, priority in MIXED:
        calls.send(fd, payload, priority)
    assert calls.peek_all(fd) == batch_peeked
    assert one_by_one(fd) == received == batch_peeked
    assert [p for p, _ in received][:2] == [b"high-1", b"high-2"]


def test_plain_read_and_write_keep_their_meaning(fd: int) -> None:
    assert os.write(fd, b"plain") == 5
    assert os.pread(fd, 100, 0).startswith(b"QSIZE:5 ")  # the status line: not consumed
    assert flat(os.pread(fd, 4096, wire.FRAMED_RECEIVE)) == [(b"plain", 0)]


def test_receive_takes_only_what_fits_and_at_most_count(fd: int) -> None:
    calls.send_many(fd, [(b"%d" % i * 8, 0) for i in range(6)])  # 8-byte messages
    room_for_two = wire.FRAMES_HEADER_SIZE + 2 * wire.record_size(8) + wire.record_size(128) - 1
    with pytest.raises(OSError) as small:  # cannot hold a frame of msgsize (128)
        os.pread(fd, wire.FRAMES_HEADER_SIZE + wire.record_size(128) - 1, wire.FRAMED_RECEIVE)
    assert small.value.errno == errno.EMSGSIZE
    _, more, got = wire.decode_reply(os.pread(fd, room_for_two, wire.framed_receive_offset(2)))
    assert got == [(b"0" * 8, 0), (b"1" * 8, 0)]
    assert more
    assert calls.receive_many(fd, 3) == [(b"%d" % i * 8, 0) for i in (2, 3, 4)]
    assert calls.get_attributes(fd).curmsgs == 1


def test_nonblocking_send_is_short_then_eagain(mqfs_mount: Mount) -> None:
    make(mqfs_mount, maxmsg=3)
    fd = open_queue(mqfs_mount, flags=os.O_RDWR | os.O_NONBLOCK)
    try:
        messages = [(b"m%d" % i, i) for i in range(5)]
        frames = wire.encode_frames(messages)
        assert os.pwrite(fd, frames, wire.FRAMED_SEND) == 3 * wire.frame_size(2)
        with pytest.raises(BlockingIOError):
            os.pwrite(fd, frames, wire.FRAMED_SEND)
        assert one_by_one(fd) == [(b"m2", 2), (b"m1", 1), (b"m0", 0)]
        with pytest.raises(BlockingIOError):
            os.pread(fd, 4096, wire.FRAMED_RECEIVE)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (wire.encode_frames([(b"ok", 1)]) + wire.encode_frames([(b"cut", 1)])[:-2], errno.EINVAL),
        (wire.encode_frames([(b"ok", 1), (b"bad", 32768)]), errno.EINVAL),
        (wire.encode_frames([(b"ok", 1), (b"x" * 129, 1)]), errno.EMSGSIZE),
    ],
    ids=["truncated", "priority", "too long"],
)
def test_a_bad_frame_sends_nothing_of_the_write(fd: int, frames: bytes, code: int) -> None:
    with pytest.raises(OSError) as refused:
        os.pwrite(fd, frames, wire.FRAMED_SEND)
    assert refused.value.errno == code
    assert calls.get_attributes(fd).curmsgs == 0


def test_wrong_direction_and_wrong_offsets(mqfs_mount: Mount, fd: int) -> None:
    reader = open_queue(mqfs_mount, flags=os.O_RDONLY)
    writer = open_queue(mqfs_mount, flags=os.O_WRONLY)
    try:
        with pytest.raises(OSError) as not_writable:
            os.pwrite(reader, wire.encode_frames([(b"x", 0)]), wire.FRAMED_SEND)
        assert not_writable.value.errno == errno.EBADF
        with pytest.raises(OSError) as not_readable:
            os.pread(writer, 4096, wire.FRAMED_RECEIVE)
        assert not_readable.value.errno == errno.EBADF
        with pytest.raises(OSError) as elsewhere:
            os.pwrite(fd, wire.encode_frames([(b"x", 0)]), wire.FRAMED_SEND + 8)
        assert elsewhere.value.errno == errno.EINVAL
        calls.send(fd, b"stays", 0)
        # Between the offsets (a kernel continuation): nothing, and nothing consumed.
        assert os.pread(fd, 4096, wire.FRAMED_RECEIVE + 4096) == b""
        assert os.pread(fd, 4096, wire.framed_peek_offset(0) + 8) == b""
        assert calls.get_attributes(fd).curmsgs == 1
    finally:
        os.close(reader)
        os.close(writer)


def test_peek_from_an_index_with_the_generation(fd: int) -> None:
    calls.send_many(fd, MIXED)
    expected = calls.peek_all(fd)
    generation, more, got = wire.decode_reply(os.pread(fd, 4096, wire.framed_peek_offset(2)))
    assert got == expected[2:]
    assert not more
    again, _, _ = wire.decode_reply(os.pread(fd, 4096, wire.framed_peek_offset(0)))
    assert again == generation  # nothing changed, nothing consumed
    calls.send(fd, b"new", 3)
    changed, _, _ = wire.decode_reply(os.pread(fd, 4096, wire.framed_peek_offset(0)))
    assert changed != generation
    end = wire.decode_reply(os.pread(fd, 4096, wire.framed_peek_offset(len(MIXED) + 1)))
    assert end[2] == []
    with pytest.raises(FileNotFoundError):
        os.pread(fd, 4096, wire.framed_peek_offset(len(MIXED) + 2))
    size = wire.FRAMES_HEADER_SIZE + wire.record_size(100) - 1
    longest = [p for p, _ in calls.peek_all(fd)].index(b"x" * 100)
    with pytest.raises(OSError) as small:  # the 100-byte message cannot fit
        os.pread(fd, size, wire.framed_peek_offset(longest))
    assert small.value.errno == errno.EMSGSIZE


def test_a_batch_receive_admits_blocked_senders_as_one_by_one_receives(
    mqfs_mount: Mount,
) -> None:
    make(mqfs_mount, maxmsg=2)
    fd = open_queue(mqfs_mount)
    writer = open_queue(mqfs_mount, flags=os.O_WRONLY)
    result: list[int] = []
    messages = [(b"a", 1), (b"b", 1), (b"c", 1), (b"d", 5)]
    thread = threading.Thread(target=lambda: result.append(calls.send_many(writer, messages)))
    thread.start()
    try:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="batch sender to block")
        assert calls.receive_many(fd) == [(b"a", 1), (b"b", 1), (b"c", 1)]
        thread.join(timeout=10)
        assert result == [4]
        assert calls.receive_many(fd) == [(b"d", 5)]
    finally:
        thread.join(timeout=10)
        os.close(fd)
        os.close(writer)


def test_interrupted_batch_send_returns_the_frames_sent(mqfs_mount: Mount) -> None:
    make(mqfs_mount, maxmsg=2)
    queue_path = str(mqfs_mount.path / "q" / "queue")
    program = textwrap.dedent(f"""
        import os, signal
        from mqfs import wire
        signal.signal(signal.SIGUSR1, lambda *_: None)
        fd = os.open({queue_path!r}, os.O_WRONLY)
        frames = wire.encode_frames([(b"one", 0), (b"two", 0), (b"three", 0)])
        print(os.pwrite(fd, frames, wire.FRAMED_SEND))
    """)
    writer = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="writer to block on its third")
        writer.send_signal(signal.SIGUSR1)
        out, _ = writer.communicate(timeout=10)
    finally:
        writer.kill()
        writer.wait()
    assert int(out) == 2 * wire.frame_size(3)
    fd = open_queue(mqfs_mount)
    try:
        assert one_by_one(fd) == [(b"one", 0), (b"two", 0)]
    finally:
        os.close(fd)


def test_interrupted_batch_receive_consumes_nothing(mqfs_mount: Mount) -> None:
    make(mqfs_mount)
    queue_path = str(mqfs_mount.path / "q" / "queue")
    program = textwrap.dedent(f"""
        import os, signal
        from mqfs import wire
        class Interrupted(Exception): pass
        def handler(*_): raise Interrupted
        signal.signal(signal.SIGUSR1, handler)
        fd = os.open({queue_path!r}, os.O_RDONLY)
        try:
            os.pread(fd, 4096, wire.FRAMED_RECEIVE)
        except Interrupted:
            print("interrupted")
    """)
    reader = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: mqfs_mount.blocked_on("q"), what="reader to block")
        reader.send_signal(signal.SIGUSR1)
        out, _ = reader.communicate(timeout=10)
    finally:
        reader.kill()
        reader.wait()
    assert out.strip() == "interrupted"
    fd = open_queue(mqfs_mount)
    try:
        calls.send(fd, b"kept", 0)
        assert calls.receive_many(fd) == [(b"kept", 0)]
    finally:
        os.close(fd)


def test_a_framed_write_larger_than_one_request_sends_nothing(fd: int) -> None:
    frames = wire.encode_frames([(b"x" * 120, 0)] * (calls.FRAMED_IO_MAX // 128 + 1))
    with pytest.raises(OSError) as refused:
        os.pwrite(fd, frames, wire.FRAMED_SEND)
    assert refused.value.errno == errno.EMSGSIZE
    assert calls.get_attributes(fd).curmsgs == 0


@pytest.mark.parametrize("sync", [False, True], ids=["state", "state_sync"])
def test_batches_are_journaled_and_come_back_after_a_restart(tmp_path: Path, sync: bool) -> None:
    options = (f"state={tmp_path / 'state'}", "msg_max=64", *(["state_sync"] if sync else []))
    sent = [(b"m%d" % i, i % 3) for i in range(50)]
    with mounted(options) as mount:
        make(mount, maxmsg=64)
        fd = open_queue(mount)
        try:
            assert calls.send_many(fd, sent) == 50
            taken = calls.receive_many(fd, 7)
            before = calls.peek_all(fd)
        finally:
            os.close(fd)
    with mounted(options) as mount:
        fd = open_queue(mount)
        try:
            after = calls.peek_all(fd)
        finally:
            os.close(fd)
    assert after == before
    assert sorted(taken + before) == sorted(sent)
    assert len(after) == 43


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.one_of(
        st.binary(min_size=1, max_size=600),
        st.lists(
            st.tuples(st.binary(max_size=140), st.integers(0, 40000)), min_size=1, max_size=14
        ).map(wire.encode_frames),
    )
)
def test_any_bytes_written_framed_are_whole_frames_or_refused(fd: int, garbage: bytes) -> None:
    calls.set_attributes(fd, os.O_NONBLOCK)  # garbage may be many valid empty frames
    try:
        written = os.pwrite(fd, garbage, wire.FRAMED_SEND)
    except OSError as exc:
        assert exc.errno in (errno.EINVAL, errno.EMSGSIZE)
        assert calls.get_attributes(fd).curmsgs == 0
    else:  # it was frames after all: the whole ones that fit went, in order
        sent = [(p, priority) for priority, ps in wire.decode_frames(garbage[:written]) for p in ps]
        assert calls.receive_many(fd) == sorted(sent, key=lambda message: -message[1])


def test_a_snapshot_leaves_the_garbage_collector_as_it_found_it(fd: int) -> None:
    """peek_all pauses the collector while it builds its tuples (a fifth of a large
    dump) and leaves it on or off as it was, also when the queue changed meanwhile."""
    import gc

    calls.send_many(fd, MIXED)
    assert gc.isenabled()
    assert calls.peek_all(fd) == sorted(MIXED, key=lambda m: -m[1])
    assert gc.isenabled()
    gc.disable()
    try:
        assert len(calls.peek_all(fd)) == len(MIXED)
        assert not gc.isenabled()
    finally:
        gc.enable()

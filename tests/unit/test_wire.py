"""mqfs/wire.py against include/mqfs.h: same sizes, offsets and ioctl numbers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqfs import wire
from tests.support.paths import INCLUDE

# name in C -> value in Python
CONSTANTS = {
    "MQFS_CHUNK": wire.CHUNK,
    "MQFS_IOC_NOOP": wire.IOC_NOOP,
    "MQFS_IOC_GETATTR": wire.IOC_GETATTR,
    "MQFS_IOC_SETATTR": wire.IOC_SETATTR,
    "MQFS_IOC_SETPRIO": wire.IOC_SETPRIO,
    "MQFS_IOC_PEEK": wire.IOC_PEEK,
    "MQFS_IOC_SEND": wire.IOC_SEND,
    "MQFS_IOC_RECEIVE": wire.IOC_RECEIVE,
    "MQFS_IOC_CREATE": wire.IOC_CREATE,
    "MQFS_IOC_NOTIFY": wire.IOC_NOTIFY,
    "MQFS_IOC_PEEK_BATCH": wire.IOC_PEEK_BATCH,
    "MQFS_IOC_WAIT": wire.IOC_WAIT,
    "MQFS_IOC_RECEIVE_ON_READ": wire.IOC_RECEIVE_ON_READ,
    "MQFS_IOC_NOTIFY_WAIT": wire.IOC_NOTIFY_WAIT,
    "sizeof(struct mqfs_notify_wait)": wire.NOTIFY_WAIT_SIZE,
    "offsetof(struct mqfs_notify_wait, sigev_value)": 8,
    "MQFS_NOTIFY_FIRED": wire.NOTIFY_FIRED,
    "MQFS_NOTIFY_ENDED": wire.NOTIFY_ENDED,
    "MQFS_IOC_REMOVE": wire.IOC_REMOVE,
    "MQFS_IOC_MAP": wire.IOC_MAP,
    "sizeof(struct mqfs_map)": wire.MAP_SIZE,
    "offsetof(struct mqfs_map, path)": wire.MAP_SIZE - wire.MAP_PATH_SIZE,
    "MQFS_REMOVE_HEAD": wire.REMOVE_HEAD,
    "sizeof(struct mqfs_remove)": wire.REMOVE_SIZE,
    "offsetof(struct mqfs_remove, msg_len)": 16,
    "offsetof(struct mqfs_remove, copied)": 28,
    "offsetof(struct mqfs_remove, data)": wire.REMOVE_SIZE - wire.REMOVE_HEAD,
    "MQFS_IOC_SIZED(MQFS_IOC_SEND, MQFS_XFER_HEADER_SIZE + 64)": wire.sized(
        wire.IOC_SEND, wire.XFER_HEADER_SIZE + 64
    ),
    "MQFS_PEEK_HEADER_SIZE": wire.PEEK_HEADER_SIZE,
    "sizeof(struct mqfs_wait)": wire.WAIT_SIZE,
    "MQFS_BATCH_MORE": wire.BATCH_MORE,
    "sizeof(struct mqfs_batch)": wire.BATCH_SIZE,
    "offsetof(struct mqfs_batch, data)": wire.BATCH_SIZE - wire.CHUNK,
    "offsetof(struct mqfs_batch, used)": 36,
    "sizeof(struct mqfs_batch_record)": wire.BATCH_RECORD_HEADER_SIZE,
    "MQFS_NOTIFY_REGISTER": wire.NOTIFY_REGISTER,
    "sizeof(struct mqfs_notify)": wire.NOTIFY_SIZE,
    "offsetof(struct mqfs_notify, sigev_value)": 16,
    "MQFS_XFER_TIMED": wire.XFER_TIMED,
    "MQFS_CREATE_EXCL": wire.CREATE_EXCL,
    "MQFS_WAIT_UNLINKED": wire.WAIT_UNLINKED,
    "MQFS_CREATE_ATTR": wire.CREATE_ATTR,
    "sizeof(struct mqfs_attr)": wire.ATTR_SIZE,
    "sizeof(struct mqfs_peek)": wire.PEEK_SIZE,
    "sizeof(struct mqfs_xfer)": wire.XFER_SIZE,
    "sizeof(struct mqfs_create)": wire.CREATE_SIZE,
    # Offsets of every field a caller touches, from the layouts in wire.py's docstring.
    "offsetof(struct mqfs_attr, curmsgs)": 24,
    "offsetof(struct mqfs_peek, msg_len)": 16,
    "offsetof(struct mqfs_peek, msg_prio)": 24,
    "offsetof(struct mqfs_peek, copied)": 28,
    "offsetof(struct mqfs_peek, data)": wire.PEEK_SIZE - wire.CHUNK,
    "offsetof(struct mqfs_xfer, xfer_id)": 16,
    "offsetof(struct mqfs_xfer, tv_sec)": 24,
    "offsetof(struct mqfs_xfer, tv_nsec)": 32,
    "offsetof(struct mqfs_xfer, msg_prio)": 40,
    "offsetof(struct mqfs_xfer, flags)": 44,
    "offsetof(struct mqfs_xfer, chunk_len)": 48,
    "offsetof(struct mqfs_xfer, data)": wire.XFER_SIZE - wire.CHUNK,
    "offsetof(struct mqfs_create, mode)": 256,
    "offsetof(struct mqfs_create, flags)": 260,
    "offsetof(struct mqfs_create, maxmsg)": 264,
    "offsetof(struct mqfs_create, msgsize)": 272,
    "_IOC_SIZE(MQFS_IOC_XFER_PROBE)": wire.XFER_SIZE,
    "MQFS_FRAMED_SEND": wire.FRAMED_SEND,
    "MQFS_FRAMED_RECEIVE": wire.FRAMED_RECEIVE,
    "MQFS_FRAMED_PEEK_OFFSET(7)": wire.framed_peek_offset(7),
    "MQFS_FRAMED_RECEIVE_OFFSET(9)": wire.framed_receive_offset(9),
    "MQFS_FRAMES_MORE": wire.FRAMES_MORE,
    "sizeof(struct mqfs_frame)": wire.FRAME_HEADER_SIZE,
    "offsetof(struct mqfs_frame, msg_prio)": 4,
    "MQFS_FRAME_SIZE(13)": wire.frame_size(13),
    "sizeof(struct mqfs_frames)": wire.FRAMES_HEADER_SIZE,
    "offsetof(struct mqfs_frames, count)": 8,
    "offsetof(struct mqfs_frames, flags)": 12,
}


def test_c_header_matches_wire_module(tmp_path: Path) -> None:
    compiler = shutil.which("gcc") or shutil.which("cc")
    assert compiler, "gcc is part of the set-up; it must be present"
    lines = "\n".join(
        f'    printf("%s=%llu\\n", "{name}", (unsigned long long)({name}));' for name in CONSTANTS
    )
    source = tmp_path / "probe.c"
    source.write_text(
        "#include <stddef.h>\n#include <stdio.h>\n#include <mqfs.h>\n"
        "#define MQFS_IOC_XFER_PROBE MQFS_IOC_SEND\n"
        f"int main(void) {{\n{lines}\n    return 0;\n}}\n"
    )
    program = tmp_path / "probe"
    subprocess.run(
        [compiler, "-std=c11", "-Wall", "-Werror", "-I", str(INCLUDE), "-o", program, source],
        check=True,
    )
    output = subprocess.run([program], check=True, capture_output=True, text=True).stdout
    measured = dict(line.split("=", 1) for line in output.splitlines())
    assert {name: int(value) for name, value in measured.items()} == CONSTANTS


def test_every_struct_fits_the_ioctl_size_field() -> None:
    for size in (wire.ATTR_SIZE, wire.PEEK_SIZE, wire.XFER_SIZE, wire.CREATE_SIZE):
        assert size < 16384
    assert (wire.IOC_SEND >> 16) & 0x3FFF == wire.XFER_SIZE
    assert wire.IOC_PEEK >> 30 == wire.IOC_READ | wire.IOC_WRITE
    with pytest.raises(ValueError, match="_IOC_SIZE"):
        wire._ioc(wire.IOC_READ, 99, 16384)


def test_peek_round_trip_and_short_reply() -> None:
    request = wire.Peek(index=7, offset=3)
    assert len(request.request()) == wire.PEEK_SIZE
    assert len(request.request(wire.PEEK_HEADER_SIZE + 1)) == wire.PEEK_HEADER_SIZE + 1
    reply = wire.Peek(index=7, offset=3, msg_len=10, msg_prio=5, data=b"3456789")
    short = reply.pack()
    assert len(short) == wire.PEEK_SIZE - wire.CHUNK + 7
    # The client's buffer is full-size; only the reply's bytes are overwritten.
    buffer = bytearray(b"\xff" * wire.PEEK_SIZE)
    buffer[: len(short)] = short
    assert wire.Peek.unpack(buffer) == reply


def test_xfer_round_trip() -> None:
    xfer = wire.Xfer(
        msg_len=20000, offset=16320, xfer_id=9, tv_sec=-1, tv_nsec=5, msg_prio=32767,
        flags=wire.XFER_TIMED, data=b"x" * 3680,
    )  # fmt: skip
    assert wire.Xfer.unpack(xfer.request()) == xfer
    assert wire.Xfer.unpack(xfer.pack()) == xfer
    with pytest.raises(ValueError):
        xfer.request(wire.XFER_HEADER_SIZE + 10)  # the data does not fit the call's size


def test_malformed_structs_are_value_errors() -> None:
    with pytest.raises(ValueError):
        wire.Xfer.unpack(b"\0" * 10)
    lying = bytearray(wire.Xfer(data=b"ab").pack())
    lying[48:52] = (wire.CHUNK + 1).to_bytes(4, sys.byteorder)  # chunk_len beyond the buffer
    with pytest.raises(ValueError):
        wire.Xfer.unpack(lying)
    with pytest.raises(ValueError):
        wire.Peek(data=b"x" * (wire.CHUNK + 1)).pack()
    with pytest.raises(ValueError, match="NUL"):
        wire.Create.unpack(b"n" * 256 + bytes(24))
    with pytest.raises(ValueError):
        wire.Create(name=b"n" * 256).pack()
    with pytest.raises(ValueError):
        wire.decode_prio(b"\0")


def test_create_and_attr_round_trip() -> None:
    create = wire.Create(name=b"queue", mode=0o640, flags=wire.CREATE_EXCL, maxmsg=5, msgsize=64)
    assert wire.Create.unpack(create.pack()) == create
    attr = wire.Attr(flags=0o4000, maxmsg=10, msgsize=8192, curmsgs=3)
    assert wire.Attr.unpack(attr.pack()) == attr
    assert wire.decode_prio(wire.encode_prio(32767)) == 32767


def test_batch_round_trip() -> None:
    count, packed = wire.Batch.reply(4, 0, 99, 10, [(7, [b"abc"]), (0, [b""])])
    assert count == 2
    assert len(packed) == wire.BATCH_SIZE - wire.CHUNK + 2 * 16 + 3
    records = ((3, 7, b"abc"), (0, 0, b""))
    expected = wire.Batch(index=4, next=6, generation=99, flags=wire.BATCH_MORE, records=records)
    assert wire.Batch.unpack(packed) == expected
    request = wire.Batch(index=5, max_count=3)
    assert wire.Batch.unpack(request.request()) == request
    corrupt = bytearray(packed)
    corrupt[28:32] = (5).to_bytes(4, sys.byteorder)  # count larger than the records
    with pytest.raises(ValueError):
        wire.Batch.unpack(corrupt)


def test_a_batch_fills_one_chunk_and_cuts_only_a_first_giant() -> None:
    runs = [(3, [b"m" * 100] * 600), (1, [b"n" * 100] * 600)]
    count, packed = wire.Batch.reply(0, 0, 1, 1200, runs)
    assert count == wire.CHUNK // 116
    batch = wire.Batch.unpack(packed)
    assert [priority for _, priority, _ in batch.records] == [3] * count
    assert (batch.next, batch.flags) == (count, wire.BATCH_MORE)
    count, packed = wire.Batch.reply(0, 0, 1, 3, [(1, [b"g" * 100_000, b"x"]), (0, [b"y"])])
    (giant,) = wire.Batch.unpack(packed).records
    assert (count, giant[0], len(giant[2])) == (1, 100_000, wire.CHUNK - 16)
    count, packed = wire.Batch.reply(0, 0, 1, 3, [(5, [b"a", b"b"]), (2, [b"c"])])
    assert (count, wire.Batch.unpack(packed).flags) == (3, 0)


def test_remove_round_trip_and_a_lying_reply() -> None:
    request = wire.Remove(index=3, generation=41)
    assert len(request.request()) == wire.REMOVE_SIZE
    assert wire.Remove.unpack(request.request()) == request
    reply = wire.Remove(index=3, generation=42, msg_len=1000, msg_prio=9, data=b"h" * 224)
    assert len(reply.pack()) == wire.REMOVE_SIZE
    assert wire.Remove.unpack(reply.pack()) == reply
    with pytest.raises(ValueError):
        wire.Remove(data=b"x" * (wire.REMOVE_HEAD + 1)).pack()
    lying = bytearray(wire.Remove(msg_len=2, data=b"ab").pack())
    lying[28:32] = (3).to_bytes(4, sys.byteorder)  # more copied than the message holds
    with pytest.raises(ValueError):
        wire.Remove.unpack(lying + b"c")
    with pytest.raises(ValueError):
        wire.Remove.unpack(b"\0" * 31)


@given(st.binary(max_size=100), st.integers(0, 32767))
def test_one_frame_is_what_mq_send_and_mq_receive_under_the_shim_use(
    payload: bytes, priority: int
) -> None:
    """single_frame reads exactly the frame of one message (encode_frames's encoding), and
    single_reply is encode_reply's reply of one message; anything else is not one frame."""
    framed = wire.encode_frames([(payload, priority)])
    assert wire.single_frame(framed) == (payload, priority)
    assert wire.single_frame(framed + framed) is None
    assert wire.single_frame(framed[:-1]) is None
    if len(payload) % 8:
        assert wire.single_frame(framed[:-1] + b"\x01") is None  # padding must be zeros
    reply = wire.single_reply(7, payload, priority, more=True)
    assert reply == wire.encode_reply(7, [(priority, [payload])], True)

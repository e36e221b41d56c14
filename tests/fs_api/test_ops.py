"""The FUSE operations called directly, without a mount (as s3ql's fs API tier does).

A fake kernel stands in for pyfuse3's session functions: it records invalidations and
readdir entries and supplies the request context. Each test ends with the invariant
check: no handle left open, no watcher left behind, every queue accounted for.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import pytest

from mqfs import wire
from mqfs.server import inodes
from mqfs.server.ops import MqueueFS
from mqfs.server.queue import Limits, Namespace


@dataclass
class Context:
    uid: int = 0
    gid: int = 0
    pid: int = field(default_factory=os.getpid)
    umask: int = 0o022


@dataclass
class FakeKernel:
    context: Context = field(default_factory=Context)
    invalidated: list[tuple[str, int, bytes | None]] = field(default_factory=list)

    def invalidate_entry(self, inode_p: int, name: bytes) -> None:
        self.invalidated.append(("entry", inode_p, name))

    def invalidate_inode(self, inode: int, attr_only: bool = False) -> None:
        self.invalidated.append(("inode", inode, None))

    def readdir_reply(self, token: list[bytes], name: bytes, attr: Any, next_id: int) -> bool:
        token.append(name)
        return True

    def current_request_context(self) -> Context:
        return self.context


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def ops(kernel: FakeKernel) -> Iterator[MqueueFS]:
    operations = MqueueFS(Namespace(Limits(enforce_rlimit=False)), kernel=kernel)
    yield operations
    check_invariants(operations)


def check_invariants(operations: MqueueFS) -> None:
    """After a test has closed everything: no handle, no watcher, no hidden queue."""
    assert list(operations.handles.descriptors()) == []
    for queue in operations.namespace.by_qid.values():
        assert queue._watchers == {} or queue.qid in operations.views._msgs_cached
    assert set(operations.namespace.by_qid.values()) == set(operations.namespace.queues.values())


def fuse_errno(exc_info: pytest.ExceptionInfo[pyfuse3.FUSEError]) -> int:
    return exc_info.value.errno  # type: ignore[no-any-return]


async def make_queue(ops: MqueueFS, name: bytes = b"q") -> int:
    entry = await ops.mkdir(inodes.ROOT, name, 0o600, Context())
    return int(entry.st_ino)


async def open_queue(ops: MqueueFS, directory: int, flags: int = os.O_RDWR) -> int:
    """An open queue file whose read() receives (RECEIVE_ON_READ)."""
    queue_inode = (await ops.lookup(directory, b"queue", Context())).st_ino
    fh = int((await ops.open(queue_inode, flags, Context())).fh)
    await ops.ioctl(0, fh, wire.IOC_RECEIVE_ON_READ, 0, b"", 0, 0, Context())
    return fh


async def test_send_receive_and_the_tree(ops: MqueueFS, kernel: FakeKernel) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    assert await ops.write(fh, 0, b"hello") == 5
    msgs = (await ops.lookup(directory, b"msgs", Context())).st_ino
    message = await ops.lookup(msgs, b"0", Context())
    assert message.st_size == 5
    listing: list[bytes] = []
    dir_fh = await ops.opendir(msgs, Context())
    await ops.readdir(dir_fh, 0, listing)
    await ops.releasedir(dir_fh)
    assert listing == [b"0"]
    assert await ops.read(fh, 0, 8192) == b"hello"
    # The receive changed msgs/: the kernel was told to drop what it was given.
    assert ("entry", directory, b"msgs") in kernel.invalidated
    await ops.release(fh)


async def test_attributes_register_nothing(ops: MqueueFS) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    await ops.write(fh, 0, b"x")
    queue = ops.namespace.lookup("q")
    message_inode = inodes.inode_of(queue, inodes.SLOT_FIRST_MESSAGE)
    for _ in range(3):
        ops._attributes(message_inode)
    assert queue._watchers == {}
    await ops.getattr(message_inode, Context())  # the kernel may now cache it: one watcher
    await ops.getattr(message_inode, Context())
    assert len(queue._watchers) == 1
    await ops.read(fh, 0, 8192)
    assert queue._watchers == {}
    await ops.release(fh)


@pytest.mark.parametrize("index", [b"1", b"01", b"+0", b"18446744073709551616", b"16777216"])
async def test_only_existing_messages_have_names(ops: MqueueFS, index: bytes) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    await ops.write(fh, 0, b"x")
    msgs = (await ops.lookup(directory, b"msgs", Context())).st_ino
    with pytest.raises(pyfuse3.FUSEError) as failure:
        await ops.lookup(msgs, index, Context())
    assert fuse_errno(failure) == errno.ENOENT
    await ops.release(fh)


async def ioctl(ops: MqueueFS, fh: int, cmd: int, in_buf: bytes = b"", out: int = 0) -> Any:
    return await ops.ioctl(0, fh, cmd, 0, in_buf, out, 0, Context())


async def test_ioctl_table(ops: MqueueFS) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory, os.O_RDWR | os.O_NONBLOCK)
    status = (await ops.lookup(directory, b"status", Context())).st_ino
    status_fh = (await ops.open(status, os.O_RDONLY, Context())).fh
    assert await ioctl(ops, fh, wire.IOC_NOOP) == (0, b"")
    _, reply = await ioctl(ops, fh, wire.IOC_GETATTR, out=wire.ATTR_SIZE)
    assert wire.Attr.unpack(reply).flags == os.O_NONBLOCK
    cases = [
        (fh, wire.IOC_GETATTR + 1, b"", errno.ENOTTY),  # not a command
        (status_fh, wire.IOC_GETATTR, b"", errno.ENOTTY),  # not a queue file
        (fh, wire.IOC_SETATTR, b"\0", errno.EINVAL),  # a malformed struct
        (fh, wire.IOC_SETPRIO, wire.encode_prio(32768), errno.EINVAL),
        (999, wire.IOC_GETATTR, b"", errno.EBADF),
    ]
    for handle, cmd, in_buf, expected in cases:
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await ioctl(ops, handle, cmd, in_buf, out=wire.ATTR_SIZE)
        assert fuse_errno(failure) == expected, hex(cmd)
    await ops.release(status_fh)
    await ops.release(fh)


async def test_remove_drops_what_the_kernel_caches_of_msgs(
    ops: MqueueFS, kernel: FakeKernel
) -> None:
    """A removal changes msgs/ as a receive does: the kernel is told to let go of it."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    for payload in (b"a", b"poison", b"c"):
        await ops.write(fh, 0, payload)
    msgs = (await ops.lookup(directory, b"msgs", Context())).st_ino
    assert (await ops.lookup(msgs, b"1", Context())).st_size == len(b"poison")
    generation = ops.namespace.lookup("q").generation
    request = bytes(wire.Remove(index=1, generation=generation).request())
    _, reply = await ioctl(ops, fh, wire.IOC_REMOVE, request, out=wire.REMOVE_SIZE)
    removed = wire.Remove.unpack(reply)
    assert (removed.msg_len, removed.data, removed.generation) == (6, b"poison", generation + 1)
    assert ("entry", directory, b"msgs") in kernel.invalidated
    assert (await ops.lookup(msgs, b"1", Context())).st_size == len(b"c")
    with pytest.raises(pyfuse3.FUSEError) as failure:  # a struct cut short
        await ioctl(ops, fh, wire.IOC_REMOVE, request[:20], out=wire.REMOVE_SIZE)
    assert fuse_errno(failure) == errno.EINVAL
    await ops.read(fh, 0, 8192)  # ends the msgs/ view's watcher
    await ops.read(fh, 0, 8192)
    await ops.release(fh)


async def test_a_bug_is_eio_with_its_traceback_logged(
    ops: MqueueFS, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)

    def broken(*args: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(wire.Attr, "pack", broken)
    with caplog.at_level(logging.ERROR), pytest.raises(pyfuse3.FUSEError) as failure:
        await ioctl(ops, fh, wire.IOC_GETATTR, out=wire.ATTR_SIZE)
    assert fuse_errno(failure) == errno.EIO
    assert "bug in the ioctl handler" in caplog.text
    assert "RuntimeError: injected" in caplog.text
    await ops.release(fh)


async def test_unlinked_queue_lives_until_its_last_close(ops: MqueueFS) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    await ops.write(fh, 0, b"kept")
    await ops.rmdir(inodes.ROOT, b"q", Context())
    with pytest.raises(pyfuse3.FUSEError):
        await ops.lookup(inodes.ROOT, b"q", Context())
    assert await ops.read(fh, 0, 8192) == b"kept"
    await ops.release(fh)
    assert ops.namespace.by_qid == {}
    with pytest.raises(pyfuse3.FUSEError) as failure:
        await ops.getattr(directory, Context())
    assert fuse_errno(failure) == errno.ENOENT


async def test_rename_link_symlink_mknod_are_eperm(ops: MqueueFS) -> None:
    """The kernel's mqueue has none of them (its VFS answers EPERM); neither has mqfs."""
    directory = await make_queue(ops)
    queue_file = (await ops.lookup(directory, b"queue", Context())).st_ino
    calls = [
        ops.rename(inodes.ROOT, b"q", inodes.ROOT, b"r", 0, Context()),
        ops.rename(directory, b"queue", directory, b"other", 0, Context()),
        ops.link(queue_file, inodes.ROOT, b"l", Context()),
        ops.symlink(inodes.ROOT, b"s", b"q", Context()),
        ops.symlink(directory, b"s", b"queue", Context()),
        ops.mknod(inodes.ROOT, b"n", 0o010600, 0, Context()),
        ops.mknod(directory, b"n", 0o100600, 0, Context()),
    ]
    for call in calls:
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await call
        assert fuse_errno(failure) == errno.EPERM
    assert await ops.lookup(inodes.ROOT, b"q", Context())


@pytest.mark.parametrize("bit", [2, 4, 1 << 31])
async def test_unknown_flags_are_einval(ops: MqueueFS, bit: int) -> None:
    """A flag this daemon does not know must fail, not be ignored; nothing happens."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory, os.O_RDWR | os.O_NONBLOCK)
    xfer_size = wire.XFER_HEADER_SIZE + 64
    send = wire.Xfer(msg_len=1, flags=bit | wire.XFER_TIMED, data=b"x")
    receive = wire.Xfer(msg_len=64, flags=bit)
    cases = [
        (wire.sized(wire.IOC_SEND, xfer_size), send.request(xfer_size), xfer_size),
        (wire.sized(wire.IOC_RECEIVE, xfer_size), receive.request(xfer_size), xfer_size),
        (wire.IOC_WAIT, wire.Wait(flags=bit).pack(), wire.WAIT_SIZE),
    ]
    for cmd, in_buf, out in cases:
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await ioctl(ops, fh, cmd, bytes(in_buf), out=out)
        assert fuse_errno(failure) == errno.EINVAL, hex(cmd)
    create = wire.Create(name=b"new", flags=bit | wire.CREATE_EXCL).pack()
    with pytest.raises(pyfuse3.FUSEError) as failure:
        await ops.ioctl(inodes.ROOT, 0, wire.IOC_CREATE, 0, create, 0, pyfuse3.IOCTL_DIR, Context())
    assert fuse_errno(failure) == errno.EINVAL
    assert sorted(ops.namespace.queues) == ["q"]
    _, reply = await ioctl(ops, fh, wire.IOC_GETATTR, out=wire.ATTR_SIZE)
    assert wire.Attr.unpack(reply).curmsgs == 0
    await ops.release(fh)

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
import trio
import trio.testing

from mqfs import wire
from mqfs.posix import SIGEV_THREAD
from mqfs.server import inodes
from mqfs.server.mapped import MappingDirectory
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

    def invalidate_entry_async(
        self, inode_p: int, name: bytes, deleted: int = 0, ignore_enoent: bool = False
    ) -> None:
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


@pytest.fixture(params=["plain", "fastpath"])
def ops(kernel: FakeKernel, request: pytest.FixtureRequest) -> Iterator[MqueueFS]:
    """[fastpath]: every queue's store is a shared mapping (MappedStore), as -o fastpath."""
    mappings = MappingDirectory.open(None, request.param == "fastpath")
    namespace = Namespace(Limits(enforce_rlimit=False), mappings=mappings)
    operations = MqueueFS(namespace, kernel=kernel)
    try:
        yield operations
        check_invariants(operations)
    finally:
        if mappings is not None:
            mappings.close()


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


# -- SIGEV_THREAD: the NOTIFY registration and the NOTIFY_WAIT ioctl ----------------------


async def register_thread(ops: MqueueFS, fh: int, value: int = 77) -> int:
    request = wire.Notify(wire.NOTIFY_REGISTER, SIGEV_THREAD, 99, value).pack()
    registration, reply = await ioctl(ops, fh, wire.IOC_NOTIFY, request)
    assert reply == b""
    assert registration > 0
    return int(registration)


async def notify_wait(ops: MqueueFS, fh: int, registration: int) -> wire.NotifyWait:
    request = wire.NotifyWait(registration).pack()
    _, reply = await ioctl(ops, fh, wire.IOC_NOTIFY_WAIT, request, out=wire.NOTIFY_WAIT_SIZE)
    return wire.NotifyWait.unpack(reply)


async def test_thread_registration_fired_before_its_waiter_parks(ops: MqueueFS) -> None:
    """The status line shows the kernel's NOTIFY:2 SIGNO:0; the firing is kept for the
    waiter that comes later, once; no signal is sent (there is no notifier here)."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    queue = ops.namespace.lookup("q")
    registration = await register_thread(ops, fh, value=1234)
    assert queue.status_line() == (
        f"QSIZE:0          NOTIFY:2     SIGNO:0     NOTIFY_PID:{os.getpid():<6}\n".encode()
    )
    await ops.write(fh, 0, b"x")
    assert queue.notification is None
    assert await notify_wait(ops, fh, registration) == wire.NotifyWait(
        registration, wire.NOTIFY_FIRED, 1234
    )
    with pytest.raises(pyfuse3.FUSEError) as failure:  # collected: gone
        await notify_wait(ops, fh, registration)
    assert fuse_errno(failure) == errno.ENOENT
    again = await register_thread(ops, fh)  # re-registration after firing
    assert again != registration
    await ioctl(ops, fh, wire.IOC_NOTIFY, wire.Notify(wire.NOTIFY_UNREGISTER).pack())
    assert (await notify_wait(ops, fh, again)).outcome == wire.NOTIFY_ENDED
    await ops.release(fh)


async def test_a_parked_waiter_wakes_on_firing_and_on_unregister(ops: MqueueFS) -> None:
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    writer = await open_queue(ops, directory)
    results: list[wire.NotifyWait] = []

    async def waiter(registration: int) -> None:
        results.append(await notify_wait(ops, fh, registration))

    for end in ("send", "unregister"):
        registration = await register_thread(ops, fh, value=5)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter, registration)
            await trio.testing.wait_all_tasks_blocked()
            assert results == []
            if end == "send":
                await ops.write(writer, 0, b"m")
            else:
                request = wire.Notify(wire.NOTIFY_UNREGISTER).pack()
                await ioctl(ops, fh, wire.IOC_NOTIFY, request)
        assert results.pop().outcome == (wire.NOTIFY_FIRED if end == "send" else wire.NOTIFY_ENDED)
    assert ops.namespace.blocked.by_uid[0] == 0
    await ops.release(writer)
    await ops.release(fh)


async def test_notify_wait_errors(ops: MqueueFS) -> None:
    """EBUSY for a second registration and for a second waiter; ENOENT for an id this
    open file never returned; the kernel's EINVAL for a bad sigev_notify still."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    other = await open_queue(ops, directory)
    registration = await register_thread(ops, fh)
    cases = [
        (fh, wire.IOC_NOTIFY, wire.Notify(wire.NOTIFY_REGISTER, SIGEV_THREAD).pack(), errno.EBUSY),
        (fh, wire.IOC_NOTIFY, wire.Notify(wire.NOTIFY_REGISTER, 3).pack(), errno.EINVAL),
        (fh, wire.IOC_NOTIFY_WAIT, wire.NotifyWait(registration + 1).pack(), errno.ENOENT),
        (other, wire.IOC_NOTIFY_WAIT, wire.NotifyWait(registration).pack(), errno.ENOENT),
        (fh, wire.IOC_NOTIFY_WAIT, b"\0" * 8, errno.EINVAL),
    ]
    for handle, cmd, in_buf, expected in cases:
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await ioctl(ops, handle, cmd, in_buf, out=wire.NOTIFY_WAIT_SIZE)
        assert fuse_errno(failure) == expected, (hex(cmd), in_buf)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notify_wait, ops, fh, registration)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await notify_wait(ops, fh, registration)
        assert fuse_errno(failure) == errno.EBUSY
        await ops.write(other, 0, b"m")
    await ops.release(other)
    await ops.release(fh)


async def test_close_by_the_process_ends_it_but_not_the_waiters_own_close(
    ops: MqueueFS, kernel: FakeKernel
) -> None:
    """mqueue_flush_file: a close by the registered process ends the registration. The
    flush of the thread whose NOTIFY_WAIT returned is its dup being closed: a registration
    made meanwhile stays."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    registration = await register_thread(ops, fh)
    kernel.context = Context(pid=os.getpid())
    await ops.flush(fh)
    assert (await notify_wait(ops, fh, registration)).outcome == wire.NOTIFY_ENDED
    await ops.flush(fh)  # the waiter's own close: (nothing registered anyway)
    queue = ops.namespace.lookup("q")
    registration = await register_thread(ops, fh)
    await ops.write(fh, 0, b"x")
    assert (await notify_wait(ops, fh, registration)).outcome == wire.NOTIFY_FIRED
    await register_thread(ops, fh)  # made before the waiter closes its descriptor
    await ops.flush(fh)  # the waiter's close
    assert queue.notification is not None
    await ops.flush(fh)  # the program's close
    assert queue.notification is None
    await ops.release(fh)


async def test_a_cancelled_wait_keeps_the_outcome_for_the_next(ops: MqueueFS) -> None:
    """An interrupted NOTIFY_WAIT (trio.Cancelled from a FUSE interrupt) unparks and
    leaves nothing counted; the registration still fires for the next wait."""
    directory = await make_queue(ops)
    fh = await open_queue(ops, directory)
    registration = await register_thread(ops, fh)
    with trio.move_on_after(0.01):
        await notify_wait(ops, fh, registration)
    assert ops.namespace.blocked.by_uid[0] == 0
    await ops.write(fh, 0, b"x")
    assert (await notify_wait(ops, fh, registration)).outcome == wire.NOTIFY_FIRED
    await ops.release(fh)


async def test_notify_wait_counts_as_blocked_and_ends_when_the_daemon_stops() -> None:
    operations = MqueueFS(
        Namespace(Limits(enforce_rlimit=False, blocked_max=1)), kernel=FakeKernel()
    )
    directory = await make_queue(operations)
    fh = await open_queue(operations, directory)
    registration = await register_thread(operations, fh)
    failures: list[int] = []

    async def waiter() -> None:
        with pytest.raises(pyfuse3.FUSEError) as failure:
            await notify_wait(operations, fh, registration)
        failures.append(fuse_errno(failure))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(pyfuse3.FUSEError) as failure:  # blocked_max=1 is taken
            await ioctl(operations, fh, wire.IOC_WAIT, wire.Wait().pack(), out=wire.WAIT_SIZE)
        assert fuse_errno(failure) == errno.EAGAIN
        operations.namespace.close()
    assert failures == [errno.ENOTCONN]
    await operations.release(fh)
    check_invariants(operations)

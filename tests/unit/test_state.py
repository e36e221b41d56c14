"""The queue layer with a journal (-o state=DIR) and no mount: every commit point is
journaled once, a failed write changes nothing, state_sync groups its fsyncs and a caller
interrupted while it waits still gets its reply."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from mqfs import errors
from mqfs.server import serve, state
from mqfs.server.journal import Journal
from mqfs.server.queue import Descriptor, Limits, Namespace, Queue
from mqfs.server.state import Durability


def open_namespace(directory: Path, *, sync: bool = False, slack: int | None = None) -> Namespace:
    extra = {} if slack is None else {"slack": slack}
    durability, recovered = Durability.open(directory, sync=sync, **extra)
    namespace = Namespace(Limits(msg_max=100), journal=durability)
    state.restore(namespace, recovered)
    return namespace


def durability_of(namespace: Namespace) -> Durability:
    assert isinstance(namespace.journal, Durability)
    return namespace.journal


def crash(namespace: Namespace) -> None:
    """What kill -9 leaves: the log as written, no final rewrite."""
    durability_of(namespace).journal.close()


def stop(namespace: Namespace) -> None:
    """A clean stop: the final rewrite."""
    durability_of(namespace).close(namespace)


def descriptor(queue: Queue, nonblock: bool = False) -> Descriptor:
    return Descriptor(queue, readable=True, writable=True, nonblock=nonblock)


def contents(namespace: Namespace) -> dict[str, Any]:
    return {
        name: (
            queue.qid,
            queue.mode,
            queue.uid,
            queue.gid,
            queue.owner_uid,
            queue.maxmsg,
            queue.msgsize,
            [(m.priority, m.payload) for m in queue.store],
        )
        for name, queue in namespace.queues.items()
    }


@pytest.mark.parametrize("ending", [crash, stop])
async def test_every_path_of_the_queue_layer_is_journaled(tmp_path: Path, ending: Any) -> None:
    namespace = open_namespace(tmp_path / "state")
    a = namespace.create("a", mode=0o640, uid=5, gid=6, maxmsg=2, msgsize=64)
    b = namespace.create("b", mode=0o600, uid=0, gid=0)
    gone = namespace.create("gone", mode=0o600, uid=0, gid=0)
    namespace.acquire(gone)
    await descriptor(gone).send(b"dies with its name", 0)
    namespace.unlink("gone")
    await descriptor(gone).send(b"never journaled", 0)  # unlinked: memory only
    async with trio.open_nursery() as nursery:
        received: list[bytes] = []

        async def receive_into() -> None:
            received.append((await descriptor(b).receive(8192)).payload)

        nursery.start_soon(receive_into)
        await trio.testing.wait_all_tasks_blocked()
        await descriptor(b).send(b"handed straight over", 0)  # nothing to journal
    assert received == [b"handed straight over"]
    await descriptor(a).send(b"low", 1)
    await descriptor(a).send(b"high", 7)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(descriptor(a).send, b"blocked, then admitted", 7)
        await trio.testing.wait_all_tasks_blocked()
        assert (await descriptor(a).receive(64)).payload == b"high"
    b.send_nowait(b"kept", 3)
    c = namespace.create("c", mode=0o600, uid=0, gid=0, maxmsg=3, msgsize=64)
    for payload in (b"x", b"poison", b"z"):
        c.send_nowait(payload, 1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(descriptor(c).send, b"admitted by a removal", 9)
        await trio.testing.wait_all_tasks_blocked()
        removed, _ = await descriptor(c).remove(1, c.generation)
        assert removed.payload == b"poison"
    assert (await descriptor(c).remove(2, c.generation))[0].payload == b"z"

    class Fields:
        update_mode = update_uid = update_gid = True
        update_atime = update_mtime = False

    class Attr:
        st_mode, st_uid, st_gid = 0o604, 77, 78

    b.set_attributes(Attr(), Fields())
    before = contents(namespace)
    next_qid = namespace.next_qid
    ending(namespace)
    again = open_namespace(tmp_path / "state")
    assert contents(again) == before
    assert [(m.priority, m.payload) for m in again.lookup("a").store] == [
        (7, b"blocked, then admitted"),
        (1, b"low"),
    ]
    assert [(m.priority, m.payload) for m in again.lookup("c").store] == [
        (9, b"admitted by a removal"),
        (1, b"x"),
    ]
    assert again.next_qid == next_qid  # qids are never handed out twice
    assert again.charged[5] > 0  # the creator is charged again
    if ending is stop:
        assert (again.lookup("b").atime, again.lookup("b").ctime) == (b.atime, b.ctime)
    stop(again)


async def test_a_write_that_fails_changes_nothing(tmp_path: Path) -> None:
    namespace = open_namespace(tmp_path / "state")
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    await descriptor(queue).send(b"kept", 0)
    journal = durability_of(namespace).journal
    read_only = os.open(tmp_path / "state" / "log.1", os.O_RDONLY)
    writable = os.dup(journal._fd)
    os.dup2(read_only, journal._fd)
    try:
        with pytest.raises(errors.StateError) as refused:
            await descriptor(queue).send(b"refused", 0)
        assert refused.value.errno == 9  # EBADF, what write(2) said
        with pytest.raises(errors.StateError):
            await descriptor(queue).receive(8192)
        with pytest.raises(errors.StateError):
            namespace.create("new", mode=0o600, uid=0, gid=0)
        with pytest.raises(errors.StateError):
            namespace.unlink("q")
        generation = queue.generation
        with pytest.raises(errors.StateError):
            await descriptor(queue).remove(0, generation)
        assert queue.generation == generation
    finally:
        os.dup2(writable, journal._fd)
        os.close(writable)
        os.close(read_only)
    assert [m.payload for m in queue.store] == [b"kept"]
    assert list(namespace.queues) == ["q"]
    crash(namespace)
    assert [m.payload for m in open_namespace(tmp_path / "state").lookup("q").store] == [b"kept"]


class CountingFsync:
    """Stands in for journal.fsync_all: counts the groups, can hold one until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self, fds: list[int]) -> None:
        self.calls += 1
        assert self.release.wait(timeout=30)
        for fd in fds:
            os.fsync(fd)


async def test_state_sync_groups_the_fsyncs_of_concurrent_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync()
    monkeypatch.setattr(state, "fsync_all", fsync)
    namespace = open_namespace(tmp_path / "state", sync=True)
    queue = namespace.create("q", mode=0o600, uid=0, gid=0, maxmsg=50, msgsize=64)
    durability = durability_of(namespace)
    ends: dict[bytes, int] = {}  # where each message's record ends in the journal
    journal_send = Journal.send

    def send_and_note(journal: Journal, qid: int, priority: int, payload: bytes) -> None:
        journal_send(journal, qid, priority, payload)
        ends[payload] = journal.written

    monkeypatch.setattr(Journal, "send", send_and_note)
    answered: list[bool] = []

    async def send(index: int) -> None:
        await descriptor(queue).send(b"%d" % index, 0)
        answered.append(durability._synced >= ends[b"%d" % index])  # fsynced before the reply

    async with trio.open_nursery() as nursery:
        for index in range(20):
            nursery.start_soon(send, index)
    # The first sender's fsync covers its own record; the other 19 arrive meanwhile and
    # share the next one.
    assert fsync.calls == 2
    assert answered == [True] * 20
    stop(namespace)


async def test_an_interrupted_receive_still_gets_its_message_under_state_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync()
    monkeypatch.setattr(state, "fsync_all", fsync)
    namespace = open_namespace(tmp_path / "state", sync=True)
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    await descriptor(queue).send(b"taken", 0)
    fsync.release.clear()  # the receive's fsync hangs until we say
    got: list[bytes] = []

    async def receive() -> None:
        got.append((await descriptor(queue).receive(8192)).payload)

    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as interrupt:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            interrupt.cancel()  # what a FUSE interrupt does to the handler
        fsync.release.set()
    assert got == [b"taken"]
    assert len(queue) == 0
    crash(namespace)
    assert len(open_namespace(tmp_path / "state").lookup("q")) == 0


async def test_a_removal_is_answered_only_once_fsynced_under_state_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsync = CountingFsync()
    monkeypatch.setattr(state, "fsync_all", fsync)
    namespace = open_namespace(tmp_path / "state", sync=True)
    queue = namespace.create("q", mode=0o600, uid=0, gid=0)
    for payload in (b"a", b"poison", b"c"):
        await descriptor(queue).send(payload, 0)
    durability = durability_of(namespace)
    fsync.release.clear()  # the removal's fsync hangs until we say
    answered: list[bool] = []

    async def remove() -> None:
        await descriptor(queue).remove(1, queue.generation)
        answered.append(durability._synced >= durability.journal.written)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove)
        await trio.testing.wait_all_tasks_blocked()
        assert answered == []  # removed, but not answered before its record is on disk
        assert [m.payload for m in queue.store] == [b"a", b"c"]
        fsync.release.set()
    assert answered == [True]
    crash(namespace)
    assert [m.payload for m in open_namespace(tmp_path / "state").lookup("q").store] == [
        b"a",
        b"c",
    ]


async def test_the_journal_is_rewritten_in_the_background(tmp_path: Path) -> None:
    namespace = open_namespace(tmp_path / "state", slack=2048)
    durability = durability_of(namespace)
    queue = namespace.create("q", mode=0o600, uid=0, gid=0, maxmsg=10, msgsize=256)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(durability.run, namespace)
        for index in range(2000):
            await descriptor(queue).send(b"%0200d" % index, index % 3)
            if len(queue) > 5:
                await descriptor(queue).receive(256)
            await trio.sleep(0)  # the rewrites run meanwhile
        with trio.fail_after(30):
            while durability.journal.compacting or durability.journal.compaction_wanted:
                await trio.sleep(0.01)  # a worker thread is writing the snapshot
        nursery.cancel_scope.cancel()
    assert durability.journal.generation > 5
    journal = durability.journal
    assert journal.size <= 2 * journal.live + journal.slack + 300
    before = contents(namespace)
    crash(namespace)
    assert contents(open_namespace(tmp_path / "state")) == before


def test_the_mount_options() -> None:
    options = serve.parse_options(["state=relative/dir,state_sync", "msg_max=20"])
    assert (options.state, options.state_sync) == (Path.cwd() / "relative" / "dir", True)
    assert options.limits.msg_max == 20
    assert serve.parse_options([]).state is None
    with pytest.raises(errors.InvalidArgument, match="state_sync needs state=DIR"):
        serve.parse_options(["state_sync"])
    with pytest.raises(errors.InvalidArgument, match="unknown mount option 'state'"):
        serve.parse_options(["state="])

"""The client's fast path (``-o fastpath``): the queue's owner sends and receives on the
shared mapping with no daemon round trip; anyone else, and every plain mount, goes
through the daemon as before."""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from mqfs import wire
from mqfs.client import calls
from mqfs.client.api import O_CREX, MessageQueue
from mqfs.client.backends import MqfsBackend
from tests.support.mounts import FASTPATH_UNAVAILABLE, MOUNT_VARIANTS, Mount, mounted
from tests.support.procs import task_state
from tests.support.users import as_user
from tests.support.waiting import wait_until


@pytest.fixture
def fastpath_mount() -> Iterator[Mount]:
    """An ``-o fastpath`` mount other users can reach."""
    if FASTPATH_UNAVAILABLE:
        pytest.skip(FASTPATH_UNAVAILABLE)
    with mounted((*MOUNT_VARIANTS["fastpath"], "allow_other")) as mount:
        yield mount


def test_only_a_fastpath_mount_maps_the_queue(
    backend: MqfsBackend, mount_variant: tuple[str, ...]
) -> None:
    with MessageQueue("/q", O_CREX, max_messages=4, max_message_size=64, backend=backend) as q:
        fast = mount_variant == MOUNT_VARIANTS["fastpath"]
        assert backend.mapped(q.mqd) is fast
        if not fast:
            with pytest.raises(OSError) as refused:
                calls.map(q.mqd)
            assert refused.value.errno == errno.EOPNOTSUPP
            return
        where = calls.map(q.mqd)
        assert (where.maxmsg, where.msgsize, where.version) == (4, 64, 1)
        assert os.path.isabs(where.path)
        assert os.stat(where.path).st_uid == os.geteuid()


def test_the_owner_sends_and_receives_while_the_daemon_is_stopped(
    fastpath_mount: Mount,
) -> None:
    """With the daemon SIGSTOPped, any request to it would wait: the owner's sends,
    receives and curmsgs finish anyway, so they never reach it."""
    backend = MqfsBackend(fastpath_mount.path)
    with MessageQueue("/q", O_CREX, max_messages=4, max_message_size=64, backend=backend) as q:
        assert backend.mapped(q.mqd)
        outcome: list[object] = []

        def traffic() -> None:
            for i in range(100):
                q.send(b"m%d" % i, priority=i % 3)
                q.send(b"n%d" % i, priority=7)
                outcome.append(q.current_messages)
                outcome.append(q.receive())
                outcome.append(q.receive(timeout=1))

        worker = threading.Thread(target=traffic, daemon=True)
        daemon = fastpath_mount.process.pid
        os.kill(daemon, signal.SIGSTOP)
        try:
            worker.start()
            worker.join(timeout=10)
            finished = not worker.is_alive()
        finally:
            os.kill(daemon, signal.SIGCONT)
            worker.join(timeout=30)
        assert finished, "a send or receive waited for the stopped daemon"
        expected: list[object] = []
        for i in range(100):
            expected += [2, (b"n%d" % i, 7), (b"m%d" % i, i % 3)]
        assert outcome == expected
        q.send(b"seen by the daemon", priority=4)
        assert q.peek_all() == [(b"seen by the daemon", 4)]  # peeks go through the daemon


def test_another_user_goes_through_the_daemon(fastpath_mount: Mount) -> None:
    """MAP is EACCES for a user who does not own the queue: their descriptor stays on the
    daemon, and their messages and the owner's meet in the one queue."""
    path = fastpath_mount.path
    owner = MqfsBackend(path)
    with MessageQueue("/shared", O_CREX, max_messages=4, max_message_size=64, backend=owner) as q:
        os.chmod(owner.queue_file("/shared"), 0o666)
        assert owner.mapped(q.mqd)
        q.send(b"from the owner", priority=5)

        def as_another_user() -> tuple[int, bool, tuple[bytes, int]]:
            theirs = MqfsBackend(path)
            mqd = theirs.open("/shared", os.O_RDWR)
            try:
                try:
                    calls.map(mqd)
                    refused = 0
                except OSError as exc:
                    refused = exc.errno or 0
                theirs.send(mqd, b"from another user", 3)
                return refused, theirs.mapped(mqd), theirs.receive(mqd, 64)
            finally:
                theirs.close(mqd)

        refused, mapped, received = as_user(as_another_user)
        assert (refused, mapped) == (errno.EACCES, False)
        assert received == (b"from the owner", 5)
        assert q.receive(timeout=5) == (b"from another user", 3)
        assert q.current_messages == 0


DOCTORED = {
    "relative path": lambda where: replace(where, path=where.path.lstrip("/")),
    "unknown version": lambda where: replace(where, version=where.version + 1),
    "other geometry": lambda where: replace(where, maxmsg=where.maxmsg + 1),
    "missing file": lambda where: replace(where, path=where.path + ".gone"),
}


@pytest.mark.parametrize("doctor", list(DOCTORED.values()), ids=list(DOCTORED))
def test_a_map_reply_that_fails_a_check_leaves_the_descriptor_on_the_daemon(
    fastpath_mount: Mount, monkeypatch: pytest.MonkeyPatch, doctor: object
) -> None:
    real = calls.map

    def doctored(fd: int) -> wire.Map:
        return doctor(real(fd))  # type: ignore[operator, no-any-return]

    monkeypatch.setattr(calls, "map", doctored)
    backend = MqfsBackend(fastpath_mount.path)
    with MessageQueue("/q", O_CREX, max_messages=4, max_message_size=64, backend=backend) as q:
        assert not backend.mapped(q.mqd)
        q.send(b"through the daemon", priority=2)
        assert q.current_messages == 1
        assert q.receive() == (b"through the daemon", 2)


def test_a_close_leaves_a_waiting_receive_to_finish(backend: MqfsBackend) -> None:
    """As the kernel keeps a closed descriptor's file until its calls return: a receive
    waiting in another thread still gets the next message (on -o fastpath the mapping is
    unmapped only after it returns, not under it)."""
    with MessageQueue("/q", O_CREX, max_messages=4, max_message_size=64, backend=backend) as q:
        outcome: list[object] = []
        native_id: list[int] = []

        def receive() -> None:
            native_id.append(threading.get_native_id())
            outcome.append(q.receive(timeout=30))

        receiver = threading.Thread(target=receive)
        receiver.start()
        wait_until(
            lambda: bool(native_id) and task_state(native_id[0]) == "S",
            what="the receive to block",
        )
        q.close()
        with MessageQueue("/q", read=False, backend=backend) as writer:
            writer.send(b"after the close")
            receiver.join(timeout=30)
        assert outcome == [(b"after the close", 0)]
        assert q.mqd == -1

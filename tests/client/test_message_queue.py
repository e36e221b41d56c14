"""mqfs.client.api.MessageQueue against a real mqfs mount (and, for the common API, the kernel)."""

from __future__ import annotations

import errno
import os
import selectors
import signal
import threading
from collections.abc import Iterator
from contextlib import suppress

import pytest

from mqfs.client import calls
from mqfs.client.api import (
    O_CREAT,
    O_CREX,
    O_EXCL,
    O_NONBLOCK,
    BusyError,
    Error,
    ExistentialError,
    InvalidArgument,
    MessageQueue,
    MessageTooLong,
    NoSuchMessage,
    NotSupported,
    PermissionsError,
    QueueChanged,
    RemovedMessage,
    SignalError,
    unlink_message_queue,
)
from mqfs.client.backends import Backend, KernelBackend, MqfsBackend
from tests.support.kernel import why_kernel_mqueue_unusable
from tests.support.mounts import Mount, mounted, variant_params
from tests.support.procs import task_state
from tests.support.waiting import wait_until


@pytest.fixture
def queue(backend: MqfsBackend) -> Iterator[MessageQueue]:
    with MessageQueue("/q", O_CREX, max_messages=4, max_message_size=64, backend=backend) as q:
        yield q


class KernelNames:
    """Unique names for kernel queues; each one used is unlinked at teardown."""

    def __init__(self) -> None:
        self.used: list[str] = []

    def __call__(self, tag: str) -> str:
        name = f"/mqfs-client-test-{os.getpid()}-{len(self.used)}-{tag}"
        self.used.append(name)
        return name


@pytest.fixture(params=variant_params(pytest.param("kernel", marks=pytest.mark.kernel)))
def any_backend(request: pytest.FixtureRequest) -> Iterator[tuple[Backend, KernelNames]]:
    """Each backend in turn (mqfs on each mount variant), with a name maker (unique
    names, unlinked afterwards)."""
    names = KernelNames()
    if request.param != "kernel":
        with mounted(request.param) as mount:
            yield MqfsBackend(mount.path), names
        return
    reason = why_kernel_mqueue_unusable()
    if reason:
        pytest.skip(reason)
    kernel = KernelBackend()
    try:
        yield kernel, names
    finally:
        for name in names.used:
            with suppress(FileNotFoundError):
                kernel.unlink(name)


# -- the API both backends share ---------------------------------------------------------


def test_common_api_on_both_backends(any_backend: tuple[Backend, KernelNames]) -> None:
    backend, names = any_backend
    name = names("common")
    with pytest.raises(ExistentialError) as missing:
        MessageQueue(name, backend=backend)
    assert missing.value.errno == errno.ENOENT
    with MessageQueue(name, O_CREX, max_messages=2, max_message_size=16, backend=backend) as q:
        assert (q.name, q.max_messages, q.max_message_size) == (name, 2, 16)
        assert q.mqd == q.fileno() >= 0
        assert q.block is True
        assert q.current_messages == 0
        q.send(b"low", priority=1)
        q.send("high", priority=7)
        assert q.current_messages == 2
        with pytest.raises(BusyError) as full:
            q.send(b"x", timeout=0)
        assert full.value.errno in (errno.ETIMEDOUT, errno.EAGAIN)
        q.block = False
        assert q.block is False
        with pytest.raises(BusyError) as would_block:
            q.send(b"x")
        assert would_block.value.errno == errno.EAGAIN
        assert "is full (EAGAIN)" in str(would_block.value)
        with pytest.raises(MessageTooLong) as too_long:
            q.send(b"y" * 17)
        assert too_long.value.errno == errno.EMSGSIZE
        assert q.receive() == (b"high", 7)
        assert q.receive() == (b"low", 1)
        with pytest.raises(BusyError) as empty:
            q.receive()
        assert empty.value.errno == errno.EAGAIN
        q.block = True
        with pytest.raises(BusyError) as timed_out:
            q.receive(timeout=0.05)
        assert timed_out.value.errno == errno.ETIMEDOUT
        with pytest.raises(ExistentialError) as exists:
            MessageQueue(name, O_CREX, backend=backend)
        assert exists.value.errno == errno.EEXIST
        with MessageQueue(name, backend=backend, read=False) as writer:
            writer.send(b"via another fd")
        assert q.receive(timeout=5) == (b"via another fd", 0)
        q.unlink()
        with pytest.raises(ExistentialError):
            unlink_message_queue(name, backend=backend)
        q.send(b"after unlink")
        assert q.receive() == (b"after unlink", 0)
    assert q.mqd == -1


def test_kernel_backend_cannot_peek() -> None:
    reason = why_kernel_mqueue_unusable()
    if reason:
        pytest.skip(reason)
    kernel = KernelBackend()
    name = f"/mqfs-client-test-{os.getpid()}-nopeek"
    with MessageQueue(name, O_CREX, backend=kernel) as q:
        try:
            q.send(b"m")
            with pytest.raises(NotSupported) as no_peek:
                q.peek()
            assert no_peek.value.errno == errno.ENOTTY
            assert isinstance(no_peek.value, NotImplementedError)
            with pytest.raises(NotImplementedError):
                q.peek_all()
            assert q.current_messages == 1
        finally:
            q.unlink()


# -- opening and naming --------------------------------------------------------------


def test_missing_queue_is_existential_error_with_enoent(backend: MqfsBackend) -> None:
    with pytest.raises(ExistentialError) as missing:
        MessageQueue("/nope", backend=backend)
    assert missing.value.errno == errno.ENOENT
    assert isinstance(missing.value, OSError)
    assert isinstance(missing.value, Error)
    assert str(missing.value) == "no queue named '/nope' (ENOENT)"


def test_o_crex_on_an_existing_queue(queue: MessageQueue, backend: MqfsBackend) -> None:
    with pytest.raises(ExistentialError) as exists:
        MessageQueue("/q", O_CREX, backend=backend)
    assert exists.value.errno == errno.EEXIST
    assert "'/q'" in str(exists.value)
    assert "EEXIST" in str(exists.value)
    with MessageQueue("/q", O_CREAT, backend=backend) as same:  # O_CREAT alone opens it
        assert same.max_messages == 4


def test_o_creat_without_attributes_uses_the_mount_defaults(mount_factory: object) -> None:
    mount: Mount = mount_factory("msg_default=3", "msgsize_default=256")  # type: ignore[operator]
    with MessageQueue("/d", O_CREAT, backend=MqfsBackend(mount.path)) as q:
        assert (q.max_messages, q.max_message_size) == (3, 256)


def test_one_attribute_alone_takes_posix_ipc_default_for_the_other(backend: MqfsBackend) -> None:
    with MessageQueue("/a", O_CREAT, max_message_size=100, backend=backend) as q:
        assert (q.max_messages, q.max_message_size) == (10, 100)
    with MessageQueue("/b", O_CREAT, max_messages=3, backend=backend) as q:
        assert (q.max_messages, q.max_message_size) == (3, 8192)


def test_invalid_attributes_are_value_errors_with_einval(backend: MqfsBackend) -> None:
    with pytest.raises(InvalidArgument) as invalid:
        MessageQueue("/big", O_CREAT, max_messages=100_000, backend=backend)
    assert invalid.value.errno == errno.EINVAL
    assert isinstance(invalid.value, ValueError)
    with pytest.raises(ExistentialError):
        MessageQueue("/big", backend=backend)  # nothing was created


def test_names_are_passed_to_mq_open_as_they_are(backend: MqfsBackend) -> None:
    with pytest.raises(InvalidArgument) as no_slash:
        MessageQueue("q", O_CREAT, backend=backend)
    assert no_slash.value.errno == errno.EINVAL
    with pytest.raises(InvalidArgument) as too_long:
        MessageQueue("/" + "n" * 256, O_CREAT, backend=backend)
    assert too_long.value.errno == errno.ENAMETOOLONG


def test_name_none_creates_a_queue_with_a_new_name(backend: MqfsBackend, mqfs_mount: Mount) -> None:
    with (
        MessageQueue(None, O_CREX, backend=backend) as first,
        MessageQueue(None, O_CREX, backend=backend) as second,
    ):
        assert first.name.startswith("/")
        assert first.name != second.name
        assert (mqfs_mount.path / first.name[1:] / "queue").exists()
        first.send(b"x")
        with MessageQueue(first.name, backend=backend) as again:
            assert again.receive() == (b"x", 0)
        first.unlink()
        second.unlink()
    assert sorted(os.listdir(mqfs_mount.path)) == []


def test_argument_errors_like_posix_ipc(backend: MqfsBackend) -> None:
    with pytest.raises(ValueError, match="O_CREX"):
        MessageQueue(None, O_CREAT, backend=backend)
    with pytest.raises(ValueError, match="O_EXCL"):
        MessageQueue("/q", O_EXCL, backend=backend)
    with pytest.raises(ValueError, match="read or write"):
        MessageQueue("/q", O_CREAT, read=False, write=False, backend=backend)
    with pytest.raises(ValueError, match="not both"):
        MessageQueue("/q", O_CREAT, backend=backend, mount=backend.mount)


def test_mount_keyword_and_mqfs_mount_environment(
    mqfs_mount: Mount, monkeypatch: pytest.MonkeyPatch
) -> None:
    with MessageQueue("/m", O_CREAT, mount=mqfs_mount.path) as q:
        assert isinstance(q.backend, MqfsBackend)
        assert q.backend.mount == mqfs_mount.path
        q.send(b"via mount=")
    monkeypatch.setenv("MQFS_MOUNT", str(mqfs_mount.path))
    with MessageQueue("/m") as q:
        assert q.receive() == (b"via mount=", 0)
    unlink_message_queue("/m")
    assert not (mqfs_mount.path / "m").exists()
    with pytest.raises(ExistentialError) as missing:
        unlink_message_queue("/m", mount=mqfs_mount.path)
    assert missing.value.errno == errno.ENOENT


def test_mode_is_applied_after_the_umask(backend: MqfsBackend, mqfs_mount: Mount) -> None:
    old = os.umask(0o022)
    try:
        with MessageQueue("/mode", O_CREAT, mode=0o666, backend=backend) as q:
            assert q.mode == 0o666
    finally:
        os.umask(old)
    assert (mqfs_mount.path / "mode" / "queue").stat().st_mode & 0o777 == 0o644


# -- messages -----------------------------------------------------------------------------


def test_send_and_receive_bytes_str_and_buffers(queue: MessageQueue) -> None:
    queue.send(b"bytes")
    queue.send("naïve")
    queue.send(bytearray(b"array"), priority=0)
    queue.send(memoryview(b"view"))
    assert [queue.receive() for _ in range(4)] == [
        (b"bytes", 0),
        ("naïve".encode(), 0),
        (b"array", 0),
        (b"view", 0),
    ]
    with pytest.raises(TypeError):
        queue.send(5)  # type: ignore[arg-type]


def test_receive_order_is_priority_then_fifo(queue: MessageQueue) -> None:
    for payload, priority in [(b"a", 1), (b"b", 9), (b"c", 1), (b"d", 32767)]:
        queue.send(payload, priority=priority)
    received = [queue.receive(timeout=0) for _ in range(4)]
    assert received == [(b"d", 32767), (b"b", 9), (b"a", 1), (b"c", 1)]


def test_zero_length_message(queue: MessageQueue) -> None:
    queue.send(b"", priority=2)
    assert queue.peek() == (b"", 2)
    assert queue.receive() == (b"", 2)


def test_message_too_long_is_a_value_error_with_emsgsize(queue: MessageQueue) -> None:
    with pytest.raises(MessageTooLong) as too_long:
        queue.send(b"x" * 65)
    assert too_long.value.errno == errno.EMSGSIZE
    assert isinstance(too_long.value, ValueError)
    assert "'/q'" in str(too_long.value)
    queue.send(b"x" * 64)
    assert queue.current_messages == 1


def test_bad_priority_is_einval(queue: MessageQueue) -> None:
    for priority in (32768, -1):
        with pytest.raises(InvalidArgument) as invalid:
            queue.send(b"x", priority=priority)
        assert invalid.value.errno == errno.EINVAL
    assert queue.current_messages == 0


def test_large_messages_cross_several_ioctl_chunks(mount_factory: object) -> None:
    size = 100_000
    mount: Mount = mount_factory(f"msgsize_max={size}")  # type: ignore[operator]
    backend = MqfsBackend(mount.path)
    with MessageQueue("/big", O_CREAT, max_messages=2, max_message_size=size, backend=backend) as q:
        payload = os.urandom(size)
        q.send(payload, priority=3)
        q.send(payload[:20_000])
        assert q.peek() == (payload, 3)
        assert q.peek(1) == (payload[:20_000], 0)
        assert q.peek_all() == [(payload, 3), (payload[:20_000], 0)]
        assert q.receive() == (payload, 3)
        assert q.receive() == (payload[:20_000], 0)


@pytest.mark.parametrize("replacement_size", [50_000, 100, 0])
def test_peek_of_a_long_message_is_one_snapshot(
    mount_factory: object, monkeypatch: pytest.MonkeyPatch, replacement_size: int
) -> None:
    """A receive and a send between two chunks of a peek (here: made by the peek's own
    thread just before its first read past offset 0) never give a mix of two messages,
    even when the new one has the same length and priority: the peek reads again."""
    mount: Mount = mount_factory("msgsize_max=100000")  # type: ignore[operator]
    backend = MqfsBackend(mount.path)
    old, new = b"o" * 50_000, b"n" * replacement_size
    with MessageQueue(
        "/long", O_CREAT, max_messages=2, max_message_size=100_000, backend=backend
    ) as q:
        q.send(old, priority=2)
        peek_call = calls._peek_call
        replaced: list[int] = []

        def replacing(fd: int, index: int, offset: int, capacity: int) -> object:
            if offset > 0 and not replaced:
                replaced.append(offset)
                assert q.receive() == (old, 2)
                q.send(new, priority=2)
            return peek_call(fd, index, offset, capacity)

        monkeypatch.setattr(calls, "_peek_call", replacing)
        assert q.peek() == (new, 2)
        assert replaced
        monkeypatch.undo()
        assert q.receive() == (new, 2)


def test_current_messages_tracks_the_queue(queue: MessageQueue) -> None:
    assert queue.current_messages == 0
    queue.send(b"1")
    queue.send(b"2")
    assert queue.current_messages == 2
    queue.receive()
    assert queue.current_messages == 1


# -- blocking, timeouts, non-blocking -------------------------------------------------------


def fill(queue: MessageQueue) -> None:
    for index in range(queue.max_messages):
        queue.send(f"m{index}")


def test_block_false_full_and_empty_are_busy_errors_with_eagain(queue: MessageQueue) -> None:
    queue.block = False
    assert not queue.block
    with pytest.raises(BusyError) as empty:
        queue.receive()
    assert empty.value.errno == errno.EAGAIN
    assert str(empty.value) == "queue '/q' is empty (EAGAIN)"
    fill(queue)
    with pytest.raises(BusyError) as full:
        queue.send(b"one too many", timeout=10)  # the timeout does not matter
    assert full.value.errno == errno.EAGAIN
    assert str(full.value) == "queue '/q' is full (EAGAIN)"
    queue.block = True
    assert queue.block


def test_o_nonblock_in_flags_starts_non_blocking(backend: MqfsBackend) -> None:
    with MessageQueue("/nb", O_CREAT | O_NONBLOCK, backend=backend) as q:
        assert q.block is False
        with pytest.raises(BusyError):
            q.receive()


def test_timeouts_are_busy_errors_with_etimedout(queue: MessageQueue) -> None:
    with pytest.raises(BusyError) as receive_timeout:
        queue.receive(timeout=0.05)
    assert receive_timeout.value.errno == errno.ETIMEDOUT
    assert str(receive_timeout.value) == "timed out: queue '/q' is still empty (ETIMEDOUT)"
    fill(queue)
    with pytest.raises(BusyError) as send_timeout:
        queue.send(b"late", timeout=0.05)
    assert send_timeout.value.errno == errno.ETIMEDOUT
    assert queue.current_messages == queue.max_messages


def test_timeout_zero_tries_once(queue: MessageQueue) -> None:
    with pytest.raises(BusyError):
        queue.receive(timeout=0)
    queue.send(b"now", timeout=0)
    assert queue.receive(timeout=0) == (b"now", 0)


def test_negative_timeout_is_a_value_error(queue: MessageQueue) -> None:
    with pytest.raises(ValueError, match="timeout"):
        queue.receive(timeout=-1)
    with pytest.raises(ValueError, match="timeout"):
        queue.send(b"x", timeout=float("nan"))
    assert queue.current_messages == 0


def test_blocked_receive_is_woken_by_a_send_from_another_thread(queue: MessageQueue) -> None:
    received: list[tuple[bytes, int]] = []
    receiver = threading.Thread(target=lambda: received.append(queue.receive(timeout=30)))
    receiver.start()
    queue.send(b"wake up", priority=4)
    receiver.join(timeout=30)
    assert received == [(b"wake up", 4)]


def test_blocked_send_is_woken_by_a_receive(queue: MessageQueue) -> None:
    fill(queue)
    sender = threading.Thread(target=lambda: queue.send(b"last", timeout=30))
    sender.start()
    assert queue.receive() == (b"m0", 0)
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert queue.peek_all()[-1] == (b"last", 0)


def _interrupt_blocked_receive(
    queue: MessageQueue, handler: signal._HANDLER
) -> BaseException | tuple[bytes, int]:
    """Receive in this (the main) thread, which another thread signals (SIGUSR1 -> *handler*)
    once it sleeps in the call; return what receive() returned or raised."""
    main = threading.get_native_id()

    def interrupt() -> None:
        wait_until(lambda: task_state(main) == "S", what="the receive to block")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    interrupter = threading.Thread(target=interrupt)
    try:
        interrupter.start()
        try:
            return queue.receive(timeout=30)
        except BaseException as exc:  # the outcome under test
            return exc
    finally:
        interrupter.join(timeout=30)
        signal.signal(signal.SIGUSR1, previous)


class Interrupt(Exception):
    pass


def _raise_interrupt(signo: int, frame: object) -> None:
    raise Interrupt


@pytest.mark.kernel
def test_a_signal_during_a_blocked_receive_is_a_signal_error() -> None:
    reason = why_kernel_mqueue_unusable()
    if reason:
        pytest.skip(reason)
    kernel = KernelBackend()
    name = f"/mqfs-client-test-{os.getpid()}-signal"
    with MessageQueue(name, O_CREX, backend=kernel) as q:
        try:
            outcome = _interrupt_blocked_receive(q, lambda signo, frame: None)
        finally:
            q.unlink()
    assert isinstance(outcome, SignalError)
    assert outcome.errno == errno.EINTR
    assert "interrupted by a signal (EINTR)" in str(outcome)


def test_a_signal_handler_that_raises_ends_a_blocked_receive(queue: MessageQueue) -> None:
    outcome = _interrupt_blocked_receive(queue, _raise_interrupt)
    assert isinstance(outcome, Interrupt)
    queue.send(b"not lost")
    assert queue.receive(timeout=0) == (b"not lost", 0)


def test_a_blocked_receive_lets_other_threads_run(queue: MessageQueue) -> None:
    """The wait must not hold the GIL: this thread keeps running, then sends."""
    outcome: list[tuple[bytes, int]] = []
    native_id: list[int] = []

    def receive() -> None:
        native_id.append(threading.get_native_id())
        outcome.append(queue.receive(timeout=30))

    receiver = threading.Thread(target=receive)
    receiver.start()
    wait_until(
        lambda: bool(native_id) and task_state(native_id[0]) == "S", what="the receive to block"
    )
    assert outcome == []
    queue.send(b"late")
    receiver.join(timeout=30)
    assert outcome == [(b"late", 0)]


# -- peek ----------------------------------------------------------------------------------


def test_peek_and_peek_all_do_not_consume(queue: MessageQueue) -> None:
    assert queue.peek_all() == []
    queue.send(b"low", priority=1)
    queue.send(b"high", priority=5)
    queue.send(b"low2", priority=1)
    assert queue.peek() == (b"high", 5)
    assert queue.peek(0) == (b"high", 5)
    assert queue.peek(2) == (b"low2", 1)
    assert queue.peek_all() == [(b"high", 5), (b"low", 1), (b"low2", 1)]
    assert queue.current_messages == 3
    assert queue.receive() == (b"high", 5)
    assert queue.peek_all() == [(b"low", 1), (b"low2", 1)]


def test_peek_errors(queue: MessageQueue) -> None:
    with pytest.raises(BusyError) as empty:
        queue.peek()
    assert empty.value.errno == errno.EAGAIN
    queue.send(b"only")
    with pytest.raises(NoSuchMessage) as past_the_end:
        queue.peek(1)
    assert past_the_end.value.errno == errno.ENOENT
    assert isinstance(past_the_end.value, ExistentialError)
    assert isinstance(past_the_end.value, IndexError)
    assert "'/q'" in str(past_the_end.value)
    with pytest.raises(InvalidArgument):
        queue.peek(-1)


def test_remove_takes_the_message_looked_at_or_nothing(
    queue: MessageQueue, backend: MqfsBackend
) -> None:
    for payload, priority in [(b"ok", 3), (b"poison", 2), (b"ok too", 2)]:
        queue.send(payload, priority=priority)
    generation = queue.generation
    assert queue.peek(1) == (b"poison", 2)
    removed = queue.remove(1, generation)
    assert removed == RemovedMessage(2, 6, b"poison", queue.generation)
    assert queue.peek_all() == [(b"ok", 3), (b"ok too", 2)]
    with pytest.raises(QueueChanged) as stale:  # the removal itself moved the generation
        queue.remove(1, generation)
    assert stale.value.errno == errno.ESTALE
    assert "'/q'" in str(stale.value) and "nothing was removed" in str(stale.value)
    with pytest.raises(NoSuchMessage) as missing:
        queue.remove(2, queue.generation)
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(InvalidArgument):
        queue.remove(-1, queue.generation)
    assert queue.peek_all() == [(b"ok", 3), (b"ok too", 2)]
    with MessageQueue("/q", read=False, backend=backend) as writer:
        with pytest.raises(PermissionsError) as no_read:
            writer.remove(0, 0)
        assert no_read.value.errno == errno.EBADF


# -- direction, close, unlink --------------------------------------------------------------


def test_read_and_write_choose_the_direction(queue: MessageQueue, backend: MqfsBackend) -> None:
    with MessageQueue("/q", write=False, backend=backend) as reader:
        with pytest.raises(PermissionsError) as no_send:
            reader.send(b"x")
        assert no_send.value.errno == errno.EBADF
    with MessageQueue("/q", read=False, backend=backend) as writer:
        writer.send(b"from the writer")
        for call in (writer.receive, writer.peek, writer.peek_all):
            with pytest.raises(PermissionsError) as no_receive:
                call()
            assert no_receive.value.errno == errno.EBADF
            assert "not open for reading" in str(no_receive.value)
    assert queue.receive() == (b"from the writer", 0)


def test_close_is_idempotent_and_later_calls_fail(backend: MqfsBackend) -> None:
    q = MessageQueue("/c", O_CREAT, backend=backend)
    fd = q.mqd
    q.close()
    q.close()
    assert q.mqd == -1
    with pytest.raises(OSError) as gone:
        os.fstat(fd)
    assert gone.value.errno == errno.EBADF
    for call in (q.receive, q.peek, q.fileno, lambda: q.current_messages, lambda: q.send(b"x")):
        with pytest.raises(ExistentialError) as closed:
            call()
        assert closed.value.errno == errno.EBADF
        assert "closed" in str(closed.value)
    q.unlink()  # the name still works after close
    assert not (backend.mount / "c").exists()


def test_context_manager_closes(backend: MqfsBackend) -> None:
    with MessageQueue("/cm", O_CREAT, backend=backend) as q:
        fd = q.mqd
        assert os.fstat(fd)
    assert q.mqd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


def test_unlink_removes_the_name_but_open_descriptors_keep_working(
    queue: MessageQueue, backend: MqfsBackend
) -> None:
    queue.unlink()
    assert not (backend.mount / "q").exists()
    with pytest.raises(ExistentialError):
        MessageQueue("/q", backend=backend)
    queue.send(b"orphan")
    assert queue.receive() == (b"orphan", 0)
    with pytest.raises(ExistentialError) as again:
        queue.unlink()
    assert again.value.errno == errno.ENOENT


def test_str_and_repr(queue: MessageQueue) -> None:
    assert str(queue) == "/q"
    text = repr(queue)
    assert "'/q'" in text
    assert "max_messages=4" in text
    assert "max_message_size=64" in text


# -- selectors -------------------------------------------------------------------------------


def test_selectors_see_readability_after_a_send(queue: MessageQueue) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(queue, selectors.EVENT_READ | selectors.EVENT_WRITE)
        events = selector.select(timeout=0)
        assert [(key.fileobj, mask) for key, mask in events] == [(queue, selectors.EVENT_WRITE)]
        queue.send(b"ready")
        events = selector.select(timeout=5)
        assert [mask for _, mask in events] == [selectors.EVENT_READ | selectors.EVENT_WRITE]
        fill_rest = queue.max_messages - queue.current_messages
        for _ in range(fill_rest):
            queue.send(b"more")
        events = selector.select(timeout=5)
        assert [mask for _, mask in events] == [selectors.EVENT_READ]


def test_selector_wakes_when_another_thread_sends(
    queue: MessageQueue, backend: MqfsBackend
) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(queue.fileno(), selectors.EVENT_READ)

        def send() -> None:
            with MessageQueue("/q", read=False, backend=backend) as writer:
                writer.send(b"from a thread")

        sender = threading.Thread(target=send)
        sender.start()
        events = selector.select(timeout=30)
        sender.join(timeout=30)
        assert [mask for _, mask in events] == [selectors.EVENT_READ]
        assert queue.receive(timeout=0) == (b"from a thread", 0)


def test_a_signal_during_a_blocked_receive_on_mqfs_is_a_signal_error(queue: MessageQueue) -> None:
    outcome = _interrupt_blocked_receive(queue, lambda signo, frame: None)
    assert isinstance(outcome, SignalError)
    assert outcome.errno == errno.EINTR
    queue.send(b"still here")  # the interrupted receive took nothing
    assert queue.receive() == (b"still here", 0)


def test_posix_ipc_constants_and_request_notification(backend: MqfsBackend) -> None:
    import signal

    from mqfs.client import api

    assert (api.O_RDONLY, api.O_WRONLY, api.O_RDWR) == (os.O_RDONLY, os.O_WRONLY, os.O_RDWR)
    assert os.sysconf("SC_PAGE_SIZE") == api.PAGE_SIZE
    assert (api.USER_SIGNAL_MIN, api.USER_SIGNAL_MAX) == (signal.SIGRTMIN, signal.SIGRTMAX)
    assert api.VERSION.startswith("0.")
    with MessageQueue("/notified", O_CREAT, backend=backend) as q:
        q.request_notification(signal.SIGUSR1)
        status = backend.status("/notified").decode()
        assert "SIGNO:10" in status and f"NOTIFY_PID:{os.getpid()}" in status
        q.request_notification(None)
        assert "NOTIFY_PID:0 " in backend.status("/notified").decode()
        with pytest.raises(ValueError, match="callback, param"):
            q.request_notification((print,))  # type: ignore[arg-type]
        q.unlink()


def _notify_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("mqfs-notify")]


def test_request_notification_callback_on_both_backends(
    any_backend: tuple[Backend, KernelNames],
) -> None:
    """posix_ipc's (callback, param): callback(param) once, in another thread, when a
    message arrives on the empty queue; requested again from the callback, it fires again."""
    backend, names = any_backend
    calls_made: list[tuple[object, bool]] = []
    fired = threading.Semaphore(0)
    with MessageQueue(names("thread"), O_CREX, max_messages=4, backend=backend) as q:

        def callback(param: object) -> None:
            # get_ident(), not current_thread(): on the kernel, glibc runs the callback in a
            # thread of its own, for which current_thread() would leave a _DummyThread in
            # threading's table for good (and later tests count threads).
            calls_made.append((param, threading.get_ident() == threading.main_thread().ident))
            if len(calls_made) == 1:
                q.request_notification((callback, "second"))
            fired.release()

        q.request_notification((callback, "first"))
        with pytest.raises(Error) as busy:
            q.request_notification((callback, "again"))
        assert busy.value.errno == errno.EBUSY
        q.send(b"a")
        assert fired.acquire(timeout=10)
        q.receive()
        q.send(b"b")
        assert fired.acquire(timeout=10)
        q.receive()
        assert calls_made == [("first", False), ("second", False)]
        q.unlink()


def test_request_notification_callback_on_mqfs(backend: MqfsBackend) -> None:
    """The status line shows SIGEV_THREAD as the kernel's (NOTIFY:2 SIGNO:0); no signal is
    sent; request_notification(None) and close() end the waiting thread without a call."""
    called: list[object] = []
    with MessageQueue("/cb", O_CREX, max_messages=4, backend=backend) as q:
        q.request_notification((called.append, 1))
        assert len(_notify_threads()) == 1
        # Before the status read: its close by the registered process ends the
        # registration (the kernel's mqueue_flush_file), and with it the thread.
        status = backend.status("/cb").decode()
        assert f"NOTIFY:2     SIGNO:0     NOTIFY_PID:{os.getpid()}" in status
        q.request_notification(None)
        wait_until(lambda: not _notify_threads(), what="the waiting thread to end")
        assert "NOTIFY:0 " in backend.status("/cb").decode()
        q.request_notification((called.append, 2))
    wait_until(lambda: not _notify_threads(), what="close to end the waiting thread")
    with MessageQueue("/cb", backend=backend) as q:
        q.send(b"nobody is registered")
        q.request_notification((called.append, 3))
        q.receive()
        q.send(b"x")
        wait_until(lambda: called, what="the callback")
        wait_until(lambda: not _notify_threads(), what="the thread to end after its call")
        q.unlink()
    assert called == [3]


def test_open_while_another_thread_unlinks_the_name(backend: MqfsBackend) -> None:
    """mq_open(O_CREAT) on mqfs is a CREATE then an open: a name unlinked in between is
    made again (the kernel's mq_open never fails that way; tests/preload/open_unlink_race.c
    checks the shim). Without the retry about one open in ten was ENOENT."""
    finished = threading.Event()

    def unlinker() -> None:
        while not finished.is_set():
            with suppress(FileNotFoundError):
                backend.unlink("/race")
            finished.wait(0.002)

    thread = threading.Thread(target=unlinker)
    thread.start()
    failures: list[int | None] = []
    try:
        for attempt in range(600):
            oflag = os.O_CREAT | os.O_RDWR | (os.O_EXCL if attempt % 2 else 0)
            try:
                mqd = backend.open("/race", oflag, 0o600, (1, 16))
            except FileExistsError:
                continue
            except OSError as exc:
                failures.append(exc.errno)
                continue
            try:
                assert calls.get_attributes(mqd).maxmsg == 1
            finally:
                os.close(mqd)
    finally:
        finished.set()
        thread.join()
    with suppress(FileNotFoundError):
        backend.unlink("/race")
    assert failures == []

"""Dump and restore whole queues: the checkpoint/restore workflow peek was proposed for.

A dump reads every message of a queue without changing anything (snapshots by framed
peeks, about 1 MiB of messages per read, see :func:`mqfs.client.calls.peek_all`) and
writes this format, version 1, as UTF-8 JSON (a restore to mqfs sends the messages back in
framed writes of about 1 MiB each)::

    {"format": "mqfs-dump", "version": 1,
     "queues": [{"name": "q", "mode": 384, "uid": 0, "gid": 0,
                 "maxmsg": 10, "msgsize": 8192, "count": 2,
                 "messages": [{"priority": 5, "data": "<base64>"}, ...]}]}

``messages`` are in receive order (highest priority first, FIFO within a priority), so
sending them in that order with their priorities rebuilds the same queue. Payloads are
base64: binary-safe. A restore validates the whole file first — format, version, count,
base64, priorities, lengths against msgsize, counts against maxmsg — and refuses a
truncated or corrupt dump before any queue is touched; it refuses to add to a non-empty
queue unless forced. It restores through any :mod:`mqfs.client.backends` backend, so a dump taken
on mqfs can be replayed into the kernel's own mqueue.
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mqfs import errors, posix
from mqfs.client import calls
from mqfs.client.backends import Backend, MqfsBackend
from mqfs.posix import MQ_PRIO_MAX
from mqfs.wire import Attr

FORMAT = "mqfs-dump"
VERSION = 1


@dataclass(slots=True)
class QueueDump:
    name: str
    mode: int
    uid: int
    gid: int
    maxmsg: int
    msgsize: int
    messages: list[tuple[bytes, int]] = field(default_factory=list)


def dump_queue(mount: Path, name: str) -> QueueDump:
    """Snapshot queue *name* of the mqfs at *mount*, leaving it exactly as it was."""
    posix.check_name(name)
    queue_file = mount / name / "queue"
    fd = os.open(queue_file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        attributes = calls.get_attributes(fd)
        messages = calls.peek_all(fd)
    finally:
        os.close(fd)
    return QueueDump(
        name=name,
        mode=info.st_mode & 0o7777,
        uid=info.st_uid,
        gid=info.st_gid,
        maxmsg=attributes.maxmsg,
        msgsize=attributes.msgsize,
        messages=messages,
    )


def dump_all(mount: Path) -> list[QueueDump]:
    return [dump_queue(mount, name) for name in sorted(os.listdir(mount))]


def to_json(queues: Iterable[QueueDump]) -> str:
    document = {
        "format": FORMAT,
        "version": VERSION,
        "queues": [
            {
                "name": queue.name,
                "mode": queue.mode,
                "uid": queue.uid,
                "gid": queue.gid,
                "maxmsg": queue.maxmsg,
                "msgsize": queue.msgsize,
                "count": len(queue.messages),
                "messages": [
                    {"priority": priority, "data": base64.b64encode(payload).decode("ascii")}
                    for payload, priority in queue.messages
                ],
            }
            for queue in queues
        ],
    }
    return json.dumps(document, indent=1) + "\n"


def _field(record: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = record.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise errors.BadDump(f"{where}: '{key}' is missing or not {kind.__name__}")
    return value


def from_json(text: str) -> list[QueueDump]:
    """Parse and fully validate a dump; errors.BadDump (EINVAL) says what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.BadDump(f"not a complete mqfs dump (truncated?): {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise errors.BadDump("not an mqfs dump (no 'format': 'mqfs-dump')")
    if document.get("version") != VERSION:
        raise errors.BadDump(f"dump version {document.get('version')!r} is not {VERSION}")
    raw_queues = document.get("queues")
    if not isinstance(raw_queues, list):
        raise errors.BadDump("'queues' is missing")
    queues = []
    for number, raw in enumerate(raw_queues):
        where = f"queue #{number}"
        if not isinstance(raw, dict):
            raise errors.BadDump(f"{where} is not an object")
        name = _field(raw, "name", str, where)
        where = f"queue {name!r}"
        try:
            posix.check_name(name)
        except errors.MqfsError as exc:
            raise errors.BadDump(f"{where}: {exc.message}") from None
        queue = QueueDump(
            name=name,
            mode=_field(raw, "mode", int, where),
            uid=_field(raw, "uid", int, where),
            gid=_field(raw, "gid", int, where),
            maxmsg=_field(raw, "maxmsg", int, where),
            msgsize=_field(raw, "msgsize", int, where),
        )
        raw_messages = _field(raw, "messages", list, where)
        if _field(raw, "count", int, where) != len(raw_messages):
            raise errors.BadDump(f"{where}: 'count' says {raw['count']}, found {len(raw_messages)}")
        if queue.maxmsg < 1 or queue.msgsize < 1 or len(raw_messages) > queue.maxmsg:
            raise errors.BadDump(f"{where}: {len(raw_messages)} messages do not fit maxmsg")
        for index, message in enumerate(raw_messages):
            spot = f"{where} message {index}"
            if not isinstance(message, dict):
                raise errors.BadDump(f"{spot} is not an object")
            priority = _field(message, "priority", int, spot)
            if not 0 <= priority < MQ_PRIO_MAX:
                raise errors.BadDump(f"{spot}: priority {priority} is out of range")
            try:
                payload = base64.b64decode(_field(message, "data", str, spot), validate=True)
            except binascii.Error:
                raise errors.BadDump(f"{spot}: data is not valid base64") from None
            if len(payload) > queue.msgsize:
                raise errors.BadDump(f"{spot}: {len(payload)} bytes exceed msgsize {queue.msgsize}")
            queue.messages.append((payload, priority))
        if any(a[1] < b[1] for a, b in zip(queue.messages, queue.messages[1:], strict=False)):
            raise errors.BadDump(f"{where}: messages are not in receive order")
        queues.append(queue)
    return queues


def restore(
    queues: list[QueueDump],
    backend: Backend,
    *,
    force: bool = False,
    replace: bool = False,
    atomic: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Recreate *queues* through *backend*: all checks first, then the sends; the number
    of messages restored.

    A queue that exists keeps its attributes. A non-empty one is refused unless *force*
    (its messages stay and the dump's go behind them, if they fit) or *replace* (its
    messages are received and dropped first). A queue restore creates gets the dump's
    mode and, for root, owner. If a send fails, the error says how many messages went in;
    with *atomic* those are taken out again, so that all or nothing is restored (an
    append to a non-empty queue cannot be undone: *atomic* refuses it).
    *progress(sent, total)* is called as messages go in.
    """
    opened: list[tuple[QueueDump, int]] = []
    created: list[str] = []
    sent_to: dict[int, int] = {}  # descriptor -> messages this restore put in
    total = sum(len(queue.messages) for queue in queues)
    access = os.O_RDWR if replace or atomic else os.O_WRONLY  # reading only to take out
    try:
        missing = []
        for queue in queues:  # every check before anything changes
            try:
                descriptor = backend.open(f"/{queue.name}", access | os.O_NONBLOCK)
            except FileNotFoundError:
                missing.append(queue)
                continue
            opened.append((queue, descriptor))
            _check_room(queue, backend.getattr(descriptor), force or replace, replace)
            if atomic and force and not replace and backend.getattr(descriptor).curmsgs:
                raise errors.InvalidArgument(
                    f"queue {queue.name!r} is not empty: --atomic cannot undo an append "
                    "to it (use --replace, or restore without --atomic)"
                )
        for queue in missing:
            flags = access | os.O_CREAT | os.O_EXCL | os.O_NONBLOCK
            attr = (queue.maxmsg, queue.msgsize)
            opened.append((queue, backend.open(f"/{queue.name}", flags, queue.mode, attr)))
            created.append(queue.name)
            # mq_open applies the umask; the dump's mode is the queue's mode.
            os.chmod(backend.queue_file(f"/{queue.name}"), queue.mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(backend.queue_file(f"/{queue.name}"), queue.uid, queue.gid)
        if replace:
            for _, descriptor in opened:
                _drain(backend, descriptor)
        sent = 0
        for queue, descriptor in opened:
            pending = queue.messages
            while pending:
                try:
                    count = _send_some(backend, descriptor, pending)
                except OSError as exc:
                    if atomic:
                        for undo, undo_count in sent_to.items():
                            _drain(backend, undo, undo_count)
                        sent = 0
                    raise _stopped(exc, sent, total, atomic) from exc
                sent_to[descriptor] = sent_to.get(descriptor, 0) + count
                sent += count
                pending = pending[count:]
                if progress is not None:
                    progress(sent, total)
        created.clear()
        return sent
    finally:
        for _, descriptor in opened:
            backend.close(descriptor)
        for name in created:  # a failed restore leaves no half-made queues behind
            backend.unlink(f"/{name}")


def _send_some(backend: Backend, descriptor: int, messages: list[tuple[bytes, int]]) -> int:
    """Send the first of *messages* (on mqfs: as many as go, in framed writes of about
    1 MiB) to the non-blocking *descriptor*; how many were sent (EAGAIN: none)."""
    if isinstance(backend, MqfsBackend):
        return calls.send_many(descriptor, messages)
    payload, priority = messages[0]
    backend.send(descriptor, payload, priority)
    return 1


def _drain(backend: Backend, descriptor: int, count: int | None = None) -> None:
    """Receive and drop *count* messages (all, if None) without waiting."""
    msgsize = backend.getattr(descriptor).msgsize
    taken = 0
    while count is None or taken < count:
        try:
            backend.receive(descriptor, msgsize, None)
        except BlockingIOError:
            return
        taken += 1


def _stopped(exc: OSError, sent: int, total: int, atomic: bool) -> errors.MqfsError:
    code = exc.errno or errno.EIO
    undone = " (--atomic: taken out again)" if atomic else ""
    text = f"restore stopped after {sent} of {total} messages{undone}: {os.strerror(code)}"
    return errors.from_errno(code, "restore", "", text)


def _check_room(queue: QueueDump, current: Attr, force: bool, replace: bool = False) -> None:
    if current.curmsgs and not force:
        raise errors.BadDump(
            f"queue {queue.name!r} already holds {current.curmsgs} messages "
            "(--force adds to them, --replace replaces them)"
        )
    kept = 0 if replace else current.curmsgs
    longest = max((len(payload) for payload, _ in queue.messages), default=0)
    if kept + len(queue.messages) > current.maxmsg or longest > current.msgsize:
        raise errors.BadDump(
            f"queue {queue.name!r} (maxmsg {current.maxmsg}, msgsize {current.msgsize}, "
            f"{kept} kept) cannot take the {len(queue.messages)} messages"
        )

"""The info views: the JSON behind the ``user.mq.info`` xattr of MNT/NAME (and of its
queue file) and behind ``user.mq.limits`` on the mount's root.

What ``mqfs ls``, ``mqfs who``, ``mqfs watch``, ``mqfs limits`` and the tests read:
attributes, the notification, the last change and the last sender and receiver (lsipc's
LSPID and LRPID), and who has the queue open and what each is blocked in. Which
processes have it open is shown to root and the queue's owner only (the kernel shows a
process's descriptors to its owner and root); anyone else gets the counts, with
``openers`` null. The queue layer keeps thread ids (what FUSE reports); they become
processes here, when someone asks, so that no send pays for a /proc read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from mqfs import fastq, wire
from mqfs.server import processes
from mqfs.server.queue import Descriptor, Namespace, Queue


def _process(tid: int) -> int | None:
    """The process of thread *tid* (None for 0: nobody, or the daemon itself)."""
    return processes.tgid_of(tid) if tid > 0 else None


def _opener(descriptor: Descriptor, asleep: dict[int, list[fastq.Sleeper]]) -> dict[str, Any]:
    """One open descriptor: O(1) however many threads wait on it (no list of them).
    *asleep*: threads asleep in a fast-path queue's mapping by process, which never asked
    the daemon; they count as blocked on their process's first descriptor of the queue."""
    pid = _process(descriptor.pid) or descriptor.pid
    oldest = descriptor.oldest_blocked()
    blocked = oldest.direction if oldest else None
    since = oldest.since_ns if oldest else None
    waiting = dict(descriptor.blocked_counts)
    blocked, since = _count_sleepers(asleep.pop(pid, []), blocked, since, waiting)
    return {
        "pid": pid,
        "command": processes.command_of(pid),
        "access": ("r" if descriptor.readable else "") + ("w" if descriptor.writable else ""),
        "nonblock": descriptor.nonblock,
        # The longest-waiting caller's direction (send, receive, wait) and since when,
        "blocked": blocked,
        "blocked_since_ns": since,
        # and how many callers (threads, or a child sharing it) wait in each direction.
        "waiting": waiting,
    }


def _sleeping(pid: int, sleepers: list[fastq.Sleeper]) -> dict[str, Any]:
    """A process asleep in a fast-path queue's mapping through a descriptor it did not open
    itself (a fork's child: FUSE saw only the parent's open)."""
    waiting: dict[str, int] = {}
    blocked, since = _count_sleepers(sleepers, None, None, waiting)
    return {
        "pid": pid,
        "command": processes.command_of(pid),
        "access": "",
        "nonblock": False,
        "blocked": blocked,
        "blocked_since_ns": since,
        "waiting": waiting,
    }


def _count_sleepers(
    sleepers: list[fastq.Sleeper], blocked: str | None, since: int | None, waiting: dict[str, int]
) -> tuple[str | None, int | None]:
    """Add *sleepers* to *waiting* by direction; the longest wait's direction and start,
    theirs or (*blocked*, *since*)."""
    for sleeper in sleepers:
        direction = "receive" if sleeper.receiving else "send"
        waiting[direction] = waiting.get(direction, 0) + 1
        if since is None or sleeper.since_ns < since:
            blocked, since = direction, sleeper.since_ns
    return blocked, since


def _last(in_mapping: int, by_daemon: int) -> int:
    """Who sent (or received) last: a fast-path queue's mapping knows, unless the last was
    the daemon itself on a caller's behalf, whose thread the queue layer recorded."""
    return in_mapping if in_mapping not in (0, os.getpid()) else by_daemon


def queue_info(queue: Queue, descriptors: Iterable[Descriptor], viewer_uid: int) -> dict[str, Any]:
    """The info of *queue*, open through *descriptors*, as user *viewer_uid* may see it."""
    with queue.pinned():  # one instant of a fast-path queue's mapping
        return _queue_info(queue, list(descriptors), viewer_uid)


def _queue_info(queue: Queue, descriptors: list[Descriptor], viewer_uid: int) -> dict[str, Any]:
    note = queue.notification
    may_see = viewer_uid in (0, queue.uid)
    mapped = queue.mapped
    mapping = mapped.state() if mapped is not None else None
    asleep: dict[int, list[fastq.Sleeper]] = {}
    for sleeper in mapped.sleepers() if mapped is not None and may_see else []:
        asleep.setdefault(sleeper.pid, []).append(sleeper)
    return {
        "open": len(descriptors),
        "blocked": sum(descriptor.waiting for descriptor in descriptors),
        "openers": [_opener(descriptor, asleep) for descriptor in descriptors]
        + [_sleeping(pid, sleepers) for pid, sleepers in asleep.items()]
        if may_see
        else None,
        "maxmsg": queue.maxmsg,
        "msgsize": queue.msgsize,
        "curmsgs": len(queue),
        "qsize": queue.store.bytes_queued,
        "notify": None
        if note is None
        else {"pid": note.pid, "sigev_notify": note.sigev_notify, "signo": note.signo},
        "lspid": _process(_last(mapping.last_sender if mapping else 0, queue.last_send_tid)),
        "lrpid": _process(_last(mapping.last_receiver if mapping else 0, queue.last_receive_tid)),
        "unlinked": queue.unlinked,
        "generation": queue.generation,
        # A fast-path queue: its owner's processes asleep in the mapping itself, which
        # the daemon does not see as callers (they never asked it).
        "fastpath": None
        if mapping is None
        else {"receivers_waiting": mapping.recv_waiters, "senders_waiting": mapping.send_waiters},
        "last_change": None
        if not queue.change_kind
        else {
            "kind": queue.change_kind,
            "pid": _process(queue.change_tid),
            "time_ns": queue.change_ns,
        },
    }


def limits_info(namespace: Namespace) -> dict[str, Any]:
    """The mount's limits, as /proc/sys/fs/mqueue, and what is used of them: queues (of
    queues_max) and, per user, queues and bytes charged to RLIMIT_MSGQUEUE."""
    return {
        **dataclasses.asdict(namespace.limits),
        "framed_io": wire.FRAMED_IO,  # clients check it before a framed write (mqfs.wire)
        "usage": {
            "queues": namespace.live,
            "users": [
                {"uid": uid, "queues": queues, "bytes": charged}
                for uid, (queues, charged) in namespace.usage().items()
            ],
        },
    }

"""The info view of a queue: the JSON behind the ``user.mq.info`` xattr of MNT/NAME.

What ``mqfs ls -l``, ``mqfs who`` and the tests read: attributes, the notification,
and who has the queue open. Which processes have it open is shown to root and the
queue's owner only (the kernel shows a process's descriptors to its owner and root);
anyone else gets the counts, with ``openers`` null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mqfs.server.queue import Descriptor, Queue


def queue_info(queue: Queue, descriptors: Iterable[Descriptor], viewer_uid: int) -> dict[str, Any]:
    """The info of *queue*, open through *descriptors*, as user *viewer_uid* may see it."""
    note = queue.notification
    descriptors = list(descriptors)
    openers = [
        {
            "pid": descriptor.pid,
            "access": ("r" if descriptor.readable else "") + ("w" if descriptor.writable else ""),
            "nonblock": descriptor.nonblock,
            "blocked": descriptor.waiting,
        }
        for descriptor in descriptors
    ]
    return {
        "open": len(descriptors),
        "blocked": sum(descriptor.waiting for descriptor in descriptors),
        "openers": openers if viewer_uid in (0, queue.uid) else None,
        "maxmsg": queue.maxmsg,
        "msgsize": queue.msgsize,
        "curmsgs": len(queue),
        "qsize": queue.store.bytes_queued,
        "notify": None
        if note is None
        else {"pid": note.pid, "sigev_notify": note.sigev_notify, "signo": note.signo},
    }

"""What /proc says about another process or thread: is it asleep, and where."""

from __future__ import annotations

from pathlib import Path

_MQ_SLEEPS = ("wq_sleep", "mq", "fuse", "request_wait_answer", "futex_wait_multiple")
"""Where an mq call sleeps: the kernel's mqueue, a FUSE request, or futex_waitv on a
mapped queue (``-o fastpath``; Python's own locks sleep in plain futex waits instead)."""


def task_state(task: int) -> str | None:
    """The state letter ("R", "S", "D", ...) of process or thread *task*, None once gone."""
    try:
        stat = Path(f"/proc/{task}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def blocked_in_mq_call(pid: int) -> bool:
    """True once *pid* sleeps in an mq call: the kernel's wq_sleep, a FUSE request, or a
    mapped queue's futex_waitv."""
    try:
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return task_state(pid) in ("S", "D") and any(mark in wchan for mark in _MQ_SLEEPS)

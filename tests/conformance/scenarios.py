"""The conformance scenarios: data, run by tests/conformance/runner.py on both backends.

A scenario is a list of ``(step, expected)`` pairs: a step ``(op, *args)`` for
:class:`~tests.conformance.runner.Runner` and the result POSIX/Linux gives for it (``...``
where any result will do). Add a scenario by appending to :data:`SCENARIOS`; the docs
table (tests/conformance/table.py) and the test ids follow.
"""

from __future__ import annotations

import os
import signal

from mqfs.posix import SI_MESGQ, SIGEV_NONE, SIGEV_SIGNAL
from tests.conformance.runner import OK, Scenario, Step

NOBODY = 65534


def sc(
    name: str,
    behaviour: str,
    *pairs: tuple[Step, object],
    limits: dict[str, int] | None = None,
    mqfs_note: str = "",
) -> Scenario:
    return Scenario(name, behaviour, tuple(pairs), limits or {}, mqfs_note)


def status(qsize: int, notify: int = 0, signo: int = 0, pid: str | int = 0) -> bytes:
    """The status line, with a non-zero pid given as its label ("<self>", "<c>")."""
    line = f"QSIZE:{qsize:<10} NOTIFY:{notify:<5} SIGNO:{signo:<5} NOTIFY_PID:"
    return (line + (f"{pid:<6}" if pid == 0 else str(pid)) + "\n").encode()


def attrs(flags: int, maxmsg: int, msgsize: int, curmsgs: int) -> tuple[int, int, int, int]:
    return flags, maxmsg, msgsize, curmsgs


RDWR, RDONLY, WRONLY = os.O_RDWR, os.O_RDONLY, os.O_WRONLY
CREAT, EXCL, NONBLOCK = os.O_CREAT, os.O_EXCL, os.O_NONBLOCK
SMALL = (4, 64)
TINY = (1, 128)  # the kernel charges RLIMIT_MSGQUEUE per queue: keep queues small
USR1, USR2 = int(signal.SIGUSR1), int(signal.SIGUSR2)


def create(
    mqd: str = "a", name: str = "/q", attr: tuple[int, int] | None = SMALL, flags: int = 0
) -> tuple[Step, object]:
    """Create (or open) *name* read-write with *attr*, expecting success."""
    return ("open", mqd, name, CREAT | RDWR | flags, 0o600, attr), OK


def fill(mqd: str, count: int) -> list[tuple[Step, object]]:
    return [(("send", mqd, b"m%d" % i, 0), OK) for i in range(count)]


def child_status(name: str = "/q") -> Step:
    """The status line read by another process (the kernel drops the caller's own
    notification when the registered process closes any descriptor of the queue)."""
    return ("run", "s", [("status", name)])


def siginfo(signo: int, value: int, pid: str) -> tuple[object, ...]:
    return (signal.Signals(signo).name, SI_MESGQ, value, pid, 0)


NAME_255 = "/" + "n" * 255
NAME_256 = "/" + "n" * 256

OPEN_CREATE = [
    sc(
        "open_create_and_reopen",
        "mq_open: O_CREAT creates with attr; reopening without O_CREAT finds it",
        create(),
        (("getattr", "a"), attrs(0, 4, 64, 0)),
        (("open", "b", "/q", RDONLY), OK),
        (("getattr", "b"), attrs(0, 4, 64, 0)),
        (("status", "/q"), status(0)),
    ),
    sc(
        "open_missing",
        "mq_open: a missing queue without O_CREAT → ENOENT",
        (("open", "a", "/nothere", RDWR), "ENOENT"),
    ),
    sc(
        "open_excl",
        "mq_open: O_CREAT|O_EXCL on an existing queue → EEXIST (even with bad attr)",
        create(),
        (("open", "b", "/q", CREAT | EXCL | RDWR, 0o600, SMALL), "EEXIST"),
        (("open", "b", "/q", CREAT | EXCL | RDWR, 0o600, (0, 0)), "EEXIST"),
    ),
    sc(
        "open_creat_existing_ignores_attr",
        "mq_open: O_CREAT on an existing queue ignores attr, even an invalid one",
        create(attr=(3, 100)),
        (("open", "b", "/q", CREAT | RDWR, 0o600, (9, 9000)), OK),
        (("open", "c", "/q", CREAT | RDWR, 0o600, (0, -1)), OK),
        (("getattr", "c"), attrs(0, 3, 100, 0)),
    ),
    sc(
        "open_names",
        "mq_open names: no slash EINVAL; / ENOENT; /a/b //x /. /.. EACCES; 255 ok, 256 long",
        (("open", "a", "q", CREAT | RDWR, 0o600, SMALL), "EINVAL"),
        (("open", "a", "/", CREAT | RDWR, 0o600, SMALL), "ENOENT"),
        (("open", "a", "/a/b", CREAT | RDWR, 0o600, SMALL), "EACCES"),
        (("open", "a", "//x", CREAT | RDWR, 0o600, SMALL), "EACCES"),
        (("open", "a", "/.", CREAT | RDWR, 0o600, SMALL), "EACCES"),
        (("open", "a", "/..", CREAT | RDWR, 0o600, SMALL), "EACCES"),
        (("open", "a", NAME_256, CREAT | RDWR, 0o600, SMALL), "ENAMETOOLONG"),
        (("open", "a", NAME_255, CREAT | RDWR, 0o600, SMALL), OK),
        (("open", "b", NAME_255, RDONLY), OK),
    ),
    sc(
        "open_attr_out_of_range",
        "mq_open: attr out of range (maxmsg/msgsize ≤ 0 or above msg_max/msgsize_max) → EINVAL",
        (("open", "a", "/q", CREAT | RDWR, 0o600, (0, 64)), "EINVAL"),
        (("open", "a", "/q", CREAT | RDWR, 0o600, (-1, 64)), "EINVAL"),
        (("open", "a", "/q", CREAT | RDWR, 0o600, (4, 0)), "EINVAL"),
        (("open", "a", "/q", CREAT | RDWR, 0o600, (11, 64)), "EINVAL"),
        (("open", "a", "/q", CREAT | RDWR, 0o600, (4, 8193)), "EINVAL"),
        (("open", "a", "/q", RDONLY), "ENOENT"),
        (("open", "a", "/q", CREAT | RDWR, 0o600, (10, 8192)), OK),
        (("open", "b", "/r", CREAT | RDWR, 0o600, (1, 1)), OK),
        (("getattr", "b"), attrs(0, 1, 1, 0)),
    ),
    sc(
        "open_default_attr",
        "mq_open: attr NULL gives min(msg_default, msg_max) by min(msgsize_default, max)",
        create(attr=None),
        (("getattr", "a"), attrs(0, 3, 200, 0)),
        limits={"msg_default": 5, "msg_max": 3, "msgsize_default": 256, "msgsize_max": 200},
    ),
    sc(
        "open_raised_limits",
        "mq_open: limits raised (msg_max, msgsize_max) allow bigger queues",
        create(attr=(100, 4000)),
        (("open", "b", "/r", CREAT | RDWR, 0o600, (1, 65536)), OK),
        (("open", "c", "/s", CREAT | RDWR, 0o600, (101, 64)), "EINVAL"),
        (("open", "c", "/s", CREAT | RDWR, 0o600, (1, 65537)), "EINVAL"),
        (("getattr", "a"), attrs(0, 100, 4000, 0)),
        (("getattr", "b"), attrs(0, 1, 65536, 0)),
        limits={"msg_max": 100, "msgsize_max": 65536},
    ),
    sc(
        "open_rdwr_wronly",
        "mq_open: O_RDWR|O_WRONLY on an existing queue → EINVAL; on a new name it creates "
        "the queue and gives a descriptor that can neither send nor receive",
        create(),
        (("open", "b", "/q", RDWR | WRONLY), "EINVAL"),
        (("open", "b", "/q", CREAT | RDWR | WRONLY, 0o600, SMALL), "EINVAL"),
        (("open", "c", "/new", CREAT | RDWR | WRONLY, 0o600, SMALL), OK),
        (("send", "c", b"x", 0), "EBADF"),
        (("receive", "c", 64), "EBADF"),
        (("getattr", "c"), attrs(0, 4, 64, 0)),
        (("open", "d", "/new", RDONLY), OK),
    ),
    sc(
        "open_queues_max",
        "mq_open: one queue more than queues_max → ENOSPC; unlinked-but-open ones count",
        create("a", "/q1", TINY),
        create("b", "/q2", TINY),
        (("open", "c", "/q3", CREAT | RDWR, 0o600, TINY), "ENOSPC"),
        (("open", "c", "/q2", CREAT | RDWR, 0o600, TINY), OK),
        (("unlink", "/q2"), OK),
        (("open", "d", "/q3", CREAT | RDWR, 0o600, TINY), "ENOSPC"),
        (("close", "b"), OK),
        (("close", "c"), OK),
        (("open", "d", "/q3", CREAT | RDWR, 0o600, TINY), OK),
        limits={"queues_max": 2},
    ),
    sc(
        "open_check_order",
        "mq_open O_CREAT checks: queues_max (ENOSPC) before attr (EINVAL)",
        create("a", "/q1", TINY),
        (("open", "b", "/q2", CREAT | RDWR, 0o600, (0, 0)), "ENOSPC"),
        limits={"queues_max": 1},
    ),
    sc(
        "open_rlimit_msgqueue",
        "mq_open: a queue over RLIMIT_MSGQUEUE (819200 bytes; root not exempt) → EMFILE, "
        "checked after attr (EINVAL)",
        (("open", "a", "/big", CREAT | RDWR, 0o600, (1, 1048577)), "EINVAL"),
        (("open", "a", "/big", CREAT | RDWR, 0o600, (1, 1048576)), "EMFILE"),
        (("open", "a", "/big", RDONLY), "ENOENT"),
        (("open", "a", "/ok", CREAT | RDWR, 0o600, (1, 700000)), OK),
        limits={"msgsize_max": 1048576},
    ),
    sc(
        "open_access_modes",
        "O_RDONLY cannot send, O_WRONLY cannot receive (EBADF); getattr works on both",
        create(),
        (("open", "r", "/q", RDONLY), OK),
        (("open", "w", "/q", WRONLY), OK),
        (("send", "r", b"x", 0), "EBADF"),
        (("send", "w", b"x", 1), OK),
        (("receive", "w", 64), "EBADF"),
        (("receive", "r", 64), (b"x", 1)),
        (("getattr", "w"), attrs(0, 4, 64, 0)),
        (("send_timed", "r", b"x", 0, "past"), "EBADF"),
    ),
    sc(
        "open_mode_umask",
        "mq_open: the queue's mode is mode & ~umask, owner the creator",
        (("umask", 0o022), OK),
        (("open", "a", "/q", CREAT | RDWR, 0o666, SMALL), OK),
        (("owner", "/q"), ("0o644", 0, 0)),
        (("umask", 0o077), OK),
        (("open", "b", "/r", CREAT | RDWR, 0o666, SMALL), OK),
        (("owner", "/r"), ("0o600", 0, 0)),
    ),
]

SEND = [
    sc(
        "send_priority_max",
        "mq_send: priority ≥ MQ_PRIO_MAX (32768) → EINVAL; 32767 is fine",
        create(),
        (("send", "a", b"x", 32768), "EINVAL"),
        (("send", "a", b"x", 32767), OK),
        (("receive", "a", 64), (b"x", 32767)),
    ),
    sc(
        "send_too_long",
        "mq_send: a message longer than msgsize → EMSGSIZE; exactly msgsize is fine",
        create(),
        (("send", "a", b"x" * 65, 0), "EMSGSIZE"),
        (("send", "a", b"x" * 64, 0), OK),
        (("getattr", "a"), attrs(0, 4, 64, 1)),
    ),
    sc(
        "send_full_nonblock",
        "mq_send: full queue with O_NONBLOCK → EAGAIN",
        create(flags=NONBLOCK, attr=(2, 64)),
        *fill("a", 2),
        (("send", "a", b"over", 0), "EAGAIN"),
        (("getattr", "a"), attrs(NONBLOCK, 2, 64, 2)),
    ),
    sc(
        "send_timed_full",
        "mq_timedsend: full queue → ETIMEDOUT at the deadline, at once for a past one",
        create(attr=(2, 64)),
        *fill("a", 2),
        (("send_timed", "a", b"late", 0, "soon"), "ETIMEDOUT"),
        (("send_timed", "a", b"late", 0, "past"), "ETIMEDOUT"),
        (("getattr", "a"), attrs(0, 2, 64, 2)),
    ),
    sc(
        "send_timed_invalid",
        "mq_timedsend: an invalid timespec → EINVAL even when the queue has room",
        create(),
        (("send_timed", "a", b"x", 0, "invalid"), "EINVAL"),
        (("send_timed", "a", b"x", 0, "negative_nsec"), "EINVAL"),
        (("send_timed", "a", b"x", 0, "past"), OK),
        (("getattr", "a"), attrs(0, 4, 64, 1)),
    ),
    sc(
        "send_check_order",
        "mq_send checks in order: timeout (EINVAL), priority (EINVAL), EBADF, EMSGSIZE, "
        "full (EAGAIN/ETIMEDOUT)",
        create(attr=(1, 64)),
        (("open", "r", "/q", RDONLY | NONBLOCK), OK),
        (("send_timed", "r", b"x" * 65, 32768, "invalid"), "EINVAL"),
        (("send", "r", b"x" * 65, 32768), "EINVAL"),
        (("send", "r", b"x" * 65, 0), "EBADF"),
        (("send", "a", b"x", 0), OK),
        (("setattr", "a", NONBLOCK), attrs(0, 1, 64, 1)),
        (("send", "a", b"x" * 65, 0), "EMSGSIZE"),
        (("send_timed", "a", b"x", 0, "invalid"), "EINVAL"),
        (("send_timed", "a", b"x", 0, "past"), "EAGAIN"),
        (("send", "a", b"x", 0), "EAGAIN"),
    ),
]

RECEIVE = [
    sc(
        "receive_small_buffer",
        "mq_receive: buffer < msgsize → EMSGSIZE, even for a short message or an empty queue",
        create(flags=NONBLOCK),
        (("receive", "a", 63), "EMSGSIZE"),
        (("send", "a", b"x", 0), OK),
        (("receive", "a", 63), "EMSGSIZE"),
        (("receive", "a", 64), (b"x", 0)),
    ),
    sc(
        "receive_empty_nonblock",
        "mq_receive: empty queue with O_NONBLOCK → EAGAIN",
        create(flags=NONBLOCK),
        (("receive", "a", 64), "EAGAIN"),
        (("receive_timed", "a", 64, "past"), "EAGAIN"),
    ),
    sc(
        "receive_timed",
        "mq_timedreceive: empty → ETIMEDOUT (at once for a past deadline); invalid → EINVAL",
        create(),
        (("receive_timed", "a", 64, "soon"), "ETIMEDOUT"),
        (("receive_timed", "a", 64, "past"), "ETIMEDOUT"),
        (("receive_timed", "a", 64, "invalid"), "EINVAL"),
        (("send", "a", b"x", 0), OK),
        (("receive_timed", "a", 64, "invalid"), "EINVAL"),
        (("receive_timed", "a", 64, "past"), (b"x", 0)),
    ),
    sc(
        "receive_check_order",
        "mq_receive checks in order: timeout (EINVAL), EBADF, EMSGSIZE, empty",
        create(),
        (("open", "w", "/q", WRONLY), OK),
        (("receive_timed", "w", 1, "invalid"), "EINVAL"),
        (("receive", "w", 1), "EBADF"),
        (("receive_timed", "a", 1, "past"), "EMSGSIZE"),
    ),
    sc(
        "receive_order",
        "receive order: highest priority first, FIFO within a priority",
        create(attr=(8, 64)),
        *[
            (("send", "a", payload, prio), OK)
            for payload, prio in [(b"l1", 1), (b"h1", 9), (b"l2", 1), (b"z", 0), (b"h2", 9)]
        ],
        (("send", "a", b"top", 32767), OK),
        (("receive", "a", 64), (b"top", 32767)),
        (("receive", "a", 64), (b"h1", 9)),
        (("receive", "a", 64), (b"h2", 9)),
        (("receive", "a", 64), (b"l1", 1)),
        (("receive", "a", 64), (b"l2", 1)),
        (("receive", "a", 64), (b"z", 0)),
    ),
    sc(
        "zero_length_messages",
        "zero-length messages are queued, counted and received like any other",
        create(),
        (("send", "a", b"", 3), OK),
        (("send", "a", b"", 0), OK),
        (("getattr", "a"), attrs(0, 4, 64, 2)),
        (("status", "/q"), status(0)),
        (("receive", "a", 64), (b"", 3)),
        (("receive", "a", 64), (b"", 0)),
    ),
    sc(
        "status_qsize",
        "status line: QSIZE is the total payload bytes, fields padded as the kernel's",
        create(),
        (("send", "a", b"abc", 0), OK),
        (("send", "a", b"x" * 64, 5), OK),
        (("status", "/q"), status(67)),
        (("receive", "a", 64), (b"x" * 64, 5)),
        (("status", "/q"), status(3)),
    ),
]

ATTRIBUTES = [
    sc(
        "setattr_nonblock_per_description",
        "mq_setattr: O_NONBLOCK per open description; returns the old attributes; curmsgs",
        create(),
        (("open", "b", "/q", RDWR), OK),
        (("send", "a", b"x", 0), OK),
        (("setattr", "a", NONBLOCK), attrs(0, 4, 64, 1)),
        (("getattr", "a"), attrs(NONBLOCK, 4, 64, 1)),
        (("getattr", "b"), attrs(0, 4, 64, 1)),
        (("receive", "a", 64), (b"x", 0)),
        (("receive", "a", 64), "EAGAIN"),
        (("setattr", "a", 0), attrs(NONBLOCK, 4, 64, 0)),
        (("getattr", "a"), attrs(0, 4, 64, 0)),
    ),
    sc(
        "setattr_other_flags",
        "mq_setattr: any mq_flags bit but O_NONBLOCK → EINVAL; O_NONBLOCK at open shows",
        create(flags=NONBLOCK),
        (("getattr", "a"), attrs(NONBLOCK, 4, 64, 0)),
        (("setattr", "a", NONBLOCK | os.O_APPEND), "EINVAL"),
        (("setattr", "a", os.O_RDWR), "EINVAL"),
        (("setattr", "a", 1 << 40), "EINVAL"),
        (("getattr", "a"), attrs(NONBLOCK, 4, 64, 0)),
    ),
]

NOTIFY = [
    sc(
        "notify_none_status",
        "mq_notify SIGEV_NONE: status shows NOTIFY:1 SIGNO:0 NOTIFY_PID:<registered pid>; "
        "like a signal it is used up by the first message on the empty queue",
        create(),
        (("notify", "a", SIGEV_NONE), OK),
        (child_status(), (status(0, 1, 0, "<self>"),)),
        (("send", "a", b"x", 0), OK),
        (child_status(), (status(1),)),
        (("notify", "a", SIGEV_NONE), OK),
        (("send", "a", b"y", 0), OK),
        (child_status(), (status(2, 1, 0, "<self>"),)),
    ),
    sc(
        "notify_busy",
        "mq_notify: a second registration → EBUSY (same process, other descriptor, other process)",
        create(),
        (("open", "b", "/q", RDONLY), OK),
        (("notify", "a", SIGEV_NONE), OK),
        (("notify", "a", SIGEV_NONE), "EBUSY"),
        (("notify", "b", SIGEV_SIGNAL, USR1), "EBUSY"),
        (("run", "c", [("open", "x", "/q", RDONLY), ("notify", "x", SIGEV_NONE)]), (OK, "EBUSY")),
    ),
    sc(
        "notify_unregister",
        "mq_notify(NULL): the owner unregisters; a non-owner's NULL is 0 and changes nothing",
        create(),
        (("notify", "a", SIGEV_SIGNAL, USR1, 7), OK),
        (child_status(), (status(0, 0, USR1, "<self>"),)),
        (("run", "c", [("open", "x", "/q", RDONLY), ("notify", "x", None)]), (OK, OK)),
        (child_status(), (status(0, 0, USR1, "<self>"),)),
        (("notify", "a", None), OK),
        (child_status(), (status(0),)),
        (("notify", "a", None), OK),
        (("notify", "a", SIGEV_NONE), OK),
    ),
    sc(
        "notify_invalid",
        "mq_notify: bad sigev_notify or a signal number above 64 → EINVAL; signal 0 and "
        "64 are accepted",
        create(),
        (("notify", "a", 7), "EINVAL"),
        (("notify", "a", -1), "EINVAL"),
        (("notify", "a", SIGEV_SIGNAL, 65), "EINVAL"),
        (("notify", "a", SIGEV_SIGNAL, -1), "EINVAL"),
        (("notify", "a", SIGEV_SIGNAL, 0), OK),
        (child_status(), (status(0, 0, 0, "<self>"),)),
        (("notify", "a", None), OK),
        (("notify", "a", SIGEV_SIGNAL, 64), OK),
        (child_status(), (status(0, 0, 64, "<self>"),)),
    ),
    sc(
        "notify_signal",
        "mq_notify SIGEV_SIGNAL: empty → one message sends the signal (si_code SI_MESGQ, "
        "si_value, si_pid of the sender) once, then the registration is gone",
        create(),
        (("block", USR1), OK),
        (("notify", "a", SIGEV_SIGNAL, USR1, 4242), OK),
        (("send", "a", b"x", 0), OK),
        (("sigwait", USR1), siginfo(USR1, 4242, "<self>")),
        (child_status(), (status(1),)),
        (("receive", "a", 64), (b"x", 0)),
        (("send", "a", b"y", 0), OK),
        (("sigwait", USR1), "no signal"),
    ),
    sc(
        "notify_signal_from_other_sender",
        "mq_notify SIGEV_SIGNAL: si_pid is the sending process's",
        create(),
        (("block", USR2), OK),
        (("notify", "a", SIGEV_SIGNAL, USR2, 9), OK),
        (("run", "c", [("open", "x", "/q", WRONLY), ("send", "x", b"hi", 2)]), (OK, OK)),
        (("sigwait", USR2), siginfo(USR2, 9, "<c>")),
    ),
    sc(
        "notify_only_when_empty",
        "mq_notify: no signal for a message on a non-empty queue; registration stays",
        create(),
        (("block", USR1), OK),
        (("send", "a", b"first", 0), OK),
        (("notify", "a", SIGEV_SIGNAL, USR1, 1), OK),
        (("send", "a", b"second", 0), OK),
        (("sigwait", USR1), "no signal"),
        (child_status(), (status(11, 0, USR1, "<self>"),)),
        (("receive", "a", 64), (b"first", 0)),
        (("receive", "a", 64), (b"second", 0)),
        (("send", "a", b"third", 0), OK),
        (("sigwait", USR1), siginfo(USR1, 1, "<self>")),
    ),
    sc(
        "notify_blocked_receiver",
        "mq_notify: a blocked receiver takes the message; no signal, registration stays",
        create(),
        (("block", USR1), OK),
        (("notify", "a", SIGEV_SIGNAL, USR1, 1), OK),
        (("spawn", "c", [("open", "x", "/q", RDONLY), ("receive", "x", 64)]), OK),
        (("wait_blocked", "c"), "blocked"),
        (("send", "a", b"direct", 4), OK),
        (("join", "c"), (OK, (b"direct", 4))),
        (("sigwait", USR1), "no signal"),
        (child_status(), (status(0, 0, USR1, "<self>"),)),
    ),
    sc(
        "notify_removed_by_owner_close",
        "mq_notify: the registering process closing any descriptor of the queue (even "
        "the status file's) ends the registration",
        create(),
        (("open", "b", "/q", RDONLY), OK),
        (("notify", "a", SIGEV_NONE), OK),
        (("close", "b"), OK),
        (child_status(), (status(0),)),
        (("notify", "a", SIGEV_NONE), OK),
        (("status", "/q"), status(0, 1, 0, "<self>")),
        (child_status(), (status(0),)),
    ),
    sc(
        "notify_removed_at_exit",
        "mq_notify: a registration ends when the registering process exits",
        create(),
        (("run", "c", [("open", "x", "/q", RDONLY), ("notify", "x", SIGEV_NONE)]), (OK, OK)),
        (("notify", "a", SIGEV_NONE), OK),
    ),
]

LIFETIME = [
    sc(
        "unlink_keeps_open_queue",
        "mq_unlink: the name goes at once (O_CREAT makes a new queue); open descriptors "
        "keep the old queue and its messages",
        create(),
        (("send", "a", b"old", 1), OK),
        (("unlink", "/q"), OK),
        (("open", "b", "/q", RDWR), "ENOENT"),
        (("status", "/q"), "ENOENT"),
        (("unlink", "/q"), "ENOENT"),
        create("c", "/q", (2, 128)),
        (("getattr", "c"), attrs(0, 2, 128, 0)),
        (("send", "a", b"still", 0), OK),
        (("getattr", "a"), attrs(0, 4, 64, 2)),
        (("receive", "a", 64), (b"old", 1)),
        (("receive", "a", 64), (b"still", 0)),
        (("status", "/q"), status(0)),
    ),
    sc(
        "no_rename_link_symlink_mknod",
        "rename, link, symlink and mknod (a fifo) in the mount → EPERM, after the VFS's own "
        "EEXIST (the name exists) and ENOENT (the source does not); the queue stays",
        create(),
        create("b", "/q2"),
        (("rename", "/q", "/r"), "EPERM"),
        (("rename", "/q", "/q2"), "EPERM"),
        (("link", "/q", "/l"), "EPERM"),
        (("symlink", "/q", "/s"), "EPERM"),
        (("mknod", "/n"), "EPERM"),
        (("symlink", "/x", "/q"), "EEXIST"),
        (("mknod", "/q"), "EEXIST"),
        (("rename", "/none", "/r"), "ENOENT"),
        (("open", "c", "/r", RDWR), "ENOENT"),
        (("send", "a", b"x", 0), OK),
        (("open", "d", "/q", RDWR), OK),
        (("receive", "d", 64), (b"x", 0)),
    ),
    sc(
        "times_change_on_send_and_receive",
        "the queue file's mtime and ctime change on send and on receive",
        create(),
        (("age", "/q"), OK),
        (("send", "a", b"x", 0), OK),
        (("times", "/q"), ("mtime changed", "ctime changed")),
        (("age", "/q"), OK),
        (("receive", "a", 64), (b"x", 0)),
        (("times", "/q"), ("mtime changed", "ctime changed")),
    ),
    sc(
        "times_change_on_notify",
        "mq_notify changes the queue file's ctime (and atime) but not its mtime",
        create(),
        (("age", "/q"), OK),
        (("notify", "a", SIGEV_NONE), OK),
        (("times", "/q"), ("mtime same", "ctime changed")),
        (("age", "/q"), OK),
        (("notify", "a", None), OK),
        (("times", "/q"), ("mtime same", "ctime changed")),
    ),
    sc(
        "poll",
        "poll: POLLIN|POLLRDNORM when a message waits, POLLOUT|POLLWRNORM when not full",
        create(attr=(2, 64)),
        (("open", "r", "/q", RDONLY), OK),
        (("poll", "a"), ("POLLOUT", "POLLWRNORM")),
        (("send", "a", b"x", 0), OK),
        (("poll", "a"), ("POLLIN", "POLLRDNORM", "POLLOUT", "POLLWRNORM")),
        (("send", "a", b"y", 0), OK),
        (("poll", "a"), ("POLLIN", "POLLRDNORM")),
        (("poll", "r"), ("POLLIN", "POLLRDNORM")),
    ),
]

BLOCKING = [
    sc(
        "blocked_receiver_woken",
        "a receiver blocked on an empty queue is woken by a send from another process",
        create(),
        (("spawn", "c", [("open", "x", "/q", RDONLY), ("receive", "x", 64)]), OK),
        (("wait_blocked", "c"), "blocked"),
        (("send", "a", b"wake", 5), OK),
        (("join", "c"), (OK, (b"wake", 5))),
        (("getattr", "a"), attrs(0, 4, 64, 0)),
    ),
    sc(
        "blocked_sender_woken",
        "a sender blocked on a full queue is woken by a receive in another process",
        create(attr=(2, 64)),
        *fill("a", 2),
        (("spawn", "c", [("open", "x", "/q", WRONLY), ("send", "x", b"late", 1)]), OK),
        (("wait_blocked", "c"), "blocked"),
        (("receive", "a", 64), (b"m0", 0)),
        (("join", "c"), (OK, OK)),
        (("receive", "a", 64), (b"late", 1)),
        (("receive", "a", 64), (b"m1", 0)),
    ),
    sc(
        "several_blocked_receivers",
        "several blocked receivers get one message each, none twice, none lost",
        create(),
        *[
            pair
            for c in ("c1", "c2", "c3")
            for pair in (
                (("spawn", c, [("open", "x", "/q", RDONLY), ("receive", "x", 64)]), OK),
                (("wait_blocked", c), "blocked"),
            )
        ],
        *[(("send", "a", b"m%d" % i, i), OK) for i in range(3)],
        (("join_all", ("c1", "c2", "c3")), ((b"m0", 0), (b"m1", 1), (b"m2", 2))),
        (("getattr", "a"), attrs(0, 4, 64, 0)),
    ),
    sc(
        "interrupted_receiver",
        "a signal (raising handler) to a blocked receiver gives EINTR; nothing is lost",
        create(),
        (
            ("spawn", "c", [("handler", USR1), ("open", "x", "/q", RDONLY), ("receive", "x", 64)]),
            OK,
        ),
        (("wait_blocked", "c"), "blocked"),
        (("kill", "c", USR1), OK),
        (("join", "c"), (OK, OK, "EINTR")),
        (("send", "a", b"kept", 0), OK),
        (("getattr", "a"), attrs(0, 4, 64, 1)),
        (("receive", "a", 64), (b"kept", 0)),
    ),
    sc(
        "interrupted_sender",
        "a signal (raising handler) to a blocked sender gives EINTR; nothing is sent",
        create(attr=(1, 64)),
        *fill("a", 1),
        (
            ("spawn", "c", [("handler", USR1), ("open", "x", "/q", WRONLY), ("send", "x", b"no")]),
            OK,
        ),
        (("wait_blocked", "c"), "blocked"),
        (("kill", "c", USR1), OK),
        (("join", "c"), (OK, OK, "EINTR")),
        (("receive", "a", 64), (b"m0", 0)),
        (("getattr", "a"), attrs(0, 1, 64, 0)),
    ),
]


def as_nobody(*steps: Step) -> Step:
    return ("run", "u", [("setuid", NOBODY, NOBODY), *steps])


PERMISSIONS = [
    sc(
        "permissions_mode",
        "opens are checked against the queue's mode (EACCES for another user); chmod works",
        (("umask", 0), OK),
        create(),
        (("owner", "/q"), ("0o600", 0, 0)),
        (
            as_nobody(("open", "x", "/q", RDONLY), ("open", "y", "/q", WRONLY)),
            (OK, "EACCES", "EACCES"),
        ),
        (("chmod", "/q", 0o604), OK),
        (("owner", "/q"), ("0o604", 0, 0)),
        (as_nobody(("open", "x", "/q", RDONLY), ("open", "y", "/q", WRONLY)), (OK, OK, "EACCES")),
        (("chmod", "/q", 0o602), OK),
        (as_nobody(("open", "x", "/q", WRONLY), ("open", "y", "/q", RDWR)), (OK, OK, "EACCES")),
    ),
    sc(
        "permissions_owner",
        "chown gives the queue to another user, whose opens then follow the owner bits",
        (("umask", 0), OK),
        create(),
        (as_nobody(("open", "x", "/q", RDWR)), (OK, "EACCES")),
        (("chown", "/q", NOBODY, NOBODY), OK),
        (("owner", "/q"), ("0o600", NOBODY, NOBODY)),
        (as_nobody(("open", "x", "/q", RDWR), ("send", "x", b"hi", 1)), (OK, OK, OK)),
        (("receive", "a", 64), (b"hi", 1)),
    ),
]

SCENARIOS: list[Scenario] = [
    *OPEN_CREATE,
    *SEND,
    *RECEIVE,
    *ATTRIBUTES,
    *NOTIFY,
    *LIFETIME,
    *BLOCKING,
    *PERMISSIONS,
]

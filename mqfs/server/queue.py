"""POSIX message-queue semantics over the store: limits, descriptors, blocking, hand-off.

This is the layer the kernel's ``ipc/mqueue.c`` calls ``do_mq_timedsend`` /
``do_mq_timedreceive``; it knows trio but not pyfuse3. The filesystem maps each open
file to a :class:`Descriptor` (the kernel's ``struct file``: access mode, O_NONBLOCK)
and each directory to a :class:`Queue` (the kernel's ``mqueue_inode_info``).

Waiting, and why it is written this way
---------------------------------------
Blocked receivers and senders park in FIFO lists with
``trio.lowlevel.wait_task_rescheduled``, like trio's own memory channels. A send that
finds a receiver waiting hands the message straight to it (the kernel's
``pipelined_send``), and a receive that frees a slot admits the first waiting sender's
message (``pipelined_receive``). Hand-off makes the outcome of a race with
cancellation unambiguous: either the waiter's abort function runs (it is still in the
list, nothing was taken, the caller sees EINTR or ETIMEDOUT) or it was already
rescheduled with a message (it gets the message; the abort cannot run). A message is
therefore never in two places and never in none. Callers must not checkpoint between
getting a message and handing it back to the kernel, or a FUSE interrupt could cancel
them with the message in hand; :mod:`mqfs.server.ops` replies synchronously.

Check order follows ``do_mq_timedsend``/``do_mq_timedreceive``: timeout validity,
priority, descriptor direction, length, then full/empty (EAGAIN or sleep), then
ETIMEDOUT.

Durable state
-------------
With ``-o state=DIR`` the namespace has a :class:`Journal` (:mod:`mqfs.server.state`),
and every named queue a reference to it; without, ``journal`` is None and nothing else
happens. It is told of each change at its commit point, before the change is made, so
that a failed write changes nothing: a queue created (:meth:`Namespace.create`), its mode,
owner or times changed (:meth:`Queue.set_attributes`), its name unlinked
(:meth:`Namespace.unlink`, after which the queue is no longer journaled), a message
entering the store (:meth:`Queue._enqueue`) and the head leaving it, with the blocked
sender it admits (:meth:`Queue._dequeue`), and a message taken out of the middle with
the sender it admits (:meth:`Queue.remove`). A hand-off to a waiting receiver is not
journaled (its net effect is none; see :mod:`mqfs.server.journal`). With ``state_sync``
a send, receive or removal returns only once an fsync covers its record
(:meth:`Descriptor.send`, :meth:`Descriptor.receive`, :meth:`Descriptor.remove`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

import outcome
import trio

from mqfs import errors, fastq, wire
from mqfs.posix import MQ_PRIO_MAX, SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD, check_name
from mqfs.server.mapped import MappedStore, MappingDirectory
from mqfs.server.store import Message, MessageStore
from mqfs.wire import NOTIFY_ENDED, NOTIFY_FIRED, Run

log = logging.getLogger(__name__)

WATCH_SLICE = 0.5
"""Seconds a fast-path queue's watch thread sleeps on the mapping before it looks whether
the daemon still needs it (a change wakes it at once)."""
_MAPPING_WATCHERS = trio.CapacityLimiter(math.inf)
"""One thread per watched fast-path queue (queues_max bounds them), none from the default
limiter that the journal's fsync uses."""

HARD_MSGMAX = 65536
HARD_MSGSIZEMAX = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The mount's counterpart of /proc/sys/fs/mqueue/*."""

    msg_default: int = 10
    msgsize_default: int = 8192
    msg_max: int = 10
    msgsize_max: int = 8192
    queues_max: int = 256
    # Callers one user may have blocked in send, receive or WAIT at once (EAGAIN past it).
    # The kernel has no such cap, but each blocked caller holds a task and a request
    # buffer in the daemon; per user, so that one user can never block another.
    blocked_max: int = 4096
    # Charge each queue's memory to its creator's RLIMIT_MSGQUEUE (EMFILE), as the kernel.
    enforce_rlimit: bool = True

    def __post_init__(self) -> None:
        bounds = {
            "msg_max": (1, HARD_MSGMAX),
            "msg_default": (1, HARD_MSGMAX),
            "msgsize_max": (128, HARD_MSGSIZEMAX),
            "msgsize_default": (128, HARD_MSGSIZEMAX),
            "queues_max": (0, 1 << 30),
            "blocked_max": (1, 1 << 20),
        }
        for name, (low, high) in bounds.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise errors.InvalidArgument(f"{name}={value} is outside {low}..{high}")

    def default_attributes(self) -> tuple[int, int]:
        """(maxmsg, msgsize) for a queue created without attributes, as the kernel."""
        return min(self.msg_default, self.msg_max), min(self.msgsize_default, self.msgsize_max)

    def check_attributes(self, maxmsg: int, msgsize: int, privileged: bool = False) -> None:
        """The kernel's ``mq_attr_ok``: a caller with CAP_SYS_RESOURCE (*privileged*) is
        held to the hard limits only, anyone else to msg_max and msgsize_max."""
        if maxmsg <= 0 or msgsize <= 0:
            raise errors.InvalidArgument("mq_maxmsg and mq_msgsize must be positive")
        if privileged:
            if maxmsg > HARD_MSGMAX or msgsize > HARD_MSGSIZEMAX:
                raise errors.InvalidArgument(
                    f"maxmsg {maxmsg} > {HARD_MSGMAX} or msgsize {msgsize} > {HARD_MSGSIZEMAX}"
                )
            return
        if maxmsg > self.msg_max or msgsize > self.msgsize_max:
            raise errors.InvalidArgument(
                f"maxmsg {maxmsg} > msg_max {self.msg_max} or "
                f"msgsize {msgsize} > msgsize_max {self.msgsize_max}"
            )


def deadline_from_timespec(tv_sec: int, tv_nsec: int) -> float:
    """Turn an absolute CLOCK_REALTIME timespec into a trio deadline (EINVAL if invalid)."""
    if tv_sec < 0 or not 0 <= tv_nsec < 1_000_000_000:
        raise errors.InvalidArgument("invalid timespec")
    remaining = tv_sec + tv_nsec / 1e9 - time.clock_gettime(time.CLOCK_REALTIME)
    return trio.current_time() + remaining


@dataclass(slots=True)
class _Waiter:
    task: trio.lowlevel.Task
    message: Message | None = None  # what a blocked sender wants to enqueue
    caller: Caller | None = None  # who is waiting: the last sender or receiver once served


@dataclass(frozen=True, slots=True)
class _MappingCaller:
    """The process behind a change made straight in a fast-path queue's mapping."""

    pid: int
    uid: int

    @classmethod
    def of(cls, pid: int, owner_uid: int) -> _MappingCaller | None:
        if not pid:
            return None
        try:
            return cls(pid, os.stat(f"/proc/{pid}").st_uid)
        except OSError:  # gone already: it ran as the owner (or root)
            return cls(pid, owner_uid)


def _tid(caller: Caller | None) -> int:
    """The thread id of *caller* (0 when there is none: a call from inside the daemon)."""
    return caller.pid if caller is not None else 0


@dataclass(frozen=True, slots=True, eq=False)  # by identity: a key of Descriptor.blocked
class Blocked:
    """A caller parked on a :class:`Descriptor`: in what (``send``, ``receive`` or
    ``wait``), since when (wall-clock ns) and which thread (FUSE gives thread ids)."""

    direction: str
    since_ns: int
    tid: int


class PerUser(dict[int, int]):
    """A running total per uid: 0 for a uid never seen, and a uid whose total returns to
    0 is dropped, so the dict holds only the users who hold something now."""

    __slots__ = ()

    def __missing__(self, uid: int) -> int:
        return 0

    def add(self, uid: int, amount: int) -> None:
        total = self[uid] + amount
        if total:
            self[uid] = total
        else:
            self.pop(uid, None)


class BlockedCallers:
    """How many callers each user has parked right now, capped per user.

    Every blocked caller holds one of the daemon's request tasks until it is answered;
    the cap keeps one user from tying up the daemon's memory, and being per user it
    never makes anyone else wait. Over the cap a call fails with EAGAIN at once.
    """

    __slots__ = ("by_uid", "per_user")

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.by_uid = PerUser()

    def admit(self, uid: int) -> None:
        count = self.by_uid[uid]
        if count >= self.per_user:
            raise errors.WouldBlock(
                f"user {uid} already has {count} callers blocked on this mount (blocked_max)"
            )
        self.by_uid.add(uid, 1)

    def leave(self, uid: int) -> None:
        self.by_uid.add(uid, -1)


_NSIG = 64  # signals 0.._NSIG are valid_signal() in the kernel


class Caller(Protocol):
    """Who makes a request: its (thread) id and user id. pyfuse3's RequestContext is one."""

    @property
    def pid(self) -> int: ...

    @property
    def uid(self) -> int: ...


@dataclass(slots=True, eq=False)
class ThreadWaiter:
    """The waiting half of a SIGEV_THREAD registration.

    The kernel tells glibc through a netlink socket; mqfs tells whoever waits in the
    NOTIFY_WAIT ioctl (the shim's helper thread). The outcome is kept until it is
    collected, so a registration that fires (or ends) before its waiter parks is not lost.
    """

    value: int
    outcome: int = 0  # 0 while registered, then wire.NOTIFY_FIRED or wire.NOTIFY_ENDED
    task: trio.lowlevel.Task | None = None  # the parked waiter, if any

    def settle(self, outcome: int) -> None:
        if not self.outcome:
            self.outcome = outcome
            self.wake()

    def wake(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            trio.lowlevel.reschedule(task)


@dataclass(slots=True)
class Notification:
    """An mq_notify registration: *pid* is the registered process (its tgid); a
    SIGEV_THREAD one has its *waiter*."""

    pid: int
    sigev_notify: int
    signo: int = 0
    value: int = 0
    waiter: ThreadWaiter | None = None


Notifier = Callable[[Notification, Caller | None], None]
"""Delivers a registration that fired; *Caller* is the sender of the message."""


class Journal(Protocol):
    """Where a namespace's changes are recorded before they are made (``-o state=DIR``).

    Each method is called at a commit point, before the change: one that raises (a
    :class:`~mqfs.errors.StateError`) leaves everything as it was, and the caller gets
    its errno. *sync* says whether replies wait for :meth:`settled`.
    """

    sync: bool

    def created(self, queue: Queue) -> None: ...
    def changed(
        self, queue: Queue, mode: int, uid: int, gid: int, times: tuple[int, int, int]
    ) -> None: ...
    def removed(self, queue: Queue) -> None: ...
    def sent(self, queue: Queue, message: Message) -> None: ...
    def received(self, queue: Queue, admitted: Message | None) -> None: ...
    def discarded(self, queue: Queue, index: int, admitted: Message | None) -> None: ...
    async def settled(self) -> None:
        """Return once everything recorded so far is on disk (fsync); not cancellable."""


@dataclass(slots=True, eq=False)
class Queue:
    """One message queue: attributes, messages, waiters and who watches it."""

    name: str
    qid: int
    maxmsg: int
    msgsize: int
    mode: int
    uid: int
    gid: int
    store: MessageStore | MappedStore = field(default_factory=MessageStore)
    notification: Notification | None = None
    unlinked: bool = False
    atime: int = field(default_factory=time.time_ns)
    mtime: int = 0
    ctime: int = 0
    _receivers: dict[int, _Waiter] = field(default_factory=dict)
    _senders: dict[int, _Waiter] = field(default_factory=dict)
    _next_key: int = 0
    # Called once, with no arguments, the next time readiness may have changed (poll
    # wake-ups, WAIT, cache invalidation); keyed so that whoever stops caring removes it.
    # The flag marks watchers (WAIT) that also want every other change: unlink, mode or
    # owner. Those happen under the kernel's lock on the queue's directory, so the
    # readiness watchers, which may invalidate the kernel's cache of it, must not run.
    _watchers: dict[int, tuple[Callable[[], Any], bool]] = field(default_factory=dict)
    notifier: Notifier | None = None
    blocked: BlockedCallers | None = None  # the namespace's per-user cap on waiting
    # Bumped by every change the daemon makes or sees: send, receive, removal, mode or
    # owner, unlink (see change_kind); the `generation` property adds a fast-path
    # queue's own counter, which moves with every change by anyone.
    _generation: int = 0
    meta_time: int = 0
    owner_uid: int = 0  # the user charged for this queue's memory (RLIMIT_MSGQUEUE)
    references: int = 0  # open descriptors: the queue is destroyed at unlinked and 0
    closing: bool = False  # the daemon is stopping: every wait ends with ENOTCONN
    journal: Journal | None = None  # -o state=DIR, while the queue has its name
    # The last change, for `mqfs watch`: its kind (a key of CHANGES), the caller's thread
    # id (0: the daemon itself) and when (wall-clock ns). Plain fields, set on every send.
    change_kind: str = ""
    change_tid: int = 0
    change_ns: int = 0
    # lsipc's LSPID and LRPID: the threads of the last send and receive (0: none yet).
    # Thread ids: the process is looked up only when someone asks (processes.tgid_of).
    last_send_tid: int = 0
    last_receive_tid: int = 0
    # A fast-path queue (MappedStore): whether the mapping is told to wake the daemon
    # (and whether a notification is armed in it), the watch task's state, and the
    # mapping's generation the daemon last acted on. See _update_interest.
    _interest: tuple[bool, bool] = (False, False)
    _watching: bool = False
    _seen_mapping: int = 0  # a new mapping's; a restored queue's is read (restore)
    # True while the daemon acts on such a change (_reconcile): no request of the queue
    # file is in progress, so the kernel may hold any lock (see inodes.CachedViews).
    changed_outside: bool = False
    _seen_count: int = 0

    def __post_init__(self) -> None:
        self.mtime = self.ctime = self.atime
        # Times of the directory views (MNT/NAME/, msgs/): creation, then mode/owner
        # changes only, so the kernel may cache them; the queue file carries the rest.
        self.meta_time = self.atime

    # -- state --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.store)

    @property
    def generation(self) -> int:
        """Equal means unchanged (PEEK_BATCH, WAIT, REMOVE and framed replies carry it)."""
        store = self.store
        if isinstance(store, MappedStore):
            state = store.state()
            if not self._interest[0]:  # nothing in the daemon waits on the mapping now
                self._seen_mapping, self._seen_count = state.generation, state.count
            return self._generation + state.generation
        return self._generation

    def file_times(self) -> tuple[int, int, int]:
        """atime, mtime, ctime of the queue file: every send and receive sets all three
        (the kernel's mq_timedsend/receive), those made straight in a fast-path queue's
        mapping too."""
        times = (self.atime, self.mtime, self.ctime)
        store = self.store
        if isinstance(store, MappedStore) and not store.released:
            changed = store.state().change_ns
            return (max(times[0], changed), max(times[1], changed), max(times[2], changed))
        return times

    @property
    def mapped(self) -> MappedStore | None:
        """The fast-path store, if this queue has one."""
        store = self.store
        return store if isinstance(store, MappedStore) else None

    @property
    def _message_journal(self) -> Journal | None:
        """The journal of messages: none for a fast-path queue, whose mapping holds them."""
        return None if isinstance(self.store, MappedStore) else self.journal

    def pinned(self) -> contextlib.AbstractContextManager[None]:
        """What a synchronous block reads of the queue is one instant of it: a fast-path
        queue's mapping is locked meanwhile (nothing in the block may wait)."""
        store = self.store
        return store.pinned() if isinstance(store, MappedStore) else contextlib.nullcontext()

    @property
    def is_full(self) -> bool:
        return len(self.store) >= self.maxmsg

    def set_attributes(self, attr: Any, fields: Any, caller: Caller | None = None) -> None:
        """chmod, chown and utimes (pyfuse3's SetattrFields say which): ctime moves
        always, and the time shown on the queue's directory with its mode and owner; a
        mode or owner change by *caller* is a change watchers see."""
        mode = attr.st_mode & 0o7777 if fields.update_mode else self.mode
        uid = attr.st_uid if fields.update_uid else self.uid
        gid = attr.st_gid if fields.update_gid else self.gid
        atime = attr.st_atime_ns if fields.update_atime else self.atime
        mtime = attr.st_mtime_ns if fields.update_mtime else self.mtime
        ctime = time.time_ns()
        if self.journal is not None:
            self.journal.changed(self, mode, uid, gid, (atime, mtime, ctime))
        if isinstance(self.store, MappedStore) and (uid, gid) != (self.uid, self.gid):
            self.store.chown(uid, gid)
        self.mode, self.uid, self.gid = mode, uid, gid
        self.atime, self.mtime, self.ctime = atime, mtime, ctime
        if fields.update_mode or fields.update_uid or fields.update_gid:
            self.meta_time = self.ctime
            self._note("attributes", caller, ctime)

    def status_line(self) -> bytes:
        """Byte for byte what the kernel's ``mqueue_read_file`` prints."""
        self._mapped_notification(None)  # a send straight into the mapping may have fired it
        note = self.notification
        return (
            "QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d\n"  # noqa: UP031 (the kernel's format)
            % (
                self.store.bytes_queued,
                note.sigev_notify if note else 0,
                note.signo if note and note.sigev_notify == SIGEV_SIGNAL else 0,
                note.pid if note else 0,
            )
        ).encode()

    def peek(self, index: int) -> Message:
        return self.store.peek(index)

    def segments_from(self, index: int, limit: int) -> Iterator[tuple[int, list[bytes]]]:
        """(priority, payloads) runs of *limit* messages from *index* on (no await meanwhile)."""
        return self.store.segments_from(index, limit)

    def add_watcher(self, wake: Callable[[], Any], every_change: bool = False) -> int:
        """Call *wake* once, the next time readiness may have changed (or, with
        *every_change*, anything else: unlink, mode, owner); returns a key for
        :meth:`remove_watcher`."""
        key = self._next_key
        self._next_key += 1
        self._watchers[key] = (wake, every_change)
        self._update_interest()
        return key

    def remove_watcher(self, key: int) -> None:
        """Forget a watcher that has not fired (no error if it has)."""
        self._watchers.pop(key, None)
        self._update_interest()

    async def wait_changed(
        self, generation: int, deadline: float = math.inf, caller: Caller | None = None
    ) -> int:
        """Wait until the queue's generation differs from *generation* (a send, a
        receive, a mode or owner change, the unlink) or *deadline* passes; return the
        generation then. The watcher goes on every exit path."""
        self._check_open()
        if self.generation != generation or deadline <= trio.current_time():
            return self.generation
        task = trio.lowlevel.current_task()
        with self._blocking(caller):  # admitted (or EAGAIN) before anything is registered
            key = self.add_watcher(lambda: trio.lowlevel.reschedule(task), every_change=True)

            def abort(_: Any) -> trio.lowlevel.Abort:
                self.remove_watcher(key)
                return trio.lowlevel.Abort.SUCCEEDED

            with trio.move_on_at(deadline):
                await trio.lowlevel.wait_task_rescheduled(abort)
        self._check_open()
        return self.generation

    def _changed(self, kind: str, tid: int, counted: bool = False) -> None:
        """A send or receive by thread *tid*: readiness may have changed. *counted*: the
        mapping's generation, part of ours, has already moved for it (a change by
        another process), so that ours moves once per change, not again when the
        daemon finds it (which woke a WAIT caller that had already seen it)."""
        store = self.store
        own = store.take_own_changes() if isinstance(store, MappedStore) else 0
        self._absorb_mapping()
        now = time.time_ns()
        self.atime = self.mtime = self.ctime = now
        # The mapping's generation moved once for each of our own changes of it too: ours
        # moves by one in all (as on a plain queue: a receive admitting a sender is one).
        self._generation += (bool(own) or not counted) - own
        self.change_kind, self.change_tid, self.change_ns = kind, tid, now
        self._wake_watchers()

    def _note(self, kind: str, caller: Caller | None, now: int) -> None:
        """Any other change (unlink, mode, owner): only WAIT callers are woken."""
        self._generation += 1
        self.change_kind, self.change_tid, self.change_ns = kind, _tid(caller), now
        for key in [key for key, (_, every) in self._watchers.items() if every]:
            self._watchers.pop(key)[0]()
        self._update_interest()

    def unlinked_by(self, caller: Caller | None) -> None:
        """The queue's name is gone (mq_unlink by *caller*): watchers are told."""
        self.unlinked = True
        self._note("unlink", caller, time.time_ns())

    def _wake_watchers(self) -> None:
        watchers, self._watchers = self._watchers, {}
        for wake, _ in watchers.values():
            wake()
        self._update_interest()

    # -- a fast-path queue: changes the daemon did not make ---------------------------
    # The owner's processes change the mapping without a request. While the daemon has
    # something that depends on the queue (a caller parked here, a watcher: poll, WAIT,
    # a cached msgs/ listing; a notification) it sets the mapping's interest flag, and
    # every change then wakes a thread of the daemon (_watch_mapping), after which
    # _reconcile does what the daemon would have done had the change come through it.
    # With nothing pending the flag is off and the owner's processes never wake the daemon.
    def _update_interest(self) -> None:
        store = self.store
        if not isinstance(store, MappedStore):
            return
        armed = self.notification is not None and not self.closing
        wanted = (bool(self._receivers or self._senders or self._watchers) or armed, armed)
        if wanted == self._interest or (self.closing and not self._interest[0]):
            return
        try:
            note = self.notification
            if wanted[1] and not self._interest[1] and note is not None:
                # The send that fires it delivers it itself where it can (fastq.h); a
                # SIGEV_THREAD registration's waiter is the daemon's to settle.
                pid = 0 if note.sigev_notify == SIGEV_THREAD else note.pid
                store.set_notification(pid, note.sigev_notify, note.signo, note.value)
            store.set_interest(*wanted)
        except errors.MqfsError as exc:  # a corrupt or wedged mapping: its owner's doing
            log.warning("queue %r: cannot reach its mapping: %s", self.name, exc)
            return
        self._interest = wanted
        if wanted[0] and not self._watching:
            self._watching = True
            trio.lowlevel.spawn_system_task(self._watch_mapping, store)

    async def _watch_mapping(self, store: MappedStore) -> None:
        """Wake the queue layer on every change of the mapping while interest is on."""
        try:
            seen = store.state().change_seq
            self._reconcile()
            while self._interest[0] and not self.closing and not store.released:
                changed = await trio.to_thread.run_sync(
                    store.wait_change, seen, WATCH_SLICE, limiter=_MAPPING_WATCHERS
                )
                if changed is not None:
                    seen = changed
                    self._reconcile()
        except errors.MqfsError as exc:
            log.warning("queue %r: stopped watching its mapping: %s", self.name, exc)
        finally:
            self._watching = False

    def _absorb_mapping(self) -> None:
        """Every watcher is being told of the mapping as it is now (or, with interest off,
        nobody waits on it): _reconcile must not report what came before as a change by
        another process. Else a watcher's first reconcile found the daemon's own sends,
        or a change a WAIT caller had already seen, and woke every watcher for nothing."""
        store = self.store
        if isinstance(store, MappedStore):
            with contextlib.suppress(errors.MqfsError):  # reported where it matters
                state = store.state()
                self._seen_mapping, self._seen_count = state.generation, state.count

    def _mapped_notification(self, sender: Caller | None) -> None:
        """A fast-path queue: act on what the mapping says a send did to the armed
        notification: deliver it (*sender* made it fire), or forget it (the sender
        delivered it)."""
        store = self.store
        if not isinstance(store, MappedStore) or self.notification is None:
            return
        outcome = store.take_notify()
        if outcome == fastq.NOTIFY_PENDING:
            self._notify(sender)
        elif outcome == fastq.NOTIFY_FIRED:
            self.notification = None
            self._update_interest()

    def _reconcile(self) -> None:
        """After a change by another process: serve the callers parked in the daemon, fire
        the notification the sender flagged, and tell the watchers."""
        store = self.store
        if not isinstance(store, MappedStore) or self.closing or store.released:
            return
        self.changed_outside = True
        try:
            self._reconcile_mapping(store)
        finally:
            self.changed_outside = False

    def _reconcile_mapping(self, store: MappedStore) -> None:
        state = store.state()
        changed = state.generation != self._seen_mapping
        kind = "send" if state.count > self._seen_count else "receive"
        self._seen_mapping, self._seen_count = state.generation, state.count
        while self._receivers:
            try:
                message = store.pop()
            except errors.WouldBlock:
                break
            self._hand_over(message)
            changed = True
        while self._senders and self._admit_sender():
            changed = True
        daemon = os.getpid()  # the mapping names the daemon for what it did for a caller
        if state.last_sender not in (0, daemon):
            self.last_send_tid = state.last_sender
        if state.last_receiver not in (0, daemon):
            self.last_receive_tid = state.last_receiver
        self._mapped_notification(_MappingCaller.of(state.last_sender, self.uid))
        if changed:
            self._changed(kind, 0, counted=True)
        self._update_interest()

    def close(self) -> None:
        """The daemon is stopping: fail every blocked caller now, and every later wait."""
        self.closing = True
        if isinstance(self.store, MappedStore):
            self.store.wake_all()  # the watch thread ends now, not after its slice
        for waiters in (self._receivers, self._senders):
            parked = list(waiters.values())
            waiters.clear()
            for waiter in parked:
                trio.lowlevel.reschedule(waiter.task, outcome.Error(self._closing_error()))
        self._wake_watchers()  # WAIT callers see `closing` when they resume
        if self.notification is not None and self.notification.waiter is not None:
            self.notification.waiter.wake()  # and so does a NOTIFY_WAIT

    def _closing_error(self) -> errors.MqfsError:
        return errors.MqfsError("mqfs is shutting down", errno_value=errno.ENOTCONN)

    def _check_open(self) -> None:
        if self.closing:
            raise self._closing_error()

    @contextlib.contextmanager
    def _blocking(self, caller: Caller | None) -> Iterator[None]:
        """Count *caller* against its user's cap on blocked callers while it waits."""
        if self.blocked is None or caller is None:
            yield
            return
        self.blocked.admit(caller.uid)
        try:
            yield
        finally:
            self.blocked.leave(caller.uid)

    # -- mq_notify ------------------------------------------------------------
    def register_notification(self, request: Notification) -> None:
        """mq_notify(&sigevent) by process *request.pid*: EBUSY if anyone is registered.
        A SIGEV_THREAD registration gets a :class:`ThreadWaiter` (kept in *request*)."""
        if request.sigev_notify not in (SIGEV_NONE, SIGEV_SIGNAL, SIGEV_THREAD):
            raise errors.InvalidArgument(f"sigev_notify {request.sigev_notify} not supported")
        if request.sigev_notify == SIGEV_SIGNAL and not 0 <= request.signo <= _NSIG:
            raise errors.InvalidArgument(f"invalid signal {request.signo}")
        self._mapped_notification(None)  # fired by a send straight into the mapping?
        if self.notification is not None:
            raise errors.Busy(f"queue {self.name!r} has a notification registered")
        if request.sigev_notify == SIGEV_THREAD:
            request.signo = 0  # the kernel's sigev_signo is glibc's netlink socket
            request.waiter = ThreadWaiter(request.value)
        self.notification = request
        self._touch_metadata()
        self._update_interest()

    def unregister_notification(self, pid: int) -> None:
        """mq_notify(NULL): removes *pid*'s own registration; anyone else's stays (no error)."""
        if self.notification is not None and self.notification.pid == pid:
            self.end_notification()
            self._touch_metadata()

    def closed_by(self, pid: int) -> None:
        """A descriptor of this queue was closed by *pid*: its registration ends (as the
        kernel's mqueue_flush_file)."""
        if self.notification is not None and self.notification.pid == pid:
            self.end_notification()

    def end_notification(self) -> None:
        """The registration goes without firing (its SIGEV_THREAD waiter learns so)."""
        registration, self.notification = self.notification, None
        if registration is not None and registration.waiter is not None:
            registration.waiter.settle(NOTIFY_ENDED)
        self._update_interest()

    async def wait_notification(self, waiter: ThreadWaiter, caller: Caller | None = None) -> int:
        """NOTIFY_WAIT: until the SIGEV_THREAD registration of *waiter* fires or ends
        (NOTIFY_FIRED or NOTIFY_ENDED; at once if it already has). One waiter at a time
        (EBUSY), counted as a blocked caller; ENOTCONN once the daemon is stopping."""
        if not waiter.outcome:
            self._check_open()
            if waiter.task is not None:
                raise errors.Busy("another caller waits for this notification")
            with self._blocking(caller):
                waiter.task = trio.lowlevel.current_task()

                def abort(_: Any) -> trio.lowlevel.Abort:
                    waiter.task = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            if not waiter.outcome:
                self._check_open()
        return waiter.outcome

    def _touch_metadata(self) -> None:
        self.atime = self.ctime = time.time_ns()

    def _notify(self, sender: Caller | None) -> None:
        """The queue went from empty to one message with nobody waiting: fire, once."""
        registration, self.notification = self.notification, None
        if registration is not None and registration.waiter is not None:
            registration.waiter.settle(NOTIFY_FIRED)
        elif registration is not None and self.notifier is not None:
            self.notifier(registration, sender)
        self._update_interest()

    # -- the two halves of every send and receive ----------------------------
    def _enqueue(self, message: Message, sender: Caller | None = None) -> None:
        """Put *message* where it belongs: to a waiting receiver, else into the store."""
        self.last_send_tid = tid = _tid(sender)
        if self._receivers:
            self._hand_over(message)
        elif isinstance(self.store, MappedStore):
            self.store.push(message.payload, message.priority)  # WouldBlock: lost a race
            self._mapped_notification(sender)
        else:
            if self.journal is not None:
                self.journal.sent(self, message)
            self.store.push(message.payload, message.priority)
            if len(self.store) == 1 and self.notification is not None:
                self._notify(sender)
        self._changed("send", tid)

    def _dequeue(self, caller: Caller | None = None) -> Message:
        journal = self._message_journal
        if journal is not None:
            journal.received(self, self._next_admitted())
        message = self.store.pop()  # a fast-path queue's WouldBlock: lost a race
        self.last_receive_tid = tid = _tid(caller)
        self._refill("receive", tid)
        return message

    def _next_admitted(self) -> Message | None:
        """The message of the sender a freed slot admits: the longest-waiting one's."""
        return next(iter(self._senders.values())).message if self._senders else None

    def _refill(self, kind: str, tid: int) -> None:
        """A message left the store (*kind*, by thread *tid*): admit the longest-waiting
        sender into the free slot (the kernel's ``pipelined_receive``), then tell
        whoever watches."""
        if self._senders:
            self._admit_sender()
        self._changed(kind, tid)

    def _hand_over(self, message: Message) -> None:
        """Give *message* to the longest-waiting receiver (the kernel's pipelined_send)."""
        waiter = self._receivers.pop(next(iter(self._receivers)))
        self.last_receive_tid = _tid(waiter.caller)
        trio.lowlevel.reschedule(waiter.task, outcome.Value(message))

    def _admit_sender(self) -> bool:
        """Put the longest-waiting sender's message into the store and wake it (the
        kernel's pipelined_receive); False if another process of a fast-path queue took
        the slot first (the sender waits on)."""
        key = next(iter(self._senders))
        waiter = self._senders[key]
        assert waiter.message is not None
        try:
            self.store.push(waiter.message.payload, waiter.message.priority)
        except errors.WouldBlock:
            return False
        del self._senders[key]
        self.last_send_tid = _tid(waiter.caller)
        trio.lowlevel.reschedule(waiter.task, outcome.Value(None))
        return True

    async def _park(
        self,
        waiters: dict[int, _Waiter],
        waiter: _Waiter,
        deadline: float,
        caller: Caller | None,
    ) -> Any:
        self._check_open()
        key = self._next_key
        self._next_key += 1
        with self._blocking(caller):
            waiters[key] = waiter
            self._update_interest()

            def abort(_: Any) -> trio.lowlevel.Abort:
                del waiters[key]
                self._update_interest()
                return trio.lowlevel.Abort.SUCCEEDED

            with trio.move_on_at(deadline):
                return await trio.lowlevel.wait_task_rescheduled(abort)
        raise errors.TimedOut("timed out waiting on the queue")

    # -- operations (called through a Descriptor) ---------------------------
    def send_nowait(self, payload: bytes, priority: int, sender: Caller | None = None) -> None:
        if self.is_full:
            raise errors.WouldBlock(f"queue {self.name!r} is full")
        self._enqueue(Message(payload, priority), sender)

    async def send(
        self, payload: bytes, priority: int, deadline: float, sender: Caller | None = None
    ) -> None:
        if not self.is_full:
            try:
                self._enqueue(Message(payload, priority), sender)
                return
            except errors.WouldBlock:  # a fast-path queue filled meanwhile: wait
                pass
        if deadline <= trio.current_time():
            raise errors.TimedOut("timed out waiting on the queue")
        waiter = _Waiter(trio.lowlevel.current_task(), Message(payload, priority), sender)
        await self._park(self._senders, waiter, deadline, sender)

    def receive_nowait(self, caller: Caller | None = None) -> Message:
        if not self.store:
            raise errors.WouldBlock(f"queue {self.name!r} is empty")
        return self._dequeue(caller)

    async def receive(self, deadline: float, caller: Caller | None = None) -> Message:
        if self.store:
            try:
                return self._dequeue(caller)
            except errors.WouldBlock:  # a fast-path queue emptied meanwhile: wait
                pass
        if deadline <= trio.current_time():
            raise errors.TimedOut("timed out waiting on the queue")
        waiter = _Waiter(trio.lowlevel.current_task(), caller=caller)
        message: Message = await self._park(self._receivers, waiter, deadline, caller)
        return message

    def remove(self, index: int, generation: int, caller: Caller | None = None) -> Message:
        """Take message *index* (receive order) out of the queue, wherever it is, if the
        queue is still at *generation*: ESTALE if it is not (the index may name another
        message by now), then ENOENT past the last message. What a receive does after it
        takes the head follows: a blocked sender is admitted, the generation moves on
        and watchers (poll, WAIT, cached ``msgs/``) are told. Never waits."""
        if isinstance(self.store, MappedStore):
            return self._remove_mapped(self.store, index, generation, caller)
        if generation != self.generation:
            raise self._changed_since(generation)
        if not 0 <= index < len(self.store):
            raise errors.NoSuchMessage(
                f"queue {self.name!r} has no message {index} (it holds {len(self.store)})"
            )
        if self.journal is not None:
            self.journal.discarded(self, index, self._next_admitted())
        message = self.store.remove(index)
        self._refill("remove", _tid(caller))
        return message

    def _changed_since(self, generation: int) -> errors.QueueChanged:
        return errors.QueueChanged(
            f"queue {self.name!r} is at generation {self.generation}, not {generation}: "
            "it changed, so nothing was removed"
        )

    def _remove_mapped(
        self, store: MappedStore, index: int, generation: int, caller: Caller | None
    ) -> Message:
        """:meth:`remove` on a fast-path queue: the mapping checks its part of the
        generation and removes in one step."""
        mapping_generation = generation - self._generation
        if mapping_generation <= 0:
            raise self._changed_since(generation)
        try:
            message = store.remove(index, mapping_generation)
        except errors.QueueChanged:
            raise self._changed_since(generation) from None
        self._refill("remove", _tid(caller))
        return message

    # -- batches (framed I/O): as many one-by-one calls, without their requests ----
    def send_many_nowait(self, runs: list[Run], sender: Caller | None = None) -> int:
        """Send the messages of *runs* in order, as many as fit without waiting, exactly
        as that many :meth:`send_nowait` calls would: first to waiting receivers, then
        into the store a run at a time. Returns how many were sent."""
        if isinstance(self.store, MappedStore):
            return self._send_many_mapped(runs, sender)
        sent = 0
        room = self.maxmsg - len(self.store)
        store = self.store
        for priority, payloads in runs:
            count = len(payloads)
            if count <= room and self.journal is None and not self._receivers:
                # The common case, without a step per message (nor per run) to spare.
                was_empty = not store
                if count == 1:
                    store.push(payloads[0], priority)
                else:
                    store.push_run(payloads, priority)
                room -= count
                sent += count
                if was_empty and self.notification is not None:
                    self._notify(sender)
                continue
            position = 0
            while self._receivers and position < len(payloads):
                # Receivers wait only on an empty store: hand over, one each.
                self._enqueue(Message(payloads[position], priority), sender)
                position += 1
            take = max(0, min(len(payloads) - position, room))
            part = payloads if take == len(payloads) else payloads[position : position + take]
            journaled = self._journal_sent(part, priority, first=not sent and not position)
            if part:
                was_empty = not self.store
                self.store.push_run(part if journaled == len(part) else part[:journaled], priority)
                if was_empty and journaled and self.notification is not None:
                    self._notify(sender)
            room -= journaled
            sent += position + journaled
            if position + journaled < len(payloads):
                break
        if sent:
            self.last_send_tid = tid = _tid(sender)
            self._changed("send", tid)
        return sent

    def _send_many_mapped(self, runs: list[Run], sender: Caller | None) -> int:
        """:meth:`send_many_nowait` on a fast-path queue: one at a time, each a send that
        may find the queue filled by another process (the batch ends there)."""
        sent = 0
        for priority, payloads in runs:
            for payload in payloads:
                try:
                    self._enqueue(Message(payload, priority), sender)
                except errors.WouldBlock:
                    return sent
                sent += 1
        return sent

    def _journal_sent(self, payloads: list[bytes], priority: int, first: bool) -> int:
        """Journal *payloads* as sent; how many were (a refusal of the batch's very first
        message raises, as its mq_send would; a later one ends the batch short)."""
        journal = self.journal
        if journal is None:
            return len(payloads)
        for journaled, payload in enumerate(payloads):
            try:
                journal.sent(self, Message(payload, priority))
            except errors.MqfsError:
                if first and not journaled:
                    raise
                return journaled
        return len(payloads)

    def receive_many_nowait(
        self, capacity: int, limit: int, caller: Caller | None = None
    ) -> list[Run]:
        """Receive at most *limit* messages from the head whose frames
        (:func:`mqfs.wire.record_size` each) fit *capacity* bytes, exactly as that many
        :meth:`receive_nowait` calls would; none if the head does not fit."""
        if self._senders or isinstance(self.store, MappedStore):
            return self._receive_each(capacity, limit, caller)
        count = self.count_fitting(0, capacity, limit)
        if not count:
            return []
        if self.journal is not None:
            for _ in range(count):
                self.journal.received(self, None)
        runs = self.store.pop_front(count)
        self.last_receive_tid = tid = _tid(caller)
        self._changed("receive", tid)
        return runs

    def count_fitting(self, index: int, capacity: int, limit: int) -> int:
        """How many messages from *index* on (at most *limit*) fit a framed reply's
        *capacity* bytes. The runs are looked at in windows sized by the length of the
        first message of each, so that a long run is not copied beyond what fits."""
        store = self.store
        count = used = 0
        while count < limit and index + count < len(store):
            first = wire.record_size(len(store.peek(index + count).payload))
            window = min(limit - count, (capacity - used) // first + 1)
            got, size = wire.fitting(store.segments_from(index + count, window), capacity - used)
            count += got
            used += size
            if got < window:
                break
        return count

    def _receive_each(self, capacity: int, limit: int, caller: Caller | None) -> list[Run]:
        """:meth:`receive_many_nowait` one message at a time: each may admit a blocked
        sender, whose message can be the next one received."""
        runs: list[Run] = []
        taken = 0
        store = self.store
        while taken < limit:
            if isinstance(store, MappedStore):
                # The head may change between a look and a take: take it only if it fits.
                if capacity < wire.record_size(0):
                    break
                try:
                    fitting = store.pop_fitting(capacity - wire.record_size(0))
                except errors.WouldBlock:
                    break
                if fitting is None:
                    break
                message = fitting
                self.last_receive_tid = tid = _tid(caller)
                self._refill("receive", tid)
            else:
                if not store:
                    break
                cost = wire.record_size(store.head_length)
                if cost > capacity:
                    break
                message = self._dequeue(caller)
            capacity -= wire.record_size(len(message.payload))
            taken += 1
            if runs and runs[-1][0] == message.priority:
                runs[-1][1].append(message.payload)
            else:
                runs.append((message.priority, [message.payload]))
        return runs

    def statistics(self) -> QueueStatistics:
        return QueueStatistics(
            curmsgs=len(self.store),
            bytes_queued=self.store.bytes_queued,
            receivers_waiting=len(self._receivers),
            senders_waiting=len(self._senders),
        )


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    curmsgs: int
    bytes_queued: int
    receivers_waiting: int
    senders_waiting: int


@dataclass
class Descriptor:
    """An open queue: the kernel's ``struct file`` for an mqueue inode."""

    queue: Queue
    readable: bool
    writable: bool
    nonblock: bool
    pid: int = 0
    send_priority: int = 0  # priority of write(); set with the SETPRIO ioctl
    # Callers parked on this descriptor right now, oldest first, and how many per
    # direction: many threads may share one descriptor (thousands: blocked_max), so
    # entering, leaving and reporting cost O(1) each.
    blocked: dict[Blocked, None] = field(default_factory=dict)
    blocked_counts: dict[str, int] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        """How many callers are parked on this descriptor right now."""
        return len(self.blocked)

    def oldest_blocked(self) -> Blocked | None:
        """The caller parked longest on this descriptor, or None."""
        return next(iter(self.blocked), None)

    @contextlib.contextmanager
    def _parked(self, direction: str, caller: Caller | None) -> Iterator[None]:
        """Record *caller* as blocked in *direction* while it waits (`mqfs who`)."""
        entry = Blocked(direction, time.time_ns(), _tid(caller))
        counts = self.blocked_counts
        self.blocked[entry] = None
        counts[direction] = counts.get(direction, 0) + 1
        try:
            yield
        finally:
            del self.blocked[entry]
            left = counts.pop(direction) - 1
            if left:
                counts[direction] = left

    async def _settled(self) -> None:
        """With ``state_sync``, return once an fsync covers what was just recorded (a
        send, receive or removal is answered only then); otherwise at once."""
        journal = self.queue.journal
        if journal is not None and journal.sync:
            await journal.settled()

    def _check_priority(self, priority: int) -> None:
        if not 0 <= priority < MQ_PRIO_MAX:
            raise errors.InvalidArgument(f"priority {priority} is not below {MQ_PRIO_MAX}")

    async def send(
        self,
        payload: bytes,
        priority: int,
        deadline: float = math.inf,
        sender: Caller | None = None,
    ) -> None:
        """mq_timedsend: EINVAL (priority), EBADF, EMSGSIZE, then EAGAIN or wait."""
        self._check_priority(priority)
        if not self.writable:
            raise errors.BadDescriptor("queue descriptor is not open for writing")
        self.check_send_length(len(payload))
        if self.nonblock:
            self.queue.send_nowait(payload, priority, sender)
        elif not self.queue.is_full and self._sent_now(payload, priority, sender):
            pass
        else:
            with self._parked("send", sender):
                await self.queue.send(payload, priority, deadline, sender)
        await self._settled()

    def _sent_now(self, payload: bytes, priority: int, sender: Caller | None) -> bool:
        """Send without waiting; False if a fast-path queue filled meanwhile (wait then)."""
        try:
            self.queue.send_nowait(payload, priority, sender)
        except errors.WouldBlock:
            if self.queue.mapped is None:
                raise
            return False
        return True

    def set_send_priority(self, priority: int) -> None:
        self._check_priority(priority)
        self.send_priority = priority

    def check_send(self, length: int, priority: int) -> None:
        """The checks of :meth:`send` that do not need the payload (for staged sends)."""
        self._check_priority(priority)
        if not self.writable:
            raise errors.BadDescriptor("queue descriptor is not open for writing")
        self.check_send_length(length)

    def check_send_now(self, length: int, priority: int) -> None:
        """The checks of a send that would not wait, before the payload is all there (a
        staged multi-chunk send): those of :meth:`check_send`, then EAGAIN on a full
        O_NONBLOCK queue."""
        self.check_send(length, priority)
        if self.nonblock and self.queue.is_full:
            raise errors.WouldBlock(f"queue {self.queue.name!r} is full")

    def refuse_pieces(self, piece: int, largest: int) -> NoReturn:
        """A write() that reaches the queue in pieces (this one *piece* bytes) would become
        several messages: refuse it whole, after the checks of a send (EBADF first)."""
        self.check_send(piece, self.send_priority)
        raise errors.MessageTooLong(
            f"this write() reaches mqfs in pieces (this one {piece} bytes), so it would not "
            f"be one message; write at most {largest} bytes from one buffer, or use the "
            "SEND ioctl"
        )

    def check_send_length(self, length: int) -> None:
        if length > self.queue.msgsize:
            raise errors.MessageTooLong(
                f"message of {length} bytes is longer than msgsize {self.queue.msgsize}"
            )

    def check_receive(self, bufsize: int) -> None:
        """mq_timedreceive's checks before waiting: EBADF, then EMSGSIZE."""
        if not self.readable:
            raise errors.BadDescriptor("queue descriptor is not open for reading")
        if bufsize < self.queue.msgsize:
            raise errors.MessageTooLong(
                f"buffer of {bufsize} bytes is smaller than msgsize {self.queue.msgsize}"
            )

    async def receive(
        self, bufsize: int, deadline: float = math.inf, caller: Caller | None = None
    ) -> Message:
        """mq_timedreceive: EBADF, EMSGSIZE (buffer < msgsize), then EAGAIN or wait."""
        self.check_receive(bufsize)
        if self.nonblock:
            message = self.queue.receive_nowait(caller)
        elif (now := self._received_now(caller)) is not None:
            message = now
        else:
            with self._parked("receive", caller):
                message = await self.queue.receive(deadline, caller)
        await self._settled()  # shielded: the message reaches its caller regardless
        return message

    def _received_now(self, caller: Caller | None) -> Message | None:
        """Receive without waiting; None if the queue is empty (a fast-path queue's may
        have emptied between the look and the take)."""
        if not self.queue.store:
            return None
        try:
            return self.queue.receive_nowait(caller)
        except errors.WouldBlock:
            if self.queue.mapped is None:
                raise
            return None

    async def wait_changed(
        self, generation: int, deadline: float = math.inf, caller: Caller | None = None
    ) -> int:
        """The WAIT ioctl: :meth:`Queue.wait_changed`, shown as blocked in ``wait``."""
        with self._parked("wait", caller):
            return await self.queue.wait_changed(generation, deadline, caller)

    async def remove(
        self, index: int, generation: int, caller: Caller | None = None
    ) -> tuple[Message, int]:
        """Remove message *index* if the queue is at *generation* (:meth:`Queue.remove`);
        the message and the generation right after the removal (a caller that saw the
        rest of the queue at *generation* may remove another with it, if nothing else
        changed meanwhile).

        Removing consumes a message as a receive does, so it needs what a receive needs:
        a descriptor open for reading (EBADF), checked first; write access is not needed.
        With ``state_sync`` it returns once an fsync covers the removal, as a receive does.
        """
        if not self.readable:
            raise errors.BadDescriptor("queue descriptor is not open for reading")
        message = self.queue.remove(index, generation, caller)
        after = self.queue.generation
        await self._settled()
        return message, after

    async def send_many(self, runs: list[Run], sender: Caller | None = None) -> int:
        """A batch send (framed write): how many messages of *runs* were sent, in order.

        Every message is checked before any is sent, in mq_timedsend's order: EINVAL
        (priority), EBADF, EMSGSIZE. With O_NONBLOCK as many as fit go (EAGAIN if none);
        else all, waiting as a blocked sender for each that finds the queue full. A
        cancellation (the caller's signal) during a wait after some were sent ends the
        batch short: those stay sent and the count says so, nothing is lost or doubled.
        """
        highest = max(priority for priority, _ in runs)
        if highest >= MQ_PRIO_MAX:
            self._check_priority(highest)
        if not self.writable:
            raise errors.BadDescriptor("queue descriptor is not open for writing")
        longest = max(max(map(len, payloads)) for _, payloads in runs)
        self.check_send_length(longest)
        total = sum(len(payloads) for _, payloads in runs)
        queue = self.queue
        sent = queue.send_many_nowait(runs, sender)
        if sent < total and self.nonblock:
            if not sent:
                raise errors.WouldBlock(f"queue {queue.name!r} is full")
        elif sent < total:
            with self._parked("send", sender):
                remaining = _drop(runs, sent)
                while remaining:
                    priority, payloads = remaining[0]
                    try:
                        await queue.send(payloads[0], priority, math.inf, sender)
                    except trio.Cancelled:
                        if not sent:
                            raise
                        break  # interrupted: return what was sent (see the docstring)
                    sent += 1
                    remaining = _drop(remaining, 1)
                    if remaining:
                        more = queue.send_many_nowait(remaining, sender)
                        sent += more
                        remaining = _drop(remaining, more)
        await self._settled()
        return sent

    async def receive_many(
        self, size: int, limit: int = HARD_MSGMAX, caller: Caller | None = None
    ) -> list[Run]:
        """A batch receive (framed read of *size* bytes): EBADF, EMSGSIZE (*size* holds
        no reply of a msgsize message), then at most *limit* messages that fit,
        at least one: it waits (unless O_NONBLOCK: EAGAIN) only for the first."""
        self.check_receive(wire.reply_room(size))
        capacity = size - wire.FRAMES_HEADER_SIZE
        queue = self.queue
        runs = queue.receive_many_nowait(capacity, limit, caller)
        if not runs:
            if self.nonblock:
                raise errors.WouldBlock(f"queue {queue.name!r} is empty")
            with self._parked("receive", caller):
                message = await queue.receive(math.inf, caller)
            # From here on no checkpoint but the (shielded) journal sync.
            runs = [(message.priority, [message.payload])]
            capacity -= wire.record_size(len(message.payload))
            more = queue.receive_many_nowait(capacity, limit - 1, caller) if limit > 1 else []
            if more and more[0][0] == message.priority:
                runs[0][1].extend(more.pop(0)[1])
            runs.extend(more)
        await self._settled()
        return runs

    def peek(self, index: int) -> Message:
        """Non-destructive read of message *index* in receive order (EBADF, EAGAIN, ENOENT)."""
        if not self.readable:
            raise errors.BadDescriptor("queue descriptor is not open for reading")
        return self.queue.peek(index)

    def segments_from(self, index: int, limit: int) -> Iterator[tuple[int, list[bytes]]]:
        """(priority, payloads) runs of *limit* messages from *index* on, for batch peeks:
        EBADF, ENOENT past the end."""
        if not self.readable:
            raise errors.BadDescriptor("queue descriptor is not open for reading")
        if not 0 <= index <= len(self.queue):
            raise errors.NoSuchMessage(f"no message at index {index}")
        return self.queue.segments_from(index, limit)

    def attributes(self) -> tuple[int, int, int, int]:
        """(mq_flags, mq_maxmsg, mq_msgsize, mq_curmsgs) as mq_getattr."""
        flags = os.O_NONBLOCK if self.nonblock else 0
        return flags, self.queue.maxmsg, self.queue.msgsize, len(self.queue)

    def set_flags(self, flags: int) -> None:
        """mq_setattr: only O_NONBLOCK may be set; any other bit is EINVAL."""
        if flags & ~os.O_NONBLOCK:
            raise errors.InvalidArgument("only O_NONBLOCK can be set with mq_setattr")
        self.nonblock = bool(flags & os.O_NONBLOCK)


def _drop(runs: list[Run], count: int) -> list[Run]:
    """*runs* without their first *count* messages."""
    kept = list(runs)
    while count:
        priority, payloads = kept[0]
        if count < len(payloads):
            kept[0] = (priority, payloads[count:])
            break
        count -= len(payloads)
        del kept[0]
    return kept


def memory_charge(maxmsg: int, msgsize: int) -> int:
    """Bytes the kernel charges to RLIMIT_MSGQUEUE for a queue: the payload space plus
    one struct msg_msg (48 bytes) per message and one tree node (48) per priority."""
    return maxmsg * msgsize + maxmsg * 48 + min(maxmsg, MQ_PRIO_MAX) * 48


class Namespace:
    """All queues of one mount, by name: the kernel's ipc namespace for mqueue.

    A queue lives from its creation until it is unlinked *and* its last descriptor is
    closed (the kernel's evict); only then is its memory, its charge and its qid let go.
    Nothing here grows with history: ``by_qid`` holds exactly the live queues.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        notifier: Notifier | None = None,
        journal: Journal | None = None,
        mappings: MappingDirectory | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.notifier = notifier
        self.journal = journal
        self.mappings = mappings  # -o fastpath (or state=DIR holding fast-path queues)
        self.queues: dict[str, Queue] = {}
        self.by_qid: dict[int, Queue] = {}  # named or unlinked-but-open: counts for queues_max
        self.charged = PerUser()  # bytes charged to each uid, as the kernel's mq_bytes
        self.blocked = BlockedCallers(self.limits.blocked_max)
        self._next_qid = 1

    @property
    def live(self) -> int:
        """Queues that exist, named or unlinked-but-open (what queues_max limits)."""
        return len(self.by_qid)

    @property
    def next_qid(self) -> int:
        return self._next_qid

    def lookup(self, name: str) -> Queue:
        check_name(name)
        try:
            return self.queues[name]
        except KeyError:
            raise errors.NoSuchQueue(f"no queue named {name!r}") from None

    def by_id(self, qid: int) -> Queue | None:
        """The live queue with *qid*, or None (never created, or destroyed since)."""
        return self.by_qid.get(qid)

    def create(
        self,
        name: str,
        *,
        mode: int,
        uid: int,
        gid: int,
        maxmsg: int | None = None,
        msgsize: int | None = None,
        exclusive: bool = False,
        byte_limit: float = math.inf,
        privileged: bool = False,
    ) -> Queue:
        """mq_open(O_CREAT): the existing queue (EEXIST if *exclusive*) or a new one.

        Attributes of an existing queue are not checked, as in the kernel; for a new
        queue the checks run in the kernel's order: ENOSPC, then EINVAL, then EMFILE
        when the queue's memory would take user *uid* over *byte_limit* (the creator's
        RLIMIT_MSGQUEUE). A *privileged* creator (CAP_SYS_RESOURCE) passes queues_max
        and msg_max/msgsize_max as in the kernel, but not its RLIMIT_MSGQUEUE, which the
        kernel does not waive either. The charge lasts until the queue is destroyed.
        """
        check_name(name)
        existing = self.queues.get(name)
        if existing is not None:
            if exclusive:
                raise errors.QueueExists(f"queue {name!r} exists")
            return existing
        if self.live >= self.limits.queues_max and not privileged:
            raise errors.TooManyQueues(f"queues_max ({self.limits.queues_max}) reached")
        if maxmsg is None or msgsize is None:
            maxmsg, msgsize = self.limits.default_attributes()
        else:
            self.limits.check_attributes(maxmsg, msgsize, privileged)
        charge = memory_charge(maxmsg, msgsize)
        if self.limits.enforce_rlimit and self.charged[uid] + charge > byte_limit:
            raise errors.OverQuota(
                f"queue of {charge} bytes exceeds the RLIMIT_MSGQUEUE of user {uid}"
            )
        queue = Queue(
            name=name,
            qid=self._next_qid,
            maxmsg=maxmsg,
            msgsize=msgsize,
            mode=mode & 0o7777,
            uid=uid,
            gid=gid,
            notifier=self.notifier,
            blocked=self.blocked,
            owner_uid=uid,
            journal=self.journal,
        )
        if self.mappings is not None and self.mappings.create_new:
            queue.store = self.mappings.create(queue.qid, maxmsg, msgsize, uid, gid, name)
        if self.journal is not None:
            try:
                self.journal.created(queue)
            except BaseException:
                queue.store.clear()
                raise
        self.charged.add(uid, charge)
        self._next_qid += 1
        self.queues[name] = queue
        self.by_qid[queue.qid] = queue
        return queue

    def restore(
        self,
        name: str,
        qid: int,
        *,
        maxmsg: int,
        msgsize: int,
        mode: int,
        uid: int,
        gid: int,
        owner_uid: int,
        times: tuple[int, int, int],
        store: MessageStore | MappedStore,
    ) -> Queue:
        """A queue brought back from the journal as it was: it passed the limits when it
        was made, so none is checked now; it is charged to its creator again."""
        queue = Queue(
            name=name,
            qid=qid,
            maxmsg=maxmsg,
            msgsize=msgsize,
            mode=mode,
            uid=uid,
            gid=gid,
            store=store,
            notifier=self.notifier,
            blocked=self.blocked,
            owner_uid=owner_uid,
            journal=self.journal,
        )
        queue.atime, queue.mtime, queue.ctime = times
        queue.meta_time = queue.ctime
        queue._absorb_mapping()  # what the mapping held at the restart is no news
        self.charged.add(owner_uid, memory_charge(maxmsg, msgsize))
        self._next_qid = max(self._next_qid, qid + 1)
        self.queues[name] = queue
        self.by_qid[qid] = queue
        return queue

    def reserve_qids(self, below: int) -> None:
        """Hand out no qid below *below* (the journal had used them)."""
        self._next_qid = max(self._next_qid, below)

    def unlink(self, name: str, caller: Caller | None = None) -> Queue:
        """mq_unlink by *caller*: the name goes now; the queue lives on while it is open
        (its WAIT callers are woken, to learn that it was unlinked)."""
        queue = self.lookup(name)
        if queue.journal is not None:
            queue.journal.removed(queue)
            queue.journal = None
        if isinstance(queue.store, MappedStore):
            queue.store.unlink_file()
        del self.queues[name]
        queue.unlinked_by(caller)
        self._maybe_destroy(queue)
        return queue

    def acquire(self, queue: Queue) -> None:
        queue.references += 1

    def release(self, queue: Queue) -> None:
        queue.references -= 1
        self._maybe_destroy(queue)

    def _maybe_destroy(self, queue: Queue) -> None:
        if queue.unlinked and queue.references == 0 and self.is_alive(queue):
            del self.by_qid[queue.qid]
            queue.store.clear()
            queue.end_notification()
            self.charged.add(queue.owner_uid, -memory_charge(queue.maxmsg, queue.msgsize))

    def usage(self) -> dict[int, tuple[int, int]]:
        """What each user holds now: uid -> (queues, bytes charged to RLIMIT_MSGQUEUE),
        counting unlinked queues still open, as the kernel's mq_bytes does."""
        queues = PerUser()
        for queue in self.by_qid.values():
            queues.add(queue.owner_uid, 1)
        return {uid: (queues[uid], self.charged[uid]) for uid in sorted(queues | self.charged)}

    def is_alive(self, queue: Queue) -> bool:
        return self.by_qid.get(queue.qid) is queue

    def close(self) -> None:
        """The daemon is stopping: every blocked caller, now and later, gets ENOTCONN."""
        for queue in self.by_qid.values():
            queue.close()

"""The conformance scenarios (data) and the interpreter that runs one on a backend.

A scenario is a list of ``(step, expected)`` pairs. A step is a tuple ``(op, *args)`` on
named descriptors ("a", "b", ...), queue names ("/q", as mq_open takes them) and named
child processes ("c", ...). Running a scenario gives a *transcript*: for every step its
result, normalised so the two backends can be compared, or the errno's name
(``"EINVAL"``) when the call failed. The tests assert that

* the kernel's transcript matches every ``expected`` that is not ``...`` (the POSIX/Linux
  rule, written down, so a test cannot pass when both backends are wrong the same way), and
* mqfs's transcript equals the kernel's, step for step (and its expectations, so the mqfs
  half still means something where the kernel half has to be skipped).

Results: ``"ok"`` for calls that return nothing useful (open, close, send, ...);
``(payload, priority)`` for receive; ``(flags, maxmsg, msgsize, curmsgs)`` for getattr and
setattr (setattr gives the old attributes); the status line as bytes with a non-zero
NOTIFY_PID replaced by ``<self>`` (the test process) or ``<child name>``; see
:class:`Runner` for the rest. Add a scenario by appending to :data:`SCENARIOS`.

Steps that involve other processes start ``[sys.executable, "-c", CHILD_PROGRAM]``, which
rebuilds the backend with :func:`mqfs.client.backends.from_spec` and runs its own list of steps
with the same interpreter, printing one result per line (and ``ready`` before its last
step, so the parent can wait for it to block there).
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from mqfs.client.backends import KernelBackend, MqfsBackend, Notification
from mqfs.posix import SI_MESGQ, SIGEV_NONE, SIGEV_SIGNAL
from tests.support.libc import sigtimedwait
from tests.support.paths import ROOT
from tests.support.procs import blocked_in_mq_call
from tests.support.waiting import wait_until

OK = "ok"
NOBODY = 65534
CHILD_TIMEOUT = 20.0

Step = tuple[Any, ...]

# -- the interpreter ------------------------------------------------------------------------


class Interrupted(Exception):
    """Raised by the signal handler a child installs with the "handler" step."""


def _raise_interrupted(signo: int, frame: object) -> None:
    raise Interrupted(signo)


def _ignore_late_signal(signo: int, frame: object) -> None:
    """Installed for the signals a scenario blocks: a late one must not kill pytest."""


def deadline(when: str) -> tuple[int, int]:
    """An absolute CLOCK_REALTIME timespec: "past", "soon" (50 ms), or an invalid one."""
    now = time.clock_gettime(time.CLOCK_REALTIME)
    if when == "past":
        return int(now) - 10, 0
    if when == "soon":
        later = now + 0.05
        return int(later), int((later - int(later)) * 1e9)
    if when == "invalid":  # tv_nsec = 1e9
        return int(now) + 10, 1_000_000_000
    if when == "negative_nsec":
        return int(now) + 10, -1
    raise ValueError(when)


CHILD_PROGRAM = (
    "import sys; from tests.conformance.scenarios import child_main; "
    "child_main(sys.argv[1], sys.argv[2])"
)


@dataclass
class Child:
    process: subprocess.Popen[bytes]
    lines: list[str] = field(default_factory=list)
    buffer: bytes = b""
    results: tuple[object, ...] | None = None

    def read_line(self, timeout: float = CHILD_TIMEOUT) -> str | None:
        """The next line the child printed, or None at end of file."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        limit = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = limit - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                raise TimeoutError("child printed nothing")
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()


class Runner:
    """Runs steps on one backend; every descriptor and child is cleaned up by close_all."""

    def __init__(self, backend: KernelBackend | MqfsBackend, *, normalise: bool = True) -> None:
        self.backend = backend
        self.normalise_results = normalise
        self.fds: dict[str, int] = {}
        self.children: dict[str, Child] = {}
        self.labels: dict[int, str] = {os.getpid(): "<self>"}
        self.aged: dict[str, os.stat_result] = {}
        self.blocked: set[int] = set()
        self.umask: int | None = None

    # -- running ------------------------------------------------------------------------

    def run(self, steps: Sequence[Step]) -> list[object]:
        return [self.step(step) for step in steps]

    def step(self, step: Step) -> object:
        op, *args = step
        handler = getattr(self, f"op_{op}")
        try:
            try:
                result = handler(*args)
            except OSError as exc:
                if exc.errno is None:
                    raise
                result = errno.errorcode[exc.errno]
        except Interrupted:
            result = "EINTR"
        except KeyError as exc:  # a descriptor an earlier step failed to open
            result = f"no descriptor {exc}"
        return self.normalise(result) if self.normalise_results else result

    def close_all(self) -> None:
        """Close descriptors, reap children, unblock signals, restore the umask."""
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.kill()
            child.process.wait(timeout=CHILD_TIMEOUT)
            for pipe in (child.process.stdout, child.process.stderr):
                if pipe is not None:
                    pipe.close()
        self.children.clear()
        for fd in self.fds.values():
            with suppress(OSError):  # a scenario may have closed it already
                self.backend.close(fd)
        self.fds.clear()
        for signo in self.blocked:
            while sigtimedwait(signo, 0) is not None:
                pass
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signo})
        self.blocked.clear()
        if self.umask is not None:
            os.umask(self.umask)
            self.umask = None

    # -- normalising ----------------------------------------------------------------------

    def label(self, pid: int) -> str | int:
        return self.labels.get(pid, pid if pid == 0 else "<other>")

    def normalise(self, result: object) -> object:
        if result is None:
            return OK
        if isinstance(result, bytes):
            return self.normalise_status(result)
        if isinstance(result, tuple) and result and result[0] == "siginfo":
            _, signo, code, value, pid, uid = result
            return (signal.Signals(signo).name, code, value, self.label(pid), uid)
        if isinstance(result, tuple):
            return tuple(self.normalise(item) for item in result)
        return result

    def normalise_status(self, line: bytes) -> bytes:
        """A non-zero NOTIFY_PID becomes its label, once its %-6d padding is checked."""
        match = re.search(rb"NOTIFY_PID:([1-9][0-9]*)( *)\n$", line)
        if match is None:
            return line
        digits, spaces = match.group(1), match.group(2)
        label = str(self.label(int(digits)))
        if len(digits) + len(spaces) != max(6, len(digits)):
            label = "<bad padding>"
        return line[: match.start(1)] + label.encode() + b"\n"

    # -- the mq_* calls ---------------------------------------------------------------

    def op_open(
        self,
        mqd: str,
        name: str,
        oflag: int,
        mode: int = 0o600,
        attr: tuple[int, int] | None = None,
    ) -> None:
        self.fds[mqd] = self.backend.open(name, oflag, mode, attr)

    def op_close(self, mqd: str) -> None:
        self.backend.close(self.fds.pop(mqd))

    def op_unlink(self, name: str) -> None:
        self.backend.unlink(name)

    def op_send(self, mqd: str, message: bytes, priority: int = 0) -> None:
        self.backend.send(self.fds[mqd], message, priority)

    def op_send_timed(self, mqd: str, message: bytes, priority: int, when: str) -> None:
        self.backend.send(self.fds[mqd], message, priority, deadline(when))

    def op_receive(self, mqd: str, bufsize: int) -> tuple[bytes, int]:
        return self.backend.receive(self.fds[mqd], bufsize)

    def op_receive_timed(self, mqd: str, bufsize: int, when: str) -> tuple[bytes, int]:
        return self.backend.receive(self.fds[mqd], bufsize, deadline(when))

    def op_getattr(self, mqd: str) -> tuple[int, int, int, int]:
        a = self.backend.getattr(self.fds[mqd])
        return a.flags, a.maxmsg, a.msgsize, a.curmsgs

    def op_setattr(self, mqd: str, flags: int) -> tuple[int, int, int, int]:
        a = self.backend.setattr(self.fds[mqd], flags)
        return a.flags, a.maxmsg, a.msgsize, a.curmsgs

    def op_notify(self, mqd: str, how: int | None, signo: int = 0, value: int = 0) -> None:
        request = None if how is None else Notification(how, signo, value)
        self.backend.notify(self.fds[mqd], request)

    def op_status(self, name: str) -> bytes:
        return self.backend.status(name)

    def op_poll(self, mqd: str) -> tuple[str, ...]:
        poller = select.poll()
        bits = {
            "POLLIN": select.POLLIN,
            "POLLRDNORM": select.POLLRDNORM,
            "POLLOUT": select.POLLOUT,
            "POLLWRNORM": select.POLLWRNORM,
        }
        poller.register(self.fds[mqd], sum(bits.values()))
        events = sum(mask for _, mask in poller.poll(0))
        return tuple(name for name, bit in bits.items() if events & bit)

    # -- the queue file: mode, owner, times --------------------------------------------

    def op_chmod(self, name: str, mode: int) -> None:
        os.chmod(self.backend.queue_file(name), mode)

    def op_chown(self, name: str, uid: int, gid: int) -> None:
        os.chown(self.backend.queue_file(name), uid, gid)

    def op_owner(self, name: str) -> tuple[str, int, int]:
        st = os.stat(self.backend.queue_file(name))
        return oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid

    def op_umask(self, mask: int) -> None:
        old = os.umask(mask)
        if self.umask is None:
            self.umask = old

    def op_age(self, name: str) -> None:
        """Set the queue file's times far back, then wait for the clock's next second
        (the kernel's mqueue stamps whole seconds), so that any later change shows."""
        path = self.backend.queue_file(name)
        os.utime(path, ns=(10**18, 10**18))
        self.aged[name] = os.stat(path)
        ctime_second = self.aged[name].st_ctime_ns // 10**9
        coarse = getattr(time, "CLOCK_REALTIME_COARSE", 5)
        wait_until(lambda: time.clock_gettime(coarse) >= ctime_second + 1, what="the next second")

    def op_times(self, name: str) -> tuple[str, str]:
        before, now = self.aged[name], os.stat(self.backend.queue_file(name))
        return (
            "mtime changed" if now.st_mtime_ns != before.st_mtime_ns else "mtime same",
            "ctime changed" if now.st_ctime_ns != before.st_ctime_ns else "ctime same",
        )

    # -- signals --------------------------------------------------------------------------

    def op_block(self, signo: int) -> None:
        # The mask is per thread, and a process-directed signal goes to any thread that
        # does not block it: idle worker threads other tests left (trio's thread cache
        # keeps them ~10 s) would swallow the notification. Wait until we are alone.
        wait_until(lambda: threading.active_count() == 1, what="other threads to exit", timeout=30)
        signal.signal(signo, _ignore_late_signal)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
        self.blocked.add(signo)

    def op_sigwait(self, signo: int) -> object:
        """The pending *signo* now (a notification is queued before the send returns)."""
        info = sigtimedwait(signo, 0)
        return "no signal" if info is None else ("siginfo", *info)

    def op_handler(self, signo: int) -> None:
        """(child) a handler that raises, as a Python program's would."""
        signal.signal(signo, _raise_interrupted)

    def op_setuid(self, uid: int, gid: int) -> None:
        """(child) become an unprivileged user."""
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    # -- other processes ---------------------------------------------------------------

    def op_spawn(self, name: str, steps: Sequence[Step]) -> None:
        if name in self.children:
            self.op_join(name)  # a name may be reused once its child is done
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD_PROGRAM, self.backend.spec(), repr(list(steps))],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.children[name] = Child(process)
        self.labels[process.pid] = f"<{name}>"

    def op_wait_blocked(self, name: str) -> str:
        """Wait until the child printed "ready" and then sleeps in its last mq call."""
        child = self.children[name]
        while (line := child.read_line()) != "ready":
            if line is None:
                return "exited before blocking"
            child.lines.append(line)
        wait_until(lambda: blocked_in_mq_call(child.process.pid), what=f"{name} to block")
        return "blocked"

    def op_kill(self, name: str, signo: int) -> None:
        self.children[name].process.send_signal(signo)

    def op_join(self, name: str) -> tuple[object, ...]:
        """The child's results, one per step."""
        from ast import literal_eval

        child = self.children[name]
        if child.results is not None:
            return child.results
        while (line := child.read_line()) is not None:
            if line != "ready":
                child.lines.append(line)
        code = child.process.wait(timeout=CHILD_TIMEOUT)
        assert child.process.stdout is not None and child.process.stderr is not None
        errors = child.process.stderr.read().decode(errors="replace")
        child.process.stdout.close()
        child.process.stderr.close()
        if code != 0:
            child.results = ("exit", code, errors[-400:])
        else:
            child.results = tuple(self.normalise(literal_eval(line)) for line in child.lines)
        return child.results

    def op_join_all(self, names: Sequence[str]) -> tuple[object, ...]:
        """The last result of each child, sorted (which child got what is not the point)."""
        return tuple(sorted((self.op_join(name)[-1] for name in names), key=repr))

    def op_run(self, name: str, steps: Sequence[Step]) -> tuple[object, ...]:
        self.op_spawn(name, steps)
        return self.op_join(name)


def child_main(spec: str, steps_text: str) -> None:
    """The body of a child process: run *steps*, print each raw result on a line."""
    from ast import literal_eval

    from mqfs.client.backends import from_spec

    steps = literal_eval(steps_text)
    runner = Runner(from_spec(spec), normalise=False)
    try:
        for index, step in enumerate(steps):
            if index == len(steps) - 1:
                print("ready", flush=True)
            print(repr(runner.step(step)), flush=True)
    finally:
        runner.close_all()


# -- the scenarios -------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    behaviour: str
    pairs: tuple[tuple[Step, object], ...]
    limits: dict[str, int] = field(default_factory=dict)
    mqfs_note: str = ""
    """A difference mqfs is known to have (shown in the docs table); empty: none known."""

    @property
    def steps(self) -> list[Step]:
        return [step for step, _ in self.pairs]

    @property
    def expected(self) -> list[object]:
        return [want for _, want in self.pairs]

    @property
    def outcome(self) -> str:
        """The kernel column of the docs table: the errnos the scenario asserts."""
        codes = [w for w in self.expected if isinstance(w, str) and w in errno.__dict__]
        return ", ".join(dict.fromkeys(codes)) or "as expected"


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

"""The conformance runner: runs a scenario's steps on one backend and records the results.

A step is a tuple ``(op, *args)`` on named descriptors ("a", "b", ...), queue names ("/q",
as mq_open takes them) and named child processes ("c", ...); ``op_NAME`` of
:class:`Runner` carries out op NAME. Running a scenario gives a *transcript*: for every step
its result, normalised so the two backends can be compared, or the errno's name
(``"EINVAL"``) when the call failed. The tests assert that

* the kernel's transcript matches every ``expected`` that is not ``...`` (the POSIX/Linux
  rule, written down, so a test cannot pass when both backends are wrong the same way), and
* mqfs's transcript equals the kernel's, step for step (and its expectations, so the mqfs
  half still means something where the kernel half has to be skipped).

Results: ``"ok"`` for calls that return nothing useful (open, close, send, ...);
``(payload, priority)`` for receive; ``(flags, maxmsg, msgsize, curmsgs)`` for getattr and
setattr (setattr gives the old attributes); the status line as bytes with a non-zero
NOTIFY_PID replaced by ``<self>`` (the test process) or ``<child name>``; see
:class:`Runner` for the rest.

Steps that involve other processes start ``[sys.executable, "-c", CHILD_PROGRAM]``, which
rebuilds the backend with :func:`mqfs.client.backends.from_spec` and runs its own list of
steps with the same interpreter, printing one result per line (and ``ready`` before its
last step, so the parent can wait for it to block there). Those children import this
module, so it imports nothing heavy (pytest, the mount helpers) at the top.
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
from pathlib import Path
from typing import Any

from mqfs.client.backends import KernelBackend, MqfsBackend, Notification
from tests.support.libc import sigtimedwait
from tests.support.paths import ROOT
from tests.support.procs import blocked_in_mq_call
from tests.support.waiting import wait_until

OK = "ok"
CHILD_TIMEOUT = 20.0

Step = tuple[Any, ...]


@dataclass
class Scenario:
    """One behaviour: its steps with the result POSIX/Linux gives for each, run with
    *limits* (/proc/sys/fs/mqueue/* for the kernel, mount options for mqfs)."""

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


# -- running steps ------------------------------------------------------------------------


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
    "import sys; from tests.conformance.runner import child_main; "
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

    # -- the namespace as a directory: what the kernel's mqueue has no operation for ---

    def _entry(self, name: str) -> Path:
        """The queue's name in the filesystem: the kernel's queue file, mqfs's directory."""
        path = self.backend.queue_file(name)
        return path.parent if isinstance(self.backend, MqfsBackend) else path

    def op_rename(self, name: str, new: str) -> None:
        os.rename(self._entry(name), self._entry(new))

    def op_link(self, name: str, new: str) -> None:
        """A hard link to the queue file (mqfs: MNT/NAME/queue) under a new name."""
        os.link(self.backend.queue_file(name), self._entry(new))

    def op_symlink(self, target: str, name: str) -> None:
        os.symlink(self._entry(target), self._entry(name))

    def op_mknod(self, name: str) -> None:
        """A fifo (a regular file is a queue on the kernel's mqueue, mkdir's job on mqfs)."""
        os.mknod(self._entry(name), stat.S_IFIFO | 0o600)

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


# -- transcripts and their comparison -----------------------------------------------------


def transcript(backend: KernelBackend | MqfsBackend, scenario: Scenario) -> list[object]:
    """Run *scenario* on *backend*: one normalised result per step."""
    runner = Runner(backend)
    try:
        return runner.run(scenario.steps)
    finally:
        runner.close_all()


class KernelTranscripts:
    """The kernel's transcript of each scenario, for the mqfs half to be compared with."""

    def __init__(self) -> None:
        self._by_name: dict[str, list[object]] = {}

    def record(self, scenario: Scenario, kernel_transcript: list[object]) -> None:
        self._by_name[scenario.name] = kernel_transcript

    def of(self, scenario: Scenario) -> list[object] | None:
        """The recorded transcript, else one run now on a fresh kernel backend; None if
        the kernel half cannot run here."""
        # Imported here: the children that import this module must start without pytest.
        import pytest

        from tests.support.backends import kernel_backend

        if scenario.name not in self._by_name:
            try:
                with kernel_backend(scenario.limits) as mq:
                    self.record(scenario, transcript(mq, scenario))
            except pytest.skip.Exception:
                return None
        return self._by_name[scenario.name]


def differences(scenario: Scenario, got: list[object], want: list[object], what: str) -> str:
    """One paragraph per step where *got* is not *want* (a ``...`` in *want* matches all)."""
    lines = [
        f"  step {i}: {step!r}\n    {what}: {w!r}\n    got: {g!r}"
        for i, (step, w, g) in enumerate(zip(scenario.steps, want, got, strict=True))
        if w is not ... and w != g
    ]
    return "\n".join(lines)


def check_rule(scenario: Scenario, got: list[object]) -> None:
    """Transcript *got* agrees with every expectation written in the scenario."""
    diff = differences(scenario, got, scenario.expected, "expected")
    assert not diff, f"{scenario.name}: not what POSIX/Linux gives:\n{diff}"

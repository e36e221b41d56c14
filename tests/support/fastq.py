"""The fast path's queue core (mqfs.fastq, fastq/fastq.c) without a mount: fresh mappings,
what a mapping holds, children killed at a crash point, the C programs built against the
core, and the 2 producers + 2 consumers run under random SIGKILLs.

The random-kill run (:func:`random_kills`) is what tests/fastq/test_crash_random.py runs
small and benchmarks/measurements/fastq_crash.py runs large. No pytest import here: the
benchmark imports this module.
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mqfs import errors, fastq
from tests.support.paths import ROOT

FASTQ_DIR = ROOT / "fastq"
"""fastq.c and fastq.h: C programs in tests compile the core in."""


def new_queue(directory: Path, maxmsg: int, msgsize: int, name: str = "q") -> fastq.MappedQueue:
    """A fresh, empty queue in a mapping file *directory*/*name*, attached."""
    path = directory / name
    fastq.create(path, maxmsg, msgsize, os.geteuid(), os.getegid())
    return fastq.MappedQueue(path, maxmsg, msgsize, name)


def contents(queue: fastq.MappedQueue) -> list[tuple[bytes, int]]:
    """Every message in receive order, as (payload, priority), by peeking."""
    return [queue.peek(index)[:2] for index in range(queue.state().count)]


def in_child(action: Callable[[], object]) -> int:
    """Run *action* in a forked child (which then exits 0): its wait status. The calling
    process must have no other thread (fork would copy a lock some thread holds)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def killed(status: int) -> bool:
    """Whether a wait status is a death by SIGKILL (a crash point reached)."""
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


def crash_in_child(queue: fastq.MappedQueue, point: int, operation: Callable[[], object]) -> bool:
    """Run *operation* on *queue* in a child that SIGKILLs itself at crash *point*: whether it
    was killed there (False: it never reached that point and finished)."""

    def crash() -> None:
        fastq.library().fastq_crash_at(point)
        operation()

    status = in_child(crash)
    assert killed(status) or os.WEXITSTATUS(status) == 0, f"child ended with status {status:#x}"
    return killed(status)


def build_with_core(source: Path, directory: Path) -> Path:
    """Compile *source* with fastq/fastq.c into *directory* (warnings are errors)."""
    program = directory / source.stem
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-I", FASTQ_DIR, "-o", program, source,
         FASTQ_DIR / "fastq.c", "-lpthread", "-lrt"],
        check=True,
    )  # fmt: skip
    return program


# -- 2 producers + 2 consumers under random SIGKILLs ---------------------------------------

ID = struct.Struct("<BIQ")  # role index, incarnation, counter: unique over the whole run
ID_SIZE = ID.size
CRASH_MAXMSG = 8
CRASH_MSGSIZE = 32
PRODUCERS = 2
CONSUMERS = 2


@dataclass(frozen=True)
class KillFigures:
    """What a random-kill run did and found."""

    kills: int
    producer_kills: int
    consumer_kills: int
    kills_holding_lock: int  # recoveries of an owner-dead mutex (state().recovered)
    sent: int  # sends that returned and were recorded
    received: int  # receives recorded, plus the drain
    unrecorded: int  # received, never recorded as sent: a producer killed after its send
    lost: int  # recorded as sent, never received: a consumer killed after its receive
    duplicates: int
    leaked_waiters: int  # sleepers killed asleep still counted once the queue is used again
    seconds: float

    def line(self) -> str:
        return (
            f"{self.kills} kills ({self.producer_kills} producers, {self.consumer_kills} "
            f"consumers), {self.kills_holding_lock} while holding the lock; {self.sent:,} sent, "
            f"{self.received:,} received; lost {self.lost}, duplicates {self.duplicates}, "
            f"received but unrecorded {self.unrecorded}; dead sleepers still counted "
            f"{self.leaked_waiters}; {self.seconds:.1f} s"
        )


def _producer(queue: fastq.MappedQueue, role: int, incarnation: int, log: int) -> None:
    counter = 0
    payload = bytearray(CRASH_MSGSIZE)
    rng = random.Random(role * 1_000_003 + incarnation)
    while True:
        message = ID.pack(role, incarnation, counter)
        payload[:ID_SIZE] = message
        queue.send(bytes(payload[: rng.randrange(ID_SIZE, CRASH_MSGSIZE + 1)]), rng.randrange(4))
        os.write(log, message)  # only after the send returned
        counter += 1


def _consumer(queue: fastq.MappedQueue, log: int) -> None:
    while True:
        payload, _ = queue.receive()
        os.write(log, payload[:ID_SIZE])  # only after the receive returned


class _Workers:
    """The 2 producers and 2 consumers (forked processes), each appending the ids it sent
    or received to its log; a killed one is respawned as a new incarnation."""

    def __init__(self, queue: fastq.MappedQueue, sent_log: Path, received_log: Path) -> None:
        self.queue = queue
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self.logs = [os.open(sent_log, flags, 0o600), os.open(received_log, flags, 0o600)]
        self.incarnations = [0] * (PRODUCERS + CONSUMERS)
        self.kills = [0] * (PRODUCERS + CONSUMERS)
        self.pids = [self._spawn(role) for role in range(PRODUCERS + CONSUMERS)]

    def _spawn(self, role: int) -> int:
        log = self.logs[role >= PRODUCERS]
        pid = os.fork()
        if pid == 0:
            try:
                if role < PRODUCERS:
                    _producer(self.queue, role, self.incarnations[role], log)
                else:
                    _consumer(self.queue, log)
            finally:
                os._exit(1)
        return pid

    def kill(self, role: int) -> None:
        os.kill(self.pids[role], signal.SIGKILL)
        os.waitpid(self.pids[role], 0)
        self.kills[role] += 1

    def respawn(self, role: int) -> None:
        self.incarnations[role] += 1
        self.pids[role] = self._spawn(role)

    def stop(self) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in self.logs:
            os.close(fd)


def _records(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert len(data) % ID_SIZE == 0, f"{path}: a torn record"
    return [data[i : i + ID_SIZE] for i in range(0, len(data), ID_SIZE)]


def _drain(queue: fastq.MappedQueue) -> list[bytes]:
    drained: list[bytes] = []
    while True:
        try:
            payload, _ = queue.receive(nonblock=True)
        except errors.WouldBlock:
            return drained
        drained.append(payload[:ID_SIZE])


def random_kills(
    kills: int, seed: int = 17, directory: Path | None = None, max_pause: float = 0.02
) -> KillFigures:
    """2 producers and 2 consumers (forked processes) on one mapping; *kills* times a random
    worker is SIGKILLed after a random pause of up to *max_pause* s and respawned. After
    each kill the queue's invariants are checked (the check locks the mutex, which
    recovers an operation the victim left unfinished). Then every worker stops, the queue
    is drained and every id is accounted for. The calling process must have no other
    thread. Raises AssertionError on a broken invariant."""
    rng = random.Random(seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        sent_log, received_log = Path(scratch) / "sent", Path(scratch) / "received"
        with new_queue(Path(scratch), CRASH_MAXMSG, CRASH_MSGSIZE) as queue:
            recovered_before = queue.state().recovered
            workers = _Workers(queue, sent_log, received_log)
            try:
                for _ in range(kills):
                    time.sleep(rng.uniform(0, max_pause))  # the kill lands anywhere
                    role = rng.randrange(PRODUCERS + CONSUMERS)
                    workers.kill(role)
                    queue.check()  # recovers what the victim left, then checks
                    assert queue.state().count <= CRASH_MAXMSG
                    workers.respawn(role)
            finally:
                workers.stop()
            queue.check()
            state = queue.state()
            drained = _drain(queue)
            queue.send(b"", 0)  # the queue used again: sleepers killed asleep are forgotten
            queue.receive()
            queue.check()
            after = queue.state()
        sent = _records(sent_log)
        received = _records(received_log) + drained
    counts = Counter(received)
    sent_set = set(sent)
    assert len(sent_set) == len(sent), "a producer recorded one id twice"
    return KillFigures(
        kills=kills,
        producer_kills=sum(workers.kills[:PRODUCERS]),
        consumer_kills=sum(workers.kills[PRODUCERS:]),
        kills_holding_lock=state.recovered - recovered_before,
        sent=len(sent),
        received=len(received),
        unrecorded=len(counts.keys() - sent_set),
        lost=len(sent_set - counts.keys()),
        duplicates=sum(n - 1 for n in counts.values() if n > 1),
        leaked_waiters=after.recv_waiters + after.send_waiters,
        seconds=time.monotonic() - started,
    )

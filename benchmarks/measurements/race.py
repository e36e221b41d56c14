"""A reader blocked in receive on an empty queue, SIGKILLed as one message is sent to it:
300 trials on the kernel's mqueue and 300 on mqfs (30 each with ``--quick``), interleaved
and unpinned.

Each trial forks the reader (the kernel's mq_timedreceive through ctypes; mqfs's RECEIVE
ioctl through ``calls.receive``), waits until it sleeps in the receive (kernel:
``/proc/PID/syscall`` names mq_timedreceive and the state is S; mqfs: the daemon's
``user.mq.info`` counts a blocked caller), then sends and kills it a seeded random 0-200 µs
apart, kill or send first by a seeded coin (the same plan on both sides), reaps it and
takes what is queued. A message no longer queued is lost (whether or not the reader's code
saw it first); one queued that the reader also wrote to its pipe is a duplicate.

Target (h): mqfs's loss rate may exceed the kernel's only by what a one-sided 95%
two-proportion z-test (pooled, continuity-corrected) would not call significant, and mqfs
makes no duplicates.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NoReturn

from environment import (
    MOUNT_OPTIONS,
    PAIR_QUEUE_DEPTH,
    SMALL,
    BenchError,
    KernelQueues,
    die_with_parent,
    mqfs_daemon,
    open_queue,
)
from mqfs import wire
from mqfs.client import calls
from report import Report, progress
from timing import Scale

RACE_DELAY_MAX_NS = 200_000  # target (h): send and SIGKILL at most 200 µs apart ...
RACE_SEED = 8  # ... by a seeded random delay, the same sequence on both sides
RACE_Z = 1.645  # target (h): one-sided 95% (normal quantile) for the loss-rate tolerance
RACE_BLOCK_TIMEOUT = 10.0  # seconds a reader may take to block in receive
# mq_timedreceive's number, as /proc/PID/syscall shows it while the reader sleeps in it.
MQ_TIMEDRECEIVE_NR = {"x86_64": 243, "aarch64": 183}

Plan = list[tuple[int, bool]]
"""(delay in ns, kill first?) of every trial."""


@dataclass
class RaceSide:
    """One side of the kill race: a queue, a reader's descriptor and the test's own.

    *receive* runs in the forked reader: one blocking receive on the reader's descriptor
    (inherited across the fork). *send* and *take* use the test's O_NONBLOCK descriptor of
    the same queue; *take* is one receive, None when the queue is empty. *blocked* tells
    whether reader *pid* is asleep in its receive.
    """

    name: str
    receive: Callable[[], bytes]
    send: Callable[[bytes], object]
    take: Callable[[], bytes | None]
    blocked: Callable[[int], bool]
    outcomes: list[str] = field(default_factory=list)


def take_or_none(receive: Callable[[], tuple[bytes, int]]) -> bytes | None:
    try:
        return receive()[0]
    except BlockingIOError:
        return None


def kernel_reader_blocked(pid: int) -> bool:
    """Reader *pid* sleeps (state S) in mq_timedreceive, as /proc/PID/syscall shows it."""
    try:
        syscall = Path(f"/proc/{pid}/syscall").read_text().split()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    number = MQ_TIMEDRECEIVE_NR.get(platform.machine())
    in_receive = syscall[:1] == [str(number)] if number else syscall[:1] != ["running"]
    return state == "S" and in_receive


def mqfs_reader_blocked(queue_dir: Path) -> bool:
    """The daemon counts a caller blocked on the queue (its user.mq.info xattr)."""
    info = json.loads(os.getxattr(queue_dir, wire.INFO_XATTR))
    return int(info["blocked"]) > 0


def spin(nanoseconds: int) -> None:
    """Wait *nanoseconds* without leaving the CPU (a sleep would take 50 µs or more)."""
    end = time.perf_counter_ns() + nanoseconds
    while time.perf_counter_ns() < end:
        pass


def race_reader(receive: Callable[[], bytes], report_fd: int) -> NoReturn:
    """The forked reader: block in receive, report what arrives on *report_fd*, wait."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent kills it after Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        die_with_parent()
        os.write(report_fd, receive())
        time.sleep(RACE_BLOCK_TIMEOUT)  # until the SIGKILL
    except BaseException:
        os._exit(1)
    os._exit(0)


def wait_until_blocked(side: RaceSide, pid: int) -> None:
    deadline = time.monotonic() + RACE_BLOCK_TIMEOUT
    while not side.blocked(pid):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise BenchError(f"the {side.name} reader exited before blocking (status {status})")
        if time.monotonic() > deadline:
            raise BenchError(f"the {side.name} reader did not block in receive")
        time.sleep(0.0005)


def race_trial(side: RaceSide, message: bytes, delay_ns: int, kill_first: bool) -> str:
    """Fork a reader, wait until it is blocked in receive, then send *message* and SIGKILL
    it *delay_ns* apart (kill first or send first); reap it and look where the message is:
    "kept" (still queued), "lost" (not queued), "reported" (not queued, and the reader
    wrote it out before dying: lost all the same) or "duplicate" (queued and reported)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        race_reader(side.receive, write_end)
    os.close(write_end)
    try:
        wait_until_blocked(side, pid)
        if kill_first:
            os.kill(pid, signal.SIGKILL)
            spin(delay_ns)
            side.send(message)
        else:
            side.send(message)
            spin(delay_ns)
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pid = 0
        reported = b"".join(iter(partial(os.read, read_end, 4096), b""))
        queued = side.take()
        left = side.take()
    finally:
        os.close(read_end)
        if pid:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    if queued not in (None, message) or reported not in (b"", message) or left is not None:
        raise BenchError(f"{side.name} race: unexpected {queued!r}, {reported!r}, {left!r}")
    if queued is None:
        return "reported" if reported else "lost"
    return "duplicate" if reported else "kept"


def race_plan(trials: int) -> Plan:
    """(delay in ns, kill first?) of every trial: seeded, the same for both sides."""
    rng = random.Random(RACE_SEED)
    return [(rng.randint(0, RACE_DELAY_MAX_NS), rng.random() < 0.5) for _ in range(trials)]


def loss_tolerance(lost_a: int, lost_b: int, trials: int) -> float:
    """How far one loss rate may exceed the other before the excess is significant: a
    one-sided 95% two-proportion z-test (pooled rate, continuity correction 1/n)."""
    pooled = (lost_a + lost_b) / (2 * trials)
    return RACE_Z * math.sqrt(2 * pooled * (1 - pooled) / trials) + 1 / trials


@dataclass
class RaceTally:
    """The outcomes of both sides, counted."""

    trials: int  # per side
    plan: Plan
    counts: dict[str, Counter[str]]  # side -> outcome -> trials
    lost: dict[str, int]  # side -> messages lost ("lost" or "reported")
    lost_by_first: dict[str, dict[str, int]]  # side -> "kill"/"send" first -> lost
    orders: dict[str, int]  # "kill"/"send" -> trials with that one first
    tolerance: float  # how far mqfs's loss rate may exceed the kernel's

    @classmethod
    def of(cls, sides: Sequence[RaceSide], plan: Plan) -> RaceTally:
        trials = len(plan)
        counts = {side.name: Counter(side.outcomes) for side in sides}
        lost = {name: c["lost"] + c["reported"] for name, c in counts.items()}
        by_order = {
            side.name: {
                first: sum(
                    outcome in ("lost", "reported")
                    for outcome, (_, kill_first) in zip(side.outcomes, plan, strict=True)
                    if kill_first == (first == "kill")
                )
                for first in ("kill", "send")
            }
            for side in sides
        }
        kill_first_trials = sum(kill_first for _, kill_first in plan)
        orders = {"kill": kill_first_trials, "send": trials - kill_first_trials}
        tolerance = loss_tolerance(lost["kernel"], lost["mqfs"], trials)
        return cls(trials, plan, counts, lost, by_order, orders, tolerance)

    def loss_rate(self, name: str) -> float:
        return self.lost[name] / self.trials


@contextmanager
def race_sides(workdir: Path, kernel: KernelQueues) -> Iterator[tuple[RaceSide, RaceSide]]:
    """A kernel queue and a queue in a fresh mqfs daemon, each with a reader's descriptor
    and the test's; all closed (and the daemon stopped) at the end."""
    backend = kernel.backend
    reader_mqd = kernel.open("race", SMALL)
    name = kernel.names[-1]
    test_mqd = backend.open(name, os.O_RDWR | os.O_NONBLOCK)
    try:
        with mqfs_daemon(workdir, MOUNT_OPTIONS) as daemon:
            queue = daemon.create("race", PAIR_QUEUE_DEPTH, SMALL)
            reader_fd = open_queue(queue, os.O_RDONLY)
            test_fd = open_queue(queue, os.O_RDWR | os.O_NONBLOCK)
            try:
                yield (
                    RaceSide(
                        "kernel",
                        lambda: backend.receive(reader_mqd, SMALL)[0],
                        partial(backend.send, test_mqd),
                        lambda: take_or_none(partial(backend.receive, test_mqd, SMALL)),
                        kernel_reader_blocked,
                    ),
                    RaceSide(
                        "mqfs",
                        lambda: calls.receive(reader_fd, SMALL)[0],
                        partial(calls.send, test_fd),
                        lambda: take_or_none(partial(calls.receive, test_fd, SMALL)),
                        lambda pid: mqfs_reader_blocked(queue),
                    ),
                )
            finally:
                os.close(reader_fd)
                os.close(test_fd)
    finally:
        backend.close(reader_mqd)
        backend.close(test_mqd)


def measure_kill_race(report: Report, scale: Scale, workdir: Path, kernel: KernelQueues) -> None:
    trials = scale.race_trials
    progress(
        f"a blocked reader SIGKILLed as a message arrives: {trials} trials each, "
        "kernel and mqfs interleaved (unpinned)"
    )
    plan = race_plan(trials)
    with race_sides(workdir, kernel) as sides:
        start = time.perf_counter()
        for index, (delay_ns, kill_first) in enumerate(plan):
            for side in sides if index % 2 == 0 else sides[::-1]:
                message = b"race %d %s" % (index, side.name.encode())
                side.outcomes.append(race_trial(side, message, delay_ns, kill_first))
        seconds = time.perf_counter() - start
    report_kill_race(report, RaceTally.of(sides, plan), sides, seconds)


def report_kill_race(
    report: Report, tally: RaceTally, sides: Sequence[RaceSide], seconds: float
) -> None:
    report.extra["kill_race"] = {
        "trials_per_side": tally.trials,
        "seed": RACE_SEED,
        "delay_max_ns": RACE_DELAY_MAX_NS,
        "kill_first_trials": tally.orders["kill"],
        "outcomes": {name: dict(c) for name, c in tally.counts.items()},
        "lost": tally.lost,
        "lost_by_first": tally.lost_by_first,
        "loss_rate": {"kernel": tally.loss_rate("kernel"), "mqfs": tally.loss_rate("mqfs")},
        "tolerance": tally.tolerance,
        "tolerance_method": "one-sided 95% two-proportion z-test, pooled, continuity-corrected",
        "seconds": seconds,
        "plan": tally.plan,
        "trials": {side.name: side.outcomes for side in sides},
    }
    report_race_rows(report, tally, [side.name for side in sides], seconds)
    kernel_rate, tolerance = tally.loss_rate("kernel"), tally.tolerance
    report.target(
        "h-loss",
        f"mqfs loss rate (%) <= kernel's {kernel_rate:.1%} + {tolerance * 100:.1f} pp "
        "(one-sided 95% z-test)",
        tally.loss_rate("mqfs") * 100,
        (kernel_rate + tolerance) * 100,
        at_most=True,
    )
    report.target(
        "h-dup",
        "mqfs duplicates (a message both received and still queued) = 0",
        tally.counts["mqfs"]["duplicate"],
        0,
        at_most=True,
    )


def report_race_rows(report: Report, tally: RaceTally, names: list[str], seconds: float) -> None:
    trials, orders = tally.trials, tally.orders
    report.section(
        f"h a reader blocked in receive, SIGKILLed as a message arrives ({trials} trials "
        f"each, send and kill 0-{RACE_DELAY_MAX_NS // 1000} µs apart, interleaved, unpinned)"
    )
    for name in names:
        c, split, lost = tally.counts[name], tally.lost_by_first[name], tally.lost[name]
        report.rows.append(
            (
                f"{name}: message lost (not queued after)",
                f"{lost}/{trials} = {lost / trials:.1%}",
                f"{c['kept'] + c['duplicate']} kept",
                "once",
                f"kill first {split['kill']}/{orders['kill']}, send first "
                f"{split['send']}/{orders['send']}; {c['reported']} of the lost reached the "
                f"reader's code; {c['duplicate']} duplicates",
            )
        )
    report.rows.append(
        (
            "  loss-rate tolerance",
            f"mqfs may exceed the kernel by {tally.tolerance * 100:.1f} pp (one-sided 95% "
            f"two-proportion z-test, pooled, continuity-corrected, n = {trials} each); "
            f"{seconds:.1f} s",
        )
    )

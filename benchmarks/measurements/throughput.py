"""Send+receive pairs on the kernel's mqueue and on mqfs, against the FUSE floor (a NOOP
ioctl and a 64-byte read of the same daemon), one thread; then 2 producers + 2 consumers,
and 1 producer + 1 consumer process on each of 1, 4, 16 and 64 queues.
In the same interleaved group: the physical floor (the same NOOP and read answered by a
minimal C libfuse daemon, ``native``), and an unmodified C program's mq_send+mq_receive
pairs on the kernel and under the LD_PRELOAD shim on mqfs.

Tails: the 64-byte single-thread rows (and the NOOP) are measured a second time with
every pair timed alone — ``time.perf_counter_ns`` around it in Python, ``clock_gettime``
in the C program — in interleaved chunks with the same pinning; the table shows the p50
and the p99 of those samples (each sample includes the timer's own cost, shown too).

Target (a): a 64-byte pair through mqfs costs at most NOOP_BUDGET NOOP round trips.
Target (l): mqfs's NOOP and 64-byte read cost at most C_FLOOR_BUDGET times the C floor's.
Target (m): the C program's pair under the shim costs at most SHIM_NOOP_BUDGET NOOPs.
Target (q): the aggregate rate of 16 queues (1+1 processes each) is at least
QUEUES_SCALE_MIN times one queue's, and no count of queues falls below it. The daemon,
one thread, is what bounds the total: it runs alone on the pinned CPU and the processes
on the other, and the rate is taken while all of them run (``rate_while_all_run``); the
kernel's mqueue with the same processes is measured beside it.
"""

from __future__ import annotations

import bisect
import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from queue import Empty
from typing import Any

from environment import (
    LARGE,
    PAIR_QUEUE_DEPTH,
    SMALL,
    BenchError,
    Daemon,
    KernelQueues,
    die_with_parent,
    open_queue,
)
from mqfs.client import calls
from mqfs.client.backends import KernelBackend
from native import FloorDaemon, Programs, c_pairs_sampler, c_pairs_timer, plain_env, shim_env
from report import Report, format_seconds, progress
from timing import (
    Sampler,
    Scale,
    Timer,
    interleaved,
    interleaved_samples,
    loop_sampler,
    loop_timer,
    pair_sampler,
    pair_timer,
    percentile,
    sampler_overhead_ns,
)

NOOP_BUDGET = 2.5  # target (a): NOOP round trips per 64 B send+receive pair
C_FLOOR_BUDGET = 2.0  # target (l): mqfs's NOOP and 64 B read, in multiples of the C floor's
SHIM_NOOP_BUDGET = 2.3  # target (m): NOOP round trips per mq_send+mq_receive under the shim
QUEUES_SCALE_MIN = 0.8  # target (q): aggregate rate of N queues / one queue's
QUEUES_REP_SECONDS_MIN = 0.1  # target (q): a run this long at least, even with --quick
TAIL_CHUNKS = 4  # the per-pair samples of each subject are taken in this many interleaved runs

PAIR_LABELS = {
    "kernel_pair_64": ("send+receive 64 B, 1 thread", "pair"),
    "kernel_pair_8k": ("send+receive 8 KiB, 1 thread", "pair"),
    "kernel_c_pair_64": ("C program: mq_send+mq_receive 64 B", "pair"),
    "floor_noop": ("NOOP ioctl", "call"),
    "floor_read_64": ("64 B direct_io read (status)", "call"),
    "c_floor_noop": ("C floor (libfuse): NOOP ioctl", "call"),
    "c_floor_read_64": ("C floor (libfuse): 64 B direct_io read", "call"),
    "mqfs_rw_64": ("write/read 64 B", "pair"),
    "mqfs_ioctl_64": ("SEND/RECEIVE ioctls 64 B", "pair"),
    "mqfs_rw_8k": ("write/read 8 KiB", "pair"),
    "mqfs_ioctl_8k": ("SEND/RECEIVE ioctls 8 KiB", "pair"),
    "shim_pair_64": ("C program under the shim: 64 B", "pair"),
}
TAIL_KEYS = (
    "kernel_pair_64",
    "kernel_c_pair_64",
    "c_floor_noop",
    "floor_noop",
    "noop_pair",
    "mqfs_rw_64",
    "mqfs_ioctl_64",
    "shim_pair_64",
)
TWO_BY_TWO_LABELS = {
    "kernel_2x2_64": ("kernel 2+2 processes, 64 B (total)", "pair"),
    "mqfs_2x2_64": ("mqfs 2+2 processes, write/read 64 B", "pair"),
}


# -- 1-3: send+receive pairs and the FUSE floor, one thread --------------------------------


def kernel_pair_timer(backend: KernelBackend, mqd: int, size: int) -> Timer:
    message = bytes(size)
    return pair_timer(partial(backend.send, mqd, message), partial(backend.receive, mqd, size))


def noop_timer(fd: int) -> Timer:
    """The FUSE floor: NOOP ioctls on *fd*, a round trip into the daemon that does nothing."""
    return loop_timer(lambda: calls.noop(fd))


def measure_pairs_and_floor(
    report: Report,
    scale: Scale,
    daemon: Daemon,
    kernel: KernelQueues,
    floor: FloorDaemon,
    programs: Programs,
    stack: ExitStack,
) -> None:
    progress("kernel pairs, FUSE floors, mqfs pairs and the C program's pairs (one thread)")
    timers, samplers = pair_and_floor_timers(daemon, kernel, stack)
    c_side, c_samplers = c_timers(daemon, kernel, floor, programs, stack)
    timers |= c_side
    samplers |= c_samplers
    report.record_group("pairs", interleaved(timers, scale), PAIR_LABELS)
    report_kernel_pairs(report)
    report_floor(report)
    report_mqfs_pairs(report)
    progress(f"tails: {scale.latency_samples:,} pairs of each 64 B row, each timed alone")
    overhead = sampler_overhead_ns()
    tails = interleaved_samples(
        {key: samplers[key] for key in TAIL_KEYS}, scale.latency_samples, TAIL_CHUNKS
    )
    report_tails(report, tails, overhead)


def c_timers(
    daemon: Daemon, kernel: KernelQueues, floor: FloorDaemon, programs: Programs, stack: ExitStack
) -> tuple[dict[str, Timer], dict[str, Sampler]]:
    """The C floor's NOOP and read (the same client code as mqfs's), and the C program's
    pairs on a kernel queue and, under the shim, on an mqfs queue of the same attributes;
    then Samplers of the C program's pairs."""
    fd = os.open(floor.file, os.O_RDONLY | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    kernel.backend.close(kernel.open("cpairs", SMALL))
    daemon.create("cpairs", PAIR_QUEUE_DEPTH, SMALL)
    on_kernel = (programs.pairs, kernel.names[-1], plain_env())
    on_mqfs = (programs.pairs, "/cpairs", shim_env(programs.shim, daemon.path))
    timers = {
        "c_floor_noop": noop_timer(fd),
        "c_floor_read_64": loop_timer(lambda: os.pread(fd, SMALL, 0)),
        "kernel_c_pair_64": c_pairs_timer(*on_kernel),
        "shim_pair_64": c_pairs_timer(*on_mqfs),
    }
    samplers = {
        "c_floor_noop": loop_sampler(partial(calls.noop, fd)),
        "kernel_c_pair_64": c_pairs_sampler(*on_kernel),
        "shim_pair_64": c_pairs_sampler(*on_mqfs),
    }
    return timers, samplers


def pair_and_floor_timers(
    daemon: Daemon, kernel: KernelQueues, stack: ExitStack
) -> tuple[dict[str, Timer], dict[str, Sampler]]:
    """The timers of PAIR_LABELS on mqfs and librt, on queues of both sizes (closed when
    *stack* closes), and Samplers of the same 64 B pairs and NOOP."""
    backend = kernel.backend
    fds: dict[str, int] = {}
    for size in (SMALL, LARGE):
        queue = daemon.create(f"pairs{size}", PAIR_QUEUE_DEPTH, size)
        fds[f"mqfs{size}"] = open_queue(queue)
        fds[f"kernel{size}"] = kernel.open(f"pairs{size}", size)
    status = os.open(daemon.path / f"pairs{SMALL}" / "status", os.O_RDONLY | os.O_CLOEXEC)
    for fd in (*fds.values(), status):
        stack.callback(os.close, fd)
    small, large = bytes(SMALL), bytes(LARGE)
    mqfs64, mqfs8k = fds[f"mqfs{SMALL}"], fds[f"mqfs{LARGE}"]
    kernel64 = fds[f"kernel{SMALL}"]
    pairs: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "kernel_pair_64": (
            partial(backend.send, kernel64, small),
            partial(backend.receive, kernel64, SMALL),
        ),
        "mqfs_rw_64": (partial(os.write, mqfs64, small), partial(os.read, mqfs64, SMALL)),
        "mqfs_ioctl_64": (
            partial(calls.send, mqfs64, small),
            partial(calls.receive, mqfs64, SMALL),
        ),
        "mqfs_rw_8k": (partial(os.write, mqfs8k, large), partial(os.read, mqfs8k, LARGE)),
        "mqfs_ioctl_8k": (
            partial(calls.send, mqfs8k, large),
            partial(calls.receive, mqfs8k, LARGE),
        ),
    }
    timers = {key: pair_timer(*pair) for key, pair in pairs.items()}
    timers |= {
        "kernel_pair_8k": kernel_pair_timer(backend, fds[f"kernel{LARGE}"], LARGE),
        "floor_noop": noop_timer(mqfs64),
        "floor_read_64": loop_timer(lambda: os.pread(status, 64, 0)),
    }
    samplers = {key: pair_sampler(*pairs[key]) for key in pairs if key.endswith("_64")}
    noop = partial(calls.noop, mqfs64)
    samplers["floor_noop"] = loop_sampler(noop)
    samplers["noop_pair"] = pair_sampler(noop, noop)  # the floor of a pair's two round trips
    return timers, samplers


def report_kernel_pairs(report: Report) -> None:
    report.section("1 kernel mqueue (private IPC namespace; ctypes librt, and from C)")
    for key in ("kernel_pair_64", "kernel_pair_8k", "kernel_c_pair_64"):
        report.row(key, report.rate(key), "baseline")


def report_floor(report: Report) -> None:
    report.section("2 FUSE floor (same daemon), and the physical floor (a C libfuse daemon)")
    report.ratio("floor_noop_vs_kernel", "floor_noop", "kernel_pair_64", "NOOP / kernel pair")
    in_noops = report.ratio("floor_read_vs_noop", "floor_read_64", "floor_noop", "read / NOOP")
    noop_x = report.ratio("floor_noop_vs_c", "floor_noop", "c_floor_noop", "NOOP / C NOOP")
    read_x = report.ratio("floor_read_vs_c", "floor_read_64", "c_floor_read_64", "read / C read")
    report.row(
        "floor_noop", report.rate("floor_noop"), f"= 1 NOOP (the unit below); {noop_x:.2f}x C floor"
    )
    report.row(
        "floor_read_64", report.rate("floor_read_64"), f"{in_noops:.2f} NOOP; {read_x:.2f}x C floor"
    )
    for key in ("c_floor_noop", "c_floor_read_64"):
        in_noops = report.ratio(f"{key}_in_noops", key, "floor_noop", "C floor / NOOP")
        report.row(key, report.rate(key), f"{in_noops:.2f} NOOP; baseline")
    for suffix, what, value in (("noop", "NOOP", noop_x), ("read", "64 B direct_io read", read_x)):
        report.target(
            f"l-{suffix}",
            f"mqfs {what} costs <= {C_FLOOR_BUDGET}x the C floor's (a minimal libfuse daemon)",
            value,
            C_FLOOR_BUDGET,
            at_most=True,
        )


def report_mqfs_pairs(report: Report) -> None:
    report.section("3 mqfs send+receive, 1 thread")
    for interface in ("rw", "ioctl"):
        for suffix, kernel_key in (("64", "kernel_pair_64"), ("8k", "kernel_pair_8k")):
            key = f"mqfs_{interface}_{suffix}"
            in_noops = report.ratio(f"{key}_in_noops", key, "floor_noop", "pair / NOOP")
            slower = report.ratio(f"{key}_vs_kernel", key, kernel_key, "pair / kernel pair")
            report.row(key, report.rate(key), f"{in_noops:.2f} NOOP; {slower:.0f}x kernel")
    for interface, name in (("rw", "write/read"), ("ioctl", "SEND/RECEIVE ioctls")):
        report.target(
            f"a-{interface}",
            f"64 B pair via {name} costs <= {NOOP_BUDGET} NOOP round trips",
            report.ratios[f"mqfs_{interface}_64_in_noops"]["value"],
            NOOP_BUDGET,
            at_most=True,
        )
    in_noops = report.ratio("shim_pair_64_in_noops", "shim_pair_64", "floor_noop", "pair / NOOP")
    slower = report.ratio(
        "shim_pair_64_vs_kernel", "shim_pair_64", "kernel_c_pair_64", "shim pair / kernel C pair"
    )
    report.row(
        "shim_pair_64",
        report.rate("shim_pair_64"),
        f"{in_noops:.2f} NOOP; {slower:.0f}x kernel (C)",
    )
    report.target(
        "m",
        f"64 B mq_send+mq_receive of a C program under the shim costs <= {SHIM_NOOP_BUDGET} NOOP",
        in_noops,
        SHIM_NOOP_BUDGET,
        at_most=True,
    )


def report_tails(report: Report, tails: dict[str, list[int]], overhead_ns: int) -> None:
    """p50 and p99 of each subject's per-pair (or per-call) samples."""
    count = len(tails["mqfs_rw_64"])
    report.section(
        f"3 tails, 1 thread: p50 / p99 of {count:,} pairs (or calls) each, every one timed "
        f"alone (perf_counter_ns around it, {overhead_ns} ns included in each; in C "
        f"clock_gettime), {TAIL_CHUNKS} interleaved runs, pinned as above"
    )
    quantiles = {key: (percentile(tails[key], 0.5), percentile(tails[key], 0.99)) for key in tails}
    noop_p50 = quantiles["floor_noop"][0]
    floor_p99 = quantiles["noop_pair"][1]
    labels = {key: label for key, (label, _) in PAIR_LABELS.items()}
    labels["noop_pair"] = "2 NOOP ioctls, timed as one (a pair's floor)"
    report.extra["tails"] = {
        key: {
            "label": labels[key],
            "samples": len(tails[key]),
            "p50_seconds": p50 * 1e-9,
            "p99_seconds": p99 * 1e-9,
            "python_timer_overhead_seconds": overhead_ns * 1e-9,
        }
        for key, (p50, p99) in quantiles.items()
    }
    for key, (p50, p99) in quantiles.items():
        shown = f"{format_seconds(p50 * 1e-9)} / {format_seconds(p99 * 1e-9)}"
        ratio = f"p99 = {p99 / p50:.1f}x p50"
        if key.startswith(("mqfs_", "shim_")):
            ratio += f"; p50 = {p50 / noop_p50:.2f} NOOP p50; p99 = {p99 / floor_p99:.2f}x 2 NOOPs'"
        report.rows.append((labels[key], shown, "", "", ratio))


# -- 1, 3: producer and consumer processes ------------------------------------------------


READY_TIMEOUT = 60.0  # seconds for every worker process to be ready (128 on 2 CPUs)
RESULT_TIMEOUT = 120.0  # seconds for one run of the workers
STOP_TIMEOUT = 10.0  # seconds for all workers to exit once told to, before they are killed
MIN_PAIRS_PER_QUEUE = 128  # per run: long past the workers' staggered start (≈10 ms for 128)
MARK_EVERY = 4  # a worker notes the time after every MARK_EVERY-th operation
WINDOW_MIN_FRACTION = 0.5  # the all-running window counts if it is this much of the run

Worker = Callable[[int], list[float]]
"""Runs *count* operations; returns the time after every MARK_EVERY-th (perf_counter)."""
Pair = tuple[Callable[[], Worker], Callable[[], Worker]]
"""A producer and a consumer (each a Worker's preparation), forked as two processes."""


def _worker_main(prepare: Callable[[], Worker], commands: Any, results: Any) -> None:
    """Prepare once and say so, then run each count *commands* brings (None: exit),
    reporting when it started and ended; a failure is reported to the parent, which raises."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up after Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()  # the command pipes of the other workers would keep this one waiting
    try:
        work = prepare()
    except BaseException as exc:
        results.put(repr(exc))
        return
    results.put(None)
    while (count := commands.recv()) is not None:
        try:
            start = time.perf_counter()
            marks = work(count)
            results.put((start, time.perf_counter(), marks))
        except BaseException as exc:
            results.put(repr(exc))
            return


def marked_loop(operation: Callable[[], object]) -> Worker:
    """A Worker that calls *operation* count times, noting the time every MARK_EVERY."""

    def run(count: int) -> list[float]:
        clock = time.perf_counter
        marks = []
        for index in range(1, count + 1):
            operation()
            if index % MARK_EVERY == 0:
                marks.append(clock())
        return marks

    return run


Span = tuple[float, float, list[float]]
"""A worker's run: its start, its end and its marks."""


def done_by(moment: float, span: Span, count: int) -> float:
    """How many of its *count* operations a worker had done at *moment* (linear between
    its marks)."""
    start, end, marks = span
    if moment <= start:
        return 0.0
    if moment >= end:
        return float(count)
    times = [start, *marks, end]
    done = [0, *(MARK_EVERY * (index + 1) for index in range(len(marks))), count]
    after = bisect.bisect_right(times, moment)
    before = after - 1
    if times[after] <= times[before]:
        return float(done[after])
    share = (moment - times[before]) / (times[after] - times[before])
    return done[before] + (done[after] - done[before]) * share


def rate_while_all_run(spans: Sequence[Span], consumers: Sequence[Span], each: int) -> float:
    """Seconds per pair received while every worker ran (from the last start to the first
    end), or over the whole run if that window is short: the workers start one after
    another and finish unevenly, and with 128 of them on one CPU those edges would
    otherwise weigh on the figure as much as the steady state."""
    first, last = min(span[0] for span in spans), max(span[1] for span in spans)
    opened, closed = max(span[0] for span in spans), min(span[1] for span in spans)
    if closed - opened >= WINDOW_MIN_FRACTION * (last - first):
        moved = sum(done_by(closed, span, each) - done_by(opened, span, each) for span in consumers)
        if moved > 0:
            return (closed - opened) / moved
    return (last - first) / (len(consumers) * each)


@contextmanager
def processes_timer(pairs: Sequence[Pair]) -> Iterator[Timer]:
    """A Timer of *count* pairs moved by one producer and one consumer process per entry
    of *pairs*, each entry moving count // len(pairs) (at least MIN_PAIRS_PER_QUEUE); the
    time per pair is taken while all of them run (:func:`rate_while_all_run`). The
    processes are forked
    and prepared (their queue opened) once, not per repetition: 128 forks would outlast
    the measurement. A run starts when each worker gets its count on its own pipe (no
    barrier: waking 128 processes through one lock takes longer than sending 128 counts).
    The workers are stopped, or killed, when the block ends."""
    context = multiprocessing.get_context("fork")
    roles = [role for pair in pairs for role in pair]
    results = context.Queue()
    pipes = [context.Pipe(duplex=False) for _ in roles]  # (the worker's end, ours)
    workers = [
        context.Process(target=_worker_main, args=(role, commands, results))
        for role, (commands, _) in zip(roles, pipes, strict=True)
    ]

    def collect(timeout: float) -> list[Any]:
        """One answer from every worker; raise if one failed or one is late."""
        deadline = time.monotonic() + timeout
        try:
            answers = [results.get(timeout=max(0.0, deadline - time.monotonic())) for _ in workers]
        except Empty:
            raise BenchError("producer or consumer processes did not answer in time") from None
        failures = [answer for answer in answers if isinstance(answer, str)]
        if failures:
            raise BenchError(f"a producer or consumer process failed: {failures[0]}")
        return answers

    def run(count: int) -> float:
        each = max(MIN_PAIRS_PER_QUEUE, count // len(pairs))
        for _, command in pipes:
            command.send(each)
        spans = collect(RESULT_TIMEOUT)
        return rate_while_all_run(spans, spans[1::2], each)  # roles: producer, consumer, ...

    try:
        for worker in workers:
            worker.start()
        collect(READY_TIMEOUT)
        yield run
    finally:
        for _, command in pipes:
            with suppress(OSError):
                command.send(None)
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        for ends in pipes:
            for end in ends:
                end.close()


def kernel_worker(backend: KernelBackend, name: str, role: str) -> Callable[[], Worker]:
    def prepare() -> Worker:
        mqd = backend.open(name, os.O_RDWR)
        if role == "send":
            return marked_loop(partial(backend.send, mqd, bytes(SMALL)))
        return marked_loop(partial(backend.receive, mqd, SMALL))

    return prepare


def mqfs_worker(queue_dir: Path, role: str) -> Callable[[], Worker]:
    def prepare() -> Worker:
        fd = open_queue(queue_dir, os.O_WRONLY if role == "send" else os.O_RDONLY)
        if role == "send":
            return marked_loop(partial(os.write, fd, bytes(SMALL)))
        return marked_loop(partial(os.read, fd, SMALL))

    return prepare


def measure_two_by_two(report: Report, scale: Scale, daemon: Daemon, kernel: KernelQueues) -> None:
    progress("2 producers + 2 consumers (processes)")
    kernel_mqd = kernel.open("parallel", SMALL)
    kernel.backend.close(kernel_mqd)
    kernel_name = kernel.names[-1]
    queue = daemon.create("parallel", PAIR_QUEUE_DEPTH, SMALL)
    on_kernel = (
        kernel_worker(kernel.backend, kernel_name, "send"),
        kernel_worker(kernel.backend, kernel_name, "receive"),
    )
    on_mqfs = (mqfs_worker(queue, "send"), mqfs_worker(queue, "receive"))
    with ExitStack() as workers:
        timers = {
            "kernel_2x2_64": workers.enter_context(processes_timer([on_kernel] * 2)),
            "mqfs_2x2_64": workers.enter_context(processes_timer([on_mqfs] * 2)),
        }
        starts = dict.fromkeys(timers, scale.parallel_start)
        report.record_group("2x2", interleaved(timers, scale, starts), TWO_BY_TWO_LABELS)
    slower = report.ratio("mqfs_2x2_vs_kernel", "mqfs_2x2_64", "kernel_2x2_64", "mqfs / kernel")
    gain = report.ratio("mqfs_2x2_vs_1", "mqfs_rw_64", "mqfs_2x2_64", "2+2 rate / 1-thread rate")
    report.section("1+3 two producers + two consumers (processes)")
    report.row("kernel_2x2_64", report.rate("kernel_2x2_64"), "baseline")
    report.row(
        "mqfs_2x2_64",
        report.rate("mqfs_2x2_64"),
        f"{slower:.0f}x kernel; {gain:.2f}x 1-thread rate",
    )


# -- 1, 3: one producer + one consumer process on each of N queues -------------------------


def measure_queue_scaling(
    report: Report, scale: Scale, daemon: Daemon, kernel: KernelQueues
) -> None:
    """mqfs's group, then the kernel's (the same processes on kernel queues, to show what
    the machine itself does with 2N processes), each forked once and freed before the next."""
    counts = scale.queue_counts
    progress(f"1 producer + 1 consumer process per queue, on {', '.join(map(str, counts))} queues")
    sides: dict[str, dict[int, list[Pair]]] = {"mqfs": {}, "kernel": {}}
    for count in counts:
        queues = [
            daemon.create(f"scale{count}-{index}", PAIR_QUEUE_DEPTH, SMALL)
            for index in range(count)
        ]
        sides["mqfs"][count] = [
            (mqfs_worker(queue, "send"), mqfs_worker(queue, "receive")) for queue in queues
        ]
        for index in range(count):
            kernel.backend.close(kernel.open(f"scale{count}-{index}", SMALL))
        sides["kernel"][count] = [
            (
                kernel_worker(kernel.backend, name, "send"),
                kernel_worker(kernel.backend, name, "receive"),
            )
            for name in kernel.names[-count:]
        ]
    longer = dataclasses.replace(scale, rep_seconds=max(scale.rep_seconds, QUEUES_REP_SECONDS_MIN))
    for side, pairs in sides.items():
        what = "write/read" if side == "mqfs" else "mq_send/mq_receive"
        labels = {
            f"{side}_queues_{count}": (
                f"{side} {count} queue{'s' if count > 1 else ''} x (1+1), {what} 64 B",
                "pair",
            )
            for count in counts
        }
        with ExitStack() as workers:
            timers = {
                key: workers.enter_context(processes_timer(pairs[count]))
                for key, count in zip(labels, counts, strict=True)
            }
            starts = {  # what a run does at least: calibration starts there
                key: max(scale.parallel_start, MIN_PAIRS_PER_QUEUE * count)
                for key, count in zip(labels, counts, strict=True)
            }
            report.record_group(f"queues-{side}", interleaved(timers, longer, starts), labels)
    report.section(
        "1+3 scale: one producer + one consumer process per queue (total rate; the daemon "
        "alone on the pinned CPU, the processes on the other)"
    )
    scaled = {}
    for count in counts:
        key, on_kernel = f"mqfs_queues_{count}", f"kernel_queues_{count}"
        if count == counts[0]:
            report.row(key, report.rate(key), f"baseline (the kernel: {report.rate(on_kernel)})")
            continue
        meaning = "N-queue rate / 1-queue rate"
        scaled[count] = report.ratio(f"{key}_vs_1", f"mqfs_queues_{counts[0]}", key, meaning)
        kernel_scaled = report.ratio(
            f"{on_kernel}_vs_1", f"kernel_queues_{counts[0]}", on_kernel, meaning
        )
        report.row(
            key,
            report.rate(key),
            f"{scaled[count]:.2f}x one queue's rate (the kernel: {kernel_scaled:.2f}x, "
            f"{report.rate(on_kernel)})",
        )
    report.target(
        "q-16",
        f"16 queues (1+1 processes each) move >= {QUEUES_SCALE_MIN}x one queue's pairs/s",
        scaled[16],
        QUEUES_SCALE_MIN,
        at_most=False,
    )
    lowest = min(scaled, key=lambda count: scaled[count])
    report.target(
        "q-all",
        f"no collapse: every count of queues moves >= {QUEUES_SCALE_MIN}x one queue's pairs/s "
        f"(lowest: {lowest} queues)",
        scaled[lowest],
        QUEUES_SCALE_MIN,
        at_most=False,
    )

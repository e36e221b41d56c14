"""Send+receive pairs on the kernel's mqueue and on mqfs, against the FUSE floor (a NOOP
ioctl and a 64-byte read of the same daemon), one thread; then 2 producers + 2 consumers.
In the same interleaved group: the physical floor (the same NOOP and read answered by a
minimal C libfuse daemon, ``native``), and an unmodified C program's mq_send+mq_receive
pairs on the kernel and under the LD_PRELOAD shim on mqfs.

Target (a): a 64-byte pair through mqfs costs at most NOOP_BUDGET NOOP round trips.
Target (l): mqfs's NOOP and 64-byte read cost at most C_FLOOR_BUDGET times the C floor's.
Target (m): the C program's pair under the shim costs at most SHIM_NOOP_BUDGET NOOPs.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from environment import (
    LARGE,
    PAIR_QUEUE_DEPTH,
    SMALL,
    BenchError,
    Daemon,
    KernelQueues,
    open_queue,
)
from mqfs.client import calls
from mqfs.client.backends import KernelBackend
from native import FloorDaemon, Programs, c_pairs_timer, plain_env, shim_env
from report import Report, progress
from timing import Scale, Timer, interleaved, loop_timer, pair_timer

NOOP_BUDGET = 2.5  # target (a): NOOP round trips per 64 B send+receive pair
C_FLOOR_BUDGET = 2.0  # target (l): mqfs's NOOP and 64 B read, in multiples of the C floor's
SHIM_NOOP_BUDGET = 2.3  # target (m): NOOP round trips per mq_send+mq_receive under the shim

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
    timers = pair_and_floor_timers(daemon, kernel, stack)
    timers |= c_timers(daemon, kernel, floor, programs, stack)
    report.record_group("pairs", interleaved(timers, scale), PAIR_LABELS)
    report_kernel_pairs(report)
    report_floor(report)
    report_mqfs_pairs(report)


def c_timers(
    daemon: Daemon, kernel: KernelQueues, floor: FloorDaemon, programs: Programs, stack: ExitStack
) -> dict[str, Timer]:
    """The C floor's NOOP and read (the same client code as mqfs's), and the C program's
    pairs on a kernel queue and, under the shim, on an mqfs queue of the same attributes."""
    fd = os.open(floor.file, os.O_RDONLY | os.O_CLOEXEC)
    stack.callback(os.close, fd)
    kernel.backend.close(kernel.open("cpairs", SMALL))
    daemon.create("cpairs", PAIR_QUEUE_DEPTH, SMALL)
    return {
        "c_floor_noop": noop_timer(fd),
        "c_floor_read_64": loop_timer(lambda: os.pread(fd, SMALL, 0)),
        "kernel_c_pair_64": c_pairs_timer(programs.pairs, kernel.names[-1], plain_env()),
        "shim_pair_64": c_pairs_timer(
            programs.pairs, "/cpairs", shim_env(programs.shim, daemon.path)
        ),
    }


def pair_and_floor_timers(
    daemon: Daemon, kernel: KernelQueues, stack: ExitStack
) -> dict[str, Timer]:
    """The timers of PAIR_LABELS on mqfs and librt, on queues of both sizes (closed when
    *stack* closes)."""
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
    return {
        "kernel_pair_64": kernel_pair_timer(backend, fds[f"kernel{SMALL}"], SMALL),
        "kernel_pair_8k": kernel_pair_timer(backend, fds[f"kernel{LARGE}"], LARGE),
        "floor_noop": noop_timer(mqfs64),
        "floor_read_64": loop_timer(lambda: os.pread(status, 64, 0)),
        "mqfs_rw_64": pair_timer(partial(os.write, mqfs64, small), partial(os.read, mqfs64, SMALL)),
        "mqfs_ioctl_64": pair_timer(
            partial(calls.send, mqfs64, small), partial(calls.receive, mqfs64, SMALL)
        ),
        "mqfs_rw_8k": pair_timer(partial(os.write, mqfs8k, large), partial(os.read, mqfs8k, LARGE)),
        "mqfs_ioctl_8k": pair_timer(
            partial(calls.send, mqfs8k, large), partial(calls.receive, mqfs8k, LARGE)
        ),
    }


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


# -- 1, 3: two producers + two consumers ---------------------------------------------------


Worker = Callable[[int], None]
"""Opens what it needs, then returns; the returned loop runs *count* operations."""


def _worker_main(
    prepare: Callable[[], Worker],
    count: int,
    barrier: Any,
    results: Any,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up after Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        work = prepare()
        barrier.wait(timeout=30)
        start = time.perf_counter()
        work(count)
        results.put((start, time.perf_counter(), None))
    except BaseException as exc:  # reported to the parent, which raises
        results.put((0.0, 0.0, repr(exc)))


def two_by_two_timer(producer: Callable[[], Worker], consumer: Callable[[], Worker]) -> Timer:
    """A Timer of *count* pairs moved by 2 producer and 2 consumer processes (forked)."""
    context = multiprocessing.get_context("fork")

    def run(count: int) -> float:
        each = max(1, count // 2)
        barrier = context.Barrier(5)
        results = context.Queue()
        workers = [
            context.Process(target=_worker_main, args=(role, each, barrier, results))
            for role in (producer, producer, consumer, consumer)
        ]
        try:
            for worker in workers:
                worker.start()
            barrier.wait(timeout=30)
            spans = [results.get(timeout=120) for _ in workers]
        except BaseException:
            for worker in workers:
                if worker.is_alive():
                    worker.terminate()
            raise
        finally:
            for worker in workers:
                worker.join(timeout=10)
                if worker.is_alive():
                    worker.kill()
                    worker.join()
        failures = [error for _, _, error in spans if error]
        if failures:
            raise BenchError(f"a 2+2 worker failed: {failures[0]}")
        elapsed = max(end for _, end, _ in spans) - min(start for start, _, _ in spans)
        return float(elapsed) / (2 * each)

    return run


def kernel_worker(backend: KernelBackend, name: str, role: str) -> Callable[[], Worker]:
    def prepare() -> Worker:
        mqd = backend.open(name, os.O_RDWR)
        message = bytes(SMALL)

        def send_all(count: int) -> None:
            for _ in range(count):
                backend.send(mqd, message)

        def receive_all(count: int) -> None:
            for _ in range(count):
                backend.receive(mqd, SMALL)

        return send_all if role == "send" else receive_all

    return prepare


def mqfs_worker(queue_dir: Path, role: str) -> Callable[[], Worker]:
    def prepare() -> Worker:
        fd = open_queue(queue_dir, os.O_WRONLY if role == "send" else os.O_RDONLY)
        message = bytes(SMALL)

        def send_all(count: int) -> None:
            for _ in range(count):
                os.write(fd, message)

        def receive_all(count: int) -> None:
            for _ in range(count):
                os.read(fd, SMALL)

        return send_all if role == "send" else receive_all

    return prepare


def measure_two_by_two(report: Report, scale: Scale, daemon: Daemon, kernel: KernelQueues) -> None:
    progress("2 producers + 2 consumers (processes)")
    kernel_mqd = kernel.open("parallel", SMALL)
    kernel.backend.close(kernel_mqd)
    kernel_name = kernel.names[-1]
    queue = daemon.create("parallel", PAIR_QUEUE_DEPTH, SMALL)
    timers = {
        "kernel_2x2_64": two_by_two_timer(
            kernel_worker(kernel.backend, kernel_name, "send"),
            kernel_worker(kernel.backend, kernel_name, "receive"),
        ),
        "mqfs_2x2_64": two_by_two_timer(mqfs_worker(queue, "send"), mqfs_worker(queue, "receive")),
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

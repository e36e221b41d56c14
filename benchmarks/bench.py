"""mqfs benchmark: the kernel's mqueue, the FUSE floors and mqfs, measured side by side.

It prints a table of figures and their ratios to baselines measured in the same run, and
PASS/FAIL for the README's performance targets:

- (a) a 64 B send+receive pair costs at most 2.5 NOOP round trips (the FUSE floor)
- (b) peek of the last of 65,536 messages costs at most 1.2x peek of the first
- (c) a dump by batch peek is at least 50x faster than one peek per message
- (d) ``ls -l`` of 10,000 messages takes at most 0.5 s
- (e) the daemon's RSS per queued 64 B message is at most 300 B over the payload
- (f) its RSS per empty queue is at most 2,048 B (< 250 MB for 100,000 queues)
- (g) its RSS drifts by at most 5 MB over 100,000 ``mkdir``+``rmdir`` cycles
- (h) a reader SIGKILLed as a message arrives loses it no more often than on the kernel
  (beyond a one-sided 95% z-test's margin), and never both receives it and leaves it queued
- (i) with ``-o state=DIR`` the 64 B write/read pair costs at most 1.15x the pair without
- (j) kill -9 of a journaled daemon under load loses no acknowledged message beyond the
  receives in flight, and duplicates none (20 runs of 50,000 messages)
- (k) the journal after 1,000,000 send+receive pairs on 10 queues is at most 2 x live data
  + a constant
- (l) mqfs's NOOP and 64 B direct_io read cost at most 2.0x those of the physical floor, a
  minimal C libfuse daemon measured by the same client code
- (m) an unmodified C program's 64 B mq_send+mq_receive pair under the LD_PRELOAD shim
  costs at most 2.3 NOOP round trips (the same program on the kernel's mqueue is shown)
- (n) batch send+receive of 64 B messages (framed I/O, many per FUSE request) moves at
  least 1.0x as many messages per second as the kernel's one-by-one pairs from Python (the
  kernel from C is shown beside it)
- (o) a dump of 65,536 messages by framed peeks is at least 200x faster than one peek per
  message
- (p) a restore of 65,536 messages (framed writes) is at least 100x faster than one send
  per message (measured on 4,096 sends, extrapolated)
- (q) 16 queues, each with one producer and one consumer process, move at least 0.8x the
  pairs per second of one queue with its two processes, and no count of 1, 4, 16 or 64
  queues falls below that
- with ``-o fastpath`` (the queue in a shared mapping), against the kernel in the same run:
  (r) an unmodified C program's 64 B pairs under the shim at least 0.5x the kernel's rate;
  (s) 1 producer + 1 consumer process and (t) 2 + 2 processes with random priorities at
  least 0.5x the kernel's messages per second; (u) the Python client's 64 B pairs at least
  1.0x the kernel's driven from Python through ctypes; (v) the daemon's CPU time per pair
  with no poller or watcher at most 0.05x the plain mount's (``measurements/fastpath.py``)

The 64 B single-thread rows are also shown as p50 / p99 of pairs timed one by one.

Modules beside this one: ``timing`` (timers, interleaved repetitions, medians and paired
ratios: the method), ``environment`` (the private IPC namespace, mqfs daemons, CPU pinning,
the RSS guard), ``native`` (the C side, compiled each run: the C floor daemon, a C program
of mq_send+mq_receive pairs, another of N+M processes, the shim), ``measurements`` (one
module per area: throughput, batches, reading, memory, race, durability, fastpath) and
``report`` (figures, targets, the table, the JSON).
Each says how it measures.

Run ``scripts/bench`` (``--quick`` for a smoke run with small counts, ``--json PATH``).
A full run takes about 12 minutes on a 2-CPU machine, most of it creating 100,000 queues,
100,000 ``mkdir``+``rmdir`` cycles, 20 kill -9 runs and 1,000,000 journaled pairs;
``--quick`` about 30 seconds. The exit status is 0 when the measurement ran, whether or not
the targets pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import environment
import native
from environment import MOUNT_OPTIONS, BenchError, mqfs_daemon, placed, set_apart
from measurements import batches, durability, fastpath, memory, race, reading, throughput
from report import Report, print_table
from timing import FULL, QUICK, Scale


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench",
        description="Benchmark mqfs against the kernel's mqueue and the FUSE floor.",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=Path("bench-results.json"),
        metavar="PATH",
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--repetitions", type=int, metavar="N", help="interleaved repetitions per figure"
    )
    parser.add_argument(
        "--rep-seconds", type=float, metavar="S", help="how long one repetition of a rate lasts"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="leave the benchmark and the daemon unpinned (by default single-threaded "
        "figures run with both on one CPU)",
    )
    return parser.parse_args(argv)


def chosen_scale(args: argparse.Namespace) -> Scale:
    scale = QUICK if args.quick else FULL
    if args.repetitions:
        scale = dataclasses.replace(scale, repetitions=max(1, args.repetitions))
    if args.rep_seconds:
        scale = dataclasses.replace(scale, rep_seconds=args.rep_seconds)
    return scale


def run(scale: Scale, quick: bool, pin: set[int] | None) -> Report:
    """Every measurement, in order; every mount, queue and directory undone at the end."""
    commit = environment.git_commit()
    private = environment.private_ipc_namespace()
    environment.lift_msgqueue_rlimit()
    report = Report(meta=environment.describe(scale, quick, pin, private, commit))
    with environment.workspace() as space:
        started = time.monotonic()
        kernel, workdir = space.kernel, space.workdir
        programs = native.build(workdir)
        with ExitStack() as stack:
            daemon = stack.enter_context(mqfs_daemon(workdir, MOUNT_OPTIONS))
            floor = stack.enter_context(native.floor_daemon(workdir, programs.floor))
            with placed([daemon.process.pid, floor.process.pid], pin):
                throughput.measure_pairs_and_floor(
                    report, scale, daemon, kernel, floor, programs, stack
                )
            throughput.measure_two_by_two(report, scale, daemon, kernel)  # 4 workers: every CPU
            with set_apart([daemon.process.pid], pin):  # the daemon alone on its CPU
                throughput.measure_queue_scaling(report, scale, daemon, kernel)
            with placed([daemon.process.pid], pin):
                batches.measure_batches(report, scale, daemon, kernel, programs, stack)
                batches.measure_restore(report, scale, daemon)
                reading.measure_peek_cat_dump(report, scale, daemon, stack, space.baseline_dir)
                reading.measure_ls_and_cat_commands(
                    report, scale, daemon, stack, space.baseline_dir
                )
        reading.measure_request_counts(report, scale, workdir)
        fastpath.measure_fastpath(report, scale, workdir, kernel, programs, pin)
        memory.measure_memory(report, scale, workdir)
        memory.measure_empty_queues(report, scale, workdir, pin)
        memory.measure_queue_churn(report, scale, workdir, pin)
        race.measure_kill_race(report, scale, workdir, kernel)
        durability.measure_state_cost(report, scale, workdir, pin)
        durability.measure_kill_runs(report, scale, workdir)
        durability.measure_journal_size(report, scale, workdir)
    report.meta["seconds"] = time.monotonic() - started
    return report


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    try:
        pin = None if args.no_pin else {max(os.sched_getaffinity(0))}
        report = run(chosen_scale(args), args.quick, pin)
    except KeyboardInterrupt:
        print("bench: interrupted; every mount was undone", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    print_table(report)
    args.json.write_text(json.dumps(report.as_json(), indent=2) + "\n")
    print(f"results: {args.json} ({report.meta['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

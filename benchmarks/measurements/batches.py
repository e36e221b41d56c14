"""Bulk transfer by framed I/O (many whole messages per FUSE read or write) against the
kernel's one-by-one calls, and the restore of a large dump against one send per message.

In one interleaved group: mqfs's batch send+receive of 64 B messages (send_many of up to
BATCH messages, then receive_many until they are back: two to a few requests per batch),
the kernel's mq_send+mq_receive pairs from Python (ctypes, as the pairs group) and the
same pairs from a C program. The unit is one message sent and received.

Target (n): mqfs's batch throughput is at least BATCH_VS_KERNEL_MIN times the kernel's
one-by-one throughput from Python (the C program's is shown beside it).
Target (p): restoring a dump of ``peek_queue`` (65,536) 64 B messages is at least
RESTORE_SPEEDUP_MIN times faster than one send per message: the median of ``repetitions``
restores against the one-by-one rate, measured on ONE_BY_ONE_SAMPLE messages and
extrapolated (the row says so).
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import ExitStack
from functools import partial

from environment import SMALL, BenchError, Daemon, KernelQueues, open_queue
from measurements.throughput import kernel_pair_timer
from mqfs.client import calls, dump
from mqfs.client.backends import MqfsBackend
from native import Programs, c_pairs_timer, plain_env
from report import Report, progress
from timing import Scale, Timer, interleaved, timed_once

BATCH_VS_KERNEL_MIN = 1.0  # target (n)
RESTORE_SPEEDUP_MIN = 100.0  # target (p)
BATCH = 8192  # messages per send_many: 8192 frames of 72 B = 576 KiB, one framed write
ONE_BY_ONE_SAMPLE = 4096

LABELS = {
    "batch_mqfs_64": ("mqfs send_many+receive_many 64 B", "msg"),
    "batch_kernel_64": ("kernel mq_send+mq_receive 64 B (Python)", "msg"),
    "batch_kernel_c_64": ("kernel mq_send+mq_receive 64 B (C)", "msg"),
}


def batch_timer(fd: int, size: int) -> Timer:
    """*count* messages of *size* bytes sent by send_many in batches of BATCH, each batch
    received by receive_many before the next goes (the queue holds one batch)."""
    messages = [(bytes(size), 0)] * BATCH

    def run(count: int) -> float:
        start = time.perf_counter()
        done = 0
        while done < count:
            batch = min(BATCH, count - done)
            calls.send_many(fd, messages[:batch])
            received = 0
            while received < batch:
                received += len(calls.receive_many(fd))
            done += batch
        return (time.perf_counter() - start) / count

    return run


def measure_batches(
    report: Report,
    scale: Scale,
    daemon: Daemon,
    kernel: KernelQueues,
    programs: Programs,
    stack: ExitStack,
) -> None:
    progress("batch send+receive (framed I/O) against the kernel's pairs")
    fd = open_queue(daemon.create("batch", BATCH, SMALL))
    stack.callback(os.close, fd)
    mqd = kernel.open("batch", SMALL)
    stack.callback(kernel.backend.close, mqd)
    timers = {
        "batch_mqfs_64": batch_timer(fd, SMALL),
        "batch_kernel_64": kernel_pair_timer(kernel.backend, mqd, SMALL),
        "batch_kernel_c_64": c_pairs_timer(programs.pairs, kernel.names[-1], plain_env()),
    }
    report.record_group("batches", interleaved(timers, scale), LABELS)
    report.section("4 bulk transfer: many messages per request (framed I/O)")
    to_python = report.ratio(
        "batch_vs_kernel_python", "batch_kernel_64", "batch_mqfs_64", "kernel (Python) / batch"
    )
    to_c = report.ratio(
        "batch_vs_kernel_c", "batch_kernel_c_64", "batch_mqfs_64", "kernel (C) / batch"
    )
    report.row(
        "batch_mqfs_64",
        report.rate("batch_mqfs_64"),
        f"{to_python:.2f}x kernel from Python; {to_c:.2f}x kernel from C",
    )
    report.row("batch_kernel_64", report.rate("batch_kernel_64"), "baseline")
    report.row("batch_kernel_c_64", report.rate("batch_kernel_c_64"), "shown beside it")
    report.target(
        "n",
        f"batch send+receive 64 B >= {BATCH_VS_KERNEL_MIN:.1f}x the kernel's pairs from Python",
        to_python,
        BATCH_VS_KERNEL_MIN,
        at_most=False,
    )


def measure_restore(report: Report, scale: Scale, daemon: Daemon) -> None:
    size = scale.peek_queue
    sample = min(size, ONE_BY_ONE_SAMPLE)
    progress(f"restore of {size:,} messages, and one send per message on {sample:,}")
    # A dump lists its messages in receive order: four priorities, highest first.
    messages = [(b"%064d" % index, 3 - index * 4 // size) for index in range(size)]
    queue = dump.QueueDump("restored", 0o600, os.geteuid(), os.getegid(), size, SMALL, messages)
    backend = MqfsBackend(daemon.path)
    restore_samples = []
    for _ in range(scale.repetitions):  # the fast side: its median counts
        restore_samples.append(timed_once(partial(dump.restore, [queue], backend)))
        fd = open_queue(daemon.path / "restored")
        try:
            if calls.peek_all(fd) != messages:
                raise BenchError("the restored queue differs from the dump")
        finally:
            os.close(fd)
        os.rmdir(daemon.path / "restored")
    restore_seconds = statistics.median(restore_samples)
    fd = open_queue(daemon.create("sent", size, SMALL))
    try:
        each = messages[:sample]
        sample_seconds = timed_once(lambda: [calls.send(fd, m, p) for m, p in each])
    finally:
        os.close(fd)
    os.rmdir(daemon.path / "sent")
    labels = {
        "restore_batch": (f"restore {size:,} x 64 B (framed writes)", "restore"),
        "restore_each": (f"one send each ({sample:,} sent, extrapolated)", "restore"),
    }
    samples = {"restore_batch": restore_samples, "restore_each": [sample_seconds * size / sample]}
    report.record_group("restore", samples, labels)
    speedup = report.ratio("restore_speedup", "restore_each", "restore_batch", "each / batch")
    report.row("restore_batch", f"{size / restore_seconds:,.0f} msgs/s", f"{speedup:.0f}x faster")
    report.row("restore_each", f"{sample / sample_seconds:,.0f} msgs/s", "baseline")
    report.target(
        "p",
        f"restore of {size:,} messages >= {RESTORE_SPEEDUP_MIN:.0f}x faster than one send each",
        speedup,
        RESTORE_SPEEDUP_MIN,
        at_most=False,
    )

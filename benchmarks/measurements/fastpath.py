"""The opt-in shared-memory fast path (``mqfs mount -o fastpath``, issue 17) against the
kernel's mqueue measured in the same run: its own daemon, queues of the kernel's depth.

- (r) an unmodified C program (``mq_pairs``) under the shim, 64 B send+receive pairs on one
  thread, against the same program on the kernel's queue (pinned, interleaved);
- (u) the Python client (``MessageQueue`` on the fast-path mount, whose descriptor maps the
  queue) against the kernel's queue driven from Python through ctypes as leanly as ctypes
  goes (librt's mq_send/mq_receive without argtypes, one preallocated buffer), in the same
  interleaved group;
- (s) 1 producer + 1 consumer process and (t) 2 + 2 processes with random priorities
  (``mq_flow``, unpinned), the same program on the kernel's queue and under the shim;
- (v) the daemon's CPU time (utime + stime of /proc/PID/stat, in clock ticks) per pair of
  the C program under the shim with no poller or watcher, on the fast-path mount against
  a fresh plain mount, each run sized to last about V_SECONDS.

A shim that does not map the queue (one built before its fast path) would make (r),
(s), (t) and (v) measure its daemon path on a fast-path mount, and fail.

A fast-path mount that fails (a daemon without ``-o fastpath``) is reported as such, with
every target here failing, rather than stopping the run.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from environment import (
    MOUNT_OPTIONS,
    PAIR_QUEUE_DEPTH,
    SMALL,
    BenchError,
    Daemon,
    KernelQueues,
    mqfs_daemon,
    placed,
)
from mqfs.client.api import O_CREAT, MessageQueue
from mqfs.client.backends import MqfsBackend
from native import Programs, c_flow_timer, c_pairs_timer, plain_env, shim_env
from report import Report, format_seconds, progress
from timing import Scale, Timer, calibrate, interleaved, pair_timer

FAST_OPTIONS = (*MOUNT_OPTIONS, "fastpath")
SHIM_MIN = 0.5  # targets (r), (s), (t): the fast path's rate / the kernel's
CLIENT_MIN = 1.0  # target (u): the Python client's rate / the kernel's through ctypes
DAEMON_CPU_MAX = 0.05  # target (v): daemon CPU per pair, fast path / plain mount
V_SECONDS = 1.0  # (v): each run lasts about this long (0.3 s with --quick)

PAIR_LABELS = {
    "fp_kernel_c_pair_64": ("kernel: C program, 64 B mq_send+mq_receive", "pair"),
    "fp_shim_pair_64": ("fastpath: the same program under the shim", "pair"),
    "fp_kernel_ctypes_pair_64": ("kernel: ctypes from Python, 64 B pair", "pair"),
    "fp_client_pair_64": ("fastpath: MessageQueue send+receive 64 B", "pair"),
}
FLOW_LABELS = {
    "fp_kernel_flow_1x1": ("kernel: 1 producer + 1 consumer process", "message"),
    "fp_shim_flow_1x1": ("fastpath under the shim: 1 + 1", "message"),
    "fp_kernel_flow_2x2": ("kernel: 2 + 2 processes, random priorities", "message"),
    "fp_shim_flow_2x2": ("fastpath under the shim: 2 + 2, random", "message"),
}
TARGETS = {
    "r": f"C program's 64 B pairs under the shim on -o fastpath >= {SHIM_MIN}x the kernel's",
    "s": f"1 producer + 1 consumer process on -o fastpath >= {SHIM_MIN}x the kernel's msgs/s",
    "t": f"2 + 2 processes, random priorities, on -o fastpath >= {SHIM_MIN}x the kernel's",
    "u": f"Python client's 64 B pairs on -o fastpath >= {CLIENT_MIN}x the kernel's via ctypes",
    "v": f"daemon CPU per pair on -o fastpath (no poller) <= {DAEMON_CPU_MAX}x the plain mount's",
}

# -- HOOK: rows wired from other helpers' functions -------------------------------------
# (w) peek(60000)/peek(0) <= 2 on the fast path, and the crash-test figures, are measured
# by functions written elsewhere (tests/fastq). Each is appended here as a function
# (report, scale, fastpath daemon) -> None: it is called after the rows above, on the same
# fast-path mount, and adds its own rows and targets (next letters: w, x, y).
EXTRA_ROWS: list[Callable[[Report, Scale, Daemon], None]] = []


def measure_fastpath(
    report: Report,
    scale: Scale,
    workdir: Path,
    kernel: KernelQueues,
    programs: Programs,
    pin: set[int] | None,
) -> None:
    """Every row of the fast path, on a fresh fast-path mount (and a fresh plain one for
    (v))."""
    report.section("5 -o fastpath: the queue in a shared mapping, against the kernel (same run)")
    with ExitStack() as stack:
        plain = stack.enter_context(mqfs_daemon(workdir, MOUNT_OPTIONS))
        try:
            fast = stack.enter_context(mqfs_daemon(workdir, FAST_OPTIONS))
        except BenchError as exc:
            report.rows.append(("  not measured: the -o fastpath mount failed", str(exc)))
            for letter, description in TARGETS.items():
                report.target(letter, description, math.nan, 0.0, at_most=False)
            return
        progress("-o fastpath: C pairs under the shim and the Python client, vs the kernel")
        with placed([fast.process.pid], pin):
            measure_pairs(report, scale, fast, kernel, programs, stack)
        progress("-o fastpath: 1+1 and 2+2 processes (mq_flow), vs the kernel")
        measure_flows(report, scale, fast, kernel, programs)
        progress("-o fastpath: the daemon's CPU time per pair, against the plain mount")
        measure_daemon_cpu(report, scale, fast, plain, programs)
        for rows in EXTRA_ROWS:
            rows(report, scale, fast)


def lean_ctypes_pair_timer(mqd: int) -> Timer:
    """The kernel's 64 B pairs from Python through ctypes as cheaply as ctypes goes: the
    baseline of (u)."""
    librt = ctypes.CDLL("librt.so.1", use_errno=True)
    send, receive = librt["mq_send"], librt["mq_receive"]  # every argument converts as is
    receive.restype = ctypes.c_ssize_t
    message, buffer, priority = bytes(SMALL), ctypes.create_string_buffer(SMALL), ctypes.c_uint()
    priority_ref = ctypes.byref(priority)

    def run(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            if send(mqd, message, SMALL, 0) != 0:
                raise BenchError(f"mq_send: {os.strerror(ctypes.get_errno())}")
            length = receive(mqd, buffer, SMALL, priority_ref)
            if length < 0:
                raise BenchError(f"mq_receive: {os.strerror(ctypes.get_errno())}")
            _ = (buffer[:length], priority.value)  # what a caller gets back
        return (time.perf_counter() - start) / count

    return run


def measure_pairs(
    report: Report,
    scale: Scale,
    fast: Daemon,
    kernel: KernelQueues,
    programs: Programs,
    stack: ExitStack,
) -> None:
    """(r) and (u): one thread, pinned with the daemon, interleaved."""
    kernel.backend.close(kernel.open("fpcpairs", SMALL))
    c_queue = kernel.names[-1]
    fast.create("fpcpairs", PAIR_QUEUE_DEPTH, SMALL)
    kernel_mqd = kernel.open("fppairs", SMALL)
    stack.callback(kernel.backend.close, kernel_mqd)
    backend = MqfsBackend(fast.path)
    client = MessageQueue(
        "/fppairs", O_CREAT, max_messages=PAIR_QUEUE_DEPTH, max_message_size=SMALL, backend=backend
    )
    stack.callback(client.close)
    message = bytes(SMALL)
    timers = {
        "fp_kernel_c_pair_64": c_pairs_timer(programs.pairs, c_queue, plain_env()),
        "fp_shim_pair_64": c_pairs_timer(
            programs.pairs, "/fpcpairs", shim_env(programs.shim, fast.path)
        ),
        "fp_kernel_ctypes_pair_64": lean_ctypes_pair_timer(kernel_mqd),
        "fp_client_pair_64": pair_timer(partial(client.send, message), client.receive),
    }
    report.record_group("fastpath-pairs", interleaved(timers, scale), PAIR_LABELS)
    _faster_row(report, "r", "fp_shim_pair_64", "fp_kernel_c_pair_64", SHIM_MIN)
    mapped = backend.mapped(client.mqd)
    _faster_row(report, "u", "fp_client_pair_64", "fp_kernel_ctypes_pair_64", CLIENT_MIN)
    if not mapped:
        report.rows.append(("  note", "the client's descriptor did not map the queue: daemon path"))


def measure_flows(
    report: Report, scale: Scale, fast: Daemon, kernel: KernelQueues, programs: Programs
) -> None:
    """(s) and (t): processes on every CPU, interleaved."""
    kernel.backend.close(kernel.open("fpflow", SMALL))
    on_kernel = (programs.flow, kernel.names[-1], plain_env())
    fast.create("fpflow", PAIR_QUEUE_DEPTH, SMALL)
    on_fast = (programs.flow, "/fpflow", shim_env(programs.shim, fast.path))
    timers = {
        "fp_kernel_flow_1x1": c_flow_timer(*on_kernel, 1, 1, random=False),
        "fp_shim_flow_1x1": c_flow_timer(*on_fast, 1, 1, random=False),
        "fp_kernel_flow_2x2": c_flow_timer(*on_kernel, 2, 2, random=True),
        "fp_shim_flow_2x2": c_flow_timer(*on_fast, 2, 2, random=True),
    }
    starts = dict.fromkeys(timers, scale.parallel_start)
    report.record_group("fastpath-flows", interleaved(timers, scale, starts), FLOW_LABELS)
    _faster_row(report, "s", "fp_shim_flow_1x1", "fp_kernel_flow_1x1", SHIM_MIN)
    _faster_row(report, "t", "fp_shim_flow_2x2", "fp_kernel_flow_2x2", SHIM_MIN)


def _faster_row(report: Report, letter: str, subject: str, baseline: str, at_least: float) -> None:
    """The baseline's row, then the subject's with its rate as a fraction of the
    baseline's (paired repetitions), and target *letter*: at least *at_least*."""
    fraction = 1 / report.ratio(f"{subject}_vs_kernel", subject, baseline, "time / kernel's")
    report.row(baseline, report.rate(baseline), "baseline")
    report.row(subject, report.rate(subject), f"{fraction:.2f}x the kernel's rate")
    report.target(letter, TARGETS[letter], fraction, at_least, at_most=False)


def daemon_cpu_seconds(pid: int) -> float:
    """utime + stime of process *pid* (all its threads, live and exited), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_daemon_cpu(
    report: Report, scale: Scale, fast: Daemon, plain: Daemon, programs: Programs
) -> None:
    """(v): the C program's pairs under the shim, sized to last about V_SECONDS on each
    mount; the daemon's CPU time across the run, per pair."""
    seconds = V_SECONDS if scale.rep_seconds >= 0.1 else 0.3
    tick = 1 / os.sysconf("SC_CLK_TCK")
    per_pair: dict[str, float] = {}
    for key, daemon in (("plain", plain), ("fastpath", fast)):
        daemon.create("fpcpu", PAIR_QUEUE_DEPTH, SMALL)
        timer = c_pairs_timer(programs.pairs, "/fpcpu", shim_env(programs.shim, daemon.path))
        count = calibrate(timer, seconds)
        before = daemon_cpu_seconds(daemon.process.pid)
        wall = timer(count) * count
        used = daemon_cpu_seconds(daemon.process.pid) - before
        per_pair[key] = used / count
        report.figure(
            f"fp_daemon_cpu_{key}", f"daemon CPU per pair: {key}", "pair", [used / count], "cpu"
        )
        shown = format_seconds(used / count) if used else f"< {tick / count * 1e9:,.0f} ns"
        report.rows.append(
            (
                f"  daemon CPU, {key} mount: {shown} a pair",
                f"{used:.2f} s of CPU over {count:,} pairs in {wall:.2f} s (clock tick"
                f" {tick * 1e3:g} ms), no poller or watcher",
            )
        )
    ratio = per_pair["fastpath"] / per_pair["plain"] if per_pair["plain"] > 0 else math.nan
    report.target("v", TARGETS["v"], ratio, DAEMON_CPU_MAX, at_most=True)

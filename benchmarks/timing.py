"""How a figure is measured: timers, calibration, interleaved repetitions, medians and ratios.

Every figure is compared with a baseline measured in the same run, and the ratio is what
the table and the targets are about; absolute numbers are printed too, but they depend on
the machine. Rates are measured in *groups*: each group holds a subject and its baselines
(e.g. a send+receive pair through mqfs, the no-op ioctl of the same daemon, and the
kernel's own pair). Every subject is first calibrated (which also warms it up) to a count
of operations that takes about ``--rep-seconds`` (0.25 s); then the group runs several
repetitions, interleaved — A B C, C B A, A B C ... — so that a noisy neighbour on a shared
machine slows subject and baseline alike instead of one of them. A figure is the median
over the repetitions of the mean time per operation within one repetition; a ratio between
two figures of one group is the median of the per-repetition ratios (each repetition
against its neighbour), so that a slow moment cancels out. The table's spread column is ±
half the range (max - min) of the repetitions, relative to the median. Slow one-off
commands (``ls -l``, ``cat``) are timed by wall clock, a few runs each, interleaved with
their baselines. Tails (p50, p99) come from *Samplers*, which time every operation alone
with ``time.perf_counter_ns`` (the cost of the two clock reads is measured and shown), in
a few interleaved chunks per subject.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Timer = Callable[[int], float]
"""Runs an operation *count* times and returns the seconds per operation."""

Sampler = Callable[[int], list[int]]
"""Runs an operation *count* times, each timed alone: the nanoseconds of each (tails)."""

MAX_CALIBRATION_COUNT = 1 << 22


@dataclass(frozen=True)
class Scale:
    """How much work each measurement does (full run or --quick)."""

    repetitions: int
    rep_seconds: float
    one_off_repetitions: int  # ls -l and cat as subprocesses
    peek_queue: int  # messages in the peek/dump queue (65,536 in a full run)
    ls_messages: int
    memory_messages: int
    empty_queues: int  # target (f): queues created (and kept) in a fresh daemon
    churn_warmup: int  # target (g): mkdir+rmdir cycles before the first RSS reading
    churn_cycles: int  # target (g): cycles between the two RSS readings
    race_trials: int  # target (h): kill-as-a-message-arrives trials on each side
    parallel_start: int  # first calibration count of a 2+2 run (each forks 4 workers)
    state_kill_runs: int  # target (j): kill -9 runs of a journaled daemon under load ...
    state_kill_messages: int  # ... each moving this many messages
    state_pairs: int  # target (k): send+receive pairs before the journal's size is taken
    latency_samples: int  # pairs (or calls) timed one by one per subject, for p50 and p99
    queue_counts: tuple[int, ...]  # target (q): queues, each with 1 producer + 1 consumer


FULL = Scale(
    repetitions=7,
    rep_seconds=0.25,
    one_off_repetitions=3,
    peek_queue=65536,
    ls_messages=10_000,
    memory_messages=100_000,
    empty_queues=100_000,
    churn_warmup=2_000,
    churn_cycles=100_000,  # the count target (g) is stated for
    race_trials=300,
    parallel_start=1024,
    state_kill_runs=20,
    state_kill_messages=50_000,
    state_pairs=1_000_000,
    latency_samples=10_000,
    queue_counts=(1, 4, 16, 64),
)
QUICK = Scale(
    repetitions=3,
    rep_seconds=0.02,
    one_off_repetitions=1,
    peek_queue=2048,
    ls_messages=300,
    memory_messages=20_000,
    empty_queues=2_000,
    churn_warmup=500,
    churn_cycles=3_000,
    race_trials=30,
    parallel_start=64,
    state_kill_runs=2,
    state_kill_messages=2_000,
    state_pairs=20_000,
    latency_samples=600,
    queue_counts=(1, 4, 16, 64),
)


def loop_timer(operation: Callable[[], object]) -> Timer:
    """A Timer that calls *operation* count times."""

    def run(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            operation()
        return (time.perf_counter() - start) / count

    return run


def pair_timer(send: Callable[[], object], receive: Callable[[], object]) -> Timer:
    """A Timer of send+receive pairs, one thread: the queue holds at most one message."""

    def run(count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            send()
            receive()
        return (time.perf_counter() - start) / count

    return run


def pair_sampler(send: Callable[[], object], receive: Callable[[], object]) -> Sampler:
    """A Sampler of send+receive pairs, one thread, each pair between two perf_counter_ns."""

    def run(count: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * count
        for index in range(count):
            start = clock()
            send()
            receive()
            samples[index] = clock() - start
        return samples

    return run


def loop_sampler(operation: Callable[[], object]) -> Sampler:
    """A Sampler of *operation*, each call between two perf_counter_ns."""

    def run(count: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * count
        for index in range(count):
            start = clock()
            operation()
            samples[index] = clock() - start
        return samples

    return run


def sampler_overhead_ns(count: int = 10_000) -> int:
    """The median time a Sampler measures around nothing: what each sample includes
    beyond the operation (two perf_counter_ns calls and the store)."""
    clock = time.perf_counter_ns
    samples = [0] * count
    for index in range(count):
        start = clock()
        samples[index] = clock() - start
    return int(statistics.median(samples))


def interleaved_samples(
    samplers: dict[str, Sampler], total: int, chunks: int
) -> dict[str, list[int]]:
    """*total* samples of each sampler, taken in *chunks* interleaved runs (A B C, C B A ...)
    so that a noisy moment lands on every subject alike."""
    samples: dict[str, list[int]] = {key: [] for key in samplers}
    order = list(samplers)
    each = max(1, total // chunks)
    for _ in range(chunks):
        for key in order:
            samples[key].extend(samplers[key](each))
        order.reverse()
    return samples


def percentile(samples: Sequence[int], fraction: float) -> float:
    """The *fraction* quantile of *samples* (linear interpolation between order statistics)."""
    ordered = sorted(samples)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def calibrate(timer: Timer, seconds: float, start: int = 16) -> int:
    """The count of operations that lasts about *seconds* (running it warms up too)."""
    count = start
    while True:
        elapsed = timer(count) * count
        if elapsed >= seconds / 4 or count >= MAX_CALIBRATION_COUNT:
            return max(1, round(count * seconds / max(elapsed, 1e-9)))
        count *= 4


def interleaved(
    timers: dict[str, Timer], scale: Scale, starts: dict[str, int] | None = None
) -> dict[str, list[float]]:
    """Seconds per operation of every timer, one sample per repetition, interleaved."""
    counts = {
        key: calibrate(timer, scale.rep_seconds, (starts or {}).get(key, 16))
        for key, timer in timers.items()
    }
    samples: dict[str, list[float]] = {key: [] for key in timers}
    order = list(timers)
    for _ in range(scale.repetitions):
        for key in order:
            samples[key].append(timers[key](counts[key]))
        order.reverse()
    return samples


def timed_once(operation: Callable[[], object]) -> float:
    start = time.perf_counter()
    operation()
    return time.perf_counter() - start


def interleaved_runs(
    operations: dict[str, Callable[[], object]], runs: int
) -> dict[str, list[float]]:
    """Wall time of each operation, *runs* times, interleaved (for slow one-off commands)."""
    samples: dict[str, list[float]] = {key: [] for key in operations}
    order = list(operations)
    for _ in range(runs):
        for key in order:
            samples[key].append(timed_once(operations[key]))
        order.reverse()
    return samples


def median_and_spread(samples: Sequence[float]) -> tuple[float, float]:
    """The median of *samples* and their range (max - min) relative to it."""
    median = statistics.median(samples)
    return median, (max(samples) - min(samples)) / median if median > 0 else 0.0


def paired_ratio(top: Sequence[float], bottom: Sequence[float]) -> float:
    """The median of the per-repetition ratios top[i] / bottom[i] (an interleaved group)."""
    return float(statistics.median(a / b for a, b in zip(top, bottom, strict=True)))

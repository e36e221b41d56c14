"""Reading a queue without taking from it: peek at the first, the 1000th and the last of
many messages, ``cat`` of one message, the dump (framed peeks of about 1 MiB and
PEEK_BATCH ioctls, each against one PEEK per message, taken once), and ``ls -l``/``cat``
as commands against the same on tmpfs. The FUSE
requests of one ``ls -l`` are counted from the libfuse debug log of a second daemon mounted
with ``-o debug``.

Targets (b) peek(last) / peek(0), (c) and (o) the dump's speed-ups, (d) ``ls -l``'s wall
time. ``ls -l`` asks the kernel for ``security.selinux`` and ``system.posix_acl_access`` of
every entry, and stops for the rest of the device at the first EOPNOTSUPP, which is what
mqfs answers for every xattr outside ``user.*`` (as the kernel's mqueue does): so the
request count below shows two GETXATTRs per ``ls``, not two per entry.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path

from environment import MOUNT_OPTIONS, SMALL, BenchError, Daemon, fill, mqfs_daemon, open_queue
from measurements.throughput import noop_timer
from mqfs.client import calls
from report import Report, format_seconds, progress
from timing import Scale, Timer, interleaved, interleaved_runs, loop_timer, timed_once

PEEK_RATIO_LIMIT = 1.2  # target (b)
DUMP_SPEEDUP_MIN = 50.0  # target (c): the dump as mqfs dump makes it
DUMP_FRAMED_SPEEDUP_MIN = 200.0  # target (o)
LS_SECONDS_MAX = 0.5  # target (d)


# -- 3: peek, cat, dump --------------------------------------------------------------------


def measure_peek_cat_dump(
    report: Report, scale: Scale, daemon: Daemon, stack: ExitStack, baseline_dir: Path
) -> None:
    size = scale.peek_queue
    progress(f"filling a queue with {size:,} messages")
    queue = daemon.create("peek", size, SMALL)
    fd = open_queue(queue)
    stack.callback(os.close, fd)
    fill_seconds = timed_once(lambda: fill(fd, size))
    report.extra["fill"] = {"messages": size, "seconds": fill_seconds}
    measure_peek_and_cat(report, scale, queue, fd, size, baseline_dir)
    measure_dump(report, fd, size, scale.repetitions)


def measure_peek_and_cat(
    report: Report, scale: Scale, queue: Path, fd: int, size: int, baseline_dir: Path
) -> None:
    """Peek latency at three depths of a *size*-message queue, and cat of one message."""
    progress("peek latency and cat")
    middle = min(1000, size - 1)
    indices = {"peek_first": 0, "peek_1000": middle, "peek_last": size - 1}
    message_path = queue / "msgs" / str(middle)
    baseline_file = baseline_dir / "message"
    baseline_file.write_bytes(b"%064d" % middle)
    timers: dict[str, Timer] = {"peek_noop": noop_timer(fd)}
    for key, index in indices.items():
        timers[key] = loop_timer(partial(calls.peek, fd, index))
    timers["cat_mqfs"] = loop_timer(lambda: read_whole_file(message_path))
    timers["cat_baseline"] = loop_timer(lambda: read_whole_file(baseline_file))
    labels = {"peek_noop": ("NOOP ioctl (this group's baseline)", "call")}
    labels |= {key: (f"peek({index}) of {size:,}", "call") for key, index in indices.items()}
    labels["cat_mqfs"] = (f"open+read+close msgs/{middle}", "call")
    labels["cat_baseline"] = ("open+read+close, tmpfs file", "call")
    report.record_group("peek", interleaved(timers, scale), labels)
    report_peek_and_cat(report, size, list(indices))


def report_peek_and_cat(report: Report, size: int, peeks: Sequence[str]) -> None:
    report.section(f"3 mqfs peek and cat on a {size:,}-message queue")
    report.row("peek_noop", report.rate("peek_noop"), "= 1 NOOP")
    for key in peeks:
        in_noops = report.ratio(f"{key}_in_noops", key, "peek_noop", "peek / NOOP")
        to_first = report.ratio(f"{key}_vs_first", key, "peek_first", "peek(I) / peek(0)")
        report.row(key, report.rate(key), f"{in_noops:.2f} NOOP; {to_first:.2f}x peek(0)")
    report.target(
        "b",
        f"peek({size - 1}) / peek(0) <= {PEEK_RATIO_LIMIT}",
        report.ratios["peek_last_vs_first"]["value"],
        PEEK_RATIO_LIMIT,
        at_most=True,
    )
    in_noops = report.ratio("cat_in_noops", "cat_mqfs", "peek_noop", "cat / NOOP")
    to_tmpfs = report.ratio("cat_vs_tmpfs", "cat_mqfs", "cat_baseline", "cat mqfs / tmpfs")
    report.row("cat_mqfs", report.rate("cat_mqfs"), f"{in_noops:.2f} NOOP; {to_tmpfs:.0f}x tmpfs")
    report.row("cat_baseline", report.rate("cat_baseline"), "baseline")


def read_whole_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def measure_dump(report: Report, fd: int, size: int, repetitions: int) -> None:
    """The framed dump, the fast one, is taken *repetitions* times (its median counts);
    the others once (the one-by-one dump averages over *size* calls by itself)."""
    progress(f"dump of {size:,} messages: framed peeks, PEEK_BATCH, one peek per message")
    expected = [(b"%064d" % index, 0) for index in range(size)]
    framed: list[tuple[bytes, int]] = []
    batch: list[tuple[bytes, int]] = []
    one_by_one: list[tuple[bytes, int]] = []
    framed_samples = [timed_once(lambda: calls.peek_all(fd)) for _ in range(repetitions - 1)]
    framed_samples.append(timed_once(lambda: framed.extend(calls.peek_all(fd))))
    framed_seconds = statistics.median(framed_samples)
    batch_seconds = timed_once(lambda: batch.extend(calls.peek_all(fd, framed=False)))
    each_seconds = timed_once(lambda: one_by_one.extend(calls.peek(fd, i) for i in range(size)))
    if not framed == batch == one_by_one == expected:
        raise BenchError("the dumped messages differ from those queued")
    labels = {
        "dump_framed": (f"dump {size:,} x 64 B, framed peek", "dump"),
        "dump_batch": (f"dump {size:,} x 64 B, PEEK_BATCH", "dump"),
        "dump_each": (f"dump {size:,} x 64 B, peek each", "dump"),
    }
    samples = {
        "dump_framed": framed_samples,
        "dump_batch": [batch_seconds],
        "dump_each": [each_seconds],
    }
    report.record_group("dump", samples, labels)
    framed_speedup = report.ratio(
        "dump_framed_speedup", "dump_each", "dump_framed", "one-by-one / framed"
    )
    speedup = report.ratio("dump_speedup", "dump_each", "dump_batch", "one-by-one / batch")
    report.row(
        "dump_framed", f"{size / framed_seconds:,.0f} msgs/s", f"{framed_speedup:.0f}x faster"
    )
    report.row(
        "dump_batch",
        f"{size / batch_seconds:,.0f} msgs/s",
        f"{speedup:.0f}x faster (the dump's way only for a message too long for one read)",
    )
    report.row("dump_each", f"{size / each_seconds:,.0f} msgs/s", "baseline")
    report.target(
        "c",
        f"the dump (mqfs dump's way: framed peeks) >= {DUMP_SPEEDUP_MIN:.0f}x faster than "
        "one peek per message",
        framed_speedup,
        DUMP_SPEEDUP_MIN,
        at_most=False,
    )
    report.target(
        "o",
        f"dump by framed peeks >= {DUMP_FRAMED_SPEEDUP_MIN:.0f}x faster than one peek each",
        framed_speedup,
        DUMP_FRAMED_SPEEDUP_MIN,
        at_most=False,
    )


# -- 3: ls -l and cat as commands ----------------------------------------------------------


def run_quietly(command: Sequence[str | Path]) -> None:
    subprocess.run(
        [str(part) for part in command],
        stdout=subprocess.DEVNULL,
        check=True,
        env={**os.environ, "LC_ALL": "C"},
    )


def baseline_directory(parent: Path, count: int) -> Path:
    """*count* 64-byte files named 0..count-1 in a tmpfs directory (ls's baseline)."""
    directory = parent / "ls-baseline"
    directory.mkdir()
    for index in range(count):
        (directory / str(index)).write_bytes(b"%064d" % index)
    return directory


def measure_ls_and_cat_commands(
    report: Report, scale: Scale, daemon: Daemon, stack: ExitStack, baseline_dir: Path
) -> None:
    count = scale.ls_messages
    progress(f"ls -l and cat on {count:,} messages")
    queue = daemon.create("ls", count, SMALL)
    fd = open_queue(queue)
    stack.callback(os.close, fd)
    fill(fd, count)
    tmpfs = baseline_directory(baseline_dir, count)
    index = str(count // 2)
    samples = interleaved_runs(
        {
            "ls_mqfs": lambda: run_quietly(["ls", "-l", queue / "msgs"]),
            "ls_baseline": lambda: run_quietly(["ls", "-l", tmpfs]),
            "cat_command_mqfs": lambda: run_quietly(["cat", queue / "msgs" / index]),
            "cat_command_baseline": lambda: run_quietly(["cat", tmpfs / index]),
        },
        scale.one_off_repetitions,
    )
    labels = {
        "ls_mqfs": (f"ls -l msgs/ ({count:,} messages)", "run"),
        "ls_baseline": (f"ls -l tmpfs ({count:,} files)", "run"),
        "cat_command_mqfs": ("cat msgs/N (subprocess)", "run"),
        "cat_command_baseline": ("cat tmpfs file (subprocess)", "run"),
    }
    report.record_group("commands", samples, labels)
    report_ls_and_cat_commands(report, count)


def report_ls_and_cat_commands(report: Report, count: int) -> None:
    ls_ratio = report.ratio("ls_vs_tmpfs", "ls_mqfs", "ls_baseline", "ls -l mqfs / tmpfs")
    cat_ratio = report.ratio(
        "cat_command_vs_tmpfs", "cat_command_mqfs", "cat_command_baseline", "cat mqfs / tmpfs"
    )
    ls_seconds = report.figures["ls_mqfs"]["seconds_per_unit"]
    report.section("3 mqfs as a shell sees it (wall time of the command)")
    per_entry = format_seconds(ls_seconds / count)
    report.row(
        "ls_mqfs",
        f"{per_entry}/entry",
        f"{ls_ratio:.1f}x tmpfs; no request per entry but READDIRPLUS (EOPNOTSUPP "
        "outside user.*: ls asks for its 2 xattrs once per device)",
    )
    report.row("ls_baseline", "", "baseline")
    report.row("cat_command_mqfs", "", f"{cat_ratio:.2f}x tmpfs")
    report.row("cat_command_baseline", "", "baseline")
    report.target(
        "d",
        f"ls -l of {count:,} messages <= {LS_SECONDS_MAX} s",
        ls_seconds,
        LS_SECONDS_MAX,
        at_most=True,
    )


# -- 3: FUSE requests per ls -l (libfuse debug output) -------------------------------------


def count_requests(log: Path, since: int) -> Counter[str]:
    """Requests libfuse logged ("unique: N, opcode: NAME (n), ...") after byte *since*."""
    size, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # let asynchronous RELEASEDIR/FORGET arrive
        current = log.stat().st_size
        if current != size:
            size, stable_since = current, time.monotonic()
        elif time.monotonic() - stable_since > 0.3:
            break
        time.sleep(0.05)
    with open(log, "rb") as file:
        file.seek(since)
        text = file.read().decode(errors="replace")
    return Counter(re.findall(r"opcode: (\w+)", text))


def measure_request_counts(report: Report, scale: Scale, workdir: Path) -> None:
    count = scale.ls_messages
    progress(f"FUSE requests of one ls -l on {count:,} messages (a daemon with -o debug)")
    with mqfs_daemon(workdir, (*MOUNT_OPTIONS, "debug")) as daemon:
        queue = daemon.create("ls", count, SMALL)
        fd = open_queue(queue)
        try:
            fill(fd, count)
        finally:
            os.close(fd)
        commands: dict[str, list[str | Path]] = {
            "ls -l msgs/": ["ls", "-l", queue / "msgs"],
            "cat msgs/N": ["cat", queue / "msgs" / str(count // 2)],
        }
        counts: dict[str, Counter[str]] = {}
        for what, command in commands.items():
            since = daemon.log.stat().st_size
            run_quietly(command)
            counts[what] = count_requests(daemon.log, since)
    report.extra["fuse_requests"] = {
        what: {"messages": count, "total": sum(c.values()), "by_opcode": dict(c.most_common())}
        for what, c in counts.items()
    }
    for what, counter in counts.items():
        breakdown = ", ".join(f"{op} {n:,}" for op, n in counter.most_common())
        report.rows.append((f"  {what}: {sum(counter.values()):,} requests", breakdown))

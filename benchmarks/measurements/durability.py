"""Durable state (``-o state=DIR``): what the journal costs, what survives a kill -9, and
how large the journal stays.

- (i) The 64 B write/read pair on a daemon with ``-o state=DIR`` against the same pair on
  a daemon without, interleaved, both daemons and this process pinned to one CPU as in
  section 3: at most STATE_COST_MAX times. A daemon with ``state_sync`` is measured beside
  them, without a target (every reply waits for an fsync of the disk under DIR).
- (j) kill -9 under load (``tests.support.crash``): 4 producer and 4 consumer threads move
  distinct 64 B messages through one queue (maxmsg a tenth of them, filled before the
  consumers start, so senders block) of a journaled daemon, which is
  SIGKILLed once the consumers have received a seeded random number of them; the dead
  mount is lazily unmounted, a new daemon reads the journal and the queue is drained.
  A message is *lost* if its send returned, it was never received and it is not queued:
  at most the receives in flight at the kill may be lost (each may have taken its message
  with it), and none may be duplicated or appear unsent. 20 runs of 50,000 messages
  (--quick: 2 of 2,000).
- (k) The journal's size after 1,000,000 send+receive pairs on 10 queues (one thread per
  queue; --quick 20,000): at most 2 x live + COMPACT_SLACK, at rest while mounted (no
  rewrite under way), where *live* is what a clean unmount leaves (the snapshot of the
  queues then). The size after the unmount is shown too.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict
from functools import partial
from pathlib import Path

from environment import (
    MOUNT_OPTIONS,
    PAIR_QUEUE_DEPTH,
    SMALL,
    Daemon,
    mqfs_daemon,
    open_queue,
    placed,
)
from mqfs.server.journal import COMPACT_SLACK
from report import Report, format_seconds, progress
from tests.support import crash
from tests.support.waiting import wait_until
from timing import Scale, Timer, interleaved, pair_timer

STATE_COST_MAX = 1.15  # target (i): a pair with state=DIR / the pair without
KILL_SEED = 12  # target (j): the kill points, the same in every run of the benchmark
KILL_MSGSIZE = 128
SIZE_QUEUES = 10  # (k): the pairs are spread over this many queues, one thread each

COST_LABELS = {
    "pair_no_state": ("write/read 64 B, no state", "pair"),
    "pair_state": ("write/read 64 B, state=DIR", "pair"),
    "pair_state_sync": ("write/read 64 B, state=DIR,state_sync", "pair"),
}


def _state(directory: Path, *more: str) -> tuple[str, ...]:
    return (*MOUNT_OPTIONS, f"state={directory}", *more)


def _pair_timer(daemon: Daemon, stack: ExitStack) -> Timer:
    fd = open_queue(daemon.create("pairs", PAIR_QUEUE_DEPTH, SMALL))
    stack.callback(os.close, fd)
    return pair_timer(partial(os.write, fd, bytes(SMALL)), partial(os.read, fd, SMALL))


# -- i: the cost of the journal --------------------------------------------------------------


def measure_state_cost(report: Report, scale: Scale, workdir: Path, pin: set[int] | None) -> None:
    progress("write/read pairs without state, with state=DIR and with state_sync (pinned)")
    with ExitStack() as stack:
        daemons = {
            "pair_no_state": stack.enter_context(mqfs_daemon(workdir, MOUNT_OPTIONS)),
            "pair_state": stack.enter_context(mqfs_daemon(workdir, _state(workdir / "cost"))),
            "pair_state_sync": stack.enter_context(
                mqfs_daemon(workdir, _state(workdir / "cost-sync", "state_sync"))
            ),
        }
        stack.enter_context(placed([daemon.process.pid for daemon in daemons.values()], pin))
        timers = {key: _pair_timer(daemon, stack) for key, daemon in daemons.items()}
        report.record_group("state", interleaved(timers, scale), COST_LABELS)
    report.section("i durable state: the 64 B pair with -o state=DIR (pinned, interleaved)")
    report.row("pair_no_state", report.rate("pair_no_state"), "baseline")
    cost = report.ratio("state_cost", "pair_state", "pair_no_state", "state=DIR / no state")
    report.row("pair_state", report.rate("pair_state"), f"{cost:.3f}x no state")
    sync = report.ratio("state_sync_cost", "pair_state_sync", "pair_no_state", "state_sync / none")
    report.row(
        "pair_state_sync",
        report.rate("pair_state_sync"),
        f"{sync:.1f}x no state (each reply waits for an fsync)",
    )
    report.target(
        "i",
        f"64 B write/read pair with state=DIR costs <= {STATE_COST_MAX}x the pair without",
        cost,
        STATE_COST_MAX,
        at_most=True,
    )


# -- j: kill -9 under load -------------------------------------------------------------------


def measure_kill_runs(report: Report, scale: Scale, workdir: Path) -> None:
    runs, messages = scale.state_kill_runs, scale.state_kill_messages
    progress(f"kill -9 of a journaled daemon under 4+4 threads: {runs} runs of {messages:,}")
    plan = random.Random(KILL_SEED)
    results = []
    started = time.monotonic()
    for run in range(runs):
        directory = workdir / f"kill-{run}"
        kill_after = plan.randrange(1, messages)
        with mqfs_daemon(workdir, _state(directory)) as daemon:
            # A tenth of the messages fit, and fill the queue before the consumers start:
            # a backlog to bring back, and senders blocked.
            queue = daemon.create("q", messages // 10, KILL_MSGSIZE)
            traffic = crash.run_until_killed(
                queue,
                daemon.process,
                messages=messages,
                kill_after=kill_after,
                msgsize=KILL_MSGSIZE,
                backlog=messages // 10,
            )
        with mqfs_daemon(workdir, _state(directory)) as daemon:
            drained = crash.drain(daemon.path / "q", KILL_MSGSIZE)
        shutil.rmtree(directory)
        results.append({"kill_after": kill_after, **asdict(crash.count(traffic, drained))})
    report_kill_runs(report, messages, results, time.monotonic() - started)


def report_kill_runs(
    report: Report, messages: int, results: list[dict[str, int]], seconds: float
) -> None:
    report.extra["kill_9"] = {"messages": messages, "seed": KILL_SEED, "runs": results}
    total = {key: sum(r[key] for r in results) for key in results[0] if key != "kill_after"}
    beyond = sum(max(0, r["lost"] - r["in_flight"]) for r in results)
    report.section(
        f"j kill -9 of a journaled daemon under 4 producers + 4 consumers ({len(results)} runs "
        f"of {messages:,} messages, killed at a seeded random point)"
    )
    for index, r in enumerate(results):
        report.rows.append(
            (
                f"run {index + 1}: killed after {r['kill_after']:,} received",
                f"lost {r['lost']}, in flight {r['in_flight']}",
                f"{r['duplicated']} dup",
                "once",
                f"{r['acknowledged']:,} sends returned, {r['received']:,} received, "
                f"{r['drained']:,} drained after the remount",
            )
        )
    report.rows.append(
        (
            "  all runs",
            f"lost {total['lost']} (each a receive in flight at the kill; {beyond} beyond "
            f"them), duplicated {total['duplicated']}, never sent {total['phantoms']}; "
            f"{seconds:.0f} s",
        )
    )
    report.target(
        "j-lost",
        "messages lost beyond the receives in flight at the kill = 0",
        beyond,
        0,
        at_most=True,
    )
    report.target(
        "j-dup",
        "messages duplicated or never sent = 0",
        total["duplicated"] + total["phantoms"],
        0,
        at_most=True,
    )


# -- k: the journal's size -------------------------------------------------------------------


def _directory_size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


def _rewriting(directory: Path) -> bool:
    return any(path.suffix == ".tmp" for path in directory.iterdir())


def _pairs(queue_dir: Path, count: int, failures: list[BaseException]) -> None:
    try:
        fd = open_queue(queue_dir)
        try:
            message = bytes(SMALL)
            for _ in range(count):
                os.write(fd, message)
                os.read(fd, SMALL)
        finally:
            os.close(fd)
    except BaseException as exc:  # reported by the caller
        failures.append(exc)


def measure_journal_size(report: Report, scale: Scale, workdir: Path) -> None:
    pairs = scale.state_pairs
    progress(f"the journal after {pairs:,} send+receive pairs on {SIZE_QUEUES} queues")
    directory = workdir / "size"
    failures: list[BaseException] = []
    with mqfs_daemon(workdir, _state(directory)) as daemon:
        queues = [daemon.create(f"q{i}", PAIR_QUEUE_DEPTH, SMALL) for i in range(SIZE_QUEUES)]
        each = pairs // SIZE_QUEUES
        threads = [threading.Thread(target=_pairs, args=(q, each, failures)) for q in queues]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - start
        if failures:
            raise failures[0]
        wait_until(lambda: not _rewriting(directory), what="the rewrite to end", timeout=60)
        mounted = _directory_size(directory)
    unmounted = _directory_size(directory)
    (snapshot,) = directory.glob("snapshot.*")  # what the clean stop wrote: the live queues
    live = snapshot.stat().st_size
    shutil.rmtree(directory)
    bound = 2 * live + COMPACT_SLACK
    report.extra["journal_size"] = {
        "pairs": each * SIZE_QUEUES,
        "queues": SIZE_QUEUES,
        "bytes_mounted": mounted,
        "bytes_after_unmount": unmounted,
        "live_bytes": live,
        "bound": bound,
        "seconds": seconds,
    }
    report.section(f"k the journal after {each * SIZE_QUEUES:,} pairs on {SIZE_QUEUES} queues")
    report.rows.append(
        (
            "journal size, at rest while mounted",
            f"{mounted:,} B",
            f"{unmounted:,} B after",
            "once",
            f"live {live:,} B; bound 2 x live + {COMPACT_SLACK:,} = {bound:,} B; "
            f"{each * SIZE_QUEUES / seconds:,.0f} pairs/s ({format_seconds(seconds)})",
        )
    )
    report.target(
        "k",
        f"journal after {each * SIZE_QUEUES:,} pairs <= 2 x live + {COMPACT_SLACK:,} B",
        mounted,
        bound,
        at_most=True,
    )

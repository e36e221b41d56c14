"""peek(N) on the fast path is O(1) (issue 17's target: on 65,536 messages at one priority,
peek(60000) costs <= 2x peek(0)): both timed on one mapped queue through mqfs.fastq, in
the same interleaved repetitions (timing.interleaved), medians and their paired ratio."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mqfs import fastq
from timing import FULL, Scale, interleaved, loop_timer, median_and_spread, paired_ratio

PEEK_RATIO_MAX = 2.0
MESSAGES = 65536
DEEP = 60000
SIZE = 64


def run(scale: Scale = FULL, messages: int = MESSAGES, deep: int = DEEP) -> dict[str, object]:
    """Seconds per peek(0) and peek(*deep*) (medians), their ratio and the samples."""
    with tempfile.TemporaryDirectory(prefix="fastq-peek-") as scratch:
        path = Path(scratch) / "q"
        fastq.create(path, messages, SIZE, os.geteuid(), os.getegid())
        with fastq.MappedQueue(path, messages, SIZE, "peek") as queue:
            payload = bytes(SIZE)
            for _ in range(messages):
                queue.send(payload, 1, nonblock=True)
            samples = interleaved(
                {
                    "peek_0": loop_timer(lambda: queue.peek(0)),
                    "peek_deep": loop_timer(lambda: queue.peek(deep)),
                },
                scale,
            )
    first, first_spread = median_and_spread(samples["peek_0"])
    last, last_spread = median_and_spread(samples["peek_deep"])
    ratio = paired_ratio(samples["peek_deep"], samples["peek_0"])
    return {
        "messages": messages,
        "deep": deep,
        "peek_0_seconds": first,
        "peek_deep_seconds": last,
        "spread": max(first_spread, last_spread),
        "ratio": ratio,
        "ratio_max": PEEK_RATIO_MAX,
        "samples": samples,
        "line": f"fastq peek({deep}) / peek(0) on {messages:,} messages: {ratio:.2f} "
        f"({last * 1e9:.0f} ns / {first * 1e9:.0f} ns)",
    }

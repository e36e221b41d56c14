"""The fast path's crash consistency (issue 17): 2 producer and 2 consumer processes on one
mapped queue, *kills* random SIGKILLs of random workers (each respawned), the queue's
invariants checked after every kill, then the queue drained and every message accounted
for (tests.support.fastq.random_kills, which tests/fastq/test_crash_random.py runs at 500
kills). Figures: kills, kills that found the victim holding the mutex (recoveries), lost
(each to a consumer killed between its receive and recording it), duplicates (must be 0).
"""

from __future__ import annotations

from dataclasses import asdict

from tests.support.fastq import random_kills

KILL_SEED = 25  # the same kills in every run of the benchmark


def run(kills: int = 2500, seed: int = KILL_SEED) -> dict[str, object]:
    """One run of *kills* random kills: the figures, and ``line`` to print."""
    figures = random_kills(kills, seed)
    return {
        **asdict(figures),
        "consistent": figures.duplicates == 0 and figures.lost <= figures.consumer_kills,
        "line": f"fastq 2+2 random SIGKILLs: {figures.line()}",
    }

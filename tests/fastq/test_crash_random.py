"""2 producers + 2 consumers on one mapping under 500 random SIGKILLs (tests.support.fastq's
random_kills; the benchmark runs it larger): the invariants hold after every kill, no
message is received twice, and a message whose send returned is lost only to a consumer
killed after its receive committed, before it recorded the message."""

from __future__ import annotations

from pathlib import Path

from tests.support.fastq import random_kills

KILLS = 500


def test_random_kills_lose_only_to_killed_consumers_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    figures = random_kills(KILLS, seed=17, directory=tmp_path)
    print(f"\nfastq random kills: {figures.line()}")  # the figures for the notes (pytest -s)
    assert figures.kills == KILLS
    assert figures.duplicates == 0
    assert figures.lost <= figures.consumer_kills
    assert figures.unrecorded <= figures.producer_kills  # sent, killed before recording it
    assert figures.leaked_waiters == 0  # the next send and receive forgot the dead sleepers
    assert figures.sent > KILLS  # the workers got work done between the kills

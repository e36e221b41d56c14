"""Fixtures and hooks shared by the test tiers; the helpers behind them are tests.support.

``mqfs_mount`` is a real mqfs mount (tests.support.mounts.mounted), unmounted afterwards;
dead mounts a killed run left behind are swept at session start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.mounts import Mount, mounted, sweep_dead_mounts


def pytest_sessionstart(session: pytest.Session) -> None:
    sweep_dead_mounts()


@pytest.fixture
def mqfs_mount() -> Iterator[Mount]:
    with mounted() as mount:
        yield mount


@pytest.fixture
def mount_factory() -> Iterator[object]:
    """Call with mount options; every mount made is unmounted at teardown."""
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted(tuple(options)))

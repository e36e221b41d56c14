"""Fixtures and hooks shared by the test tiers; the helpers behind them are tests.support.

``mqfs_mount`` is a real mqfs mount (tests.support.mounts.mounted), unmounted afterwards;
dead mounts a killed run left behind are swept at session start. Both it and
``mount_factory`` mount with ``mount_options``: none here; a directory's conftest.py
overrides it with tests.support.mounts.variant_params() to run its tests on a plain and on a
``-o fastpath`` mount (ids [plain] and [fastpath]).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support.mounts import Mount, mounted, sweep_dead_mounts


def pytest_sessionstart(session: pytest.Session) -> None:
    sweep_dead_mounts()


@pytest.fixture
def mount_options() -> tuple[str, ...]:
    """Options every mount of mqfs_mount and mount_factory gets (see the docstring)."""
    return ()


@pytest.fixture
def mqfs_mount(mount_options: tuple[str, ...]) -> Iterator[Mount]:
    with mounted(mount_options) as mount:
        yield mount


@pytest.fixture
def mount_factory(mount_options: tuple[str, ...]) -> Iterator[object]:
    """Call with mount options (added to mount_options); every mount made is unmounted at
    teardown."""
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted((*mount_options, *options)))

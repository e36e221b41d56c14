"""Fixtures of the LD_PRELOAD shim tests.

Every test that asks for ``mqfs_mount`` or ``mount_factory`` runs twice: on a plain mount
(the shim talks to the daemon) and on a ``-o fastpath`` mount (the shim sends and receives
on the queue's shared mapping, preload/fastpath.c). ``mount_kind`` says which.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.support.mounts import MOUNT_KINDS, Mount, mounted
from tests.support.shim import build_shim


@pytest.fixture(scope="session")
def preload_library() -> Path:
    """The shim, built once per session (a no-op when up to date)."""
    return build_shim()


@pytest.fixture(
    params=[pytest.param(kind, marks=marks) for kind, (_, marks) in MOUNT_KINDS.items()]
)
def mount_kind(request: pytest.FixtureRequest) -> str:
    """The kind of mount the test's mounts are: "plain" or "fastpath"."""
    kind: str = request.param
    return kind


@pytest.fixture
def mqfs_mount(mount_kind: str) -> Iterator[Mount]:
    with mounted(MOUNT_KINDS[mount_kind][0]) as mount:
        yield mount


@pytest.fixture
def mount_factory(mount_kind: str) -> Iterator[Callable[..., Mount]]:
    """Call with mount options (the kind's are added); unmounted at teardown."""
    kind_options = MOUNT_KINDS[mount_kind][0]
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted((*options, *kind_options)))

"""Fixtures of the client tests: every one runs on a plain mount and on an ``-o fastpath``
mount (ids ``[plain]``/``[fastpath]``), where the owner's descriptors use the mapping."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack

import pytest

from mqfs.client.backends import MqfsBackend
from tests.support.mounts import Mount, mounted, variant_params


@pytest.fixture(params=variant_params())
def mount_variant(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """The mount options of the variant under test."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def mqfs_mount(mount_variant: tuple[str, ...]) -> Iterator[Mount]:
    with mounted(mount_variant) as mount:
        yield mount


@pytest.fixture
def mount_factory(mount_variant: tuple[str, ...]) -> Iterator[Callable[..., Mount]]:
    """Call with mount options (the variant's are added); unmounted at teardown."""
    with ExitStack() as stack:
        yield lambda *options: stack.enter_context(mounted((*mount_variant, *options)))


@pytest.fixture
def backend(mqfs_mount: Mount) -> MqfsBackend:
    """The mqfs backend on a fresh mount."""
    return MqfsBackend(mqfs_mount.path)

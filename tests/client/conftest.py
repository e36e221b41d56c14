"""Fixtures of the client tests."""

from __future__ import annotations

import pytest

from mqfs.client.backends import MqfsBackend
from tests.support.mounts import Mount


@pytest.fixture
def backend(mqfs_mount: Mount) -> MqfsBackend:
    """The mqfs backend on a fresh mount."""
    return MqfsBackend(mqfs_mount.path)

"""Every test here runs on a plain and on a ``-o fastpath`` mount ([plain], [fastpath])."""

from __future__ import annotations

import pytest

from tests.support.mounts import MOUNT_KINDS, mount_kinds


@pytest.fixture(params=list(MOUNT_KINDS))
def mount_options(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return mount_kinds(request)

"""Every test here runs on a plain and on a ``-o fastpath`` mount ([plain], [fastpath])."""

from __future__ import annotations

import pytest

from tests.support.mounts import variant_params


@pytest.fixture(params=variant_params())
def mount_options(request: pytest.FixtureRequest) -> tuple[str, ...]:
    return request.param  # type: ignore[no-any-return]

"""Fixtures of the conformance suite: the kernel's mqueue and mqfs (a plain mount, and an
``-o fastpath`` one: ids ``mqfs``/``fastpath``), with the same limits (tests.support.backends)."""

from __future__ import annotations

import pytest

from tests.support.backends import BACKEND_FACTORIES, BackendFactory


@pytest.fixture(params=list(BACKEND_FACTORIES))
def backend(request: pytest.FixtureRequest) -> BackendFactory:
    """A factory: ``with backend(limits) as mq:`` gives a fresh backend of this kind."""
    return BACKEND_FACTORIES[request.param]

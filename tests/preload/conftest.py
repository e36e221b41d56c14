"""Fixtures of the LD_PRELOAD shim tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.shim import build_shim


@pytest.fixture(scope="session")
def preload_library() -> Path:
    """The shim, built once per session (a no-op when up to date)."""
    return build_shim()

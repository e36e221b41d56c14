"""The request-context patch: current_request_context() never outlives its request."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqfs.mounts import is_mounted
from tests.support.mounts import lazy_unmount, mount_point
from tests.support.users import run_as_user

HERE = Path(__file__).parent


@pytest.fixture
def contextfs() -> Iterator[Path]:
    with (
        mount_point("contextfs-") as (path, _),
        subprocess.Popen(
            [sys.executable, str(HERE / "contextfs.py"), str(path)], stdout=subprocess.PIPE
        ) as process,
    ):
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == b"ready\n", "contextfs did not mount"
            yield path
        finally:
            if is_mounted(path):
                lazy_unmount(path)
            process.wait(timeout=10)


def probe(path: Path) -> int:
    """What lookup saw: 0 for no context, else the uid + 1."""
    return os.stat(path / "probe").st_size


def test_a_handler_without_context_never_sees_the_previous_callers(contextfs: Path) -> None:
    assert probe(contextfs) == 0
    # The test user's read runs on the same (only) worker task and sets the context.
    assert run_as_user(["cat", str(contextfs / "file")]).stdout == "data"
    assert probe(contextfs) == 0  # before the fix: that user's uid + 1
    assert (contextfs / "file").read_text() == "data"
    assert probe(contextfs) == 0

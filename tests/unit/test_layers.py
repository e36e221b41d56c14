"""Each layer imports alone: the lower ones never reach up (or into trio/pyfuse3)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("mqfs.store", {"trio", "pyfuse3", "mqfs.queue", "mqfs.fs", "mqfs.mq"}),
        ("mqfs.wire", {"trio", "pyfuse3", "mqfs.queue", "mqfs.fs", "mqfs.store"}),
        ("mqfs.queue", {"pyfuse3", "mqfs.fs", "mqfs.client"}),
        ("mqfs.client", {"trio", "pyfuse3", "mqfs.queue", "mqfs.fs"}),
        ("mqfs.backends", {"trio", "pyfuse3", "mqfs.queue", "mqfs.fs"}),
        ("mqfs.cli", {"trio", "pyfuse3", "mqfs.fs"}),
    ],
)
def test_layer_imports_alone(module: str, forbidden: set[str]) -> None:
    program = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", program], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert not loaded & forbidden

"""The shim, built once per session by scripts/build-preload (a no-op when up to date)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / ".venv" / "lib" / "libmqfs-preload.so"


@pytest.fixture(scope="session")
def preload_library() -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    subprocess.run([ROOT / "scripts" / "build-preload"], check=True)
    return LIBRARY

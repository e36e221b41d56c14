"""Where things are: the repository, its C headers, the LD_PRELOAD shim's library."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository. Subprocesses that ``import tests`` or ``mqfs`` run with this as cwd."""

INCLUDE = ROOT / "include"
"""The C headers (mqfs.h, mqfs/peek.h)."""

SHIM_LIBRARY = ROOT / ".venv" / "lib" / "libmqfs-preload.so"
"""Where scripts/build-preload puts the shim (its default output)."""

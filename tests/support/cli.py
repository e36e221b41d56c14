"""Running the `mqfs` command as a user would: a subprocess against a mount."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(mount: Path, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`mqfs ARGV --mount MOUNT`, its output as bytes (messages need not be text)."""
    return subprocess.run(
        [sys.executable, "-m", "mqfs", *argv, "--mount", str(mount)],
        input=stdin,
        capture_output=True,
        timeout=30,
        check=False,
        env={**os.environ, "MQFS_MOUNT": str(mount)},
    )

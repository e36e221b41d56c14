"""The benchmark keeps working (a quick run with small counts); its numbers are not judged here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mqfs.mounts import mounts_under
from tests.support.paths import ROOT


def test_quick_benchmark_runs_and_reports_every_target(tmp_path: Path) -> None:
    results = tmp_path / "bench.json"
    scratch = tmp_path / "scratch"  # the bench's temporary directories, and so its mounts
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--quick", "--json", str(results)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(results.read_text())
    assert {target["id"] for target in report["targets"]} == {
        *("a-rw", "a-ioctl", "b", "c", "d", "e"),
        *("f-queue", "f-total", "g", "h-loss", "h-dup"),
        *("i", "j-lost", "j-dup", "k"),
        *("l-noop", "l-read", "m"),
        *("n", "o", "p"),
        *("q-16", "q-all"),
        *("r", "s", "t", "u", "v", "w", "x"),  # -o fastpath
    }
    assert "targets:" in done.stdout
    assert mounts_under(scratch) == [], "the benchmark left a mount behind"

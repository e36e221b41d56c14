"""The C side: the physical floor of a FUSE round trip, and an unmodified C program.

Two C sources live in ``benchmarks/c/``, and the LD_PRELOAD shim in ``preload/``; each run
compiles all three with the system gcc into the run's temporary directory (nothing is
built in the checkout, nothing is left behind):

- ``floor.c``: a minimal libfuse3 low-level daemon, one thread (``fuse_session_loop``),
  whose one file answers the NOOP ioctl and a 64-byte direct_io read, as mqfs's do. The
  same client code measures it and mqfs, so the ratio is the price of mqfs's daemon being
  Python (pyfuse3 and trio) rather than of FUSE.
- ``mq_pairs.c``: ``mq_send`` + ``mq_receive`` pairs of 64 B on one thread, timed inside
  the program (not its start), run as is on the kernel's mqueue and under the shim on an
  mqfs mount; with ``each`` it times every pair alone, for the latency percentiles.
- ``mq_flow.c``: N sending and M receiving processes on one queue, optionally with random
  priorities, timed inside the program from a common start; the same two ways.

The floor daemon is stopped and unmounted in ``finally`` like the mqfs daemons, and dies
with this process (PR_SET_PDEATHSIG) if it is killed.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from environment import ROOT, BenchError
from mqfs.cli import launch
from timing import Sampler, Timer

SOURCES = ROOT / "benchmarks" / "c"
READY_TIMEOUT = 30.0
PROGRAM_TIMEOUT = 300.0
CFLAGS = ("-O2", "-Wall", "-Wextra", "-Werror")


@dataclass(frozen=True)
class Programs:
    """The compiled C side of a run (in its temporary directory)."""

    floor: Path  # the C floor daemon: floor MOUNTPOINT
    pairs: Path  # mq_pairs NAME COUNT
    flow: Path  # mq_flow NAME SENDERS RECEIVERS COUNT [random]
    shim: Path  # the LD_PRELOAD shim (libmqfs-preload.so)


def build(workdir: Path) -> Programs:
    """Compile the floor daemon, mq_pairs and the shim into a new directory of *workdir*."""
    if shutil.which("gcc") is None or shutil.which("pkg-config") is None:
        raise BenchError("the C floor needs gcc and pkg-config (scripts/setup installs them)")
    out = Path(tempfile.mkdtemp(prefix="build-", dir=workdir))
    programs = Programs(
        out / "floor", out / "mq_pairs", out / "mq_flow", out / "libmqfs-preload.so"
    )
    fuse3 = _run(["pkg-config", "--cflags", "--libs", "fuse3"], "pkg-config fuse3").split()
    _run(["gcc", *CFLAGS, "-o", str(programs.floor), str(SOURCES / "floor.c"), *fuse3], "floor.c")
    _run(
        ["gcc", *CFLAGS, "-o", str(programs.pairs), str(SOURCES / "mq_pairs.c"), "-lrt"],
        "mq_pairs.c",
    )
    _run(
        ["gcc", *CFLAGS, "-o", str(programs.flow), str(SOURCES / "mq_flow.c"), "-lrt"],
        "mq_flow.c",
    )
    _run([str(ROOT / "scripts" / "build-preload"), str(programs.shim)], "the shim")
    return programs


def _run(command: list[str], what: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BenchError(f"building {what} failed: {last}")
    return done.stdout


# -- the C floor daemon --------------------------------------------------------------------


@dataclass
class FloorDaemon:
    path: Path  # the mount point
    process: subprocess.Popen[bytes]

    @property
    def file(self) -> Path:
        """The one file: the NOOP ioctl and a 64-byte direct_io read."""
        return self.path / "file"


@contextmanager
def floor_daemon(workdir: Path, program: Path) -> Iterator[FloorDaemon]:
    """Mount the C floor daemon at a new directory; always stop and unmount it."""
    path = Path(tempfile.mkdtemp(prefix="floor-", dir=workdir))
    log_path = path.with_name(path.name + ".log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(program), str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # a Ctrl-C at the terminal is ours to handle
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT)
        said = os.read(process.stdout.fileno(), 64) if ready else b""
        if said != b"ready\n":
            last = (log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"the C floor daemon did not mount at {path}: {last}")
        yield FloorDaemon(path, process)
    finally:
        launch.stop(process, path)
        if process.stdout is not None:
            process.stdout.close()


# -- the C program -------------------------------------------------------------------------


def plain_env() -> dict[str, str]:
    """This process's environment without the shim: the program uses the kernel's mqueue."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("MQFS_MOUNT", None)
    return env


def shim_env(shim: Path, mount: Path) -> dict[str, str]:
    """The environment that puts a program's mq_* calls on the mqfs mount *mount*."""
    return {**plain_env(), "LD_PRELOAD": str(shim), "MQFS_MOUNT": str(mount)}


def c_pairs_timer(program: Path, name: str, env: dict[str, str]) -> Timer:
    """A Timer of *count* mq_send+mq_receive pairs on queue *name*, timed by the program
    itself (its start and mq_open are not counted)."""
    return lambda count: float(_run_pairs(program, name, env, count)[0])


def c_pairs_sampler(program: Path, name: str, env: dict[str, str]) -> Sampler:
    """A Sampler of *count* pairs on queue *name*: the program times each pair alone
    (clock_gettime around it) and prints the nanoseconds once the loop is done."""
    return lambda count: [int(line) for line in _run_pairs(program, name, env, count, "each")]


def c_flow_timer(
    program: Path, name: str, env: dict[str, str], senders: int, receivers: int, random: bool
) -> Timer:
    """A Timer of *count* messages moved by mq_flow's *senders* + *receivers* processes
    on queue *name* (random priorities or all 0), timed by the program from their common
    start: seconds per message."""
    mode = ["random"] if random else []

    def run(count: int) -> float:
        argv = [str(program), name, str(senders), str(receivers), str(count), *mode]
        return float(_run_program(argv, env, f"mq_flow {name}")[0])

    return run


def _run_pairs(program: Path, name: str, env: dict[str, str], count: int, *mode: str) -> list[str]:
    """mq_pairs NAME COUNT [MODE]: its output lines."""
    return _run_program([str(program), name, str(count), *mode], env, f"mq_pairs {name}")


def _run_program(argv: list[str], env: dict[str, str], what: str) -> list[str]:
    """Run a C program of the benchmark: its output, split; BenchError if it fails."""
    try:
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} took over {PROGRAM_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what} failed: {done.stderr.strip()}")
    return done.stdout.split()

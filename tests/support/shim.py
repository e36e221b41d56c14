"""The LD_PRELOAD shim (preload/*.c) and the C programs the tests run under it and on the
kernel's own queues."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.paths import INCLUDE, ROOT, SHIM_LIBRARY

PROGRAM_TIMEOUT = 120


def build_shim() -> Path:
    """The shim, built by scripts/build-preload (a no-op when up to date); skips without gcc."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    subprocess.run([ROOT / "scripts" / "build-preload"], check=True)
    return SHIM_LIBRARY


def build_c_program(source: Path, directory: Path, *flags: str) -> Path:
    """Compile *source* into *directory* (named after it) with warnings as errors and
    fortified (so mq_open may be __mq_open_2, as in users' builds); <mqfs/*.h> included."""
    program = directory / source.stem
    subprocess.run(
        ["gcc", "-O2", "-D_FORTIFY_SOURCE=2", "-Wall", "-Wextra", "-Werror", "-I", INCLUDE,
         *flags, "-o", program, source, "-lrt", "-lpthread", "-ldl"],
        check=True,
    )  # fmt: skip
    return program


def unique_queue_name(tag: str) -> str:
    """A queue name no other run uses: kernel queues are shared by the whole namespace."""
    return f"mqfs-preload-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def plain_env() -> dict[str, str]:
    """This process's environment without the shim (no LD_PRELOAD, no MQFS_MOUNT)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env.pop("MQFS_MOUNT", None)
    return env


def shim_env(library: Path, mount: Path | None) -> dict[str, str]:
    """The environment that preloads *library*, aimed at *mount* (None: no MQFS_MOUNT)."""
    env = plain_env()
    env["LD_PRELOAD"] = str(library)
    if mount is not None:
        env["MQFS_MOUNT"] = str(mount)
    return env


def run_program(command: list[str | Path], env: dict[str, str]) -> str:
    """*command*'s standard output; the test fails if it exits non-zero."""
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=PROGRAM_TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stderr}"
    return done.stdout


def on_kernel(command: list[str | Path], msgsize_max: int | None = None) -> str:
    """*command* on the kernel's queues, in a new IPC namespace (own limits, no leftovers)."""
    probe = subprocess.run(["unshare", "--ipc", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        if msgsize_max is not None:
            pytest.skip("kernel half needs unshare --ipc to raise msgsize_max")
        return run_program(command, plain_env())
    setup = f"echo {msgsize_max} > /proc/sys/fs/mqueue/msgsize_max && " if msgsize_max else ""
    script = f'{setup}exec "$@"'
    return run_program(["unshare", "--ipc", "sh", "-c", script, "sh", *command], plain_env())

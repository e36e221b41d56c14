"""The kernel's own POSIX message queues, for side-by-side tests (the mq_* calls
themselves are mqfs.client.backends.KernelBackend).

``why_kernel_mqueue_unusable()`` says why the kernel side cannot run here, so tests skip
with that reason; ``mqueue_mount()`` mounts ``-t mqueue`` at a temporary directory so the
kernel's status lines can be read; ``private_ipc_namespace()`` gives the calling thread a
brand-new IPC namespace (no queues) with chosen /proc/sys/fs/mqueue/* limits.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from mqfs.client.backends import KernelBackend
from tests.support.libc import CLONE_NEWIPC, setns, unshare

MQUEUE_SYSCTL = Path("/proc/sys/fs/mqueue")
LIMIT_ORDER = ("msg_max", "msgsize_max", "msg_default", "msgsize_default", "queues_max")
"""The order the limits are written in: each default must stay within its maximum."""


class KernelMqueueUnusable(RuntimeError):
    """The kernel's mqueue cannot be set up here (the message says why)."""


def why_kernel_mqueue_unusable(*, mounting: bool = False) -> str | None:
    """None if the kernel's POSIX message queues work here (and, with *mounting*, its mqueue
    filesystem can be mounted), else why not."""
    if "mqueue" not in Path("/proc/filesystems").read_text():
        return "this kernel has no mqueue filesystem"
    if mounting and os.geteuid() != 0:
        return "mounting the kernel's mqueue needs root"
    name = f"/mqfs-probe-{os.getpid()}"
    try:
        probe = KernelBackend()
        probe.close(probe.open(name, os.O_CREAT | os.O_RDWR, 0o600, (1, 1)))
        probe.unlink(name)
    except OSError as exc:
        return f"the kernel's mqueue is unusable here: {exc}"
    return None


@contextmanager
def mqueue_mount() -> Iterator[Path]:
    """The kernel's mqueue filesystem mounted at a temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="kernel-mqueue-"))
    done = subprocess.run(
        ["mount", "-t", "mqueue", "none", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        path.rmdir()
        raise KernelMqueueUnusable(f"mount -t mqueue failed: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


@contextmanager
def private_ipc_namespace(limits: Mapping[str, int]) -> Iterator[None]:
    """The calling thread in a brand-new IPC namespace (no queues, the default limits) with
    /proc/sys/fs/mqueue/* set to *limits*; afterwards it goes back to the namespace it came
    from. Children started inside inherit the new one."""
    home = os.open("/proc/self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            unshare(CLONE_NEWIPC)
        except OSError as exc:
            raise KernelMqueueUnusable(f"unshare(CLONE_NEWIPC): {exc.strerror}") from None
        for key in sorted(limits, key=LIMIT_ORDER.index):
            (MQUEUE_SYSCTL / key).write_text(f"{limits[key]}\n")
        yield
    finally:
        setns(home, CLONE_NEWIPC)
        os.close(home)

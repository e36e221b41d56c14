"""Backends for the conformance suite: the kernel's mqueue and mqfs, with the same limits.

Kernel: every use gets a brand-new private IPC namespace (``unshare(CLONE_NEWIPC)`` of the
pytest thread, so the default limits and no queues), with /proc/sys/fs/mqueue/* set to
the scenario's limits and its own ``mount -t mqueue`` for the status lines; afterwards
every queue is unlinked, the mqueue is unmounted and the thread goes back to the IPC
namespace it came from. Children inherit the namespace. When any of that is impossible
the kernel half is skipped with the reason.

mqfs: a fresh mount with the same limits as mount options, always with ``allow_other`` so
that a child that dropped to an unprivileged user can reach it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from mqfs.client.backends import KernelBackend, MqfsBackend
from tests import kernel_mq
from tests.conftest import mounted

CLONE_NEWIPC = 0x08000000
MQUEUE_SYSCTL = Path("/proc/sys/fs/mqueue")
LIMIT_ORDER = ("msg_max", "msgsize_max", "msg_default", "msgsize_default", "queues_max")

Backend = KernelBackend | MqfsBackend
BackendFactory = Callable[[dict[str, int]], AbstractContextManager[Backend]]

_libc = ctypes.CDLL(None, use_errno=True)


@contextmanager
def kernel_backend(limits: dict[str, int]) -> Iterator[KernelBackend]:
    reason = kernel_mq.available()
    if reason:
        pytest.skip(f"kernel half skipped: {reason}")
    home = os.open("/proc/self/ns/ipc", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWIPC) != 0:
            code = ctypes.get_errno()
            pytest.skip(f"kernel half skipped: unshare(CLONE_NEWIPC): {os.strerror(code)}")
        for key in sorted(limits, key=LIMIT_ORDER.index):
            (MQUEUE_SYSCTL / key).write_text(f"{limits[key]}\n")
        with mqueue_mounted() as path:
            yield KernelBackend(path)
    finally:
        if _libc.setns(home, CLONE_NEWIPC) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), "setns back to the original IPC namespace")
        os.close(home)


@contextmanager
def mqueue_mounted() -> Iterator[Path]:
    """tests.kernel_mq's mount, emptied before it goes; skips the kernel half if impossible."""
    try:
        mounting = kernel_mq.mqueue_mount()
        path = mounting.__enter__()
    except RuntimeError as exc:
        pytest.skip(f"kernel half skipped: {exc}")
    try:
        yield path
    finally:
        for name in os.listdir(path):  # queues die when unlinked and closed: no charge left
            os.unlink(path / name)
        mounting.__exit__(None, None, None)


@contextmanager
def mqfs_backend(limits: dict[str, int]) -> Iterator[MqfsBackend]:
    options = tuple(f"{key}={value}" for key, value in limits.items())
    with mounted((*options, "allow_other")) as mount:
        yield MqfsBackend(mount.path)


FACTORIES: dict[str, BackendFactory] = {"kernel": kernel_backend, "mqfs": mqfs_backend}


@pytest.fixture(params=["kernel", "mqfs"])
def backend(request: pytest.FixtureRequest) -> BackendFactory:
    """A factory: ``with backend(limits) as mq:`` gives a fresh backend of this kind."""
    factory: BackendFactory = FACTORIES[request.param]
    return factory

"""Both backends of the side-by-side tests, each fresh and with the same limits.

Kernel: a private IPC namespace (tests.support.kernel) with the limits set, and its own
``mount -t mqueue`` for the status lines; afterwards every queue is unlinked, the mqueue is
unmounted and the thread goes back to its IPC namespace. When any of that is impossible
the kernel half is skipped with the reason.

mqfs: a fresh mount with the same limits as mount options, always with ``allow_other`` so
that a child that dropped to an unprivileged user can reach it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import pytest

from mqfs.client.backends import KernelBackend, MqfsBackend
from tests.support.kernel import (
    KernelMqueueUnusable,
    mqueue_mount,
    private_ipc_namespace,
    why_kernel_mqueue_unusable,
)
from tests.support.mounts import FASTPATH_UNAVAILABLE, MOUNT_VARIANTS, mounted

Backend = KernelBackend | MqfsBackend
BackendFactory = Callable[[dict[str, int]], AbstractContextManager[Backend]]


def _unlink_every_queue(mqueue: Path) -> None:
    for name in os.listdir(mqueue):  # queues die when unlinked and closed: no charge left
        os.unlink(mqueue / name)


@contextmanager
def kernel_backend(limits: dict[str, int]) -> Iterator[KernelBackend]:
    reason = why_kernel_mqueue_unusable(mounting=True)
    if reason:
        pytest.skip(f"kernel half skipped: {reason}")
    with ExitStack() as stack:
        try:
            stack.enter_context(private_ipc_namespace(limits))
            path = stack.enter_context(mqueue_mount())
        except KernelMqueueUnusable as exc:
            pytest.skip(f"kernel half skipped: {exc}")
        stack.callback(_unlink_every_queue, path)
        yield KernelBackend(path)


@contextmanager
def mqfs_backend(
    limits: dict[str, int], variant: tuple[str, ...] = MOUNT_VARIANTS["plain"]
) -> Iterator[MqfsBackend]:
    """A fresh mount with *limits*, of mount *variant* (tests.support.mounts.MOUNT_VARIANTS)."""
    options = tuple(f"{key}={value}" for key, value in limits.items())
    with mounted((*options, *variant, "allow_other")) as mount:
        yield MqfsBackend(mount.path)


@contextmanager
def mqfs_fastpath_backend(limits: dict[str, int]) -> Iterator[MqfsBackend]:
    """:func:`mqfs_backend` on an ``-o fastpath`` mount: the owner's calls use the mapping."""
    if FASTPATH_UNAVAILABLE:
        pytest.skip(FASTPATH_UNAVAILABLE)
    with mqfs_backend(limits, MOUNT_VARIANTS["fastpath"]) as backend:
        yield backend


BACKEND_FACTORIES: dict[str, BackendFactory] = {
    "kernel": kernel_backend,
    "mqfs": mqfs_backend,
    "fastpath": mqfs_fastpath_backend,
}
"""``with BACKEND_FACTORIES[kind](limits) as mq:`` gives a fresh backend of that kind."""

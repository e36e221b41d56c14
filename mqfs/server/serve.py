"""Running the filesystem: mount, serve until told to stop, unmount.

Kept apart from the CLI so tests and embedders can run a mount in-process, and so the
CLI's background mode is only "start this in a child and wait for its ready line".
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mqfs import errors
from mqfs.mounts import is_mounted
from mqfs.server import processes
from mqfs.server.mapped import MappingDirectory
from mqfs.server.queue import Limits, Namespace
from mqfs.server.state import Durability, restore

log = logging.getLogger(__name__)

# Each request that blocks (a read on an empty queue, a write to a full one) holds one
# of pyfuse3's worker tasks until it is answered, and pyfuse3 reads /dev/fuse only while
# a task is free: at the cap nothing is read, not even the interrupt that would free a
# blocked caller. So there is no cap here; how many callers may block is limited per
# user instead (Limits.blocked_max, EAGAIN past it), where it cannot stop anyone else.
# Idle tasks exit again.
MAX_WORKER_TASKS = 2**31 - 1
MIN_WORKER_TASKS = 4
FUSE_OPTIONS = ("fsname=mqfs", "subtype=mqfs", "default_permissions")
LIMIT_OPTIONS = (
    "msg_default",
    "msgsize_default",
    "msg_max",
    "msgsize_max",
    "queues_max",
    "blocked_max",
)


def import_patched_pyfuse3() -> object:
    """Import pyfuse3 and insist on mqfs's patched build (ioctl + interrupts)."""
    try:
        import pyfuse3
    except ImportError as exc:
        raise errors.MqfsError(f"pyfuse3 is not installed ({exc}); run scripts/setup") from exc
    features = ("ioctl", "enable_interrupts")
    if not all(hasattr(pyfuse3.Operations, feature) for feature in features):
        raise errors.MqfsError(
            "this pyfuse3 lacks ioctl or interrupt support: it is not the 3.5.0+mqfs3 "
            "build of patches/; run scripts/setup to rebuild it"
        )
    return pyfuse3


@dataclass(frozen=True)
class MountOptions:
    """What ``-o`` asked for: the queue limits, the durable state, options for FUSE."""

    limits: Limits = field(default_factory=Limits)
    fuse_options: tuple[str, ...] = ()
    state: Path | None = None  # state=DIR: journal the queues there (mqfs.server.state)
    state_sync: bool = False  # state_sync: every reply waits for an fsync of its record
    fastpath: bool = False  # fastpath: new queues live in shared mappings (mqfs.server.mapped)


def parse_options(options: Iterable[str]) -> MountOptions:
    """Split -o options into mqueue limits, durable state and options passed on to FUSE."""
    limits: dict[str, int] = {}
    enforce_rlimit = True
    fuse_options: list[str] = []
    state: Path | None = None
    state_sync = False
    fastpath = False
    for option in options:
        for item in filter(None, option.split(",")):
            key, _, value = item.partition("=")
            if key in LIMIT_OPTIONS:
                try:
                    limits[key] = int(value, 0)
                except ValueError:
                    raise errors.InvalidArgument(f"{key} needs an integer, not {value!r}") from None
            elif key == "ignore_rlimit" and not value:
                enforce_rlimit = False
            elif key == "state" and value:
                state = Path(os.path.abspath(value))
            elif key == "state_sync" and not value:
                state_sync = True
            elif key == "fastpath" and not value:
                fastpath = True
            elif key in ("allow_other", "allow_root", "debug"):
                fuse_options.append(item)
            else:
                raise errors.InvalidArgument(f"unknown mount option {key!r}")
    if state_sync and state is None:
        raise errors.InvalidArgument("state_sync needs state=DIR")
    return MountOptions(
        Limits(**limits, enforce_rlimit=enforce_rlimit),
        tuple(fuse_options),
        state,
        state_sync,
        fastpath,
    )


def check_mountpoint(mountpoint: Path) -> None:
    if not mountpoint.exists():
        raise errors.MountpointMissing(f"mount point {mountpoint} does not exist")
    if not mountpoint.is_dir():
        raise errors.MqfsError(
            f"mount point {mountpoint} is not a directory", errno_value=errno.ENOTDIR
        )
    if os.path.ismount(mountpoint) or is_mounted(mountpoint):
        raise errors.AlreadyMounted(f"{mountpoint} is already a mount point")


async def serve(
    mountpoint: Path,
    options: MountOptions,
    ready: trio.Event | None = None,
    ready_fd: int | None = None,
) -> None:
    """Mount at *mountpoint* and serve until SIGINT/SIGTERM or cancellation; always unmount.
    With ``state=DIR`` the queues are loaded from its journal before mounting, and the
    journal is rewritten and closed after unmounting."""
    pyfuse3: object = import_patched_pyfuse3()
    durability = None
    if options.state is not None:
        durability, recovered = Durability.open(options.state, sync=options.state_sync)
    mappings = MappingDirectory.open(options.state, options.fastpath)
    namespace = Namespace(
        options.limits,
        notifier=processes.deliver_notification,
        journal=durability,
        mappings=mappings,
    )
    try:
        if durability is not None:
            restore(namespace, recovered)
        await _serve_mounted(pyfuse3, mountpoint, options, namespace, durability, ready, ready_fd)
    finally:
        if durability is not None:
            durability.close(namespace)
        if mappings is not None:
            mappings.close()


async def _serve_mounted(
    pyfuse3: object,
    mountpoint: Path,
    options: MountOptions,
    namespace: Namespace,
    durability: Durability | None,
    ready: trio.Event | None,
    ready_fd: int | None,
) -> None:
    from mqfs.server.ops import MqueueFS

    operations = MqueueFS(namespace)
    fuse_options = set(FUSE_OPTIONS) | set(options.fuse_options)
    # Signals are caught from before the mount on: a SIGTERM right after it (systemctl stop
    # just after start) must unmount cleanly, not kill the daemon and leave a dead mount.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        pyfuse3.init(operations, str(mountpoint), fuse_options)  # type: ignore[attr-defined]
        log.info("mounted at %s with %s", mountpoint, options)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, signals, pyfuse3, namespace)
                if durability is not None:
                    nursery.start_soon(durability.run, namespace)
                if ready is not None:
                    ready.set()
                if ready_fd is not None:
                    os.write(ready_fd, b"ready\n")
                    os.close(ready_fd)
                await pyfuse3.main(  # type: ignore[attr-defined]
                    min_tasks=MIN_WORKER_TASKS, max_tasks=MAX_WORKER_TASKS
                )
                nursery.cancel_scope.cancel()
        finally:
            pyfuse3.close(unmount=True)  # type: ignore[attr-defined]
            log.info("unmounted %s", mountpoint)


async def _stop_on_signal(
    signals: AsyncIterator[int], pyfuse3: object, namespace: Namespace
) -> None:
    """On SIGINT/SIGTERM/SIGHUP: answer every blocked caller (ENOTCONN), so that no
    request is left open, then end the main loop; serve() unmounts."""
    async for signum in signals:
        log.info("signal %d: unmounting", signum)
        namespace.close()
        pyfuse3.terminate()  # type: ignore[attr-defined]
        return

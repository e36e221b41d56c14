"""The ``mqfs`` command: ``main(argv=None)`` so tests can call it in-process.

Every failure is one line on stderr, ``mqfs: <command>: <what> (<ERRNO>)``, and a
non-zero exit status; no tracebacks for errors a user can cause.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mqfs import errors
from mqfs.cli import commands
from mqfs.client.backends import default_mount
from mqfs.mounts import is_mounted


def default_mountpoint() -> str:
    return str(default_mount())


def _mount(args: argparse.Namespace) -> int:
    from mqfs.server import serve

    mountpoint = Path(args.mountpoint)
    limits, fuse_options = serve.parse_options(args.options)
    serve.check_mountpoint(mountpoint)
    serve.import_patched_pyfuse3()
    if args.foreground:
        import trio

        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="mqfs: %(levelname)s %(name)s: %(message)s",
        )
        trio.run(serve.serve, mountpoint.resolve(), limits, fuse_options)
        return 0
    return _mount_in_background(args, mountpoint)


def daemon_command(mountpoint: Path, options: Sequence[str], ready_fd: int) -> list[str]:
    """The command line of a foreground daemon that writes "ready" to *ready_fd*."""
    command = [sys.executable, "-m", "mqfs", "mount", "--foreground"]
    command += ["--ready-fd", str(ready_fd), str(mountpoint.resolve())]
    for option in options:
        command += ["-o", option]
    return command


def _mount_in_background(args: argparse.Namespace, mountpoint: Path) -> int:
    """Start ``mount --foreground`` detached and return once it says it is mounted.

    The daemon's stderr goes to $MQFS_LOG (default: a temporary file that is shown, last
    line, if the daemon fails before it is ready). posix_spawn rather than Popen: the
    daemon outlives us and is nobody's subprocess to wait for.
    """
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    command = daemon_command(mountpoint, args.options, write_end)
    log_path = os.environ.get("MQFS_LOG")
    with open(log_path, "a+b") if log_path else tempfile.TemporaryFile() as log_file:
        pid = os.posix_spawn(
            command[0],
            command,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_file.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, log_file.fileno(), 2),
            ],
            setsid=True,
        )
        os.close(write_end)
        with os.fdopen(read_end, "rb") as ready:
            line = ready.readline()  # EOF if the daemon dies before mounting
        if line == b"ready\n":
            return 0
        _, status = os.waitpid(pid, 0)
        log_file.seek(0)
        lines = log_file.read().decode(errors="replace").strip().splitlines()
    raise errors.MountFailed(
        lines[-1].removeprefix("mqfs: mount: ")
        if lines
        else f"the daemon exited with status {os.waitstatus_to_exitcode(status)}"
    )


def _umount(args: argparse.Namespace) -> int:
    mountpoint = os.path.realpath(args.mountpoint)
    if not is_mounted(Path(mountpoint)):
        raise errors.NotMounted(f"{mountpoint} is not mounted", errno_value=errno.EINVAL)
    done = subprocess.run(
        ["fusermount3", "-u", mountpoint], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        raise errors.MountFailed(reason.removeprefix("fusermount3: "))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqfs",
        description="POSIX message queues as a FUSE filesystem, with non-destructive peek.",
    )
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mount = subcommands.add_parser("mount", help="mount mqfs (in the background by default)")
    mount.add_argument(
        "mountpoint",
        nargs="?",
        default=default_mountpoint(),
        help="where to mount (default: $MQFS_MOUNT or %(default)s)",
    )
    mount.add_argument(
        "-o",
        dest="options",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="comma-separated: msg_default, msgsize_default, msg_max, "
        "msgsize_max, queues_max (=N), ignore_rlimit, allow_other, debug",
    )
    mount.add_argument(
        "-f",
        "--foreground",
        action="store_true",
        help="stay in the foreground; SIGINT/SIGTERM unmount",
    )
    mount.add_argument("-v", "--verbose", action="store_true", help="log every request")
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    mount.set_defaults(run=_mount)

    umount = subcommands.add_parser("umount", help="unmount mqfs")
    umount.add_argument("mountpoint", nargs="?", default=default_mountpoint())
    umount.set_defaults(run=_umount)
    commands.add_parsers(subcommands, default_mountpoint())
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "ready_fd", None) is not None:
            return _serve_with_ready_fd(args)
        return int(args.run(args))
    except errors.MqfsError as exc:
        print(f"mqfs: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _serve_with_ready_fd(args: argparse.Namespace) -> int:
    import trio

    from mqfs.server import serve

    limits, fuse_options = serve.parse_options(args.options)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="mqfs: %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(serve.serve, Path(args.mountpoint), limits, fuse_options, None, args.ready_fd)
    except RuntimeError as exc:  # pyfuse3.init failing to mount
        raise errors.MountFailed(str(exc)) from exc
    return 0


if __name__ == "__main__":
    sys.exit(main())

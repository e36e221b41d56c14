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

from mqfs import __version__, errors, mounts
from mqfs.cli import commands, launch
from mqfs.client.backends import default_mount
from mqfs.mounts import is_mounted


def default_mountpoint() -> str:
    return str(default_mount())


def _with_default_access(options: Sequence[str]) -> list[str]:
    """root's mount is open to every user, as /dev/mqueue is (allow_other; mqfs checks each
    queue's mode itself), unless `-o noallow_other`. Other users' mounts stay their own:
    allow_other needs user_allow_other in /etc/fuse.conf."""
    words = [word for option in options for word in option.split(",") if word]
    kept = [word for word in words if word != "noallow_other"]
    opted_out = len(kept) != len(words)
    if os.geteuid() == 0 and not opted_out and not {"allow_other", "allow_root"} & set(kept):
        kept.append("allow_other")
    return kept


def _mount(args: argparse.Namespace) -> int:
    """Serve in the foreground, or start a daemon that does (:mod:`mqfs.cli.launch`)."""
    from mqfs.server import serve

    mountpoint = Path(args.mountpoint)
    try:
        mounts.require_mqfs(mountpoint)  # a dead one raises, and says to unmount it first
    except errors.NotMounted:
        pass  # nothing there, or something else: serve's own checks say which
    else:
        raise errors.AlreadyMounted(f"mqfs is already mounted at {mountpoint}")
    options = serve.parse_options(_with_default_access(args.options))
    serve.check_mountpoint(mountpoint)
    serve.import_patched_pyfuse3()
    if not args.foreground:
        # The daemon's output goes to $MQFS_LOG, else to a temporary file whose last line
        # is shown if it fails before it has mounted.
        log_path = os.environ.get("MQFS_LOG")
        with open(log_path, "a+b") if log_path else tempfile.TemporaryFile() as log:
            launch.spawn(mountpoint, args.options, log, tied=False)
        return 0
    import trio

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="mqfs: %(levelname)s %(name)s: %(message)s",
    )
    try:
        trio.run(serve.serve, mountpoint.resolve(), options, None, args.ready_fd)
    except RuntimeError as exc:  # pyfuse3.init failing to mount
        raise errors.MountFailed(str(exc)) from exc
    return 0


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
    parser.add_argument("--version", action="version", version=f"mqfs {__version__}")
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
        "msgsize_max, queues_max (=N), ignore_rlimit, state=DIR, state_sync, allow_other, debug",
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


# Options mount(8) adds or an fstab line carries that mean nothing to mqfs itself.
_GENERIC_OPTIONS = frozenset(
    {
        *("rw", "ro", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync"),
        *("atime", "noatime", "relatime", "strictatime", "auto", "noauto", "defaults"),
        *("user", "nouser", "users", "nofail", "_netdev"),
    }
)


def _from_mount_helper(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """mount(8)'s convention, used by `mount -t fuse.mqfs SOURCE DIR -o OPTS` and fstab
    lines through mount.fuse3: `mqfs SOURCE DIR -o OPTS` is `mqfs mount DIR -o OPTS`."""
    known = {"-h", "--help", "--version"} | set(_subcommand_names(parser))
    if len(argv) < 2 or argv[0] in known or argv[0].startswith("-"):
        return argv
    options: list[str] = []
    rest = iter(argv[2:])
    for word in rest:
        if word == "-o":
            options += next(rest, "").split(",")
    kept = [o for o in options if o and o not in _GENERIC_OPTIONS and not o.startswith("x-")]
    return ["mount", argv[1], *(f"-o{option}" for option in kept)]


def _subcommand_names(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:  # argparse keeps its subcommands in a private action
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(
        _from_mount_helper(list(sys.argv[1:] if argv is None else argv), parser)
    )
    try:
        return int(args.run(args))
    except errors.MqfsError as exc:
        print(f"mqfs: {args.command}: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `mqfs peek q --all | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 0
    except OSError as exc:  # one the command did not word itself: still one line
        code = exc.errno or errno.EIO
        where = f" ({exc.filename})" if exc.filename else ""
        print(
            f"mqfs: {args.command}: {os.strerror(code)}{where} ({errno.errorcode.get(code, code)})",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

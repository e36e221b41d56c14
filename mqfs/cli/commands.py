"""The queue subcommands of ``mqfs``: create, rm, ls, limits, who, send, recv, peek, purge,
rm-msg, move, watch, dump, restore. Each works on the mount (``--mount``, else
$MQFS_MOUNT, else /run/mqfs) through the queue files and the ioctls, and reports
failures as :mod:`mqfs.errors`' exceptions."""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import pwd
import select
import stat
import sys
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from mqfs import errors, mounts, posix, wire
from mqfs.client import calls, dump
from mqfs.client.backends import MqfsBackend
from mqfs.posix import MQ_PRIO_MAX

NOTIFY_NAMES = {
    posix.SIGEV_SIGNAL: "signal",
    posix.SIGEV_NONE: "none",
    posix.SIGEV_THREAD: "thread",
}


def _mount(args: argparse.Namespace) -> Path:
    return mounts.require_mqfs(args.mount)


def _failure(exc: OSError, name: str, action: str) -> errors.MqfsError:
    """*exc* from *action* on queue *name* as the tree's exception, in the user's words."""
    if isinstance(exc, errors.MqfsError):
        return exc  # already says what is wrong (a bad name, say)
    return errors.from_errno(exc.errno or errno.EIO, action, name)


def _count(number: int, noun: str) -> str:
    """'1 message', '2 messages'."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _queue_name(args: argparse.Namespace) -> str:
    """args.name ("jobs" or POSIX's "/jobs"), checked as the kernel checks queue names,
    so that a path like '../x' can never make a command act outside the mount."""
    return posix.queue_name(args.name)


@contextlib.contextmanager
def _queue_fd(args: argparse.Namespace, flags: int, action: str) -> Iterator[int]:
    name = _queue_name(args)
    try:
        fd = os.open(_mount(args) / name / "queue", flags | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # the queue, not a message of it (peek's own ENOENT)
            raise errors.NoSuchQueue(f"no queue named {name!r}") from None
        raise _failure(exc, name, action) from None
    try:
        yield fd
    except BrokenPipeError:
        raise  # our stdout closed, not the queue failing: the command decides
    except OSError as exc:
        raise _failure(exc, name, action) from None
    finally:
        os.close(fd)


def _info(mount: Path, name: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(os.getxattr(mount / name, wire.INFO_XATTR))
    status = os.stat(mount / name / "queue")
    info.update(
        name=name,
        mode=stat.S_IMODE(status.st_mode),
        uid=status.st_uid,
        gid=status.st_gid,
        mtime_ns=status.st_mtime_ns,
        ctime_ns=status.st_ctime_ns,
    )
    return info


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _notify_text(note: dict[str, Any] | None) -> str:
    if note is None:
        return "-"
    kind = NOTIFY_NAMES.get(note["sigev_notify"], str(note["sigev_notify"]))
    signal_part = f":{note['signo']}" if note["sigev_notify"] == posix.SIGEV_SIGNAL else ""
    return f"{kind}{signal_part}@{note['pid']}"


def _openers_text(row: dict[str, Any]) -> str:
    openers = row["openers"]
    if openers is None:  # not ours to see: the daemon gave counts only
        return f"{row['open']} open" if row["open"] else "-"
    if not openers:
        return "-"
    return ",".join(f"{o['pid']}{o['access']}{'*' if o['blocked'] else ''}" for o in openers)


def _pid_text(pid: int | None) -> str:
    return "-" if pid is None else str(pid)


# -- create / rm / ls / who --------------------------------------------------------


def create(args: argparse.Namespace) -> int:
    mount = _mount(args)
    name = _queue_name(args)
    if (args.maxmsg is None) != (args.msgsize is None):
        raise errors.InvalidArgument("give both --maxmsg and --msgsize, or neither")
    try:
        calls.create_at(
            mount,
            name,
            args.mode,
            maxmsg=args.maxmsg,
            msgsize=args.msgsize,
            exclusive=args.exclusive,
        )
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise errors.InvalidArgument(_over_limits(mount, name, args)) from None
        raise _failure(exc, name, "create") from None
    return 0


def _over_limits(mount: Path, name: str, args: argparse.Namespace) -> str:
    """Why the mount refused queue *name*'s attributes, and how to allow them."""
    limits = json.loads(os.getxattr(mount, wire.LIMITS_XATTR))
    for attribute, value, limit in (
        ("maxmsg", args.maxmsg, "msg_max"),
        ("msgsize", args.msgsize, "msgsize_max"),
    ):
        if value > limits[limit]:
            return (
                f"queue {name!r}: {attribute} {value} > {limit} {limits[limit]} of this "
                f"mount; mount with -o {limit}={value} to allow it"
            )
    return f"queue {name!r}: maxmsg and msgsize must be at least 1"


def remove(args: argparse.Namespace) -> int:
    name = _queue_name(args)
    try:
        os.rmdir(_mount(args) / name)
    except OSError as exc:
        raise _failure(exc, args.name, "rm") from None
    return 0


def _time_text(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ns / 1e9))


# `mqfs ls -o` columns (lsipc's conventions): name -> how a row's cell is made.
LS_COLUMNS: dict[str, Callable[[dict[str, Any]], str]] = {
    "NAME": lambda row: str(row["name"]),
    "MODE": lambda row: f"{row['mode']:04o}",
    "OWNER": lambda row: _owner(row["uid"]),
    "MSGS": lambda row: f"{row['curmsgs']}/{row['maxmsg']}",
    "MAXMSG": lambda row: str(row["maxmsg"]),
    "MSGSIZE": lambda row: str(row["msgsize"]),
    "BYTES": lambda row: str(row["qsize"]),
    "NOTIFY": lambda row: _notify_text(row["notify"]),
    "OPEN": _openers_text,
    "MTIME": lambda row: _time_text(row["mtime_ns"]),  # last send or receive, as the kernel's
    "CTIME": lambda row: _time_text(row["ctime_ns"]),
    "LSPID": lambda row: _pid_text(row["lspid"]),  # lsipc's: the last sender's pid
    "LRPID": lambda row: _pid_text(row["lrpid"]),  # and the last receiver's
}
LS_DEFAULT = "NAME,MODE,OWNER,MSGS,MSGSIZE,BYTES,NOTIFY,OPEN"


def list_queues(args: argparse.Namespace) -> int:
    if args.global_:
        return limits(args)
    mount = _mount(args)
    names = [posix.queue_name(name) for name in args.names]
    rows = []
    for name in names or sorted(os.listdir(mount)):
        try:
            rows.append(_info(mount, name))
        except FileNotFoundError:  # removed while we looked, or not there at all
            if names:
                raise errors.NoSuchQueue(f"no queue named {name!r}") from None
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not (args.long or args.output):
        for row in rows:
            print(row["name"])
        return 0
    columns = [column.strip().upper() for column in (args.output or LS_DEFAULT).split(",")]
    unknown = [column for column in columns if column not in LS_COLUMNS]
    if unknown:
        raise errors.InvalidArgument(
            f"unknown column {unknown[0]!r}; the columns are {', '.join(LS_COLUMNS)}"
        )
    table = [] if args.noheadings else [columns]
    table += [[LS_COLUMNS[column](row) for column in columns] for row in rows]
    _print_table(table, raw=args.raw)
    return 0


def limits(args: argparse.Namespace) -> int:
    """The mount's limits (as /proc/sys/fs/mqueue) and their use (lsipc -g): the queues
    that exist, and per user the queues and bytes charged to RLIMIT_MSGQUEUE."""
    mount = _mount(args)
    try:
        values: dict[str, Any] = json.loads(os.getxattr(mount, wire.LIMITS_XATTR))
    except OSError as exc:
        raise _failure(exc, str(mount), "limits") from None
    usage = values.pop("usage")
    values["queues_used"] = usage["queues"]
    users = [{"user": _owner(user["uid"]), **user} for user in usage["users"]]
    if args.json:
        print(json.dumps({**values, "users": users}, indent=1))
        return 0
    rows = [[key, str(value)] for key, value in values.items()]
    rows[-1][1] = f"{usage['queues']} of {values['queues_max']}"
    _print_table([["LIMIT", "VALUE"], *rows])
    if users:
        print()
        _print_table(
            [
                ["USER", "QUEUES", "BYTES"],
                *([user["user"], str(user["queues"]), str(user["bytes"])] for user in users),
            ]
        )
    return 0


def _display_width(text: str) -> int:
    """Columns *text* takes on a terminal: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _print_table(table: Sequence[Sequence[str]], raw: bool = False) -> None:
    if raw:
        for row in table:
            print(" ".join(cell.replace(" ", "\\x20") or "-" for cell in row))
        return
    widths = [max(map(_display_width, column)) for column in zip(*table, strict=True)]
    for row in table:
        cells = (
            cell + " " * (width - _display_width(cell))
            for cell, width in zip(row, widths, strict=True)
        )
        print("  ".join(cells).rstrip())


def who(args: argparse.Namespace) -> int:
    mount = _mount(args)
    try:
        info = _info(mount, _queue_name(args))
    except OSError as exc:
        raise _failure(exc, args.name, "who") from None
    if info["openers"] is None:
        raise errors.PermissionDenied(
            f"who: only the owner of queue {args.name!r} and root may see its openers "
            f"({info['open']} open, {info['blocked']} blocked)"
        )
    now_ns = time.time_ns()
    openers = [
        {
            **opener,
            "blocked_for": None
            if opener["blocked_since_ns"] is None
            else max(0, now_ns - opener["blocked_since_ns"]) / 1e9,
        }
        for opener in info["openers"]
    ]
    if args.json:
        print(json.dumps(openers, indent=1))
        return 0
    table = [("PID", "COMMAND", "ACCESS", "BLOCKED", "FOR")]
    for opener in openers:
        access = {"r": "read", "w": "write", "rw": "read/write"}.get(opener["access"], "-")
        table.append(
            (
                str(opener["pid"]),
                opener["command"] or "?",
                access,
                _blocked_text(opener["blocked"], opener["waiting"]),
                "-" if opener["blocked_for"] is None else _duration_text(opener["blocked_for"]),
            )
        )
    _print_table(table)
    return 0


def _blocked_text(oldest: str | None, counts: dict[str, int]) -> str:
    """What an opener's callers are parked in, the longest-waiting first: "receive",
    "receive x2", "wait,send"."""
    if oldest is None:
        return "-"
    order = [oldest, *(name for name in counts if name != oldest)]
    return ",".join(name + (f" x{counts[name]}" if counts[name] > 1 else "") for name in order)


def _duration_text(seconds: float) -> str:
    """3.2s, 4m05s, 2h07m: the longest caller's wait, as a person reads it."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


# -- send / recv / peek / watch ------------------------------------------------------


def send(args: argparse.Namespace) -> int:
    if not 0 <= args.prio < MQ_PRIO_MAX:
        raise errors.InvalidArgument(f"priority {args.prio} is not in 0..{MQ_PRIO_MAX - 1}")
    message = args.message
    payload = os.fsencode(message) if message is not None else sys.stdin.buffer.read()
    if args.lines:
        return _send_lines(args, payload)
    flags = os.O_WRONLY | (os.O_NONBLOCK if args.nonblock else 0)
    with _queue_fd(args, flags, "send") as fd:
        calls.send(fd, payload, args.prio, args.timeout)
    return 0


def _send_lines(args: argparse.Namespace, text: bytes) -> int:
    """send --lines: each line one message, in framed writes of about 1 MiB."""
    lines = text.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline ending the last line starts no message
    messages = [(line, args.prio) for line in lines]
    deadline = _deadline(args.timeout)
    with _queue_fd(args, os.O_WRONLY | os.O_NONBLOCK, "send") as fd:
        sent = 0
        while sent < len(messages):
            try:
                sent += calls.send_many(fd, messages[sent:] if sent else messages)
            except BlockingIOError as exc:
                if args.nonblock:
                    raise _partly(exc, "send", _queue_name(args), sent, len(messages)) from None
                try:
                    _wait_ready(fd, select.POLLOUT, deadline)
                except TimeoutError as timeout:
                    raise _partly(timeout, "send", _queue_name(args), sent, len(messages)) from None
    return 0


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _wait_ready(fd: int, event: int, deadline: float | None) -> None:
    """Wait until *fd* is ready for *event* (a non-blocking descriptor of a full or empty
    queue), or raise TimeoutError (ETIMEDOUT) once *deadline* passes."""
    poller = select.poll()
    poller.register(fd, event)
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not poller.poll(None if left is None else left * 1000):
        raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))


def _partly(exc: OSError, action: str, name: str, done: int, total: int) -> errors.MqfsError:
    """*exc* from a batch *action*, saying how far it got when that is part way."""
    code = exc.errno or errno.EIO
    text = errors.describe(code, action, name)
    if done:
        text = f"{text}, after {done} of {total} messages"
    return errors.from_errno(code, action, name, text)


def _format_message(payload: bytes, priority: int, args: argparse.Namespace) -> bytes:
    """One message as `recv`/`peek` print it (see their --help): messages can always be
    told apart again, except with --raw."""
    form = args.format
    if form == "json":
        record: dict[str, Any] = {"priority": priority, "length": len(payload)}
        try:
            record["text"] = payload.decode()
        except UnicodeDecodeError:
            record["base64"] = base64.b64encode(payload).decode()
        return json.dumps(record).encode() + b"\n"
    prefix = f"{priority}\t".encode() if args.show_prio else b""
    if form == "hex":
        return prefix + payload.hex().encode() + b"\n"
    if form == "base64":
        return prefix + base64.b64encode(payload) + b"\n"
    if form == "null":
        return prefix + payload + b"\0"
    if form == "raw":
        return prefix + payload
    return prefix + payload + (b"" if payload.endswith(b"\n") else b"\n")


def _write_message(payload: bytes, priority: int, args: argparse.Namespace) -> None:
    sys.stdout.buffer.write(_format_message(payload, priority, args))
    sys.stdout.buffer.flush()


def _progress(total: int, label: str) -> Callable[[int, int], None] | None:
    """A progress line on a terminal's stderr; nothing when stderr is not a terminal, or
    when stdout is one (the line would overwrite the messages printed there)."""
    if total < 2 or not sys.stderr.isatty() or sys.stdout.isatty():
        return None
    stream: TextIO = sys.stderr

    def show(done: int, whole: int) -> None:
        if done == whole or done % 64 == 0:
            stream.write(f"\r{label} {done}/{whole}")
            if done == whole:
                stream.write("\n")
            stream.flush()

    return show


def recv(args: argparse.Namespace) -> int:
    flags = os.O_RDONLY | (os.O_NONBLOCK if args.nonblock else 0)
    with _queue_fd(args, flags, "recv") as fd:
        msgsize = calls.get_attributes(fd).msgsize
        if args.count > 1 and wire.reply_room(calls.FRAMED_IO_MAX) >= msgsize:
            return _receive_batches(args, fd)
        show = _progress(args.count, "received")
        for number in range(1, args.count + 1):
            payload, priority = calls.receive(fd, msgsize, args.timeout)
            _write_message(payload, priority, args)
            if show:
                show(number, args.count)
    return 0


def _receive_batches(args: argparse.Namespace, fd: int) -> int:
    """recv --count N: framed reads of up to N messages each, as many as are there."""
    show = _progress(args.count, "received")
    deadline = _deadline(args.timeout)
    calls.set_attributes(fd, os.O_NONBLOCK)  # waits are poll()'s, with the timeout
    done = 0
    while done < args.count:
        try:
            batch = calls.receive_many(fd, min(args.count - done, (1 << 28) - 1))
        except BlockingIOError as exc:
            if args.nonblock:
                raise _partly(exc, "recv", _queue_name(args), done, args.count) from None
            try:
                _wait_ready(fd, select.POLLIN, deadline)
            except TimeoutError as timeout:
                raise _partly(timeout, "recv", _queue_name(args), done, args.count) from None
            continue
        sys.stdout.buffer.write(b"".join(_format_message(p, prio, args) for p, prio in batch))
        sys.stdout.buffer.flush()
        done += len(batch)
        if show:
            show(done, args.count)
    return 0


def peek(args: argparse.Namespace) -> int:
    with _queue_fd(args, os.O_RDONLY | os.O_NONBLOCK, "peek") as fd:
        if args.all:
            for payload, priority in calls.peek_all(fd):
                _write_message(payload, priority, args)
            return 0
        try:
            payload, priority = calls.peek(fd, args.index)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise errors.NoSuchMessage(
                    f"queue {args.name!r} has no message at index {args.index}"
                ) from None
            raise
        _write_message(payload, priority, args)
    return 0


def purge(args: argparse.Namespace) -> int:
    """Drain a stuck queue: receive every message and drop it; say how many."""
    with _queue_fd(args, os.O_RDONLY | os.O_NONBLOCK, "purge") as fd:
        msgsize = calls.get_attributes(fd).msgsize
        dropped = 0
        while True:
            try:
                calls.receive(fd, msgsize)
            except BlockingIOError:
                break
            dropped += 1
    print(f"purged {_count(dropped, 'message')} from {args.name!r}")
    return 0


def remove_message(args: argparse.Namespace) -> int:
    """Remove message INDEX, and only it: the removal names the queue's generation, so a
    queue that changed since the message was looked at loses nothing (ESTALE, exit 1).

    With --generation G the caller has looked already (an earlier `rm-msg`, or the
    client's ``generation``). Without, the message and the generation are read together
    in one PEEK_BATCH call and shown, and removed after a yes on the terminal, or at
    once with --yes; without a terminal and without --yes nothing is removed."""
    name = _queue_name(args)
    with _queue_fd(args, os.O_RDONLY | os.O_NONBLOCK, "rm-msg") as fd:
        generation = args.generation
        if generation is None:
            generation, (length, priority, head) = _look_at(fd, name, args.index)
            print(
                f"message {args.index} of {name!r} (generation {generation}): "
                f"{_message_text(priority, length, head)}",
                flush=True,
            )
            if not args.yes and not _confirmed(name, args.index, generation):
                return 1
        try:
            removed = calls.remove(fd, args.index, generation)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise _no_message(name, args.index) from None
            if exc.errno == errno.ESTALE:
                now = calls.current_generation(fd)
                raise errors.QueueChanged(
                    f"queue {name!r} changed since message {args.index} was looked at "
                    f"(generation {generation}, now {now}): nothing was removed; look again"
                ) from None
            raise
    print(
        f"removed message {args.index} of {name!r}: "
        f"{_message_text(removed.msg_prio, removed.msg_len, removed.data)} "
        f"(the queue is now at generation {removed.generation})"
    )
    return 0


def _look_at(fd: int, name: str, index: int) -> tuple[int, wire.BatchRecord]:
    """(generation, (length, priority, first bytes)) of message *index*, read together."""
    try:
        batch = calls.peek_batch(fd, index, max_count=1)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise _no_message(name, index) from None
        raise
    if not batch.records:  # index == curmsgs: just past the end
        raise _no_message(name, index)
    return batch.generation, batch.records[0]


def _no_message(name: str, index: int) -> errors.NoSuchMessage:
    return errors.NoSuchMessage(f"queue {name!r} has no message at index {index}")


def _message_text(priority: int, length: int, head: bytes) -> str:
    """A message in one line: priority, length and its first bytes, escaped."""
    shown = repr(head[:40].decode("utf-8", "backslashreplace"))
    more = "..." if length > 40 else ""
    return f"priority {priority}, {length} bytes: {shown}{more}"


def _confirmed(name: str, index: int, generation: int) -> bool:
    """A yes on the terminal; without a terminal, say how to remove it and refuse."""
    if not sys.stdin.isatty():
        print(
            f"mqfs: rm-msg: nothing removed: confirm with --yes, or run "
            f"`mqfs rm-msg {name} {index} --generation {generation}`",
            file=sys.stderr,
        )
        return False
    try:
        answer = input("remove it? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("mqfs: rm-msg: nothing removed", file=sys.stderr)
        return False
    return True


def move(args: argparse.Namespace) -> int:
    """Requeue messages from SRC to DST, priorities kept, one at a time. A message is
    received from SRC only once DST has room for it, and if DST fills anyway (another
    sender) it goes back to SRC (behind the messages of its priority): nothing is lost."""
    source, target = posix.queue_name(args.source), posix.queue_name(args.target)
    mount = _mount(args)
    src = _open_or_fail(mount, source, os.O_RDONLY | os.O_NONBLOCK, "move")
    try:
        dst = _open_or_fail(mount, target, os.O_WRONLY | os.O_NONBLOCK, "move")
        try:
            moved = _move_messages(src, dst, args.count)
            left = calls.get_attributes(src).curmsgs
            room = calls.get_attributes(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    done = f"moved {_count(moved, 'message')} from {source!r} to {target!r}"
    if left and room.curmsgs >= room.maxmsg and (args.count is None or moved < args.count):
        done += f"; stopped: {target!r} is full, {_count(left, 'message')} left in {source!r}"
    print(done)
    return 0


def _open_or_fail(mount: Path, name: str, flags: int, action: str) -> int:
    try:
        return os.open(mount / name / "queue", flags | os.O_CLOEXEC)
    except OSError as exc:
        raise _failure(exc, name, action) from None


def _move_messages(src: int, dst: int, limit: int | None) -> int:
    msgsize = calls.get_attributes(src).msgsize
    moved = 0
    while limit is None or moved < limit:
        room = calls.get_attributes(dst)
        if room.curmsgs >= room.maxmsg:
            break
        try:
            payload, priority = calls.receive(src, msgsize)
        except BlockingIOError:
            break
        try:
            calls.send(dst, payload, priority)
        except OSError:
            calls.send(src, payload, priority)  # DST filled meanwhile: put it back
            raise
        moved += 1
    return moved


def watch(args: argparse.Namespace) -> int:
    """Follow a queue: a line per change (time, cause, counts, the head message), or a
    JSON object per line with --json. It ends when the queue is unlinked (status 0, a
    message on stderr), at Ctrl-C, or quietly when the pipe it writes to closes."""
    with _queue_fd(args, os.O_RDONLY | os.O_NONBLOCK, "watch") as fd:
        unlinked = _follow(fd, args)  # a closed pipe (`| head`) ends it quietly: see main()
    if unlinked:
        print(f"mqfs: watch: queue {args.name!r} was unlinked", file=sys.stderr)
    return 0


def _follow(fd: int, args: argparse.Namespace) -> bool:
    """Print changes until --changes are shown (False) or the queue is unlinked (True).

    Each wake-up reads the queue's info through the open file (it stays readable after
    the unlink): the generation counts the changes since the last line, and the last
    change says what and who. A burst between two wake-ups reads "3 changes; last: ...".
    """
    reply = calls.wait_changed(fd, 0, timeout=0)  # returns at once: the state now
    seen: int | None = None
    shown = 0
    while args.changes is None or shown < args.changes:
        if seen is not None:
            reply = calls.wait_changed(fd, seen)
        info: dict[str, Any] = json.loads(os.getxattr(fd, wire.INFO_XATTR))
        head: tuple[bytes, int] | None = None
        if info["curmsgs"]:
            with contextlib.suppress(OSError):  # emptied meanwhile
                head = calls.peek(fd, 0)
        changes = 0 if seen is None else info["generation"] - seen
        seen = info["generation"]
        print(_watch_line(changes, info, head, args.json), flush=True)
        shown += 1
        if reply.unlinked or info["unlinked"]:
            return True
    return False


CHANGE_NAMES = {
    "send": "send",
    "receive": "receive",
    "remove": "rm-msg",
    "attributes": "mode/owner",
    "unlink": "unlinked",
}


def _change_text(changes: int, last: dict[str, Any] | None) -> str:
    """What happened since the previous line: "now" on the first, else the cause of the
    last change ("send by pid 12"), with how many there were if more than one."""
    if changes == 0 or last is None:
        return "now"
    cause = CHANGE_NAMES.get(last["kind"], last["kind"])
    if last["pid"] is not None:
        cause += f" by pid {last['pid']}"
    return cause if changes == 1 else f"{changes} changes; last: {cause}"


def _watch_line(
    changes: int, info: dict[str, Any], head: tuple[bytes, int] | None, as_json: bool
) -> str:
    now_ns = time.time_ns()
    millis = now_ns // 10**6 % 1000
    when = time.strftime("%H:%M:%S", time.localtime(now_ns / 1e9)) + f".{millis:03d}"
    last = info["last_change"] if changes else None
    change = _change_text(changes, last)
    if as_json:
        record: dict[str, Any] = {
            "time": now_ns / 1e9,
            "change": change,
            "changes": changes,
            "kind": last["kind"] if last else None,
            "pid": last["pid"] if last else None,
            "change_time": last["time_ns"] / 1e9 if last else None,
            "unlinked": info["unlinked"],
            "curmsgs": info["curmsgs"],
            "maxmsg": info["maxmsg"],
        }
        if head is not None:
            record["head"] = {"priority": head[1], "length": len(head[0])}
        return json.dumps(record)
    shown = "-"
    if head is not None:
        text = head[0][:40].decode("utf-8", "backslashreplace").rstrip("\n")
        shown = f"[{head[1]}] {text!r}"
    return f"{when}  {change:<26} {info['curmsgs']}/{info['maxmsg']} msgs  head: {shown}"


# -- dump / restore ------------------------------------------------------------------


def dump_command(args: argparse.Namespace) -> int:
    mount = _mount(args)
    if args.all == (args.name is not None):
        raise errors.InvalidArgument("give a queue NAME or --all")
    try:
        queues = dump.dump_all(mount) if args.all else [dump.dump_queue(mount, args.name)]
    except errors.MqfsError:
        raise
    except OSError as exc:
        raise _failure(exc, args.name or "*", "dump") from None
    text = dump.to_json(queues)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def restore_command(args: argparse.Namespace) -> int:
    mount = _mount(args)
    source = sys.stdin if args.file == "-" else None
    try:
        text = source.read() if source else Path(args.file).read_text()
    except OSError as exc:
        raise errors.MqfsError(
            f"cannot read {args.file}: {exc.strerror}", errno_value=exc.errno
        ) from None
    try:
        queues = dump.from_json(text)
        total = sum(len(queue.messages) for queue in queues)
        restored = dump.restore(
            queues,
            MqfsBackend(mount),
            force=args.force,
            replace=args.replace,
            atomic=args.atomic,
            progress=_progress(total, "restored"),
        )
    except errors.MqfsError:
        raise
    except OSError as exc:
        raise errors.MqfsError(
            f"restore failed: {os.strerror(exc.errno or errno.EIO)}", errno_value=exc.errno
        ) from None
    print(f"restored {_count(restored, 'message')} into {_count(len(queues), 'queue')}")
    return 0


def add_parsers(commands: Any, mount_default: str) -> None:  # noqa: PLR0915 (a flat table)
    """Register the queue subcommands on the ``mqfs`` parser."""

    def command(name: str, help_text: str, run: Callable[[argparse.Namespace], int]) -> Any:
        parser = commands.add_parser(name, help=help_text, description=help_text)
        parser.add_argument(
            "--mount",
            default=mount_default,
            help="the mqfs mount point (default: $MQFS_MOUNT or %(default)s)",
        )
        parser.set_defaults(run=run)
        return parser

    def positive(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return value

    def octal_mode(text: str) -> int:
        try:
            value = int(text, 8)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an octal mode") from None
        if not 0 <= value <= 0o7777:
            raise argparse.ArgumentTypeError(f"{text!r} is not a mode (0..7777)")
        return value

    def index_number(text: str) -> int:
        value = int(text)
        if value < 0:
            raise argparse.ArgumentTypeError("must not be negative (0 = next to receive)")
        if value >= 1 << 64:
            raise argparse.ArgumentTypeError("must be below 2**64")
        return value

    def generation_number(text: str) -> int:
        value = int(text)
        if not 0 <= value < 1 << 64:
            raise argparse.ArgumentTypeError("must be in 0..2**64-1")
        return value

    def output_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--show-prio", action="store_true", help="prefix PRIORITY<tab>")
        forms = parser.add_mutually_exclusive_group()
        forms.set_defaults(format="lines")
        for flags, form, text in [
            (["-0", "--null"], "null", "end each message with NUL instead of a newline"),
            (["--raw"], "raw", "messages back to back, as they are (no separator)"),
            (["--json"], "json", "one JSON object per line: priority, length, text or base64"),
            (["--hex"], "hex", "one line per message, in hexadecimal"),
            (["--base64"], "base64", "one line per message, in base64"),
        ]:
            forms.add_argument(*flags, dest="format", action="store_const", const=form, help=text)

    def seconds(text: str) -> float:
        value = float(text)
        if value < 0:
            raise argparse.ArgumentTypeError("must not be negative")
        return value

    parser = command("create", "create a queue (mq_open O_CREAT)", create)
    parser.add_argument("name")
    parser.add_argument(
        "--maxmsg", type=positive, help="messages it holds (default: the mount's msg_default)"
    )
    parser.add_argument(
        "--msgsize", type=positive, help="bytes per message (default: msgsize_default)"
    )
    parser.add_argument(
        "--mode",
        type=octal_mode,
        default="0600",
        help="octal, used as given: no umask applies (default 0600)",
    )
    parser.add_argument("--exclusive", action="store_true", help="fail if it exists (O_EXCL)")

    parser = command("rm", "remove a queue's name (mq_unlink)", remove)
    parser.add_argument("name")

    parser = command("ls", "list queues (all, or the NAMEs given)", list_queues)
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.add_argument(
        "-g", "--global", dest="global_", action="store_true", help="the limits and use (limits)"
    )
    parser.add_argument("-l", "--long", action="store_true", help="a table with the details")
    parser.add_argument("-o", "--output", help=f"columns, comma-separated: {', '.join(LS_COLUMNS)}")
    parser.add_argument("-n", "--noheadings", action="store_true", help="no header line")
    parser.add_argument("-r", "--raw", action="store_true", help="unaligned, one space apart")
    parser.add_argument("--json", action="store_true", help="machine-readable details")

    parser = command("limits", "the mount's limits, the queues in use, bytes per user", limits)
    parser.add_argument("--json", action="store_true", help="machine-readable")

    parser = command("who", "who has a queue open, and who is blocked on it", who)
    parser.add_argument("name")
    parser.add_argument("--json", action="store_true")

    parser = command("send", "send a message (MESSAGE, or standard input)", send)
    parser.add_argument("name")
    parser.add_argument("message", nargs="?")
    parser.add_argument("--prio", type=int, default=0, help="priority, 0..32767")
    parser.add_argument("--timeout", type=seconds, help="seconds to wait while full")
    parser.add_argument("--nonblock", action="store_true", help="fail at once if full")
    parser.add_argument(
        "--lines",
        action="store_true",
        help="each line one message (without its newline), many per request",
    )

    parser = command("recv", "receive messages to standard output", recv)
    parser.add_argument("name")
    parser.add_argument("--count", type=positive, default=1, help="how many (default 1)")
    parser.add_argument("--timeout", type=seconds, help="seconds to wait while empty")
    parser.add_argument("--nonblock", action="store_true", help="fail at once if empty")
    output_options(parser)

    parser = command("peek", "show messages without receiving them", peek)
    parser.add_argument("name")
    parser.add_argument(
        "index", nargs="?", type=index_number, default=0, help="0 = next to receive"
    )
    parser.add_argument("--all", action="store_true", help="every message, in receive order")
    output_options(parser)

    parser = command("purge", "receive and drop every message of a stuck queue", purge)
    parser.add_argument("name")

    parser = command(
        "rm-msg",
        "remove one message (a poison one) from anywhere in a queue, and only that one",
        remove_message,
    )
    parser.add_argument("name")
    parser.add_argument("index", type=index_number, help="0 = next to receive")
    parser.add_argument(
        "--generation",
        type=generation_number,
        help="remove only if the queue is still at this generation (as an earlier rm-msg "
        "showed it); without, the message is shown and removed after confirmation",
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")

    parser = command("move", "requeue messages from SRC to DST, priorities kept", move)
    parser.add_argument("source", metavar="SRC")
    parser.add_argument("target", metavar="DST")
    parser.add_argument("--count", type=positive, help="at most this many (default: all)")

    parser = command("watch", "follow a queue live until Ctrl-C or its unlink", watch)
    parser.add_argument("name")
    parser.add_argument("--json", action="store_true", help="a JSON object per line")
    parser.add_argument("--changes", type=positive, help=argparse.SUPPRESS)  # for tests

    parser = command("dump", "write queues and their messages to a file", dump_command)
    parser.add_argument("name", nargs="?")
    parser.add_argument("--all", action="store_true", help="every queue of the mount")
    parser.add_argument("-o", "--output", help="file (default: standard output)")

    parser = command("restore", "recreate queues from a dump", restore_command)
    parser.add_argument("file", help="the dump, or - for standard input")
    into = parser.add_mutually_exclusive_group()
    into.add_argument(
        "--force", action="store_true", help="append to non-empty queues (theirs stay first)"
    )
    into.add_argument(
        "--replace", action="store_true", help="drop what non-empty queues hold, then restore"
    )
    parser.add_argument(
        "--atomic", action="store_true", help="all or nothing: undo the sends if one fails"
    )

"""A mapping a process of the owner's scribbled on, or truncated: in a process that installed
the fault guard (mqfs.fastq.guard_faults, the daemon's configuration), every operation
returns a result or raises an mqfs.errors exception (CorruptQueue, Busy, ...), and the
process never dies. (Without the guard, a truncated mapping kills the owner's own process,
which is not tested here.)"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from mqfs import errors, fastq
from tests.support.fastq import contents, new_queue

MAXMSG, MSGSIZE = 8, 32
MUTEX = range(24, 64)  # struct header's pthread_mutex_t (x86-64 glibc: 40 bytes at 24)
FIELDS = 192  # struct header's fields and undo record
HEADER_USED = 1024  # all of struct header (the sleepers, the boot id) lies within this
LOCK_TIMEOUT = 0.01
ROUNDS = 150
EXPECTED_ERRNOS = {
    errno.EUCLEAN,  # CorruptQueue
    errno.EBUSY,  # the mutex held (or made to look held) longer than LOCK_TIMEOUT
    errno.EAGAIN,
    errno.ETIMEDOUT,
    errno.ENOENT,
    errno.ESTALE,
}


def every_operation(queue: fastq.MappedQueue) -> list[Callable[[], object]]:
    return [
        lambda: queue.send(b"hostile", 3, nonblock=True),
        lambda: queue.send(b"", 0, deadline=time.time() + 0.01),
        lambda: queue.receive(nonblock=True),
        lambda: queue.receive(deadline=time.time() + 0.01),
        lambda: queue.peek(0),
        lambda: queue.peek(3, 5, 100),
        lambda: queue.peek(MAXMSG - 1),
        lambda: queue.remove(1),
        lambda: queue.remove(0, queue.generation()),
        queue.state,
        queue.check,
        lambda: queue.set_interest(True, True),
        queue.take_notify,
        lambda: queue.wait_change(0, 0),
        queue.sleepers,
        lambda: queue.receive_upto(4),
        lambda: pinned_state(queue),
        queue.wake_all,
        queue.clear,
    ]


def pinned_state(queue: fastq.MappedQueue) -> None:
    with queue.pinned():
        queue.state()
        queue.peek(0)


def outcomes(queue: fastq.MappedQueue, tally: Counter[str]) -> None:
    """Every operation once: each must return or raise an mqfs.errors exception."""
    for operation in every_operation(queue):
        try:
            operation()
            tally["returned"] += 1
        except errors.MqfsError as exc:
            # what the core can say about a queue, not a value it read from the mapping
            known = exc.errno in EXPECTED_ERRNOS
            tally[type(exc).__name__ if known else f"unexpected errno {exc.errno}"] += 1


def scribbles(path: Path, rng: random.Random, with_mutex: bool) -> None:
    """A few random bytes at random offsets, half in the header's fields: with
    *with_mutex* the first into the mutex, without it none."""
    size = path.stat().st_size
    with open(path, "r+b") as file, mmap.mmap(file.fileno(), size) as mapping:
        for n in range(rng.randrange(1, 6)):
            length = rng.randrange(1, 9)
            if with_mutex and n == 0:
                offset = rng.randrange(MUTEX.start, MUTEX.stop)
            else:
                while True:
                    where = rng.choice([FIELDS, FIELDS, HEADER_USED, size])
                    offset = rng.randrange(where)
                    touches = offset < MUTEX.stop and offset + length > MUTEX.start
                    if with_mutex or not touches:
                        break
            length = min(length, size - offset)
            mapping[offset : offset + length] = rng.randbytes(length)


def in_guarded_child(body: Callable[[Counter[str]], None]) -> Counter[str]:
    """Run *body* in a forked child with the fault guard installed: what it tallied. The
    test fails if the child dies or *body* raises anything else."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_end)
            fastq.guard_faults(LOCK_TIMEOUT)
            tally: Counter[str] = Counter()
            body(tally)
            os.write(write_end, json.dumps(tally).encode())
            code = 0
        except BaseException:
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        report = reader.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"the guarded process died: status {status:#x}\n{report}"
    assert os.WEXITSTATUS(status) == 0, report
    return Counter(json.loads(report))


@pytest.mark.parametrize("with_mutex", [False, True], ids=["mutex-spared", "mutex-hit"])
def test_scribbled_mappings_give_results_or_errors(tmp_path: Path, with_mutex: bool) -> None:
    def body(tally: Counter[str]) -> None:
        rng = random.Random(1000 + with_mutex)
        for round_ in range(ROUNDS):
            name = f"q{round_}"
            queue = new_queue(tmp_path, MAXMSG, MSGSIZE, name)
            for n in range(rng.randrange(MAXMSG + 1)):
                queue.send(bytes([n]) * rng.randrange(MSGSIZE + 1), rng.randrange(3))
            scribbles(tmp_path / name, rng, with_mutex)
            outcomes(queue, tally)
            outcomes(queue, tally)  # again, on whatever the first pass left
            queue.close()
            (tmp_path / name).unlink()

    tally = in_guarded_child(body)
    print(f"\nscribbled mappings ({'mutex hit' if with_mutex else 'mutex spared'}): {dict(tally)}")
    assert not [key for key in tally if key.startswith("unexpected")]
    assert tally["returned"] > 0
    assert tally["CorruptQueue"] > 0  # the scribbles were seen, not just survived


def test_a_mapping_truncated_under_the_process_gives_corrupt_queue(tmp_path: Path) -> None:
    def body(tally: Counter[str]) -> None:
        queue = new_queue(tmp_path, MAXMSG, MSGSIZE)
        queue.send(b"before", 1)
        os.truncate(tmp_path / "q", 0)
        operations = every_operation(queue)
        tally["operations"] = len(operations)
        for operation in operations:
            try:
                operation()
                tally["returned"] += 1
            except errors.CorruptQueue:
                tally["CorruptQueue"] += 1
        assert queue.broken
        queue.close()

    tally = in_guarded_child(body)
    # wake_all returns nothing (it gives up quietly); everything else says CorruptQueue
    assert tally["returned"] == 1
    assert tally["CorruptQueue"] == tally["operations"] - 1


def test_a_bad_buffer_is_efault_and_changes_nothing(tmp_path: Path) -> None:
    """A caller's buffer that faults mid-copy: the operation is undone, the mutex released."""

    def body(tally: Counter[str]) -> None:
        queue = new_queue(tmp_path, MAXMSG, MSGSIZE)
        queue.send(b"kept", 2)
        lib, bad = fastq.library(), ctypes.c_void_p(8)  # address 8 is never mapped
        tally["send"] = -lib.fastq_send(queue._ref, bad, 5, 1, 0, None)
        tally["receive"] = -lib.fastq_receive(queue._ref, bad, MSGSIZE, None, 1, None)
        tally["peek"] = -lib.fastq_peek(queue._ref, 0, 0, bad, MSGSIZE, None, None, None)
        tally["remove"] = -lib.fastq_remove(queue._ref, 0, 0, bad, MSGSIZE, None)
        assert contents(queue) == [(b"kept", 2)]
        queue.check()
        assert queue.receive(nonblock=True) == (b"kept", 2)  # the mutex was released
        queue.close()

    tally = in_guarded_child(body)
    assert tally == {name: errno.EFAULT for name in ("send", "receive", "peek", "remove")}

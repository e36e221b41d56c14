"""kill -9 of a journaled mount's daemon under load, and the count of what came back.

Producers and consumers (threads, each with its own descriptor of MNT/NAME/queue) move
distinct messages until the daemon is SIGKILLed once the consumers have received a
chosen number; every call then fails (ENOTCONN) and the threads end. The consumers start
once the producers have filled the queue with a backlog, so that the kill finds messages
queued and senders blocked (and later admitted by a receive). After a remount
with the same ``state=DIR`` the queue is drained, and every message is accounted for:

* *lost*: its send returned, it was never received and it is not in the queue;
* *duplicated*: received or drained more than once;
* *phantom*: received or drained but never sent;
* *in flight*: receives under way when the daemon died, each of which may have taken
  its message with it (journaled as received, never answered): the only losses allowed.

tests/fs/test_state.py runs it small; the benchmark (benchmarks/measurements/durability.py)
runs it at 50,000 messages, 20 times. No pytest import: the benchmark imports it.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from mqfs.client import calls
from tests.support.waiting import wait_until

PAYLOAD_SIZE = 64


@dataclass
class Traffic:
    """What the producers and consumers saw before and at the kill."""

    attempted: set[bytes] = field(default_factory=set)  # every message a producer tried
    acknowledged: list[bytes] = field(default_factory=list)  # sends that returned
    received: list[bytes] = field(default_factory=list)  # receives that returned
    in_flight: int = 0  # receives under way when the daemon died
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Count:
    acknowledged: int
    received: int
    drained: int
    lost: int
    duplicated: int
    phantoms: int
    in_flight: int

    @property
    def within_the_window(self) -> bool:
        """Nothing lost beyond the receives in flight, nothing duplicated or invented."""
        return self.lost <= self.in_flight and not self.duplicated and not self.phantoms


def message(producer: int, sequence: int) -> bytes:
    return f"{producer}:{sequence}".encode().ljust(PAYLOAD_SIZE, b".")


def _produce(queue_file: Path, producer: int, count: int, traffic: Traffic) -> None:
    fd = os.open(queue_file, os.O_WRONLY | os.O_CLOEXEC)
    try:
        for sequence in range(count):
            payload = message(producer, sequence)
            with traffic.lock:
                traffic.attempted.add(payload)
            try:
                os.write(fd, payload)
            except OSError:
                return  # the daemon is gone; this send may or may not have been journaled
            with traffic.lock:
                traffic.acknowledged.append(payload)
    finally:
        with suppress(OSError):
            os.close(fd)


def _consume(queue_file: Path, msgsize: int, traffic: Traffic) -> None:
    try:
        fd = os.open(queue_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the daemon died before this consumer started: nothing under way
    try:
        try:
            calls.receive_on_read(fd)  # read() receives (else it is the status line)
        except OSError:
            return  # as above
        while True:
            try:
                payload = os.read(fd, msgsize)
            except OSError:
                with traffic.lock:
                    traffic.in_flight += 1  # this receive was under way at the kill
                return
            with traffic.lock:
                traffic.received.append(payload)
    finally:
        with suppress(OSError):
            os.close(fd)


def run_until_killed(
    queue_dir: Path,
    daemon: subprocess.Popen[bytes],
    *,
    messages: int,
    kill_after: int,
    msgsize: int,
    backlog: int,
    producers: int = 4,
    consumers: int = 4,
) -> Traffic:
    """Move *messages* through *queue_dir* (consumers start once *backlog* are queued) and
    SIGKILL *daemon* once *kill_after* (< messages) have been received; return what every
    thread saw."""
    assert 0 < kill_after < messages and backlog < messages
    traffic = Traffic()
    queue_file = queue_dir / "queue"
    threads = [
        threading.Thread(target=_produce, args=(queue_file, index, messages // producers, traffic))
        for index in range(producers)
    ] + [
        threading.Thread(target=_consume, args=(queue_file, msgsize, traffic))
        for _ in range(consumers)
    ]
    try:
        for thread in threads[:producers]:
            thread.start()
        wait_until(lambda: len(traffic.acknowledged) >= backlog, what="the backlog", timeout=300)
        for thread in threads[producers:]:
            thread.start()
        wait_until(
            lambda: len(traffic.received) >= kill_after,
            what=f"{kill_after} messages received",
            timeout=300,
        )
    finally:
        daemon.kill()
        daemon.wait()
        for thread in threads:
            if thread.ident is not None:
                thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker outlived the daemon"
    return traffic


def drain(queue_dir: Path, msgsize: int) -> list[bytes]:
    """Receive everything queued, without waiting."""
    fd = os.open(queue_dir / "queue", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    calls.receive_on_read(fd)
    taken: list[bytes] = []
    try:
        while True:
            try:
                taken.append(os.read(fd, msgsize))
            except BlockingIOError:
                return taken
    finally:
        os.close(fd)


def count(traffic: Traffic, drained: list[bytes]) -> Count:
    seen = Counter(traffic.received) + Counter(drained)
    return Count(
        acknowledged=len(traffic.acknowledged),
        received=len(traffic.received),
        drained=len(drained),
        lost=sum(1 for payload in traffic.acknowledged if payload not in seen),
        duplicated=sum(times - 1 for times in seen.values()),
        phantoms=sum(1 for payload in seen if payload not in traffic.attempted),
        in_flight=traffic.in_flight,
    )

"""Stress: N producer and M consumer processes on one queue, on both backends.

Producers send numbered messages with random priorities; consumers receive until they
get a stop message (sent at priority 0 after every producer finished, so it ranks behind
everything). Every message must be received exactly once, and each consumer must see the
messages of one producer and one priority in the order they were sent (FIFO within a
priority; across consumers no common order is observable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections import defaultdict

from tests.support.backends import BackendFactory
from tests.support.paths import ROOT

PRODUCERS = 3
CONSUMERS = 3
PER_PRODUCER = 700
PRIORITIES = 5
TIMEOUT = 60.0

PRODUCER = textwrap.dedent("""
    import os, random, sys
    from mqfs.client.backends import from_spec
    mq = from_spec(sys.argv[1])
    me, count, priorities = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mqd = mq.open("/stress", os.O_WRONLY)
    rng = random.Random(me)
    for seq in range(count):
        prio = rng.randrange(priorities) + 1
        mq.send(mqd, b"%d %d %d" % (me, seq, prio), prio)
""")

CONSUMER = textwrap.dedent("""
    import os, sys
    from mqfs.client.backends import from_spec
    mq = from_spec(sys.argv[1])
    mqd = mq.open("/stress", os.O_RDONLY)
    got = []
    while True:
        payload, prio = mq.receive(mqd, 64)
        if payload == b"stop":
            break
        got.append(b"%s %d" % (payload, prio))
    sys.stdout.buffer.write(b"\\n".join(got))
""")


def start(program: str, *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", program, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_producers_and_consumers(backend: BackendFactory) -> None:
    with backend({}) as mq:
        mqd = mq.open("/stress", os.O_CREAT | os.O_RDWR, 0o600, (10, 64))
        processes: list[subprocess.Popen[bytes]] = []
        try:
            consumers = [start(CONSUMER, mq.spec()) for _ in range(CONSUMERS)]
            producers = [
                start(PRODUCER, mq.spec(), me, PER_PRODUCER, PRIORITIES) for me in range(PRODUCERS)
            ]
            processes = consumers + producers
            for producer in producers:
                _, errors = producer.communicate(timeout=TIMEOUT)
                assert producer.returncode == 0, errors.decode()
            for _ in consumers:
                mq.send(mqd, b"stop", 0)
            logs = []
            for consumer in consumers:
                out, errors = consumer.communicate(timeout=TIMEOUT)
                assert consumer.returncode == 0, errors.decode()
                logs.append([tuple(map(int, line.split())) for line in out.splitlines()])
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.communicate(timeout=TIMEOUT)
            mq.close(mqd)
            mq.unlink("/stress")
    received = sorted((me, seq) for log in logs for me, seq, _, _ in log)
    assert received == [(me, seq) for me in range(PRODUCERS) for seq in range(PER_PRODUCER)]
    for log in logs:
        assert all(prio == delivered for _, _, prio, delivered in log)
        last: dict[tuple[int, int], int] = defaultdict(lambda: -1)
        for me, seq, prio, _ in log:
            assert seq > last[me, prio], f"producer {me} priority {prio}: {seq} after newer"
            last[me, prio] = seq
    assert sum(1 for log in logs if log) >= 2  # the consumers really did share the work

"""Every scenario (scenarios.py, run by runner.py) on the kernel's mqueue and on mqfs.

``test_scenario[kernel-NAME]`` checks the kernel against the rule written in the scenario;
``test_scenario[mqfs-NAME]`` (and ``[fastpath-NAME]``, on an ``-o fastpath`` mount) checks
mqfs against the kernel's transcript of the same scenario (run again in a fresh namespace)
and against the written rule. Peek is mqfs's
own extension and is checked against what receive then returns.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mqfs.client.backends import MqfsBackend
from tests.conformance import table
from tests.conformance.runner import (
    KernelTranscripts,
    Scenario,
    check_rule,
    differences,
    transcript,
)
from tests.conformance.scenarios import SCENARIOS
from tests.support.backends import BackendFactory, mqfs_backend
from tests.support.paths import ROOT

kernel_transcripts = KernelTranscripts()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(backend: BackendFactory, scenario: Scenario) -> None:
    with backend(scenario.limits) as mq:
        got = transcript(mq, scenario)
    if isinstance(mq, MqfsBackend):
        kernel = kernel_transcripts.of(scenario)
        if kernel is not None:
            diff = differences(scenario, got, kernel, "kernel")
            assert not diff, f"{scenario.name}: mqfs differs from the kernel:\n{diff}"
    else:
        kernel_transcripts.record(scenario, got)
    check_rule(scenario, got)


def test_every_scenario_states_its_rule() -> None:
    names = [s.name for s in SCENARIOS]
    assert len(names) == len(set(names))
    for scenario in SCENARIOS:
        assert any(want is not ... for want in scenario.expected), scenario.name
        assert scenario.behaviour and "\n" not in scenario.behaviour, scenario.name


def test_docs_table_is_current() -> None:
    docs = (ROOT / "docs" / "conformance.md").read_text()
    assert table.render() in docs, "regenerate with: python -m tests.conformance.table"


# -- peek: mqfs's extension, checked against receive ---------------------------------


@pytest.fixture
def mqfs_queue() -> object:
    with mqfs_backend({"msg_max": 64}) as mq:
        mqd = mq.open("/q", os.O_CREAT | os.O_RDWR, 0o600, (64, 64))
        try:
            yield mq, mqd
        finally:
            mq.close(mqd)


def test_peek_agrees_with_receive_at_every_index(mqfs_queue: tuple[MqfsBackend, int]) -> None:
    mq, mqd = mqfs_queue
    rng = random.Random(3)
    with pytest.raises(OSError) as empty:
        mq.peek(mqd, 0)
    assert empty.value.errno == errno.EAGAIN
    for i in range(50):
        mq.send(mqd, b"%d" % i * rng.randrange(0, 8), rng.choice([0, 1, 5, 32767]))
    peeked = [mq.peek(mqd, index) for index in range(50)]
    with pytest.raises(OSError) as beyond:
        mq.peek(mqd, 50)
    assert beyond.value.errno == errno.ENOENT
    assert mq.getattr(mqd).curmsgs == 50
    for index in range(50):
        # After each receive the rest of the queue moves up by one, peek follows.
        assert [mq.peek(mqd, i) for i in range(50 - index)] == peeked[index:]
        assert mq.receive(mqd, 64) == peeked[index]


SENDER = textwrap.dedent("""
    import os, random, sys
    from mqfs.client.backends import from_spec
    mq = from_spec(sys.argv[1])
    mqd = mq.open("/q", os.O_WRONLY)
    rng = random.Random(7)
    for i in range(int(sys.argv[2])):
        mq.send(mqd, b"%06d" % i, rng.randrange(0, 4))
""")


def test_peek_under_a_concurrent_sender(mqfs_queue: tuple[MqfsBackend, int]) -> None:
    """Every message peeked at index 0 is one a later receive returns, and a receive never
    returns something that ranks below what was just peeked."""
    mq, mqd = mqfs_queue
    count = 400
    sender = subprocess.Popen(
        [sys.executable, "-c", SENDER, mq.spec(), str(count)], cwd=ROOT, stderr=subprocess.PIPE
    )
    peeked: list[tuple[bytes, int]] = []
    received: list[tuple[bytes, int]] = []
    try:
        while len(received) < count:
            try:
                head = mq.peek(mqd, 0)
            except OSError as exc:
                assert exc.errno == errno.EAGAIN
                head = None
            got = mq.receive(mqd, 64)
            if head is not None:
                peeked.append(head)
                assert got[1] >= head[1], (head, got)  # only a higher priority overtakes
            received.append(got)
        assert sender.wait(timeout=30) == 0
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait(timeout=30)
        assert sender.stderr is not None
        sender.stderr.close()
    assert sorted(received) == sorted(set(received))
    assert sorted(p for p, _ in received) == [b"%06d" % i for i in range(count)]
    assert set(peeked) <= set(received)
    assert len(peeked) > 0


def test_table_module_prints_the_table() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.conformance.table"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == table.render() + "\n"
    assert Path(ROOT / "docs" / "conformance.md").exists()

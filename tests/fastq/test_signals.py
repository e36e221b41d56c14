"""EINTR on a mapped queue, as the kernel's mq_receive has it (fastq_signals.c): a signal
whose handler lacks SA_RESTART ends a blocked receive with EINTR; with SA_RESTART the
receive goes on sleeping (futex_waitv restarts, timed or not) and gets the message sent
later; SIGSTOP/SIGCONT don't end it. The same cases run on the kernel's queues."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mqfs import errors
from tests.support.fastq import build_with_core, new_queue

HERE = Path(__file__).resolve().parent
EXPECTED = {
    "no-restart-untimed": "EINTR",
    "no-restart-timed": "EINTR",
    "restart-untimed": "got late",
    "restart-timed": "got late",
    "stop-cont-untimed": "got late",
    "stop-cont-timed": "got late",
}


@pytest.fixture(scope="module")
def transcript(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    directory = tmp_path_factory.mktemp("fastq-signals")
    program = build_with_core(HERE / "fastq_signals.c", directory)
    done = subprocess.run(
        [program, directory / "mapping"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, str]] = {}
    for line in done.stdout.splitlines():
        backend, rest = line.split(" ", 1)
        if rest == "unavailable":
            continue
        case, result = rest.split(" ", 1)
        results.setdefault(backend, {})[case] = result
    return results


@pytest.mark.parametrize("case", EXPECTED)
def test_a_blocked_receive_and_a_signal(transcript: dict[str, dict[str, str]], case: str) -> None:
    assert transcript["fastq"][case] == EXPECTED[case]


@pytest.mark.parametrize("case", EXPECTED)
def test_the_kernel_agrees(transcript: dict[str, dict[str, str]], case: str) -> None:
    if "kernel" not in transcript:
        pytest.skip("the kernel's mqueue is unusable here (mq_open failed)")
    assert transcript["kernel"][case] == transcript["fastq"][case]


class Interrupted(Exception):
    pass


def test_a_python_handler_that_raises_ends_a_blocked_receive(tmp_path: Path) -> None:
    """mqfs.fastq from Python: EINTR runs the handlers, as PEP 475 has it; one that raises
    ends the call with its exception, and the queue has no sleeper left counted."""
    queue = new_queue(tmp_path, 2, 8)

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Interrupted):
            queue.receive(deadline=time.time() + 30)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert queue.state().recv_waiters == 0


def test_a_python_handler_that_returns_lets_the_receive_wait_on(tmp_path: Path) -> None:
    queue = new_queue(tmp_path, 2, 8)
    seen: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        deadline = time.time() + 0.3
        with pytest.raises(errors.TimedOut):  # not SignalError: the wait went on
            queue.receive(deadline=deadline)
        assert time.time() >= deadline
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seen == [signal.SIGALRM]

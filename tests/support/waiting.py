"""Waiting for something that happens elsewhere: poll a condition with a deadline, never
sleep "to settle".

No pytest import here: the conformance children (``python -c``) import this module and
must start fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable

POLL_INTERVAL = 0.002


class WaitTimedOut(AssertionError):
    """A condition polled by wait_until was still false at its deadline."""


def wait_until(condition: Callable[[], object], *, what: str, timeout: float = 10.0) -> None:
    """Poll *condition* until it returns something true; raise WaitTimedOut after *timeout*
    seconds. *what* names the event in the failure ("the receiver to block")."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimedOut(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL)

"""A real unprivileged account, for tests of what other users can and cannot do."""

from __future__ import annotations

import os
import pickle
import pwd
import subprocess
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

TEST_USER = "mqfs-tester"


def unprivileged_user() -> pwd.struct_passwd:
    """The unprivileged test account, created (as a system user, no home) if missing."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(TEST_USER)


def run_as_user(
    argv: list[str], timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run *argv* as the unprivileged test user; output captured as text."""
    account = unprivileged_user()
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def as_user(function: Callable[[], T]) -> T:
    """Call *function* in a forked child running as the unprivileged test user (real and
    effective uid and gid, no supplementary groups); its result or exception comes back."""
    account = unprivileged_user()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            try:
                outcome: tuple[bool, object] = (True, function())
            except BaseException as exc:
                outcome = (False, exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        pytest.fail("the child running as the test user died")
    succeeded, value = pickle.loads(data)
    if not succeeded:
        raise value  # type: ignore[misc]
    return value  # type: ignore[no-any-return]

"""root's mount is usable by every user, as /dev/mqueue is (allow_other by default, with each
queue's mode checked), and `-o noallow_other` keeps it to root."""

from __future__ import annotations

import errno
import os

import pytest

from mqfs.client import calls
from tests.support.mounts import mounted
from tests.support.users import as_user


def exchange(path: str) -> bytes:
    fd = os.open(path, os.O_RDWR)
    try:
        os.write(fd, b"hi")
        return calls.receive(fd, 8192)[0]
    finally:
        os.close(fd)


def test_every_user_can_use_roots_mount_by_default() -> None:
    with mounted() as mount:
        os.chmod(mount.make_queue("shared"), 0o666)
        mount.make_queue("private")  # 0600, root's
        path = str(mount.path / "shared" / "queue")
        assert as_user(lambda: exchange(path)) == b"hi"
        with pytest.raises(PermissionError):  # the queue's own mode still applies
            as_user(lambda: exchange(str(mount.path / "private" / "queue")))


def test_noallow_other_keeps_the_mount_to_root() -> None:
    with mounted(("noallow_other",)) as mount:
        os.chmod(mount.make_queue("shared"), 0o666)
        path = str(mount.path / "shared" / "queue")
        with pytest.raises(PermissionError) as refused:
            as_user(lambda: exchange(path))
        assert refused.value.errno == errno.EACCES

"""dump -> JSON -> restore reproduces random queues exactly, and changes nothing dumped."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqfs.client import calls, dump
from mqfs.client.backends import MqfsBackend
from tests.support.mounts import Mount

messages_strategy = st.lists(
    st.tuples(st.binary(max_size=300), st.integers(0, 32767) | st.integers(0, 3)),
    max_size=40,
)
_names = itertools.count()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(messages=messages_strategy, maxmsg=st.integers(40, 50), mode=st.sampled_from([0o600, 0o644]))
def test_random_queues_round_trip(
    mount_factory: object, messages: list[tuple[bytes, int]], maxmsg: int, mode: int
) -> None:
    source, target = _mounts(mount_factory)
    name = f"q{next(_names)}"
    calls.create_at(source.path, name, mode, maxmsg=maxmsg, msgsize=300)
    fd = os.open(source.path / name / "queue", os.O_WRONLY)
    try:
        for payload, priority in messages:
            calls.send(fd, payload, priority)
    finally:
        os.close(fd)
    status = (source.path / name / "status").read_bytes()
    (taken,) = dump.from_json(dump.to_json([dump.dump_queue(source.path, name)]))
    assert (source.path / name / "status").read_bytes() == status  # the dump changed nothing
    assert taken.messages == sorted(messages, key=lambda m: -m[1])  # receive order
    dump.restore([taken], MqfsBackend(target.path))
    again = dump.dump_queue(target.path, name)
    assert (again.messages, again.maxmsg, again.msgsize, again.mode) == (
        taken.messages,
        maxmsg,
        300,
        mode,
    )
    fd = os.open(target.path / name / "queue", os.O_RDONLY)
    try:  # and the restored queue receives the same, in the same order
        assert [calls.receive(fd, 300) for _ in messages] == taken.messages
    finally:
        os.close(fd)
    for mount in (source, target):
        os.rmdir(mount.path / name)


_cache: dict[int, tuple[Mount, Mount]] = {}


def _mounts(mount_factory: object) -> tuple[Mount, Mount]:
    """Two mounts per test (not per example): examples use fresh queue names."""
    key = id(mount_factory)
    if key not in _cache:
        _cache.clear()
        _cache[key] = (mount_factory("msg_max=64"), mount_factory("msg_max=64"))  # type: ignore[operator]
    return _cache[key]

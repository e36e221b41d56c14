"""The journal of -o state=DIR on its own: records in, the same queues out, whatever the
history, a cut or corrupt tail, a newer format or an unsafe directory."""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqfs import errors
from mqfs.server import journal as journal_module
from mqfs.server.journal import (
    HEADER_SIZE,
    MAGIC,
    SEND_OVERHEAD,
    VERSION,
    Journal,
    QueueImage,
    QueueRecord,
    Recovered,
    send_record,
)

MAX_RECORD = SEND_OVERHEAD + 300  # the longest record the histories below write


class Model:
    """A journal driven op by op beside a plain model of what it should hold."""

    def __init__(self, directory: Path, slack: int = journal_module.COMPACT_SLACK) -> None:
        self.directory = directory
        self.slack = slack
        self.journal, recovered = Journal.open(directory, slack)
        self.records: dict[int, QueueRecord] = {}
        self.messages: dict[int, list[tuple[int, int, bytes]]] = {}  # (-priority, seq, payload)
        self.next_qid = 1
        self.seq = 0
        self.check(recovered)

    def create(self, name: str, mode: int = 0o600, maxmsg: int = 10, msgsize: int = 300) -> int:
        qid = self.next_qid
        self.next_qid += 1
        record = QueueRecord(qid, name, mode, 1000 + qid, 2000 + qid, 0, maxmsg, msgsize, 1, 2, 3)
        self.journal.create(record)
        self.records[qid] = QueueRecord(*vars_of(record))
        self.messages[qid] = []
        return qid

    def send(self, qid: int, priority: int, payload: bytes) -> None:
        self.journal.send(qid, priority, payload)
        self.seq += 1
        self.messages[qid].append((-priority, self.seq, payload))
        self.messages[qid].sort()

    def receive(self, qid: int, admitted: tuple[int, bytes] | None = None) -> bytes:
        head = self.messages[qid].pop(0)
        self.journal.receive(qid, len(head[2]), admitted)
        if admitted is not None:
            self.seq += 1
            self.messages[qid].append((-admitted[0], self.seq, admitted[1]))
            self.messages[qid].sort()
        return head[2]

    def remove(self, qid: int, index: int, admitted: tuple[int, bytes] | None = None) -> bytes:
        """Message *index* in receive order taken out of the middle (mqfs rm-msg)."""
        taken = self.messages[qid].pop(index)
        self.journal.remove(qid, index, len(taken[2]), admitted)
        if admitted is not None:
            self.seq += 1
            self.messages[qid].append((-admitted[0], self.seq, admitted[1]))
            self.messages[qid].sort()
        return taken[2]

    def setattr(self, qid: int, mode: int, uid: int, gid: int) -> None:
        times = (11, 12, 13)
        self.journal.setattr(qid, mode, uid, gid, times)
        record = self.records[qid]
        record.mode, record.uid, record.gid = mode, uid, gid
        record.atime, record.mtime, record.ctime = times

    def unlink(self, qid: int) -> None:
        queued = self.messages.pop(qid)
        self.journal.unlink(self.records.pop(qid), len(queued), sum(len(m[2]) for m in queued))

    def images(self) -> list[QueueImage]:
        return [
            (self.records[qid], [(-m[0], [m[2]]) for m in self.messages[qid]])
            for qid in self.records
        ]

    def compact(self) -> None:
        images = self.images()
        compaction = self.journal.begin_compaction(images, self.next_qid)
        assert compaction.expected_size == journal_module.snapshot_size(images)
        size = compaction.write()
        assert size == compaction.expected_size  # live is kept exactly
        self.journal.end_compaction(compaction, size)

    def restart(self) -> None:
        self.journal.close()
        self.journal, recovered = Journal.open(self.directory, self.slack)
        self.check(recovered)

    def check(self, recovered: Recovered) -> None:
        assert {qid: vars_of(q.record) for qid, q in recovered.queues.items()} == {
            qid: vars_of(record) for qid, record in self.records.items()
        }
        for qid, queue in recovered.queues.items():
            queue.store.check_invariants()
            expected = [(-m[0], m[2]) for m in self.messages[qid]]
            assert [(m.priority, m.payload) for m in queue.store] == expected
        assert recovered.next_qid >= self.next_qid or not self.records
        self.next_qid = max(self.next_qid, recovered.next_qid)

    def files_size(self) -> int:
        return sum(path.stat().st_size for path in self.directory.iterdir())


def vars_of(record: QueueRecord) -> tuple[object, ...]:
    return tuple(getattr(record, name) for name in QueueRecord.__slots__)


@contextmanager
def state_dir() -> Iterator[Path]:
    """A fresh DIR (for hypothesis examples, which cannot share tmp_path)."""
    with tempfile.TemporaryDirectory() as parent:
        yield Path(parent) / "state"


# -- round trips -----------------------------------------------------------------------------


def test_a_fresh_directory_is_made_0700_and_its_files_0600(tmp_path: Path) -> None:
    model = Model(tmp_path / "state")
    qid = model.create("q", mode=0o600)
    model.send(qid, 1, b"secret")
    model.compact()
    model.restart()
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for path in (tmp_path / "state").iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path
        assert path.stat().st_uid == os.geteuid()
    model.journal.close()


def test_everything_comes_back_in_receive_order(tmp_path: Path) -> None:
    model = Model(tmp_path / "state")
    a = model.create("a", mode=0o640, maxmsg=7, msgsize=200)
    b = model.create("b")
    gone = model.create("gone")
    for index, priority in enumerate([0, 5, 0, 32767, 5, 1]):
        model.send(a, priority, b"m%d" % index)
    model.send(gone, 0, b"lost with its name")
    model.receive(a)  # the 32767 one
    model.receive(a, admitted=(3, b"admitted"))
    # m4 (5), admitted (3), m5 (1), m0 (0), m2 (0): take from the middle
    assert model.remove(a, 3) == b"m0"
    assert model.remove(a, 1, admitted=(5, b"admitted too")) == b"admitted"
    model.setattr(b, 0o604, 42, 43)
    model.unlink(gone)
    model.send(b, 0, b"")  # an empty message is a message
    model.restart()
    model.compact()
    model.restart()
    model.journal.close()


ops = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, 5)),
        st.tuples(
            st.just("send"),
            st.integers(0, 5),
            st.integers(0, 3) | st.integers(0, 32767),
            st.binary(max_size=40),
        ),
        st.tuples(st.just("receive"), st.integers(0, 5)),
        st.tuples(st.just("admit"), st.integers(0, 5), st.integers(0, 3), st.binary(max_size=40)),
        st.tuples(
            st.just("remove"),
            st.integers(0, 5),
            st.integers(0, 60),
            st.none() | st.tuples(st.integers(0, 3), st.binary(max_size=40)),
        ),
        st.tuples(st.just("setattr"), st.integers(0, 5), st.integers(0, 0o777)),
        st.tuples(st.just("unlink"), st.integers(0, 5)),
        st.tuples(st.just("compact")),
        st.tuples(st.just("restart")),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(history=ops)
def test_any_history_replays_to_the_same_queues(history: list[tuple[object, ...]]) -> None:
    with state_dir() as directory:
        model = Model(directory)
        by_name: dict[int, int] = {}
        for op, *args in history:
            name = args[0] if args else None
            qid = by_name.get(name) if isinstance(name, int) else None
            if op == "create" and qid is None:
                by_name[name] = model.create(f"q{name}")  # type: ignore[index]
            elif op == "send" and qid is not None:
                model.send(qid, args[1], args[2])  # type: ignore[arg-type]
            elif op in ("receive", "admit") and qid is not None and model.messages[qid]:
                model.receive(qid, (args[1], args[2]) if op == "admit" else None)  # type: ignore[arg-type]
            elif op == "remove" and qid is not None and model.messages[qid]:
                index = args[1] % len(model.messages[qid])  # type: ignore[operator]
                model.remove(qid, index, args[2])  # type: ignore[arg-type]
            elif op == "setattr" and qid is not None:
                model.setattr(qid, args[1], 7, 8)  # type: ignore[arg-type]
            elif op == "unlink" and qid is not None:
                model.unlink(qid)
                del by_name[name]  # type: ignore[arg-type]
            elif op == "compact":
                model.compact()
            elif op == "restart":
                model.restart()
        model.restart()
        model.journal.close()


def test_the_journal_stays_within_twice_the_live_data(tmp_path: Path) -> None:
    """A long history of sends and receives, compacted whenever the journal asks: its
    files never hold more than 2 x live + slack (+ the record that crossed the line)."""
    slack = 4096
    model = Model(tmp_path / "state", slack=slack)
    rng = random.Random(12)
    qids = [model.create(f"q{i}") for i in range(4)]
    compactions = 0
    for step in range(20_000):
        qid = rng.choice(qids)
        # Phases that fill up and drain, so that live data swings from nothing to a lot.
        filling = (step // 2_000) % 2 == 0
        if model.messages[qid] and (not filling or rng.random() < 0.3):
            model.receive(qid)
        else:
            model.send(qid, rng.randrange(4), bytes(rng.randrange(300)))
        if model.journal.compaction_wanted:
            model.compact()
            compactions += 1
        assert model.journal.size == model.files_size()
        assert model.journal.size <= 2 * model.journal.live + slack + MAX_RECORD
    assert compactions > 10
    model.restart()
    model.journal.close()


# -- what a crash leaves ---------------------------------------------------------------------


def _written(directory: Path) -> tuple[Path, bytes, int]:
    """A journal of one queue and three messages, closed as a crash would leave it: the
    log, its bytes, and the length of its last record (the third send)."""
    model = Model(directory)
    qid = model.create("q")
    model.send(qid, 0, b"first")
    model.send(qid, 0, b"second")
    model.send(qid, 0, b"third, the last record")
    model.journal.close()
    log_file = directory / "log.1"
    return log_file, log_file.read_bytes(), len(send_record(qid, 0, b"third, the last record"))


def _payloads(recovered: Recovered) -> list[bytes]:
    (queue,) = recovered.queues.values()
    return [message.payload for message in queue.store]


def test_a_cut_tail_keeps_every_complete_record_at_every_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, data, last = _written(tmp_path / "state")
    complete = len(data) - last
    for cut in range(complete, len(data)):
        copy = tmp_path / f"cut{cut}"
        shutil.copytree(tmp_path / "state", copy)
        (copy / "log.1").write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            journal, recovered = Journal.open(copy)
        assert _payloads(recovered) == [b"first", b"second"]
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == (0 if cut == complete else 1), cut
        assert (copy / "log.1").stat().st_size == complete  # the tail is cut off
        journal.send(1, 0, b"after")
        journal.close()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            journal, recovered = Journal.open(copy)
        assert _payloads(recovered) == [b"first", b"second", b"after"]
        assert not caplog.records
        journal.close()
        shutil.rmtree(copy)


def test_a_corrupt_record_ends_the_replay_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_file, data, _ = _written(tmp_path / "state")
    at = data.index(b"second")
    log_file.write_bytes(data[:at] + b"X" + data[at + 1 :])
    with caplog.at_level(logging.WARNING):
        journal, recovered = Journal.open(tmp_path / "state")
    assert _payloads(recovered) == [b"first"]
    (warning,) = caplog.records
    assert "CRC" in warning.getMessage()
    journal.close()


def test_a_cut_header_or_an_empty_log_is_an_empty_log(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    (directory / "log.1").write_bytes(MAGIC[:5])
    journal, recovered = Journal.open(directory)
    assert recovered.queues == {}
    journal.close()
    assert (directory / "log.1").stat().st_size == HEADER_SIZE


def test_a_crash_during_a_rewrite_loses_nothing(tmp_path: Path) -> None:
    model = Model(tmp_path / "state")
    qid = model.create("q")
    model.send(qid, 2, b"before")
    compaction = model.journal.begin_compaction(model.images(), model.next_qid)
    model.send(qid, 2, b"during")
    # The daemon dies with the snapshot half written: it stays a temporary file.
    (tmp_path / "state" / f"snapshot.{compaction.generation}.tmp").write_bytes(b"half")
    model.restart()
    assert not list((tmp_path / "state").glob("*.tmp"))
    # And between the rename and the removal of the older files.
    compaction = model.journal.begin_compaction(model.images(), model.next_qid)
    model.send(qid, 0, b"later")
    name = f"snapshot.{compaction.generation}"
    fd = os.open(tmp_path / "state" / name, os.O_WRONLY | os.O_CREAT, 0o600)
    journal_module.write_snapshot(fd, compaction.generation, compaction.images, model.next_qid)
    os.close(fd)
    model.restart()
    assert sorted(path.name for path in (tmp_path / "state").iterdir()) == [
        f"log.{compaction.generation}",
        name,
    ]
    model.journal.close()


# -- refusals --------------------------------------------------------------------------------


def _log_with_header(directory: Path, header: bytes) -> None:
    directory.mkdir(mode=0o700)
    (directory / "log.1").write_bytes(header)
    os.chmod(directory / "log.1", 0o600)


def test_a_newer_format_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    _log_with_header(directory, journal_module._HEADER.pack(MAGIC, VERSION + 1, 2, 1))
    with pytest.raises(errors.NewerJournal, match=f"version {VERSION + 1}.*newer mqfs"):
        Journal.open(directory)
    with pytest.raises(errors.NewerJournal):  # not StateInUse: the refusal let go of DIR
        Journal.open(directory)


def test_a_version_1_journal_loads_and_is_continued_in_a_new_log(tmp_path: Path) -> None:
    """An upgrade: the records of a version-1 log come back, and REMOVEs go to a new log
    of this version, so an older mqfs refuses the journal rather than cut them off."""
    directory = tmp_path / "state"
    model = Model(directory)
    qid = model.create("q")
    for payload in (b"a", b"b", b"c"):
        model.send(qid, 0, payload)
    model.journal.close()
    old = directory / "log.1"
    as_version_1 = bytearray(old.read_bytes())
    journal_module._HEADER.pack_into(as_version_1, 0, MAGIC, 1, 2, 1)
    old.write_bytes(as_version_1)
    model.journal, recovered = Journal.open(directory)
    model.check(recovered)
    model.remove(qid, 1)
    model.restart()
    assert old.read_bytes() == as_version_1  # never appended to
    new = directory / "log.2"
    assert journal_module._HEADER.unpack(new.read_bytes()[:HEADER_SIZE]) == (MAGIC, VERSION, 2, 2)
    model.compact()
    model.restart()
    assert not old.exists()
    model.journal.close()


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    _log_with_header(directory, b"SQLite format 3\x00" + bytes(8))
    with pytest.raises(errors.StateError, match="not an mqfs journal"):
        Journal.open(directory)


@pytest.mark.parametrize("mode", [0o777, 0o722, 0o770, 0o702])
def test_a_directory_others_can_write_is_refused(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(errors.UnsafeStateDirectory, match="writable by others"):
        Journal.open(directory)


def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o700)
    os.chown(directory, 65534, 65534)
    with pytest.raises(errors.UnsafeStateDirectory, match="belongs to uid 65534"):
        Journal.open(directory)


def test_one_daemon_per_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "LOCK_WAIT", 0.0)
    first, _ = Journal.open(tmp_path / "state")
    with pytest.raises(errors.StateInUse):
        Journal.open(tmp_path / "state")
    first.close()
    Journal.open(tmp_path / "state")[0].close()


def test_loose_file_modes_are_tightened(tmp_path: Path) -> None:
    model = Model(tmp_path / "state")
    model.create("q")
    model.journal.close()
    (tmp_path / "state" / "log.1").chmod(0o644)
    journal, _ = Journal.open(tmp_path / "state")
    journal.close()
    assert (tmp_path / "state" / "log.1").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_writes_nothing(tmp_path: Path) -> None:
    model = Model(tmp_path / "state")
    qid = model.create("q")
    model.send(qid, 0, b"kept")
    size = model.journal.size
    read_only = os.open(tmp_path / "state" / "log.1", os.O_RDONLY)
    writable = os.dup(model.journal._fd)
    os.dup2(read_only, model.journal._fd)
    with pytest.raises(errors.StateError):
        model.journal.send(qid, 0, b"refused")
    assert model.journal.size == size
    os.dup2(writable, model.journal._fd)
    os.close(writable)
    os.close(read_only)
    model.messages[qid] = [(0, 1, b"kept")]
    model.restart()
    model.journal.close()

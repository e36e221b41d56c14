"""Multi-chunk transfers held between ioctls: bounded per transfer, descriptor and user."""

from __future__ import annotations

import pytest

from mqfs import errors
from mqfs.server.store import Message
from mqfs.server.transfers import MAX_PER_DESCRIPTOR, TransferBudget, Transfers


def test_a_send_completes_only_at_the_length_named_first() -> None:
    transfers = Transfers(TransferBudget(10_000), uid=5)
    transfer = transfers.start_send(10, 3, b"abcd")
    assert transfers.add_chunk(transfer, 4, b"efg") is None
    with pytest.raises(errors.InvalidArgument, match="past the message"):
        transfers.add_chunk(transfer, 7, b"hijk")  # 11 bytes: more than named
    with pytest.raises(errors.InvalidArgument, match="out-of-order"):
        transfers.add_chunk(transfer, 3, b"x")
    assert transfers.add_chunk(transfer, 7, b"hij") == Message(b"abcdefghij", 3)
    assert len(transfers) == 0 and transfers.budget.by_uid == {}


def test_a_user_cannot_hold_more_than_the_budget_over_descriptors() -> None:
    budget = TransferBudget(100)
    first, second = Transfers(budget, uid=5), Transfers(budget, uid=5)
    other_user = Transfers(budget, uid=6)
    first.start_send(60, 0, b"")
    with pytest.raises(errors.OutOfMemory):
        second.start_send(41, 0, b"")
    other_user.start_send(100, 0, b"")  # another user's budget is their own
    second.start_send(40, 0, b"")
    first.drop_all()
    second.drop_all()
    other_user.drop_all()
    assert budget.by_uid == {}


def test_a_descriptor_holds_a_bounded_number_of_transfers() -> None:
    transfers = Transfers(TransferBudget(10**9), uid=0)
    for _ in range(MAX_PER_DESCRIPTOR):
        transfers.start_send(1, 0, b"")
    with pytest.raises(errors.Busy):
        transfers.start_send(1, 0, b"")
    with pytest.raises(errors.Busy):
        transfers.check_room(1)


def test_parked_receives_count_against_the_budget_until_read() -> None:
    budget = TransferBudget(100)
    transfers = Transfers(budget, uid=1)
    transfers.check_room(80)
    transfer = transfers.park(Message(b"m" * 80, 2))
    with pytest.raises(errors.OutOfMemory):
        transfers.check_room(80)
    with pytest.raises(errors.InvalidArgument):
        transfers.next_chunk(transfer, 81, 50)
    message, chunk = transfers.next_chunk(transfer, 0, 50)
    assert (chunk, message.priority, len(transfers)) == (b"m" * 50, 2, 1)
    assert budget.by_uid == {1: 80}  # held until the last chunk is read
    message, chunk = transfers.next_chunk(transfer, 50, 50)
    assert (chunk, len(transfers)) == (b"m" * 30, 0)
    with pytest.raises(errors.InvalidArgument):
        transfers.next_chunk(transfer, 80, 50)  # finished: gone
    assert budget.by_uid == {}

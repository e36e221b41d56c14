"""Messages larger than one ioctl chunk, in flight between the caller and the queue.

A SEND of a message longer than :data:`mqfs.wire.CHUNK` arrives in several ioctls: the
first names the message's length and priority, the rest carry its bytes by offset, and
the message enters the queue only when it is complete. A RECEIVE of such a message takes
it off the queue at the first call and hands out the rest by offset. Between the calls
the bytes live here, in one :class:`Transfers` per open descriptor.

What is held is bounded, because any user can start transfers and never finish them:

* one transfer never holds more than the queue's msgsize (the length named by the first
  chunk is checked against it, and every later chunk against that length);
* one descriptor holds at most :data:`MAX_PER_DESCRIPTOR` transfers, so at most
  64 x msgsize bytes;
* one user holds at most :attr:`TransferBudget.per_user` bytes over all descriptors
  (ENOMEM past it); the bytes are taken from it when a transfer starts, in full.

Everything a descriptor holds is dropped and returned to the budget when it is closed.
Pure Python, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mqfs import errors
from mqfs.server.queue import PerUser
from mqfs.server.store import Message

MAX_PER_DESCRIPTOR = 64


class TransferBudget:
    """Bytes held in unfinished transfers, per user, against one cap per user."""

    __slots__ = ("by_uid", "per_user")

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self.by_uid = PerUser()

    def check(self, uid: int, size: int) -> None:
        """ENOMEM if user *uid* may not hold *size* bytes more."""
        held = self.by_uid[uid]
        if held + size > self.per_user:
            raise errors.OutOfMemory(
                f"user {uid} holds {held} bytes in unfinished multi-chunk transfers; "
                f"{size} more would pass the limit of {self.per_user}"
            )

    def release(self, uid: int, size: int) -> None:
        self.by_uid.add(uid, -size)


@dataclass(slots=True)
class _StagedSend:
    priority: int
    length: int  # as named by the first chunk; the reservation
    payload: bytearray


@dataclass(slots=True)
class Transfers:
    """The unfinished transfers of one open descriptor, opened by user *uid*."""

    budget: TransferBudget
    uid: int
    _sends: dict[int, _StagedSend] = field(default_factory=dict)
    _receives: dict[int, Message] = field(default_factory=dict)
    _next_id: int = 1

    def __len__(self) -> int:
        return len(self._sends) + len(self._receives)

    def _new_id(self, size: int) -> int:
        """A transfer id, with *size* bytes taken from the user's budget (checked before)."""
        self.budget.by_uid.add(self.uid, size)
        transfer = self._next_id
        self._next_id += 1
        return transfer

    def check_room(self, size: int) -> None:
        """EBUSY or ENOMEM now if a transfer of *size* bytes could not be held: a receive
        checks this before taking a message, so that a message is never taken and then
        refused."""
        if len(self) >= MAX_PER_DESCRIPTOR:
            raise errors.Busy("too many unfinished multi-chunk transfers on this descriptor")
        self.budget.check(self.uid, size)

    # -- sends -----------------------------------------------------------------
    def start_send(self, length: int, priority: int, first_chunk: bytes) -> int:
        """Stage a message of *length* bytes (already checked against msgsize)."""
        self.check_room(length)
        transfer = self._new_id(length)
        self._sends[transfer] = _StagedSend(priority, length, bytearray(first_chunk))
        return transfer

    def add_chunk(self, transfer: int, offset: int, chunk: bytes) -> Message | None:
        """Append *chunk* at *offset*; the finished message once it is complete (the
        transfer is then gone), else None. EINVAL for an unknown transfer, a chunk out of
        order or one that runs past the length named at the start."""
        staged = self._sends.get(transfer)
        if staged is None or offset != len(staged.payload):
            raise errors.InvalidArgument("unknown transfer or out-of-order chunk")
        if offset + len(chunk) > staged.length:
            raise errors.InvalidArgument(
                f"chunk ends at {offset + len(chunk)}, past the message's {staged.length} bytes"
            )
        staged.payload += chunk
        if len(staged.payload) < staged.length:
            return None
        del self._sends[transfer]
        self.budget.release(self.uid, staged.length)
        return Message(bytes(staged.payload), staged.priority)

    # -- receives --------------------------------------------------------------
    def park(self, message: Message) -> int:
        """Keep a received message whose rest the caller reads by offset. Never fails
        after :meth:`check_room` passed for at least its size (no checkpoint between)."""
        transfer = self._new_id(len(message.payload))
        self._receives[transfer] = message
        return transfer

    def next_chunk(self, transfer: int, offset: int, capacity: int) -> tuple[Message, bytes]:
        """Up to *capacity* bytes of parked *transfer* from *offset*, with the message they
        belong to; the transfer is finished (and its bytes returned) with its last chunk.
        EINVAL for an unknown transfer or an offset outside the message."""
        message = self._receives.get(transfer)
        if message is None or not 0 <= offset <= len(message.payload):
            raise errors.InvalidArgument("unknown transfer or offset")
        chunk = message.payload[offset : offset + capacity]
        if offset + len(chunk) >= len(message.payload):
            del self._receives[transfer]
            self.budget.release(self.uid, len(message.payload))
        return message, chunk

    def drop_all(self) -> None:
        """The descriptor is closed: give back everything it held."""
        for staged in self._sends.values():
            self.budget.release(self.uid, staged.length)
        for message in self._receives.values():
            self.budget.release(self.uid, len(message.payload))
        self._sends.clear()
        self._receives.clear()

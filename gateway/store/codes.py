"""What the store keeps for verification by code (migration 8, gateway/customers/codes.py):
one row per code a conversation asked for, hashed, with its expiry and the tries it has left.

The rows are the pending codes and also count a conversation's codes (at most ``max_sends``),
so a code that was used, spent or expired keeps its row until its conversation is closed; then
``prune_codes`` deletes it. Both engines implement :class:`CodeTables` (``sqlite_codes.py``,
``postgres_codes.py``) and pass one suite (tests/test_codes_store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PendingCode:
    id: str
    conversation_id: str
    kind: str                 # what it proves: "email"
    address: str              # the address it was mailed to
    salt: bytes
    digest: bytes             # SHA-256 of salt + code: the code itself is never stored
    expires_at: datetime
    tries_left: int
    created_at: datetime
    used_at: datetime | None  # when a right guess spent it

    def __repr__(self) -> str:  # no digest in logs either
        return (f"PendingCode({self.id!r}, conversation={self.conversation_id!r}, kind={self.kind!r}, "
                f"expires_at={self.expires_at.isoformat()}, tries_left={self.tries_left})")


class CodeTables(Protocol):
    async def add_code(self, conversation_id: str, *, kind: str, address: str, salt: bytes, digest: bytes,
                       expires_at: datetime, tries: int, max_sends: int, now: datetime) -> PendingCode | None:
        """A new pending code for the conversation, in one transaction with the count of its
        codes: None (nothing written) when it has ``max_sends`` already. The codes before it are
        spent (one pending code at a time). Raise NotFound for an unknown conversation."""

    async def take_code_try(self, conversation_id: str, now: datetime) -> PendingCode | None:
        """Count down one try of the conversation's pending code (not used, not expired at
        ``now``, tries left) and return it as it is after; None when there is none. Atomic: of
        concurrent callers, only as many get a try as it had left."""

    async def use_code(self, code_id: str, now: datetime) -> bool:
        """Mark the code used (a right guess): True for the one caller that does."""

    async def latest_code(self, conversation_id: str) -> PendingCode | None:
        """The conversation's newest code, whatever its state."""

    async def prune_codes(self, now: datetime) -> int:
        """Delete the codes expired at ``now`` whose conversation is closed; returns how many."""

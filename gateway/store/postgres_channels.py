"""What the production engine keeps for channels beside conversations: attachments, channel
references and the outbox.

:class:`PostgresChannelTables` is a part of :class:`~gateway.store.postgres.PostgresStore`: every
method takes a pooled connection through ``_conn``, which maps a lost server to
StoreUnavailable. Each method is one statement in autocommit. An outbox item is written by the
append batch's SQL function (migration 4), in the event's statement.
"""

from __future__ import annotations

from datetime import datetime
from typing import AsyncContextManager, Callable, Sequence

import asyncpg
from asyncpg import exceptions as pgexc

from ..model import Attachment, ChannelRef, OutboxItem, OutboxStatus, utcnow
from .base import NotFound
from .records import (
    aware, claim_order, claim_until, final_status, new_attachment, optional_text, wanted_refs,
)
from .text import cannot_hold, storable

_ATTACHMENT_COLS = "id, conversation_id, name, content_type, size, sha256, created_at"
_REF_COLS = "channel, ref, conversation_id, seq, created_at"
_OUTBOX_COLS = ("id, conversation_id, seq, channel, status, attempts, next_attempt_at, last_error, sent_ref, "
                "created_at")


def _attachment(row: asyncpg.Record) -> Attachment:
    return Attachment(id=row["id"], conversation_id=row["conversation_id"], name=row["name"],
                      content_type=row["content_type"], size=row["size"], sha256=row["sha256"],
                      created_at=row["created_at"])


def _ref(row: asyncpg.Record) -> ChannelRef:
    return ChannelRef(channel=row["channel"], ref=row["ref"], conversation_id=row["conversation_id"],
                      seq=row["seq"], created_at=row["created_at"])


def _outbox_item(row: asyncpg.Record) -> OutboxItem:
    return OutboxItem(id=row["id"], conversation_id=row["conversation_id"], seq=row["seq"],
                      channel=row["channel"], status=OutboxStatus(row["status"]), attempts=row["attempts"],
                      next_attempt_at=row["next_attempt_at"], last_error=row["last_error"],
                      sent_ref=row["sent_ref"], created_at=row["created_at"])


# Whether the conversation exists and whether the ref was added, in one round trip: an unknown
# conversation is NotFound even when the ref is already taken, as on SQLite.
_ADD_REF = f"""
WITH conversation AS (SELECT id FROM conversations WHERE id = $3),
added AS (
    INSERT INTO channel_refs ({_REF_COLS}) SELECT $1, $2, id, $4, $5 FROM conversation
    ON CONFLICT (channel, ref) DO NOTHING
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM conversation) AS known, EXISTS (SELECT 1 FROM added) AS added
"""

# SKIP LOCKED: a concurrent claimer passes over the rows this one is taking instead of waiting
# for them, and a row it read before this claim committed is re-checked against the committed
# version (claimed_until in the future) when it locks it, so no item is handed out twice.
# "status = 'pending'" verbatim, so the planner uses the partial index.
_CLAIM = f"""
UPDATE outbox o SET attempts = o.attempts + 1, claimed_until = $1, updated_at = $2
WHERE o.id IN (
    SELECT id FROM outbox
    WHERE status = 'pending' AND channel = $3 AND next_attempt_at <= $4
      AND (claimed_until IS NULL OR claimed_until <= $4)
      AND NOT EXISTS (SELECT 1 FROM outbox earlier
                      WHERE earlier.conversation_id = outbox.conversation_id AND earlier.channel = outbox.channel
                        AND earlier.status = 'pending' AND earlier.seq < outbox.seq)
    ORDER BY next_attempt_at, created_at, conversation_id, seq
    LIMIT $5
    FOR UPDATE SKIP LOCKED
)
RETURNING {_OUTBOX_COLS}
"""


class PostgresChannelTables:
    # Provided by PostgresStore.
    _conn: Callable[[], AsyncContextManager[asyncpg.Connection]]

    # attachments --------------------------------------------------------------------------------
    async def put_attachment(self, conversation_id: str, *, name: str, content_type: str,
                             data: bytes) -> Attachment:
        attachment, payload = new_attachment(conversation_id, name, content_type, data)
        async with self._conn() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO attachments ({_ATTACHMENT_COLS}, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    attachment.id, conversation_id, attachment.name, attachment.content_type, attachment.size,
                    attachment.sha256, attachment.created_at, payload)
            except pgexc.ForeignKeyViolationError as exc:
                raise NotFound(f"conversation {conversation_id!r} not found") from exc
        return attachment

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]:
        if cannot_hold(attachment_id):
            raise NotFound(f"attachment {attachment_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_ATTACHMENT_COLS}, data FROM attachments WHERE id = $1",
                                      attachment_id)
        if row is None:
            raise NotFound(f"attachment {attachment_id!r} not found")
        return _attachment(row), bytes(row["data"])

    # channel references -------------------------------------------------------------------------
    async def add_ref(self, channel: str, ref: str, conversation_id: str, seq: int | None = None) -> bool:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(_ADD_REF, storable(channel), storable(ref), conversation_id, seq, utcnow())
        if not row["known"]:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return bool(row["added"])

    async def find_ref(self, channel: str, refs: Sequence[str]) -> ChannelRef | None:
        wanted = wanted_refs(refs)
        if not wanted:
            return None
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_REF_COLS} FROM channel_refs WHERE channel = $1 AND ref = ANY($2::text[])",
                storable(channel), wanted)
        found = {row["ref"]: row for row in rows}
        first = next((ref for ref in wanted if ref in found), None)
        return None if first is None else _ref(found[first])

    async def conversation_refs(self, conversation_id: str, channel: str | None = None) -> Sequence[ChannelRef]:
        if cannot_hold(conversation_id):
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_REF_COLS} FROM channel_refs WHERE conversation_id = $1 "
                "AND ($2::text IS NULL OR channel = $2) ORDER BY created_at, channel, ref",
                conversation_id, None if channel is None else storable(channel))
        return [_ref(row) for row in rows]

    # the outbox ---------------------------------------------------------------------------------
    async def claim_outbox(self, channel: str, *, now: datetime, lease: float, limit: int = 20) -> Sequence[OutboxItem]:
        until = claim_until(now, lease, limit)
        if limit == 0:
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(_CLAIM, until, utcnow(), storable(channel), now, limit)
        return sorted((_outbox_item(row) for row in rows), key=claim_order)

    async def finish_outbox(self, item_id: str, status: OutboxStatus, *, error: str | None = None,
                            sent_ref: str | None = None) -> None:
        status = final_status(status)
        await self._update_pending(
            item_id, "status = $3, last_error = COALESCE($4, last_error), sent_ref = COALESCE($5, sent_ref)",
            status.value, optional_text(error), optional_text(sent_ref))

    async def retry_outbox(self, item_id: str, *, error: str, next_attempt_at: datetime,
                           attempted: bool = True) -> None:
        await self._update_pending(item_id, "next_attempt_at = $3, last_error = $4, attempts = attempts - $5",
                                   aware(next_attempt_at, "next_attempt_at"), storable(error), 0 if attempted else 1)

    async def _update_pending(self, item_id: str, sets: str, *params: object) -> None:
        """Change a pending item and release its claim. A finished item keeps its outcome: a
        twin that claimed it after a lease ran out must not undo a send, nor send it again."""
        if cannot_hold(item_id):
            raise NotFound(f"outbox item {item_id!r} not found")
        async with self._conn() as conn:
            # The item's row, and whether this changed it: NotFound only when there is none.
            row = await conn.fetchrow(
                f"WITH changed AS (UPDATE outbox SET {sets}, claimed_until = NULL, updated_at = $2 "
                "WHERE id = $1 AND status = 'pending' RETURNING id) "
                "SELECT EXISTS (SELECT 1 FROM changed) OR EXISTS (SELECT 1 FROM outbox WHERE id = $1) AS known",
                item_id, utcnow(), *params)
        if not row["known"]:
            raise NotFound(f"outbox item {item_id!r} not found")

    async def outbox_item(self, item_id: str) -> OutboxItem:
        if cannot_hold(item_id):
            raise NotFound(f"outbox item {item_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = $1", item_id)
        if row is None:
            raise NotFound(f"outbox item {item_id!r} not found")
        return _outbox_item(row)

    async def outbox_items(self, conversation_id: str) -> Sequence[OutboxItem]:
        if cannot_hold(conversation_id):
            return []
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_OUTBOX_COLS} FROM outbox WHERE conversation_id = $1 ORDER BY seq, channel",
                conversation_id)
        return [_outbox_item(row) for row in rows]

    async def outbox_counts(self) -> dict[tuple[str, OutboxStatus], int]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT channel, status, count(*) AS n FROM outbox GROUP BY channel, status")
        return {(row["channel"], OutboxStatus(row["status"])): row["n"] for row in rows}

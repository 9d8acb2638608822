"""What the embedded engine keeps for channels beside conversations: attachments, channel
references and the outbox.

:class:`SQLiteChannelTables` is a part of :class:`~gateway.store.sqlite.SQLiteStore`: it goes
through the store's one connection (``_session`` for reads, ``_transaction`` for writes), so it
shares its lock, its BEGIN IMMEDIATE and its mapping of errors to StoreUnavailable. An outbox
item is written by the append batch itself (:func:`insert_outbox_item`), in the event's
transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import AsyncContextManager, Callable, Sequence

import aiosqlite

from ..model import Attachment, ChannelRef, OutboxItem, OutboxStatus, utcnow
from .base import NotFound
from .records import (
    aware, claim_order, claim_until, final_status, new_attachment, new_id, optional_text, wanted_refs,
)
from .sqlite_rows import execute, fetchone, ts
from .text import cannot_hold, dumps, storable

_ATTACHMENT_COLS = "id, conversation_id, name, content_type, size, sha256, created_at"
_REF_COLS = "channel, ref, conversation_id, seq, created_at"
_OUTBOX_COLS = ("id, conversation_id, seq, channel, status, attempts, next_attempt_at, last_error, sent_ref, "
                "created_at")


def _attachment(row: sqlite3.Row) -> Attachment:
    return Attachment(id=row["id"], conversation_id=row["conversation_id"], name=row["name"],
                      content_type=row["content_type"], size=row["size"], sha256=row["sha256"],
                      created_at=datetime.fromisoformat(row["created_at"]))


def _ref(row: sqlite3.Row) -> ChannelRef:
    return ChannelRef(channel=row["channel"], ref=row["ref"], conversation_id=row["conversation_id"],
                      seq=row["seq"], created_at=datetime.fromisoformat(row["created_at"]))


def _outbox_item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(id=row["id"], conversation_id=row["conversation_id"], seq=row["seq"],
                      channel=row["channel"], status=OutboxStatus(row["status"]), attempts=row["attempts"],
                      next_attempt_at=datetime.fromisoformat(row["next_attempt_at"]),
                      last_error=row["last_error"], sent_ref=row["sent_ref"],
                      created_at=datetime.fromisoformat(row["created_at"]))


def insert_outbox_item(conn: sqlite3.Connection, conversation_id: str, seq: int, channel: str, at: str) -> None:
    """Inside an append's transaction: the event's pending item, due at once."""
    conn.execute(
        "INSERT INTO outbox (id, conversation_id, seq, channel, status, attempts, next_attempt_at, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        (new_id(), conversation_id, seq, channel, at, at, at))


class SQLiteChannelTables:
    # Provided by SQLiteStore.
    _session: Callable[[], AsyncContextManager[aiosqlite.Connection]]
    _transaction: Callable[[], AsyncContextManager[aiosqlite.Connection]]

    # attachments --------------------------------------------------------------------------------
    async def put_attachment(self, conversation_id: str, *, name: str, content_type: str,
                             data: bytes) -> Attachment:
        attachment, payload = new_attachment(conversation_id, name, content_type, data)
        async with self._transaction() as db:
            await _require_conversation(db, conversation_id)
            await execute(
                db, f"INSERT INTO attachments ({_ATTACHMENT_COLS}, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (attachment.id, conversation_id, attachment.name, attachment.content_type, attachment.size,
                 attachment.sha256, ts(attachment.created_at), payload))
        return attachment

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]:
        if cannot_hold(attachment_id):
            raise NotFound(f"attachment {attachment_id!r} not found")
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_ATTACHMENT_COLS}, data FROM attachments WHERE id = ?",
                                 (attachment_id,))
        if row is None:
            raise NotFound(f"attachment {attachment_id!r} not found")
        return _attachment(row), bytes(row["data"])

    # channel references -------------------------------------------------------------------------
    async def add_ref(self, channel: str, ref: str, conversation_id: str, seq: int | None = None) -> bool:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._transaction() as db:
            await _require_conversation(db, conversation_id)
            added = await execute(
                db, f"INSERT INTO channel_refs ({_REF_COLS}) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (channel, ref) DO NOTHING",
                (storable(channel), storable(ref), conversation_id, seq, ts(utcnow())))
        return added == 1

    async def find_ref(self, channel: str, refs: Sequence[str]) -> ChannelRef | None:
        wanted = wanted_refs(refs)
        if not wanted:
            return None
        async with self._session() as db:
            # One JSON array rather than one parameter per ref: a References header may list
            # more refs than SQLite takes parameters.
            rows = await db.execute_fetchall(
                f"SELECT {_REF_COLS} FROM channel_refs WHERE channel = ? "
                "AND ref IN (SELECT value FROM json_each(?))", (storable(channel), dumps(wanted)))
        found = {row["ref"]: row for row in rows}
        first = next((ref for ref in wanted if ref in found), None)
        return None if first is None else _ref(found[first])

    async def conversation_refs(self, conversation_id: str, channel: str | None = None) -> Sequence[ChannelRef]:
        if cannot_hold(conversation_id):
            return []
        sql = f"SELECT {_REF_COLS} FROM channel_refs WHERE conversation_id = ?"
        params: tuple[str, ...] = (conversation_id,)
        if channel is not None:
            sql += " AND channel = ?"
            params += (storable(channel),)
        async with self._session() as db:
            rows = await db.execute_fetchall(sql + " ORDER BY created_at, channel, ref", params)
        return [_ref(row) for row in rows]

    # the outbox ---------------------------------------------------------------------------------
    async def claim_outbox(self, channel: str, *, now: datetime, lease: float, limit: int = 20) -> Sequence[OutboxItem]:
        until = claim_until(now, lease, limit)
        if limit == 0:
            return []
        # One statement inside BEGIN IMMEDIATE: no other process can claim between the choice
        # and the update. "status = 'pending'" verbatim, so the planner uses the partial index.
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE outbox SET attempts = attempts + 1, claimed_until = ?1, updated_at = ?2 "
                "WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND channel = ?3 "
                "AND next_attempt_at <= ?4 AND (claimed_until IS NULL OR claimed_until <= ?4) "
                "AND NOT EXISTS (SELECT 1 FROM outbox earlier WHERE earlier.conversation_id = outbox.conversation_id "
                "AND earlier.channel = outbox.channel AND earlier.status = 'pending' AND earlier.seq < outbox.seq) "
                "ORDER BY next_attempt_at, created_at, conversation_id, seq LIMIT ?5) "
                f"RETURNING {_OUTBOX_COLS}",
                (ts(until), ts(utcnow()), storable(channel), ts(now), limit))
        return sorted((_outbox_item(row) for row in rows), key=claim_order)

    async def finish_outbox(self, item_id: str, status: OutboxStatus, *, error: str | None = None,
                            sent_ref: str | None = None) -> None:
        status = final_status(status)
        await self._update_pending(
            item_id, "status = ?, last_error = COALESCE(?, last_error), sent_ref = COALESCE(?, sent_ref)",
            (status.value, optional_text(error), optional_text(sent_ref)))

    async def retry_outbox(self, item_id: str, *, error: str, next_attempt_at: datetime,
                           attempted: bool = True) -> None:
        await self._update_pending(item_id, "next_attempt_at = ?, last_error = ?, attempts = attempts - ?",
                                   (ts(aware(next_attempt_at, "next_attempt_at")), storable(error), 0 if attempted else 1))

    async def _update_pending(self, item_id: str, sets: str, params: tuple[object, ...]) -> None:
        """Change a pending item and release its claim. A finished item keeps its outcome: a
        twin that claimed it after a lease ran out must not undo a send, nor send it again."""
        if cannot_hold(item_id):
            raise NotFound(f"outbox item {item_id!r} not found")
        async with self._transaction() as db:
            changed = await execute(
                db, f"UPDATE outbox SET {sets}, claimed_until = NULL, updated_at = ? "
                "WHERE id = ? AND status = 'pending'", (*params, ts(utcnow()), item_id))
            if not changed and await fetchone(db, "SELECT 1 FROM outbox WHERE id = ?", (item_id,)) is None:
                raise NotFound(f"outbox item {item_id!r} not found")

    async def outbox_item(self, item_id: str) -> OutboxItem:
        if cannot_hold(item_id):
            raise NotFound(f"outbox item {item_id!r} not found")
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_OUTBOX_COLS} FROM outbox WHERE id = ?", (item_id,))
        if row is None:
            raise NotFound(f"outbox item {item_id!r} not found")
        return _outbox_item(row)

    async def outbox_items(self, conversation_id: str) -> Sequence[OutboxItem]:
        if cannot_hold(conversation_id):
            return []
        async with self._session() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_OUTBOX_COLS} FROM outbox WHERE conversation_id = ? ORDER BY seq, channel",
                (conversation_id,))
        return [_outbox_item(row) for row in rows]

    async def outbox_counts(self) -> dict[tuple[str, OutboxStatus], int]:
        async with self._session() as db:
            rows = await db.execute_fetchall("SELECT channel, status, count(*) FROM outbox GROUP BY channel, status")
        return {(row[0], OutboxStatus(row[1])): row[2] for row in rows}


async def _require_conversation(db: aiosqlite.Connection, conversation_id: str) -> None:
    if await fetchone(db, "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) is None:
        raise NotFound(f"conversation {conversation_id!r} not found")


"""Verification codes on the embedded engine (gateway/store/codes.py), through the store's one
connection: its one write transaction at a time already makes a try's count-down atomic."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import AsyncContextManager, Callable

import aiosqlite

from .base import NotFound
from .codes import PendingCode
from .records import new_id
from .sqlite_rows import execute, fetchone, parse_ts, ts
from .text import cannot_hold, storable

_CODE_COLS = "id, conversation_id, kind, address, salt, digest, expires_at, tries_left, created_at, used_at"


def _code(row: sqlite3.Row) -> PendingCode:
    return PendingCode(id=row["id"], conversation_id=row["conversation_id"], kind=row["kind"], address=row["address"],
                       salt=bytes(row["salt"]), digest=bytes(row["digest"]),
                       expires_at=datetime.fromisoformat(row["expires_at"]), tries_left=row["tries_left"],
                       created_at=datetime.fromisoformat(row["created_at"]), used_at=parse_ts(row["used_at"]))


class SQLiteCodeTables:
    # Provided by SQLiteStore.
    _session: Callable[[], AsyncContextManager[aiosqlite.Connection]]
    _transaction: Callable[[], AsyncContextManager[aiosqlite.Connection]]

    async def add_code(self, conversation_id: str, *, kind: str, address: str, salt: bytes, digest: bytes,
                       expires_at: datetime, tries: int, max_sends: int, now: datetime) -> PendingCode | None:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        code = PendingCode(new_id(), conversation_id, storable(kind), storable(address), bytes(salt), bytes(digest),
                           expires_at, tries, now, None)
        async with self._transaction() as db:
            if await fetchone(db, "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            sent = await fetchone(db, "SELECT COUNT(*) AS n FROM verification_codes WHERE conversation_id = ?",
                                  (conversation_id,))
            if sent is not None and sent["n"] >= max_sends:
                return None
            await execute(db, "UPDATE verification_codes SET tries_left = 0 WHERE conversation_id = ? "
                              "AND tries_left > 0", (conversation_id,))
            await execute(db, f"INSERT INTO verification_codes ({_CODE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                          (code.id, conversation_id, code.kind, code.address, code.salt, code.digest,
                           ts(expires_at), tries, ts(now)))
        return code

    async def take_code_try(self, conversation_id: str, now: datetime) -> PendingCode | None:
        if cannot_hold(conversation_id):
            return None
        async with self._transaction() as db:
            rows = await db.execute_fetchall(
                "UPDATE verification_codes SET tries_left = tries_left - 1 WHERE conversation_id = ? "
                f"AND used_at IS NULL AND tries_left > 0 AND expires_at > ? RETURNING {_CODE_COLS}",
                (conversation_id, ts(now)))
        rows = list(rows)
        return _code(rows[0]) if rows else None

    async def use_code(self, code_id: str, now: datetime) -> bool:
        if cannot_hold(code_id):
            return False
        async with self._transaction() as db:
            return await execute(db, "UPDATE verification_codes SET used_at = ? WHERE id = ? AND used_at IS NULL",
                                 (ts(now), code_id)) == 1

    async def latest_code(self, conversation_id: str) -> PendingCode | None:
        if cannot_hold(conversation_id):
            return None
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_CODE_COLS} FROM verification_codes WHERE conversation_id = ? "
                                     "ORDER BY created_at DESC, id DESC LIMIT 1", (conversation_id,))
        return None if row is None else _code(row)

    async def prune_codes(self, now: datetime) -> int:
        async with self._transaction() as db:
            return await execute(db, "DELETE FROM verification_codes WHERE expires_at <= ? AND conversation_id IN "
                                     "(SELECT id FROM conversations WHERE state = 'closed')", (ts(now),))

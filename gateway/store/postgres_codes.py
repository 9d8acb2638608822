"""Verification codes on the production engine (gateway/store/codes.py). A try's count-down is
one ``UPDATE … WHERE tries_left > 0``: concurrent guesses, from any gateway process, queue on the
row's lock and each re-checks the condition, so no two get the last try."""

from __future__ import annotations

from datetime import datetime
from typing import AsyncContextManager, Callable

import asyncpg

from .base import NotFound
from .codes import PendingCode
from .records import new_id
from .text import cannot_hold, storable

_CODE_COLS = "id, conversation_id, kind, address, salt, digest, expires_at, tries_left, created_at, used_at"


def _code(row: asyncpg.Record) -> PendingCode:
    return PendingCode(id=row["id"], conversation_id=row["conversation_id"], kind=row["kind"], address=row["address"],
                       salt=bytes(row["salt"]), digest=bytes(row["digest"]), expires_at=row["expires_at"],
                       tries_left=row["tries_left"], created_at=row["created_at"], used_at=row["used_at"])


class PostgresCodeTables:
    # Provided by PostgresStore.
    _conn: Callable[[], AsyncContextManager[asyncpg.Connection]]

    async def add_code(self, conversation_id: str, *, kind: str, address: str, salt: bytes, digest: bytes,
                       expires_at: datetime, tries: int, max_sends: int, now: datetime) -> PendingCode | None:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._conn() as conn, conn.transaction():
            # The conversation's row lock: two requests at once count the codes one after the other.
            if await conn.fetchval("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", conversation_id) is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
            if await conn.fetchval("SELECT COUNT(*) FROM verification_codes WHERE conversation_id = $1",
                                   conversation_id) >= max_sends:
                return None
            await conn.execute("UPDATE verification_codes SET tries_left = 0 WHERE conversation_id = $1 "
                               "AND tries_left > 0", conversation_id)
            row = await conn.fetchrow(
                f"INSERT INTO verification_codes ({_CODE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) "
                f"RETURNING {_CODE_COLS}", new_id(), conversation_id, storable(kind), storable(address), bytes(salt),
                bytes(digest), expires_at, tries, now)
        return _code(row)

    async def take_code_try(self, conversation_id: str, now: datetime) -> PendingCode | None:
        if cannot_hold(conversation_id):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "UPDATE verification_codes SET tries_left = tries_left - 1 WHERE conversation_id = $1 "
                f"AND used_at IS NULL AND tries_left > 0 AND expires_at > $2 RETURNING {_CODE_COLS}",
                conversation_id, now)
        return None if row is None else _code(row)

    async def use_code(self, code_id: str, now: datetime) -> bool:
        if cannot_hold(code_id):
            return False
        async with self._conn() as conn:
            status = await conn.execute("UPDATE verification_codes SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
                                        now, code_id)
        return status.endswith(" 1")

    async def latest_code(self, conversation_id: str) -> PendingCode | None:
        if cannot_hold(conversation_id):
            return None
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_CODE_COLS} FROM verification_codes WHERE conversation_id = $1 "
                                      "ORDER BY created_at DESC, id DESC LIMIT 1", conversation_id)
        return None if row is None else _code(row)

    async def prune_codes(self, now: datetime) -> int:
        async with self._conn() as conn:
            status = await conn.execute(
                "DELETE FROM verification_codes WHERE expires_at <= $1 AND conversation_id IN "
                "(SELECT id FROM conversations WHERE state = 'closed')", now)
        return int(status.split()[-1])

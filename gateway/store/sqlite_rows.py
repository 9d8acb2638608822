"""How the embedded engine spells values and runs one statement, shared by sqlite.py and
sqlite_channels.py: timestamps as fixed-width UTC text, one-row reads, writes that close their
cursor at once."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any, Iterable

import aiosqlite


def ts(at: datetime) -> str:
    # Fixed width (always microseconds, always +00:00) so that text order equals time order.
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def fetchone(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> sqlite3.Row | None:
    rows = list(await db.execute_fetchall(sql, tuple(params)))
    return rows[0] if rows else None


async def execute(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> int:
    """Run one statement, close its cursor (so no read stays open) and return the row count."""
    async with db.execute(sql, tuple(params)) as cur:
        return cur.rowcount


class SQLiteLinkTx:
    """customer_links.LinkTx on the store's connection. No row locks: SQLite's one write
    transaction at a time (BEGIN IMMEDIATE) already serialises merges."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.db.execute_fetchall(sql, args))

    async def execute(self, sql: str, *args: Any) -> None:
        await execute(self.db, sql, args)

    def at(self, value: datetime | None) -> str | None:
        return None if value is None else ts(value)

    def read_at(self, value: Any) -> datetime | None:
        return parse_ts(value)

    async def lock_customers(self, ids: Any, *, share: bool = False) -> None:
        return None

    async def lock_identity(self, kind: str, address: str) -> None:
        return None

"""The embedded engine's queue samples (the supervisor board's charts), a part of
:class:`~gateway.store.sqlite.SQLiteStore` through its one connection."""

from __future__ import annotations

from datetime import datetime
from typing import AsyncContextManager, Callable, Sequence

import aiosqlite

from ..model import QueueSample
from .samples import filed, minute_of
from .sqlite_rows import execute, ts


class SQLiteQueueSamples:
    # Provided by SQLiteStore.
    _session: Callable[[], AsyncContextManager[aiosqlite.Connection]]
    _transaction: Callable[[], AsyncContextManager[aiosqlite.Connection]]

    async def add_queue_samples(self, samples: Sequence[QueueSample]) -> int:
        rows = [filed(s) for s in samples]
        if not rows:
            return 0
        written = 0
        async with self._transaction() as db:
            for row in rows:
                written += await execute(
                    db, "INSERT INTO queue_samples (queue, minute, service_level, waiting) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (queue, minute) DO NOTHING", (row.queue, ts(row.minute), row.service_level, row.waiting))
        return written

    async def queue_samples(self, since: datetime) -> Sequence[QueueSample]:
        async with self._session() as db:
            rows = await db.execute_fetchall(
                "SELECT queue, minute, service_level, waiting FROM queue_samples WHERE minute >= ? "
                "ORDER BY queue, minute", (ts(minute_of(since)),))
        return [QueueSample(r["queue"], datetime.fromisoformat(r["minute"]), r["service_level"], r["waiting"])
                for r in rows]

    async def prune_queue_samples(self, before: datetime) -> int:
        async with self._transaction() as db:
            return await execute(db, "DELETE FROM queue_samples WHERE minute < ?", (ts(minute_of(before)),))

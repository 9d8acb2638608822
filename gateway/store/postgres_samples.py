"""The production engine's queue samples (the supervisor board's charts), a part of
:class:`~gateway.store.postgres.PostgresStore`: one statement each, in autocommit. Several
gateway processes sampling the same minute write one row (the key is (queue, minute))."""

from __future__ import annotations

from datetime import datetime
from typing import AsyncContextManager, Callable, Sequence

import asyncpg

from ..model import QueueSample
from .samples import filed, minute_of


class PostgresQueueSamples:
    # Provided by PostgresStore.
    _conn: Callable[[], AsyncContextManager[asyncpg.Connection]]

    async def add_queue_samples(self, samples: Sequence[QueueSample]) -> int:
        rows = [filed(s) for s in samples]
        if not rows:
            return 0
        async with self._conn() as conn:
            return await conn.fetchval(
                "WITH added AS (INSERT INTO queue_samples (queue, minute, service_level, waiting) "
                "SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::double precision[], $4::integer[]) "
                "ON CONFLICT (queue, minute) DO NOTHING RETURNING 1) SELECT count(*) FROM added",
                [r.queue for r in rows], [r.minute for r in rows], [r.service_level for r in rows],
                [r.waiting for r in rows])

    async def queue_samples(self, since: datetime) -> Sequence[QueueSample]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT queue, minute, service_level, waiting FROM queue_samples "
                                    "WHERE minute >= $1 ORDER BY queue, minute", minute_of(since))
        return [QueueSample(r["queue"], r["minute"], r["service_level"], r["waiting"]) for r in rows]

    async def prune_queue_samples(self, before: datetime) -> int:
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM queue_samples WHERE minute < $1", minute_of(before))
        return int(status.split()[-1])

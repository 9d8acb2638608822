"""Probe: what one stored message costs in each store engine, and what the usual fixes would save.

    .venv/bin/python -m bench.store_costs [--n 400] [--stores sqlite,postgresql]

Not part of ``make bench``. It calls the gateway's own store (``gateway.store``) the way the
pipeline does for every chat message (``get_conversation`` then ``append_event``), then runs the
same SQL shaped differently: the whole append in one thread hop, several appends per COMMIT (group
commit), and on PostgreSQL the append as one statement instead of BEGIN/UPDATE/INSERT/COMMIT, and
a pool that does not reset the session on every release.
Wall time is per operation; CPU is this process's CPU per operation (all threads; the PostgreSQL
server's own CPU is not included). docs/performance.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .servers import ThrowawayPostgres, capacity_dir, pg_admin_dsn, pg_available


class Timer:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def per(self, n: int) -> tuple[float, float]:
        return (time.perf_counter() - self.wall) / n * 1e6, (time.process_time() - self.cpu) / n * 1e6


def show(rows: list[dict[str, Any]], label: str, n: int, timer: Timer) -> None:
    wall, cpu = timer.per(n)
    rows.append({"what": label, "wall_us": round(wall), "cpu_us": round(cpu)})
    print(f"  {label:70s} wall {wall:7.0f} µs/op   cpu {cpu:6.0f} µs/op", flush=True)


async def through_gateway_store(url: str, n: int, rows: list[dict[str, Any]], where: str) -> str:
    from gateway.model import Author, EventKind
    from gateway.store import open_store

    store = await open_store(url)
    try:
        customer = await store.create_customer(name="probe")
        conversations = [await store.create_conversation(customer.id, "webchat") for _ in range(100)]
        first = conversations[0].id
        timer = Timer()
        for i in range(n):
            await store.append_event(first, author=Author.CUSTOMER, kind=EventKind.MESSAGE, text="hi", client_id=f"a{i}")
        show(rows, f"{where}: append_event, one at a time", n, timer)
        timer = Timer()
        for _ in range(n):
            await store.get_conversation(first)
        show(rows, f"{where}: get_conversation (done before every append)", n, timer)

        per_conversation = max(1, n // 50)

        async def chat(conversation_id: str) -> None:
            for i in range(per_conversation):
                await store.append_event(conversation_id, author=Author.CUSTOMER, kind=EventKind.MESSAGE,
                                         text="hi", client_id=f"b{i}")

        timer = Timer()
        await asyncio.gather(*(chat(c.id) for c in conversations))
        show(rows, f"{where}: append_event, 100 conversations at once", per_conversation * 100, timer)
        return first
    finally:
        await store.close()


async def sqlite_reshaped(path: str, conversation_id: str, n: int, rows: list[dict[str, Any]], where: str) -> None:
    """The append's SQL run as one function in one thread hop, ``batch`` appends per COMMIT."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    executor = ThreadPoolExecutor(1)

    def append_many(client_ids: list[str]) -> None:
        db.execute("BEGIN IMMEDIATE")
        for client_id in client_ids:
            (seq,) = db.execute("SELECT last_seq FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
            db.execute("SELECT 1 FROM events WHERE conversation_id = ? AND author = ? AND client_id = ?",
                       (conversation_id, "customer", client_id)).fetchone()
            db.execute("UPDATE conversations SET last_seq = ?, updated_at = ? WHERE id = ?",
                       (seq + 1, "2000-01-01T00:00:00.000000+00:00", conversation_id))
            db.execute("INSERT INTO events (conversation_id, seq, author, kind, text, client_id, data, at) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (conversation_id, seq + 1, "customer", "message", "hi", client_id, "{}",
                        "2000-01-01T00:00:00.000000+00:00"))
        db.execute("COMMIT")

    loop = asyncio.get_running_loop()
    try:
        for batch in (1, 10, 50):
            timer = Timer()
            for start in range(0, n, batch):
                await loop.run_in_executor(executor, append_many, [f"s{batch}.{i}" for i in range(start, start + batch)])
            show(rows, f"{where}: same SQL in one thread hop, {batch} append(s) per COMMIT", n, timer)
    finally:
        executor.shutdown()
        db.close()


async def postgres_one_statement(url: str, conversation_id: str, n: int, rows: list[dict[str, Any]]) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    query = """
        WITH c AS (UPDATE conversations SET last_seq = last_seq + 1, updated_at = now() WHERE id = $1
                   RETURNING last_seq)
        INSERT INTO events (conversation_id, seq, author, kind, text, client_id, data, at)
        SELECT $1, c.last_seq, 'customer', 'message', 'hi', $2, '{}', now() FROM c
        ON CONFLICT (conversation_id, author, client_id) WHERE client_id IS NOT NULL DO NOTHING
        RETURNING seq"""
    try:
        timer = Timer()
        for i in range(n):
            await conn.fetchval(query, conversation_id, f"one{i}")
        show(rows, "postgresql: the append as one statement (1 round trip, autocommit)", n, timer)
    finally:
        await conn.close()


async def postgres_pool_reset(url: str, conversation_id: str, n: int, rows: list[dict[str, Any]]) -> None:
    """asyncpg resets a connection on every release (advisory locks, cursors, LISTEN, settings):
    one more round trip per store call, unless the pool is given a reset that does nothing."""
    import asyncpg

    async def keep_session(conn: Any) -> None:
        return None

    for label, reset in (("default reset on release", None), ("reset=no-op", keep_session)):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=1, reset=reset)
        try:
            timer = Timer()
            for _ in range(n):
                async with pool.acquire() as conn:
                    await conn.fetchrow("SELECT * FROM conversations WHERE id = $1", conversation_id)
            show(rows, f"postgresql: pool acquire + one SELECT + release, {label}", n, timer)
        finally:
            await pool.close()


async def probe(n: int, stores: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "sqlite" in stores:
        for base, where in ((Path(tempfile.gettempdir()), "sqlite on disk"), (capacity_dir(), "sqlite on tmpfs")):
            path = str(base / f"contactgate-store-costs-{uuid.uuid4().hex[:8]}.db")
            print(f"{where} ({path})", flush=True)
            try:
                conversation_id = await through_gateway_store("sqlite:///" + path, n, rows, where)
                await sqlite_reshaped(path, conversation_id, n, rows, where)
            finally:
                for suffix in ("", "-wal", "-shm"):
                    with contextlib.suppress(OSError):
                        os.unlink(path + suffix)
    if "postgresql" in stores:
        dsn = pg_admin_dsn()
        why = await pg_available(dsn)
        if why is not None:
            print(f"postgresql skipped: {why}")
        else:
            async with ThrowawayPostgres(dsn) as pg:
                print(f"postgresql (throwaway database {pg.name})", flush=True)
                conversation_id = await through_gateway_store(pg.url, n, rows, "postgresql")
                await postgres_one_statement(pg.url, conversation_id, n, rows)
                await postgres_pool_reset(pg.url, conversation_id, n, rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.store_costs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400, help="operations per measurement (default %(default)s)")
    parser.add_argument("--stores", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}; Python {sys.version.split()[0]}")
    asyncio.run(probe(args.n, args.stores.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

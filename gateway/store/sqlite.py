"""The embedded default engine: one aiosqlite connection, WAL journal, fully synchronous commits.

All operations share one connection and one asyncio.Lock. The lock is taken for reads too: on a
single connection a read issued while another task's write transaction is open would see that
transaction's uncommitted rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import aiosqlite

from ..model import (
    Author, Conversation, ConversationState, Customer, Event, EventKind, StateChange, utcnow,
)
from .base import ConversationKey, NotFound, StoreError, StoreUnavailable, conversation_filters
from .batching import AppendBatcher, AppendRequest
from .customer_links import CustomerLinks, LinkTx, insert_conversation
from .migrations import migrate_sqlite
from .sqlite_samples import SQLiteQueueSamples
from .sqlite_channels import SQLiteChannelTables, insert_outbox_item
from .sqlite_codes import SQLiteCodeTables
from .sqlite_kb import SQLiteKbTables
from .sqlite_rows import SQLiteLinkTx, execute, fetchone, parse_ts, ts
from .text import cannot_hold, dumps, identifier, storable, storable_json

_NEW_CUSTOMER_COLS = "id, name, tier, attributes, created_at"
_CUSTOMER_COLS = _NEW_CUSTOMER_COLS + ", merged_into"
_CONVERSATION_COLS = (
    "id, customer_id, channel, state, queue, agent_id, last_seq, created_at, updated_at, closed_at"
)
_EVENT_COLS = "conversation_id, seq, author, kind, text, client_id, data, at"

# Error classes that mean "the database file cannot be used right now", as opposed to bugs
# (bad SQL, constraint violations) which must surface as they are.
_UNAVAILABLE_ERRORS = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN",
                       "SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CORRUPT", "SQLITE_NOTADB")


def parse_sqlite_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``; memory stays."""
    if url in ("sqlite://:memory:", "sqlite:///:memory:"):
        return ":memory:"
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise StoreError(f"bad sqlite url {url!r}: use sqlite:///relative.db, "
                         "sqlite:////absolute.db or sqlite://:memory:")
    return url[len(prefix):]


def _customer(row: sqlite3.Row) -> Customer:
    return Customer(id=row["id"], name=row["name"], tier=row["tier"],
                    attributes=json.loads(row["attributes"]),
                    created_at=datetime.fromisoformat(row["created_at"]), merged_into=row["merged_into"])


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"], customer_id=row["customer_id"], channel=row["channel"],
        state=ConversationState(row["state"]), queue=row["queue"], agent_id=row["agent_id"],
        last_seq=row["last_seq"], created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]), closed_at=parse_ts(row["closed_at"]),
    )


def _event(row: sqlite3.Row) -> Event:
    return Event(conversation_id=row["conversation_id"], seq=row["seq"],
                 author=Author(row["author"]), kind=EventKind(row["kind"]), text=row["text"],
                 client_id=row["client_id"], data=json.loads(row["data"]),
                 at=datetime.fromisoformat(row["at"]))


class SQLiteStore(SQLiteChannelTables, SQLiteQueueSamples, SQLiteKbTables, SQLiteCodeTables, CustomerLinks):
    """The engine. Attachments, channel references and the outbox are in sqlite_channels.py;
    the board's queue samples in sqlite_samples.py; the KB's outcomes and proposals in
    sqlite_kb.py; verification codes in sqlite_codes.py; identities, claims and merges in
    customer_links.py."""

    def __init__(self, url: str, *, busy_timeout_ms: int = 5000) -> None:
        self.url = url
        self._path = parse_sqlite_url(url)
        self._busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._batcher = AppendBatcher(self._write_batch)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        async with self._lock:
            if self._db is not None:
                return
            try:
                if self._path != ":memory:":
                    Path(self._path).parent.mkdir(parents=True, exist_ok=True)
                # isolation_level=None: the sqlite3 module must not open transactions behind our
                # back; every write below spells out BEGIN IMMEDIATE ... COMMIT.
                # check_same_thread=False: a batch of appends runs its statements on the event
                # loop's thread, one at a time with every other use (see _write_batch).
                db = await aiosqlite.connect(self._path, isolation_level=None, check_same_thread=False)
            except (OSError, sqlite3.Error) as exc:
                raise StoreUnavailable(f"cannot open sqlite database {self._path!r}: {exc}") from exc
            try:
                db.row_factory = sqlite3.Row
                # Wait for another process's write lock instead of failing at once.
                await db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                await _switch_to_wal(db, self._busy_timeout_ms / 1000)
                # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
                # and an inbound message is acked as soon as append_event returns.
                await db.execute("PRAGMA synchronous = FULL")
                await db.execute("PRAGMA foreign_keys = ON")
                await migrate_sqlite(db)
            except BaseException as exc:
                await db.close()
                if isinstance(exc, sqlite3.Error) and _is_unavailable(exc):
                    raise StoreUnavailable(
                        f"cannot open sqlite database {self._path!r}: {exc}") from exc
                raise
            self._db = db

    async def close(self) -> None:
        # Appends already accepted commit first; then the lock lets any other write finish.
        await self._batcher.drain()
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def ping(self) -> None:
        async with self._session() as db:
            await db.execute_fetchall("SELECT 1")

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            if self._db is None:
                raise StoreUnavailable(f"sqlite store {self._path!r} is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                if _is_unavailable(exc):
                    raise StoreUnavailable(f"sqlite database {self._path!r}: {exc}") from exc
                raise

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._session() as db:
            # IMMEDIATE takes the write lock now, so another process cannot slip in between our
            # read of last_seq and the insert. Taken on the event loop's thread when it is free
            # at once (it always is unless another process writes); else waited for on
            # aiosqlite's thread, as busy_timeout allows.
            if not _begin_now(db._conn, self._busy_timeout_ms):
                await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                raise

    # customers and identities -----------------------------------------------------------------
    async def create_customer(
        self, *, name: str | None, tier: str | None = None, attributes: dict[str, Any] | None = None,
        customer_id: str | None = None,
    ) -> Customer:
        # The text rule (text.py), as on PostgreSQL: both engines store the same values.
        customer = Customer(id=identifier(customer_id, "customer id") if customer_id else uuid.uuid4().hex,
                            name=_text(name), tier=_text(tier),
                            attributes=storable_json(dict(attributes or {})), created_at=utcnow())
        encoded = dumps(customer.attributes)
        try:
            async with self._transaction() as db:
                await execute(db, f"INSERT INTO customers ({_NEW_CUSTOMER_COLS}) VALUES (?, ?, ?, ?, ?)",
                               (customer.id, customer.name, customer.tier, encoded,
                                ts(customer.created_at)))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"customer {customer.id!r} already exists") from exc
        return customer

    async def get_customer(self, customer_id: str) -> Customer:
        if cannot_hold(customer_id):
            raise NotFound(f"customer {customer_id!r} not found")
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_CUSTOMER_COLS} FROM customers WHERE id = ?",
                                  (customer_id,))
        if row is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return _customer(row)

    async def update_customer(
        self, customer_id: str, *, name: str | None = ..., tier: str | None = ...,  # type: ignore[assignment]
        attributes: dict[str, Any] | None = ...,  # type: ignore[assignment]
    ) -> Customer:
        sets: list[str] = []
        params: list[Any] = []
        if name is not ...:
            sets.append("name = ?")
            params.append(_text(name))
        if tier is not ...:
            sets.append("tier = ?")
            params.append(_text(tier))
        if attributes is not ...:
            sets.append("attributes = ?")
            params.append(dumps(storable_json(attributes or {})))  # None clears to {}
        if sets and not cannot_hold(customer_id):
            async with self._transaction() as db:
                changed = await execute(
                    db, f"UPDATE customers SET {', '.join(sets)} WHERE id = ?", (*params, customer_id))
                if changed == 0:
                    raise NotFound(f"customer {customer_id!r} not found")
        return await self.get_customer(customer_id)

    # conversations and events -----------------------------------------------------------------
    async def create_conversation(self, customer_id: str, channel: str) -> Conversation:
        if cannot_hold(customer_id):
            raise NotFound(f"customer {customer_id!r} not found")
        now = utcnow()
        conv = Conversation(id=uuid.uuid4().hex, customer_id=customer_id, channel=storable(channel),
                            state=ConversationState.BOT, queue=None, agent_id=None, last_seq=0,
                            created_at=now, updated_at=now)
        async with self._links() as tx:
            return await insert_conversation(tx, conv)

    @contextlib.asynccontextmanager
    async def _links(self, write: bool = True) -> AsyncIterator[LinkTx]:
        """customer_links.py's transaction (a read when not ``write``)."""
        async with (self._transaction() if write else self._session()) as db:
            yield SQLiteLinkTx(db)

    async def get_conversation(self, conversation_id: str) -> Conversation:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._session() as db:
            row = await fetchone(db, f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE id = ?",
                                  (conversation_id,))
        if row is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return _conversation(row)

    async def latest_conversation(self, customer_id: str, channel: str) -> Conversation | None:
        if cannot_hold(customer_id):
            return None
        channel = storable(channel)
        async with self._session() as db:
            # rowid breaks ties between conversations created in the same microsecond.
            row = await fetchone(
                db,
                f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE customer_id = ? AND channel = ? "
                "ORDER BY created_at DESC, rowid DESC LIMIT 1",
                (customer_id, channel),
            )
        return None if row is None else _conversation(row)

    async def open_conversations(self) -> Sequence[Conversation]:
        async with self._session() as db:
            # "state <> 'closed'" verbatim, so the planner can use the partial index.
            rows = await db.execute_fetchall(
                f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE state <> 'closed' "
                "ORDER BY created_at, rowid"
            )
        return [_conversation(r) for r in rows]

    async def append_event(
        self, conversation_id: str, *, author: Author, kind: EventKind, text: str | None = None,
        client_id: str | None = None, data: dict[str, Any] | None = None,
        change: StateChange | None = None, outbox: str | None = None,
    ) -> tuple[Event, bool]:
        return await self._batcher.append(AppendRequest(
            conversation_id, Author(author), EventKind(kind), text, client_id, dict(data or {}), change,
            outbox))

    async def _write_batch(self, batch: list[AppendRequest]) -> list[tuple[Event, bool] | Exception]:
        """One transaction for the batch. Only the waits run on aiosqlite's thread: taking the
        write lock when another process holds it, and the COMMIT's fsync. The statements run here,
        on the event loop: on that thread every statement would hand the GIL back and forth with
        the loop, which made a batch several times slower than its SQL (docs/performance.md)."""
        async with self._transaction() as db:
            # aiosqlite's own sqlite3 connection: its thread is idle while we hold the session.
            return _append_batch(db._conn, batch)

    async def events_after(
        self, conversation_id: str, seq: int, limit: int | None = None
    ) -> Sequence[Event]:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._session() as db:
            rows = await db.execute_fetchall(
                f"SELECT {_EVENT_COLS} FROM events WHERE conversation_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (conversation_id, seq, -1 if limit is None else limit),  # -1: no limit
            )
            if not rows and await fetchone(
                    db, "SELECT 1 FROM conversations WHERE id = ?", (conversation_id,)) is None:
                raise NotFound(f"conversation {conversation_id!r} not found")
        return [_event(r) for r in rows]


    async def list_conversations(
        self, *, state: ConversationState | None = None, queue: str | None = None,
        customer_id: str | None = None, channel: str | None = None, limit: int = 50,
        before: ConversationKey | None = None,
    ) -> Sequence[Conversation]:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        filters = conversation_filters(state, queue, customer_id, channel)
        where = [f"{column} = ?" for column, _ in filters]
        params: list[Any] = [value for _, value in filters]
        if before is not None:
            # A row value, so the (created_at, id) index is walked from the key on.
            where.append("(created_at, id) < (?, ?)")
            params.extend((ts(before.created_at), before.id))
        sql = f"SELECT {_CONVERSATION_COLS} FROM conversations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        async with self._session() as db:
            rows = await db.execute_fetchall(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit))
        return [_conversation(r) for r in rows]


def _text(value: str | None) -> str | None:
    return None if value is None else storable(value)


def _is_unavailable(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(_UNAVAILABLE_ERRORS)


async def _switch_to_wal(db: aiosqlite.Connection, patience: float) -> None:
    """``PRAGMA journal_mode = WAL`` needs the database to itself and, unlike writes, does not
    wait out busy_timeout: when several processes open a new file at once, retry a while."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


def _begin_now(conn: sqlite3.Connection, busy_timeout_ms: int) -> bool:
    """BEGIN IMMEDIATE without waiting: False when another connection holds the write lock."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        conn.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_BUSY":
            raise
        return False
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")


def _append_batch(conn: sqlite3.Connection, batch: list[AppendRequest]) -> list[tuple[Event, bool] | Exception]:
    """Inside the batch's transaction: an unknown conversation or unstorable data fails only its
    own append."""
    results: list[tuple[Event, bool] | Exception] = []
    for request in batch:
        try:
            results.append(_append_one(conn, request))
        except (NotFound, TypeError, ValueError) as exc:  # this append fails alone; nothing of it was written
            results.append(exc)
    return results


def _append_one(conn: sqlite3.Connection, r: AppendRequest) -> tuple[Event, bool]:
    encoded = r.encoded_data()  # before any write: unstorable data must leave nothing behind
    if r.client_id is not None:
        # Safe to check-then-insert: BEGIN IMMEDIATE holds the database write lock, and an
        # earlier append of this batch is visible to this one.
        dup = conn.execute(f"SELECT {_EVENT_COLS} FROM events WHERE conversation_id = ? AND author = ? AND client_id = ?",
                           (r.conversation_id, r.author.value, r.client_id)).fetchone()
        if dup is not None:
            return _event(dup), False
    now = utcnow()
    at = ts(now)
    row = conn.execute(_APPEND_UPDATE, (at, *r.change_columns(), r.conversation_id)).fetchone()
    if row is None:
        raise NotFound(f"conversation {r.conversation_id!r} not found")
    seq = row[0]
    conn.execute(f"INSERT INTO events ({_EVENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (r.conversation_id, seq, r.author.value, r.kind.value, r.text, r.client_id, encoded, at))
    if r.outbox is not None:
        insert_outbox_item(conn, r.conversation_id, seq, r.outbox, at)
    return Event(conversation_id=r.conversation_id, seq=seq, author=r.author, kind=r.kind, text=r.text,
                 client_id=r.client_id, data=r.data, at=now), True


# One statement bumps last_seq and applies the state change. ?2 is the new state or NULL (no
# change); ?3/?5 say whether queue/agent_id are set. closed_at: set when the conversation becomes
# closed (kept if it already was), cleared when it moves back to an open state.
_APPEND_UPDATE = """
UPDATE conversations SET
    last_seq   = last_seq + 1,
    updated_at = ?1,
    closed_at  = CASE WHEN ?2 IS NULL THEN closed_at
                      WHEN ?2 = 'closed' THEN COALESCE(closed_at, ?1)
                      ELSE NULL END,
    state      = COALESCE(?2, state),
    queue      = CASE WHEN ?3 THEN ?4 ELSE queue END,
    agent_id   = CASE WHEN ?5 THEN ?6 ELSE agent_id END
WHERE id = ?7
RETURNING last_seq
"""

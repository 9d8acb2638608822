"""The production engine: PostgreSQL through an asyncpg pool.

Per-conversation ordering comes from the row lock taken by ``UPDATE conversations ... RETURNING
last_seq``: concurrent appends to one conversation queue up behind it, appends to different
conversations run in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from datetime import datetime
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import asyncpg
from asyncpg import exceptions as pgexc

from ..model import (
    Author, Conversation, ConversationState, Customer, Event, EventKind, StateChange, utcnow,
)
from .base import ConversationKey, NotFound, StoreError, StoreUnavailable, conversation_filters
from .batching import AppendBatcher, AppendRequest
from .customer_links import CustomerLinks, LinkTx, TransientConflict, insert_conversation, retried
from .migrations import migrate_postgres
from .postgres_samples import PostgresQueueSamples
from .postgres_channels import PostgresChannelTables
from .postgres_codes import PostgresCodeTables
from .postgres_kb import PostgresKbTables
from .records import new_id
from .text import cannot_hold, dumps, identifier, storable, storable_json

# JSON goes in and out as text (text.dumps / json.loads) rather than through a jsonb codec, so a
# value that cannot be serialised fails with json's TypeError exactly as on SQLite (asyncpg would
# wrap a codec failure in its own DataError). Text follows the rule in text.py: what PostgreSQL
# cannot hold (U+0000, lone surrogates) is normalised before it gets here.

_NEW_CUSTOMER_COLS = "id, name, tier, attributes, created_at"
_CUSTOMER_COLS = _NEW_CUSTOMER_COLS + ", merged_into"
_CONVERSATION_COLS = (
    "id, customer_id, channel, state, queue, agent_id, last_seq, created_at, updated_at, closed_at"
)
_EVENT_COLS = "conversation_id, seq, author, kind, text, client_id, data, at"

# Failures that mean the server cannot be used right now (as opposed to bugs or bad data).
_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError is an OSError too
    pgexc.PostgresConnectionError,  # includes "connection was closed in the middle of operation"
    pgexc.AdminShutdownError,
    pgexc.CrashShutdownError,
    pgexc.CannotConnectNowError,
    pgexc.DatabaseDroppedError,
    pgexc.TooManyConnectionsError,
    pgexc.IdleSessionTimeoutError,  # the server ended an idle pooled session
    # asyncpg's own protocol errors, e.g. "cannot switch to state 12; another operation (2) is in
    # progress" when a connection is lost between or during operations.
    pgexc.InternalClientError,
    # SQLSTATE 55000, e.g. "database ... is not currently accepting connections" (ALLOW_CONNECTIONS false)
    pgexc.ObjectNotInPrerequisiteStateError,
)
# Extra failures only while connecting: the store cannot work until the config or server changes.
_CONNECT_FAILURE_TYPES: tuple[type[BaseException], ...] = _UNAVAILABLE_TYPES + (
    pgexc.InvalidCatalogNameError,  # database does not exist
    pgexc.InvalidAuthorizationSpecificationError,  # includes wrong password
)


def _is_unavailable(exc: BaseException, types: tuple[type[BaseException], ...] = _UNAVAILABLE_TYPES) -> bool:
    if isinstance(exc, types):
        return True
    # asyncpg reports a closed pool or connection as a plain InterfaceError.
    return isinstance(exc, pgexc.InterfaceError) and ("closed" in str(exc) or "closing" in str(exc))


class _UnavailableInOneLine(logging.Filter):
    """asyncpg's pool logs each failed attempt to refill itself with a full traceback. While the
    database is away that is expected: keep the line and the reason, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and _is_unavailable(exc):
            record.exc_info, record.exc_text = None, None
            record.error = f"{type(exc).__name__}: {exc}"
        return True


logging.getLogger("asyncpg.pool").addFilter(_UnavailableInOneLine())


def redact(url: str) -> str:
    """The url without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _customer(row: asyncpg.Record) -> Customer:
    return Customer(id=row["id"], name=row["name"], tier=row["tier"],
                    attributes=json.loads(row["attributes"]), created_at=row["created_at"],
                    merged_into=row["merged_into"])


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(
        id=row["id"], customer_id=row["customer_id"], channel=row["channel"],
        state=ConversationState(row["state"]), queue=row["queue"], agent_id=row["agent_id"],
        last_seq=row["last_seq"], created_at=row["created_at"], updated_at=row["updated_at"],
        closed_at=row["closed_at"],
    )


def _event(row: asyncpg.Record) -> Event:
    return Event(conversation_id=row["conversation_id"], seq=row["seq"],
                 author=Author(row["author"]), kind=EventKind(row["kind"]), text=row["text"],
                 client_id=row["client_id"], data=json.loads(row["data"]), at=row["at"])


class PostgresStore(PostgresChannelTables, PostgresQueueSamples, PostgresKbTables, PostgresCodeTables, CustomerLinks):
    """The engine. Attachments, channel references and the outbox are in postgres_channels.py;
    the board's queue samples in postgres_samples.py; the KB's outcomes and proposals in
    postgres_kb.py; verification codes in postgres_codes.py; identities, claims and merges in
    customer_links.py."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 10,
                 connect_timeout: float = 10.0, close_timeout: float = 30.0) -> None:
        self.url = url
        self._where = redact(url)
        self._min_size, self._max_size = min_size, max_size
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._pool: asyncpg.Pool | None = None
        self._batcher = AppendBatcher(self._write_batch)

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    # lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.url, min_size=self._min_size, max_size=self._max_size,
                timeout=self._connect_timeout, reset=_keep_session,
            )
        except Exception as exc:
            if _is_unavailable(exc, _CONNECT_FAILURE_TYPES):
                raise StoreUnavailable(f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc
            raise
        try:
            async with pool.acquire() as conn:
                await migrate_postgres(conn)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, Exception) and _is_unavailable(exc):
                raise StoreUnavailable(
                    f"PostgreSQL at {self._where} went away during migrations: {exc}") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        await self._batcher.drain()  # appends already accepted commit first
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            # Pool.close() waits for acquired connections, i.e. for in-flight writes to finish.
            await asyncio.wait_for(pool.close(), self._close_timeout)
        except asyncio.TimeoutError:
            pool.terminate()

    async def ping(self) -> None:
        async with self._conn() as conn:
            await conn.fetchval("SELECT 1")

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"PostgreSQL store {self._where} is closed")
        try:
            async with pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            if _is_unavailable(exc):
                raise StoreUnavailable(f"PostgreSQL at {self._where} is unavailable: {exc}") from exc
            raise

    # customers and identities -----------------------------------------------------------------
    async def create_customer(
        self, *, name: str | None, tier: str | None = None, attributes: dict[str, Any] | None = None,
        customer_id: str | None = None,
    ) -> Customer:
        row_id = identifier(customer_id, "customer id") if customer_id else uuid.uuid4().hex
        encoded = dumps(storable_json(attributes or {}))
        async with self._conn() as conn:
            try:
                row = await conn.fetchrow(
                    f"INSERT INTO customers ({_NEW_CUSTOMER_COLS}) VALUES ($1, $2, $3, $4, $5) "
                    f"RETURNING {_CUSTOMER_COLS}",
                    row_id, _text(name), _text(tier), encoded, utcnow(),
                )
            except pgexc.UniqueViolationError as exc:
                raise StoreError(f"customer {customer_id!r} already exists") from exc
        return _customer(row)

    async def get_customer(self, customer_id: str) -> Customer:
        if cannot_hold(customer_id):
            raise NotFound(f"customer {customer_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(f"SELECT {_CUSTOMER_COLS} FROM customers WHERE id = $1",
                                      customer_id)
        if row is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return _customer(row)

    async def update_customer(
        self, customer_id: str, *, name: str | None = ..., tier: str | None = ...,  # type: ignore[assignment]
        attributes: dict[str, Any] | None = ...,  # type: ignore[assignment]
    ) -> Customer:
        values: dict[str, Any] = {}
        if name is not ...:
            values["name"] = _text(name)
        if tier is not ...:
            values["tier"] = _text(tier)
        if attributes is not ...:
            values["attributes"] = dumps(storable_json(attributes or {}))  # None clears to {}
        if not values or cannot_hold(customer_id):
            return await self.get_customer(customer_id)
        sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(values, start=2))
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"UPDATE customers SET {sets} WHERE id = $1 RETURNING {_CUSTOMER_COLS}",
                customer_id, *values.values(),
            )
        if row is None:
            raise NotFound(f"customer {customer_id!r} not found")
        return _customer(row)

    # conversations and events -----------------------------------------------------------------
    @retried
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
        async with self._conn() as conn:
            if not write:
                yield PostgresLinkTx(conn)
                return
            try:
                async with conn.transaction():
                    yield PostgresLinkTx(conn)
            except pgexc.DeadlockDetectedError as exc:
                raise TransientConflict(f"PostgreSQL broke a lock cycle: {exc}") from exc

    async def get_conversation(self, conversation_id: str) -> Conversation:
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE id = $1", conversation_id)
        if row is None:
            raise NotFound(f"conversation {conversation_id!r} not found")
        return _conversation(row)

    async def latest_conversation(self, customer_id: str, channel: str) -> Conversation | None:
        if cannot_hold(customer_id):
            return None
        channel = storable(channel)
        async with self._conn() as conn:
            row = await conn.fetchrow(
                f"SELECT {_CONVERSATION_COLS} FROM conversations "
                "WHERE customer_id = $1 AND channel = $2 ORDER BY created_at DESC, id DESC LIMIT 1",
                customer_id, channel,
            )
        return None if row is None else _conversation(row)

    async def open_conversations(self) -> Sequence[Conversation]:
        async with self._conn() as conn:
            # "state <> 'closed'" verbatim, so the planner can use the partial index.
            rows = await conn.fetch(
                f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE state <> 'closed' "
                "ORDER BY created_at, id"
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
        now = utcnow()
        columns: list[list[Any]] = [[] for _ in range(14)]
        results: list[tuple[Event, bool] | Exception] = []
        sent: list[tuple[int, AppendRequest]] = []  # (its place in results, request); row i is sent[i-1]
        for r in batch:
            try:
                encoded = r.encoded_data()
            except (NotFound, TypeError, ValueError) as exc:  # fails this append alone, not the batch
                results.append(exc)
                continue
            results.append(NotFound(f"conversation {r.conversation_id!r} not found"))  # unless a row comes back
            sent.append((len(results) - 1, r))
            values = (r.conversation_id, now, *r.change_columns(),
                      r.author.value, r.kind.value, r.text, r.client_id, encoded,
                      r.outbox, None if r.outbox is None else new_id())
            for column, value in zip(columns, values):
                column.append(value)
        if not sent:
            return results
        async with self._conn() as conn:
            # One statement, so autocommit: committed, outbox items included, when the rows come back.
            rows = await conn.fetch(
                "SELECT * FROM contactgate_append_events($1::text[], $2::timestamptz[], $3::text[], $4::bool[], "
                "$5::text[], $6::bool[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::jsonb[], "
                "$13::text[], $14::text[])",
                *columns)
        for row in rows:
            position, r = sent[row["i"] - 1]
            results[position] = (Event(conversation_id=r.conversation_id, seq=row["seq"], author=Author(row["author"]),
                                  kind=EventKind(row["kind"]), text=row["text"], client_id=row["client_id"],
                                  data=json.loads(row["data"]) if isinstance(row["data"], str) else row["data"],
                                  at=row["at"]), bool(row["created"]))
        return results

    async def events_after(
        self, conversation_id: str, seq: int, limit: int | None = None
    ) -> Sequence[Event]:
        if limit is not None and limit < 0:
            raise ValueError("limit must be >= 0")
        if cannot_hold(conversation_id):
            raise NotFound(f"conversation {conversation_id!r} not found")
        async with self._conn() as conn:
            rows = await conn.fetch(
                f"SELECT {_EVENT_COLS} FROM events WHERE conversation_id = $1 AND seq > $2 "
                "ORDER BY seq LIMIT $3",  # LIMIT NULL means no limit
                conversation_id, seq, limit,
            )
            if not rows and await conn.fetchval(
                    "SELECT 1 FROM conversations WHERE id = $1", conversation_id) is None:
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
        where = [f"{column} = ${number}" for number, (column, _) in enumerate(filters, start=1)]
        params: list[Any] = [value for _, value in filters]
        if before is not None:
            # A row comparison, so the (created_at, id) index is walked from the key on.
            params.extend((before.created_at, before.id))
            where.append(f"(created_at, id) < (${len(params) - 1}, ${len(params)})")
        sql = f"SELECT {_CONVERSATION_COLS} FROM conversations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        async with self._conn() as conn:
            rows = await conn.fetch(sql + f" ORDER BY created_at DESC, id DESC LIMIT ${len(params)}", *params)
        return [_conversation(r) for r in rows]


class PostgresLinkTx:
    """customer_links.LinkTx on one pooled connection (inside its transaction for writes)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    @staticmethod
    def _sql(sql: str) -> str:
        parts = sql.split("?")
        return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1))

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self.conn.fetch(self._sql(sql), *args))

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(self._sql(sql), *args)

    def at(self, value: datetime | None) -> datetime | None:
        return value

    def read_at(self, value: Any) -> datetime | None:
        return value

    async def lock_customers(self, ids: Sequence[str], *, share: bool = False) -> None:
        # In id order, so two merges of overlapping customers queue up instead of deadlocking.
        await self.conn.execute(f"SELECT 1 FROM customers WHERE id = ANY($1::text[]) ORDER BY id "
                                f"FOR {'SHARE' if share else 'UPDATE'}", sorted(ids))

    async def lock_identity(self, kind: str, address: str) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{kind}\n{address}")


def _text(value: str | None) -> str | None:
    return None if value is None else storable(value)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default RESET ALL / UNLISTEN / CLOSE ALL round trip: this
    store sets no session state, and that query cost as much as the append itself."""

"""Group commit for appends, shared by both engines.

Every append waiting when a batch starts joins it; the engine writes the batch in one
transaction (SQLite: one hop to its thread; PostgreSQL: one round trip) and each caller returns
only after that commit, so "stored before acknowledged" holds while concurrent conversations
share one fsync.

A batch that fails for any reason but :class:`StoreUnavailable` committed nothing (PostgreSQL:
one statement; SQLite: one transaction), so it is split in halves and each half written again,
down to the append(s) that fail: only their own callers get the error, never the bystanders
who happened to share their commit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..model import KEEP, Author, ConversationState, Event, EventKind, StateChange
from .base import NotFound, StoreUnavailable
from .text import cannot_hold, dumps, storable, storable_json

MAX_BATCH = 256  # appends per transaction at most

Result = tuple[Event, bool]


@dataclass
class AppendRequest:
    conversation_id: str
    author: Author
    kind: EventKind
    text: str | None
    client_id: str | None
    data: dict[str, Any]
    change: StateChange | None
    outbox: str | None = None  # a channel: when the event is created, its pending outbox item is written with it
    future: asyncio.Future[Result] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    def __post_init__(self) -> None:
        # The text rule (gateway/store/text.py), applied once for both engines.
        if self.text is not None:
            self.text = storable(self.text)
        self.data = storable_json(self.data)
        if self.outbox is not None:
            self.outbox = storable(self.outbox)

    def encoded_data(self) -> str:
        """The data as JSON text, once the checks both engines make before writing anything of
        this append pass: NotFound for a conversation id no store can hold, ValueError for such a
        client id or a non-finite number, TypeError for a value JSON cannot encode."""
        if cannot_hold(self.conversation_id):
            raise NotFound(f"conversation {self.conversation_id!r} not found")
        if self.client_id is not None and cannot_hold(self.client_id):
            raise ValueError(f"client id {self.client_id!r} holds U+0000 or a lone surrogate")
        return dumps(self.data)

    def change_columns(self) -> tuple[str | None, bool, str | None, bool, str | None]:
        """(new state or None, set queue?, queue, set agent?, agent): the change as SQL values."""
        change = self.change
        if change is None:
            return (None, False, None, False, None)
        return (ConversationState(change.state).value,
                change.queue is not KEEP, None if change.queue is KEEP else change.queue,
                change.agent_id is not KEEP, None if change.agent_id is KEEP else change.agent_id)


# Writes one batch; returns one result or exception (e.g. NotFound) per request, in order. When
# it raises, nothing of the batch was committed.
WriteBatch = Callable[[list[AppendRequest]], Awaitable[list["Result | Exception"]]]


class AppendBatcher:
    def __init__(self, write_batch: WriteBatch) -> None:
        self._write_batch = write_batch
        self._pending: list[AppendRequest] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, request: AppendRequest) -> Result:
        self._pending.append(request)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        # A caller that gives up cancels only its own future; the batch it joined still commits.
        return await request.future

    async def drain(self) -> None:
        """Wait until every accepted append is committed (or failed): before closing the store."""
        if self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            await self._commit(batch)

    async def _commit(self, batch: list[AppendRequest]) -> None:
        """Write ``batch`` and settle every future in it. A failure other than StoreUnavailable
        committed nothing: write each half again, so that it ends up failing only the
        append(s) that cause it."""
        try:
            results = await self._write_batch(batch)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, StoreUnavailable):
                half = len(batch) // 2
                await self._commit(batch[:half])  # in order: appends to one conversation stay in order
                await self._commit(batch[half:])
                return
            _fail(batch, exc)
            return
        except BaseException as exc:  # cancelled: fail the batch, then stop
            _fail(batch, exc)
            raise
        for request, result in zip(batch, results):
            if request.future.done():
                continue
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)


def _fail(batch: list[AppendRequest], exc: BaseException) -> None:
    for request in batch:
        if not request.future.done():
            request.future.set_exception(exc)

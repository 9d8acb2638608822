"""In-order, exactly-once delivery of conversation events to one connection.

Events reach a connection from two places: the live fan-out after each append, and a replay from
the store after a reconnect. Appends from different tasks may publish out of order, and a replay
may overlap live events. A cursor per (connection, conversation) settles both: an event at or
below the cursor was already delivered and is dropped; an event beyond ``cursor + 1`` means some
were missed, and they are read from the store first.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Sequence

from .model import Event

Fetch = Callable[[str, int, "int | None"], Awaitable[Sequence[Event]]]
Send = Callable[[Event], Awaitable[None]]


REPLAY_PAGE = 500  # events read from the store per page when catching up


class OrderedDelivery:
    def __init__(self, conversation_id: str, cursor: int, fetch: Fetch, send: Send,
                 room: Callable[[], Awaitable[None]] | None = None) -> None:
        self.conversation_id = conversation_id
        self.cursor = cursor
        self._fetch = fetch
        self._send = send
        self._room = room  # awaited between replay pages, so a long backlog paces itself
        self._lock = asyncio.Lock()

    async def deliver(self, event: Event) -> None:
        async with self._lock:
            if event.seq <= self.cursor:
                return
            if event.seq > self.cursor + 1:
                await self._catch_up(upto=event.seq - 1)
            if event.seq == self.cursor + 1:
                await self._send(event)
                self.cursor = event.seq

    async def catch_up(self) -> None:
        """Send everything stored beyond the cursor (after a reconnect), page by page."""
        async with self._lock:
            while True:
                before = self.cursor
                if self._room is not None:
                    await self._room()
                await self._catch_up(upto=None, limit=REPLAY_PAGE)
                if self.cursor == before:
                    return

    async def advance(self, seq: int) -> None:
        """Mark events up to ``seq`` as delivered by other means (a transcript inside an offer)."""
        async with self._lock:
            self.cursor = max(self.cursor, seq)

    async def _catch_up(self, upto: int | None, limit: int | None = None) -> None:
        for event in await self._fetch(self.conversation_id, self.cursor, limit):
            if upto is not None and event.seq > upto:
                break
            if event.seq == self.cursor + 1:
                await self._send(event)
                self.cursor = event.seq

"""One scheduler for every timer in the gateway: offer timeouts, routing steps, disconnect
grace, wrap-up, position updates.

Timers are keyed, so setting a key again replaces its timer and a finished offer simply cancels
its key. The clock is injected: tests advance a fake clock and call :meth:`run_due` instead of
sleeping; in the server one background task sleeps until the next timer is due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from datetime import datetime, timedelta
from typing import Awaitable, Callable, Hashable

from .model import utcnow

log = logging.getLogger("contactgate.scheduler")

Callback = Callable[[], Awaitable[None]]


class Scheduler:
    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._heap: list[tuple[datetime, int, Hashable]] = []
        self._timers: dict[Hashable, tuple[datetime, int, Callback]] = {}
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def call_at(self, key: Hashable, when: datetime, callback: Callback) -> None:
        token = next(self._counter)
        self._timers[key] = (when, token, callback)
        heapq.heappush(self._heap, (when, token, key))
        self._wake.set()

    def call_later(self, key: Hashable, seconds: float, callback: Callback) -> None:
        self.call_at(key, self.clock() + timedelta(seconds=seconds), callback)

    def cancel(self, key: Hashable) -> None:
        self._timers.pop(key, None)  # its heap entry is skipped when it surfaces

    def pending(self, key: Hashable) -> bool:
        return key in self._timers

    def next_due(self) -> datetime | None:
        while self._heap:
            when, token, key = self._heap[0]
            current = self._timers.get(key)
            if current is not None and current[1] == token:
                return when
            heapq.heappop(self._heap)
        return None

    async def run_due(self) -> int:
        """Run every timer due by now, earliest first. Returns how many ran."""
        ran = 0
        while True:
            due = self.next_due()
            if due is None or due > self.clock():
                return ran
            _, _, key = heapq.heappop(self._heap)
            _, _, callback = self._timers.pop(key)
            ran += 1
            try:
                await callback()
            except Exception:
                log.exception("timer failed", extra={"timer": str(key)})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._drive(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drive(self) -> None:
        while True:
            self._wake.clear()
            await self.run_due()
            due = self.next_due()
            timeout = None if due is None else max(0.0, (due - self.clock()).total_seconds())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the event fires, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

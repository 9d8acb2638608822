"""What a waiting customer hears about their place in line.

The ``queued`` event carries the position and the estimated wait (:meth:`WaitNews.queued_data`);
then, every :data:`POSITION_INTERVAL` seconds while anyone waits, each customer whose position or
estimated wait changed since they last heard gets a ``position`` frame on their live sessions
(transient: not stored, no seq). The estimate counts free seats first, then rounds of the queue's
average handle time (``routing.servicelevel.estimated_wait``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Awaitable, Callable

from routing.servicelevel import ServiceLevels, estimated_wait

from .dispatcher import Dispatcher
from .scheduler import Scheduler

__all__ = ["POSITION_INTERVAL", "WaitNews"]

POSITION_INTERVAL = 1.0  # seconds between position / estimated-wait updates to waiting customers

# (conversation id, channel, frame): the pipeline's transient news for a customer's sessions.
TellCustomer = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class WaitNews:
    def __init__(self, dispatcher: Dispatcher, stats: ServiceLevels, scheduler: Scheduler,
                 clock: Callable[[], datetime], tell_customer: TellCustomer) -> None:
        self.dispatcher = dispatcher
        self.stats = stats
        self.scheduler = scheduler
        self.clock = clock
        self._tell_customer = tell_customer
        self._heard: dict[str, tuple[int, int]] = {}  # conversation id -> (position, wait) last told

    def queued_data(self, conversation_id: str, queue: str, reason: str, now: datetime) -> dict[str, Any]:
        """The ``queued`` event's data: the customer hears this position and wait now."""
        position = self.dispatcher.position(conversation_id, now) or 1
        wait = self.estimated_wait(queue, position, now)
        self._heard[conversation_id] = (position, wait)
        return {"queue": queue, "position": position, "reason": reason, "estimated_wait": wait}

    def estimated_wait(self, queue: str, position: int, now: datetime) -> int:
        """Seconds until an agent is likely free for this place in line: nothing while free
        seats outnumber the conversations ahead, else rounds of the average handle time."""
        agents, free = self.dispatcher.seats(queue, now)
        if position <= free:
            return 0
        return round(estimated_wait(position - free, self.stats.average_handle(queue, now), agents))

    def schedule(self) -> None:
        """Send the news in :data:`POSITION_INTERVAL` seconds, if anyone waits and none is due."""
        if self.dispatcher.waiting and not self.scheduler.pending("positions"):
            self.scheduler.call_later("positions", POSITION_INTERVAL, self._send)

    def forget(self, conversation_id: str) -> None:
        self._heard.pop(conversation_id, None)

    async def _send(self) -> None:
        now = self.clock()
        positions = self.dispatcher.positions(now)
        for cid in [c for c in self._heard if c not in positions]:
            del self._heard[cid]
        for cid, position in positions.items():
            entry = self.dispatcher.waiting[cid]
            status = (position, self.estimated_wait(entry.queue, position, now))
            if self._heard.get(cid) == status:
                continue
            self._heard[cid] = status
            await self._tell_customer(cid, entry.channel,
                                      {"type": "position", "position": status[0], "estimated_wait": status[1]})
        self.schedule()

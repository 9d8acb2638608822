"""Telegram's flood limits, kept on our side, and how sparingly a waiting customer hears of the
wait. Pure: an injected monotonic clock, no I/O (unit-tested with a fake clock).

Telegram answers 429 to a bot that sends more than about 30 messages a second in all, or more
than about one a second to one chat. :class:`FloodGate` keeps both as token buckets (the
``flood:`` settings) and a 429's ``retry_after`` as a hold on that chat only, so the outbox
defers that chat's messages (no try spent) and goes on with the others.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

from gateway.limits import Rate, TokenBucket

Clock = Callable[[], float]


class FloodGate:
    def __init__(self, per_bot: Rate, per_chat: Rate, clock: Clock = time.monotonic, max_chats: int = 10_000) -> None:
        self.per_bot = per_bot
        self.per_chat = per_chat
        self._clock = clock
        self._max_chats = max_chats
        self._bot = TokenBucket.full(per_bot, clock())
        self._chats: OrderedDict[int, TokenBucket] = OrderedDict()
        self._held: dict[int, float] = {}   # chat -> monotonic time Telegram said we may send again

    def reserve(self, chat: int) -> float:
        """0.0: one message to ``chat`` may go now (counted); else the seconds to wait first
        (nothing counted)."""
        now = self._clock()
        until = self._held.get(chat)
        if until is not None:
            if until > now:
                return until - now
            del self._held[chat]
        bucket = self._chats.get(chat)
        if bucket is None:
            bucket = TokenBucket.full(self.per_chat, now)
        wait = max(bucket.wait(self.per_chat, now), self._bot.wait(self.per_bot, now))
        if wait > 0:
            return wait
        bucket.take(self.per_chat, now)
        self._bot.take(self.per_bot, now)
        self._chats[chat] = bucket
        self._chats.move_to_end(chat)
        if len(self._chats) > self._max_chats:
            self._chats.popitem(last=False)  # the chat that sent longest ago: its bucket is full again
        return 0.0

    def hold(self, chat: int, seconds: float) -> None:
        """Telegram said 429, retry after ``seconds``: nothing goes to ``chat`` before then."""
        until = self._clock() + max(seconds, 0.0)
        self._held[chat] = max(until, self._held.get(chat, 0.0))

    def held(self, chat: int) -> float:
        """Seconds ``chat`` is still held (0: not held)."""
        until = self._held.get(chat)
        return max(until - self._clock(), 0.0) if until is not None else 0.0


class WaitNews:
    """When a waiting customer hears their place in line: on entering the queue, then only when
    it changed a lot (they are next, or the estimate moved by half and by a minute or more),
    and never twice within ``interval`` seconds. The gateway's position frames come every
    second; a chat message that often would be spam."""

    def __init__(self, interval: float = 120.0, clock: Clock = time.monotonic, max_tracked: int = 10_000) -> None:
        self.interval = interval
        self._clock = clock
        self._max = max_tracked
        self._told: OrderedDict[str, tuple[int, int, float]] = OrderedDict()  # cid -> position, wait, when
        self._langs: OrderedDict[str, str] = OrderedDict()  # cid -> the language the customer writes in

    def heard(self, conversation_id: str, lang: str) -> None:
        """The customer wrote in ``lang`` (``en``, ``zh``): the news is told in it."""
        self._langs[conversation_id] = lang
        self._langs.move_to_end(conversation_id)
        if len(self._langs) > self._max:
            self._langs.popitem(last=False)

    def queued(self, conversation_id: str, position: int, wait: int) -> str:
        """Entering a queue (or a new step of it): always worth a message."""
        self._remember(conversation_id, position, wait)
        return wait_text(position, wait, self._langs.get(conversation_id, "en"))

    def moved(self, conversation_id: str, position: int, wait: int) -> str | None:
        """A position update: the text to send, or None (not worth a message now)."""
        last = self._told.get(conversation_id)
        if last is None:
            return None  # not queued as far as this process saw: the queued news comes first
        last_position, last_wait, when = last
        if self._clock() - when < self.interval:
            return None
        next_now = position == 1 and last_position > 1
        big = abs(wait - last_wait) >= max(60, last_wait / 2)
        if not (next_now or big):
            return None
        self._remember(conversation_id, position, wait)
        return wait_text(position, wait, self._langs.get(conversation_id, "en"))

    def forget(self, conversation_id: str) -> None:
        self._told.pop(conversation_id, None)
        self._langs.pop(conversation_id, None)

    def _remember(self, conversation_id: str, position: int, wait: int) -> None:
        self._told[conversation_id] = (position, wait, self._clock())
        self._told.move_to_end(conversation_id)
        if len(self._told) > self._max:
            self._told.popitem(last=False)


def wait_text(position: int, wait: int, lang: str = "en") -> str:
    """The place in line and the estimated wait, in English or (``zh``) Chinese."""
    minutes = max(1, round(wait / 60))
    if lang == "zh":
        if wait <= 0:
            return "下一位就是您,客服马上为您服务。" if position <= 1 else f"您目前排在第 {position} 位,客服会尽快为您服务。"
        return f"您目前排在第 {position} 位,预计等待约 {minutes} 分钟。"
    if wait <= 0:
        return "You are next in line; an agent will be with you shortly." if position <= 1 else \
            f"You are number {position} in line; an agent will be with you shortly."
    about = "about 1 minute" if minutes == 1 else f"about {minutes} minutes"
    return f"You are number {position} in line. Estimated wait: {about}."

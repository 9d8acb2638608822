"""What goes around the bot's turns: the memories of the conversations with the bot, the
deflection figures each turn adds to (counted in the store, so processes and restarts agree),
and the watchdog that hands off a conversation the bot has made no progress in for
``selfservice.policy.stalled_after`` seconds (a timer on the gateway's scheduler, set again on
recover from the memory kept in the stored events)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from ..config import SelfServiceConfig
from ..model import Conversation
from ..scheduler import Scheduler
from ..state.bot import BotMemo, BotMemos
from ..store import Store
from .conversation import Turn

log = logging.getLogger("contactgate.selfservice")

Stalled = Callable[[str], Awaitable[None]]


class BotSupervisor:
    def __init__(self, store: Store, scheduler: Scheduler, clock: Callable[[], datetime],
                 config: Callable[[], SelfServiceConfig], stalled: Stalled) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self._config = config  # the live config: a reload's policy applies to the next turn
        self._stalled = stalled
        self.memos = BotMemos(lambda cid: store.events_after(cid, 0))

    async def memo(self, conversation_id: str) -> BotMemo:
        return await self.memos.get(conversation_id)

    async def after(self, conversation_id: str, seq: int | None, turn: Turn, memo: BotMemo) -> None:
        """The turn's messages are stored (the last one is ``seq``): count its outcomes, then
        set, keep or cancel the watchdog."""
        if seq is not None:
            for faq_id, outcome in turn.outcomes:
                await self.store.add_kb_outcome(conversation_id, seq, faq_id, outcome)
        if turn.handoff is not None:
            self.forget(conversation_id)
        else:
            self.watch(conversation_id, memo)

    def watch(self, conversation_id: str, memo: BotMemo) -> None:
        after = self._config().policy.stalled_after
        key = ("bot_stalled", conversation_id)
        if memo.stuck_since is None or after <= 0:
            self.scheduler.cancel(key)
            return
        if self.scheduler.pending(key):
            return  # the first reply without progress set it; later ones do not push it back

        async def fire() -> None:
            await self._stalled(conversation_id)

        self.scheduler.call_at(key, memo.stuck_since + timedelta(seconds=after), fire)

    def is_stalled(self, memo: BotMemo) -> bool:
        after = self._config().policy.stalled_after
        return (after > 0 and memo.stuck_since is not None
                and self.clock() >= memo.stuck_since + timedelta(seconds=after))

    def forget(self, conversation_id: str) -> None:
        self.memos.drop(conversation_id)
        self.scheduler.cancel(("bot_stalled", conversation_id))

    async def recover(self, conversation: Conversation) -> None:
        """A conversation with the bot after a restart: its watchdog runs on from where it was."""
        self.watch(conversation.id, await self.memos.get(conversation.id))

"""Customer presence: whether a conversation's customer has a live session (a web chat socket),
and the timer that ends a conversation nobody is there for.

The promise: on a channel with live sessions, an open conversation whose customer has no session
left is not kept forever. Waiting for an agent (queued or offered), it ends after the channel's
``abandon_after`` seconds; still with the bot, after ``idle_close_after``. A customer who comes
back in time cancels the timer and nothing else changes (nothing here touches routing, so the
place in line is kept). An assigned conversation, and a left message (a wait that goes on
without the customer), never end this way. Channels without sessions (email, messaging apps)
never report absence, so their conversations are never ended here.

This module only keeps the books and sets timers on the gateway's ``Scheduler``; what "ends"
means (close as abandoned, or become a left message) is the pipeline's, under the
conversation's lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Literal, Sequence

from adapters.base import SessionPolicy

from .model import Conversation, ConversationState as S, Event, EventKind

if TYPE_CHECKING:
    from .scheduler import Scheduler

# What the absence timer of a conversation ends: a bot chat nobody is at ("idle") or a wait for
# an agent nobody is at ("abandoned"); None: nothing (assigned, a left message).
Absence = Literal["idle", "abandoned"]
Expire = Callable[[str, Absence], Awaitable[None]]


class CustomerPresence:
    def __init__(self, scheduler: "Scheduler", expire: Expire) -> None:
        self._scheduler = scheduler
        self._expire = expire
        self._policies: dict[str, SessionPolicy] = {}   # channel -> policy (channels with sessions)
        self._connected: set[str] = set()                # open conversations with a live session
        self._armed: dict[str, Absence | None] = {}      # absent conversation -> what its timer ends
        self._left_messages: set[str] = set()

    def track(self, channel: str, policy: SessionPolicy) -> None:
        self._policies[channel] = policy

    def connected(self, conversation: Conversation) -> bool | None:
        """Whether the customer has a live session; None on a channel that has no sessions."""
        if conversation.channel not in self._policies:
            return None
        return conversation.id in self._connected

    def set_connected(self, conversation_id: str, connected: bool) -> None:
        """The customer's first session joined or the last one left. Follow it with
        :meth:`changed`, which starts the timer of a customer who left."""
        if connected:
            self._connected.add(conversation_id)
            self._disarm(conversation_id)
        else:
            self._connected.discard(conversation_id)

    def changed(self, conversation: Conversation) -> None:
        """Call after every state change of a conversation, and when one opens: starts, keeps or
        cancels its absence timer. A change within the same phase (queued <-> offered, a routing
        step) keeps the running timer: the customer's absence did not start again."""
        cid = conversation.id
        if not conversation.state.is_open:
            self._connected.discard(cid)
            self._left_messages.discard(cid)
            self._disarm(cid)
            return
        policy = self._policies.get(conversation.channel)
        if policy is None or cid in self._connected:
            return
        absence, seconds = self._absence(conversation, policy)
        if cid in self._armed and self._armed[cid] == absence:
            return
        self._armed[cid] = absence
        if absence is None:
            self._scheduler.cancel(("absent", cid))
            return

        async def expire() -> None:
            self._armed.pop(cid, None)
            await self._expire(cid, absence)

        self._scheduler.call_later(("absent", cid), seconds, expire)

    def absence(self, conversation: Conversation) -> Absence | None:
        """What the customer's absence would end right now (None: nothing, or they are here)."""
        policy = self._policies.get(conversation.channel)
        if policy is None or conversation.id in self._connected or not conversation.state.is_open:
            return None
        return self._absence(conversation, policy)[0]

    def _absence(self, conversation: Conversation, policy: SessionPolicy) -> tuple[Absence | None, float]:
        if conversation.state is S.BOT and policy.idle_close_after > 0:
            return "idle", policy.idle_close_after
        if (conversation.state in (S.QUEUED, S.OFFERED) and policy.abandon_after > 0
                and conversation.id not in self._left_messages):
            return "abandoned", policy.abandon_after
        return None, 0.0

    def _disarm(self, cid: str) -> None:
        if self._armed.pop(cid, None) is not None:
            self._scheduler.cancel(("absent", cid))

    # left messages: waits that go on without the customer ------------------------------------------
    def mark_left_message(self, conversation_id: str) -> None:
        """From now on this conversation's wait needs no customer (before its ``queued`` append)."""
        self._left_messages.add(conversation_id)

    def is_left_message(self, conversation_id: str) -> bool:
        return conversation_id in self._left_messages


def was_left_message(events: Sequence[Event]) -> bool:
    """Whether a stored conversation became a left message (its ``queued`` event says so): how
    the mark survives a restart."""
    return any(e.kind is EventKind.QUEUED and e.data.get("left_message") for e in events)

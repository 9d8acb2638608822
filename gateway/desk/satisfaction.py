"""The satisfaction question: asked when an agent closes a conversation, answered once.

``desk.satisfaction`` (off by default) turns it on. When an agent closes a conversation on a
channel that asks (``channels``, else every channel but email), the bot's last message is the
question with five ``choices`` ("1" to "5"; ``data.satisfaction`` marks it): the web chat widget
renders it as a rating with an optional comment and answers with a ``satisfaction`` frame,
Telegram shows the choices as buttons and a press comes back as the choice
``satisfaction:<score>``. The answer is stored once as a ``satisfaction`` event of the (closed)
conversation, followed by the bot's thanks; another answer to the same question is refused.
Answers count per queue in this process (``figures``: ``GET /api/queues`` and ``/metrics``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Sequence

from adapters.base import Receipt
from routing.config import SatisfactionConfig

from ..faq import detect_lang
from ..model import Author, Conversation, ConversationState, Event, EventKind
from ..websocket import FrameRejected

if TYPE_CHECKING:
    from adapters.base import Inbound

    from ..config import GatewayConfig
    from ..locks import KeyedLocks
    from ..store import Store

log = logging.getLogger("contactgate.satisfaction")

SCALE = range(1, 6)
CHOICE = re.compile(r"^satisfaction:([1-5])$")
MAX_COMMENT = 2000


@dataclass
class QueueScores:
    answers: int = 0
    total: int = 0

    @property
    def average(self) -> float | None:
        return round(self.total / self.answers, 2) if self.answers else None


class Satisfaction:
    def __init__(self, config: Callable[[], "GatewayConfig"], store: "Store", lock: "KeyedLocks",
                 append: Callable[..., Awaitable[tuple[Conversation, Event]]],
                 append_receipt: Callable[..., Awaitable[tuple[Conversation, tuple[Event, bool]]]],
                 clock: Callable[[], datetime]) -> None:
        self._config = config
        self._store = store
        self._lock = lock
        self._append = append
        self._append_receipt = append_receipt
        self._clock = clock
        self.scores: dict[str, QueueScores] = {}  # queue -> answers since this process started

    @property
    def settings(self) -> SatisfactionConfig:
        return self._config().desk.satisfaction

    def asks_on(self, channel: str) -> bool:
        settings = self.settings
        if not settings.enabled:
            return False
        if settings.channels:
            return channel in settings.channels
        types = {c.channel_name: c.type for c in self._config().channels}
        return types.get(channel) != "email"

    # asking ------------------------------------------------------------------------------------
    async def ask(self, conversation_id: str) -> None:
        """After an agent's close, under the conversation's lock: the question, if this channel
        asks. A failure is logged: the close itself has happened and stands."""
        try:
            await self._ask(conversation_id)
        except Exception as exc:
            log.error("satisfaction question not asked", extra={"conversation_id": conversation_id, "error": str(exc)})

    async def _ask(self, conversation_id: str) -> None:
        conversation = await self._store.get_conversation(conversation_id)
        if conversation.state is not ConversationState.CLOSED or not self.asks_on(conversation.channel):
            return
        events = await self._store.events_after(conversation_id, 0)
        lang = _language(events)
        question = self.settings.question.get(lang) or self.settings.question["en"]
        await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=question, data={
            "satisfaction": {"scale": [SCALE.start, SCALE.stop - 1], "lang": lang},
            "choices": [{"text": str(n), "value": f"satisfaction:{n}"} for n in SCALE]})

    # answering ---------------------------------------------------------------------------------
    async def answer(self, conversation_id: str, frame: dict[str, Any], client_id: str | None = None) -> Receipt:
        """A ``satisfaction`` frame (``score``, optional ``comment``) for the customer's conversation."""
        score, comment = frame.get("score"), frame.get("comment")
        if not isinstance(score, int) or isinstance(score, bool) or score not in SCALE:
            raise FrameRejected("bad_satisfaction", '"score" must be an integer from 1 to 5')
        if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
            raise FrameRejected("bad_satisfaction", f'"comment" must be a string of at most {MAX_COMMENT} characters')
        return await self._record(conversation_id, score, (comment or "").strip() or None, client_id)

    async def from_channel(self, inbound: "Inbound") -> Receipt | None:
        """A button press (``choice`` ``satisfaction:<n>``) on a channel without sessions: the
        answer to the question of the customer's latest conversation; None when it is not one
        (then it is an ordinary message)."""
        choice = inbound.details.get("choice")
        value = choice.get("value") if isinstance(choice, dict) else choice
        match = CHOICE.match(value) if isinstance(value, str) else None
        if match is None:
            return None
        customer = await self._store.find_customer(inbound.channel, inbound.address)
        conversation = (await self._store.latest_conversation(customer.id, inbound.channel)
                        if customer is not None else None)
        if conversation is None or conversation.state is not ConversationState.CLOSED:
            return None
        try:
            return await self._record(conversation.id, int(match[1]), None, inbound.client_id)
        except FrameRejected:
            return None  # not asked, answered already or too late: an ordinary message then

    async def _record(self, conversation_id: str, score: int, comment: str | None, client_id: str | None) -> Receipt:
        async with self._lock(conversation_id):
            conversation = await self._store.get_conversation(conversation_id)
            events = await self._store.events_after(conversation_id, 0)
            asked = next((e for e in reversed(events) if e.kind is EventKind.MESSAGE and "satisfaction" in e.data), None)
            answered = next((e for e in events if e.kind is EventKind.SATISFACTION), None)
            if answered is not None and client_id is not None and answered.client_id == client_id:
                return Receipt(answered, False)  # the same answer again (a redelivery): stored once
            if asked is None or conversation.state is not ConversationState.CLOSED:
                raise FrameRejected("not_asked", "this conversation has no satisfaction question to answer")
            if answered is not None:
                raise FrameRejected("already_answered", "this conversation's satisfaction question is answered already")
            if (self._clock() - asked.at).total_seconds() > self.settings.answer_within:
                raise FrameRejected("too_late", "the satisfaction question of this conversation has expired")
            closed = next((e for e in reversed(events) if e.kind is EventKind.CLOSED), None)
            agent_id = closed.data.get("closed_by") if closed is not None else None
            conversation, (event, created) = await self._append_receipt(
                conversation, Author.CUSTOMER, EventKind.SATISFACTION, text=comment, client_id=client_id,
                data={"score": score, "comment": comment, "queue": conversation.queue, "agent_id": agent_id})
            if created:
                scores = self.scores.setdefault(conversation.queue or "", QueueScores())
                scores.answers += 1
                scores.total += score
                lang = asked.data["satisfaction"].get("lang", "en")
                await self._append(conversation, Author.BOT, EventKind.MESSAGE,
                                   text=self.settings.thanks.get(lang) or self.settings.thanks["en"])
            return Receipt(event, created)

    def figures(self, queue: str) -> dict[str, Any]:
        scores = self.scores.get(queue, QueueScores())
        return {"answers": scores.answers, "average": scores.average}


def _language(events: Sequence[Event]) -> str:
    """The language of the customer's messages: their last few, together."""
    texts = [e.text for e in events if e.author is Author.CUSTOMER and e.kind is EventKind.MESSAGE and e.text]
    return detect_lang(" ".join(texts[-5:])) if texts else "en"

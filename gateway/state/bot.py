"""The bot's memory of one conversation while it is with the bot: how many turns it took, how
many went unanswered in a row, the question it last heard, what it asked (a "did you mean" with
its choices, or "did this help?" after an answer) and since when it has made no progress.

The memory is written into every bot message's event data (``data["bot"]``), so it survives a
restart: :meth:`BotMemos.get` rebuilds it from the last bot message when this process does not
hold it. (What a process holds assumes, like the pipeline's other live state, that one process
serves a conversation at a time.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Literal, Sequence

from ..model import Author, Event, EventKind

Asking = Literal["did_you_mean", "helpful"]


@dataclass(frozen=True, slots=True)
class Choice:
    text: str   # the label shown (a button, or a numbered line)
    value: str  # what a pick sends back: an FAQ id, or "yes" / "no"

    def as_json(self) -> dict[str, str]:
        return {"text": self.text, "value": self.value}


@dataclass(slots=True)
class BotMemo:
    turns: int = 0                  # customer messages the bot took
    unanswered: int = 0             # replies in a row that were not an answer
    question: str | None = None     # the last question, normalized (for "the same again")
    asking: Asking | None = None
    choices: tuple[Choice, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)  # a "did you mean"'s faq id -> score
    faq: str | None = None          # the entry last answered
    stuck_since: datetime | None = None  # the first reply since the last progress that was none
    heard_at: datetime | None = None     # when the last message the bot took was stored

    def snapshot(self) -> dict[str, Any]:
        return {"turns": self.turns, "unanswered": self.unanswered, "question": self.question,
                "asking": self.asking, "choices": [c.as_json() for c in self.choices],
                "scores": self.scores, "faq": self.faq,
                "stuck_since": self.stuck_since.isoformat() if self.stuck_since else None,
                "heard_at": self.heard_at.isoformat() if self.heard_at else None}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> "BotMemo":
        stuck, heard = data.get("stuck_since"), data.get("heard_at")
        return cls(turns=int(data.get("turns") or 0), unanswered=int(data.get("unanswered") or 0),
                   question=data.get("question"), asking=data.get("asking"),
                   choices=tuple(Choice(str(c["text"]), str(c["value"])) for c in data.get("choices") or ()),
                   scores={str(k): float(v) for k, v in (data.get("scores") or {}).items()},
                   faq=data.get("faq"), stuck_since=datetime.fromisoformat(stuck) if stuck else None,
                   heard_at=datetime.fromisoformat(heard) if heard else None)

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> "BotMemo":
        """The memory as the last bot message that carries one left it."""
        for event in reversed(events):
            if event.author is Author.BOT and event.kind is EventKind.MESSAGE and isinstance(event.data.get("bot"), dict):
                return cls.from_snapshot(event.data["bot"])
        return cls()


Load = Callable[[str], Awaitable[Sequence[Event]]]


class BotMemos:
    """The memories of the conversations this process has with the bot."""

    def __init__(self, load: Load) -> None:
        self._load = load
        self._memos: dict[str, BotMemo] = {}

    async def get(self, conversation_id: str) -> BotMemo:
        memo = self._memos.get(conversation_id)
        if memo is None:
            memo = BotMemo.from_events(await self._load(conversation_id))
            self._memos[conversation_id] = memo
        return memo

    def drop(self, conversation_id: str) -> None:
        self._memos.pop(conversation_id, None)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._memos

"""Conversations and their transcripts as the admin API shows them.

Parses the listing's query (filters, ``limit``, the opaque ``cursor``) into what
``Store.list_conversations`` takes, refusing a bad value with its reason, and renders
conversations and events as JSON. A cursor is the key of the last conversation of a page, so
paging never skips or repeats a conversation however many are created meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from .model import Conversation, ConversationState, Event
from .store import ConversationKey

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
DEFAULT_EVENT_LIMIT = 100
MAX_EVENT_LIMIT = 500

_FILTERS = ("state", "queue", "customer", "channel")
_STATES = [s.value for s in ConversationState]


class BadQuery(ValueError):
    """A query parameter the API cannot use; ``code`` is the client-facing error code."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ConversationQuery:
    state: ConversationState | None = None
    queue: str | None = None
    customer_id: str | None = None
    channel: str | None = None
    limit: int = DEFAULT_LIMIT
    before: ConversationKey | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    after: int = 0
    limit: int = DEFAULT_EVENT_LIMIT


def parse_conversation_query(query: Mapping[str, str]) -> ConversationQuery:
    """``?state=&queue=&customer=&channel=&limit=&cursor=``; an empty filter is no filter."""
    known_parameters(query, (*_FILTERS, "limit", "cursor"))
    state = None
    if query.get("state"):
        if query["state"] not in _STATES:
            raise BadQuery("bad_state", f"state must be one of {', '.join(_STATES)}")
        state = ConversationState(query["state"])
    return ConversationQuery(
        state=state, queue=query.get("queue") or None, customer_id=query.get("customer") or None,
        channel=query.get("channel") or None,
        limit=_integer(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT),
        before=decode_cursor(query["cursor"]) if query.get("cursor") else None)


def parse_event_query(query: Mapping[str, str]) -> EventQuery:
    """``?after=SEQ&limit=N``: the events after seq ``after``, at most ``limit``."""
    known_parameters(query, ("after", "limit"))
    return EventQuery(after=_integer(query, "after", 0, 0, None),
                      limit=_integer(query, "limit", DEFAULT_EVENT_LIMIT, 1, MAX_EVENT_LIMIT))


def encode_cursor(conversation: Conversation) -> str:
    raw = json.dumps([conversation.created_at.isoformat(), conversation.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ConversationKey:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, conversation_id = json.loads(raw)
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None or not isinstance(conversation_id, str):
            raise ValueError("not a key")
    except (binascii.Error, ValueError, TypeError):
        raise BadQuery("bad_cursor", "cursor must be the `next` value of an earlier page, unchanged") from None
    return ConversationKey(at, conversation_id)


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.id, "customer_id": conversation.customer_id, "channel": conversation.channel,
        "state": conversation.state.value, "queue": conversation.queue, "agent_id": conversation.agent_id,
        "created_at": conversation.created_at.isoformat(), "updated_at": conversation.updated_at.isoformat(),
        "closed_at": conversation.closed_at.isoformat() if conversation.closed_at else None,
        "last_seq": conversation.last_seq,
    }


def event_json(event: Event) -> dict[str, Any]:
    """Every event, including those an agent or customer is not shown (``offered``), with its
    ``data`` (queue, agent, disposition, ...): an administrator reads the whole record."""
    return {"seq": event.seq, "author": event.author.value, "kind": event.kind.value, "text": event.text,
            "at": event.at.isoformat(), "client_id": event.client_id, "data": event.data}


def known_parameters(query: Mapping[str, str], names: tuple[str, ...]) -> None:
    """Refuse a query parameter not in ``names`` (a typo would otherwise ask for everything)."""
    for name in query:
        if name not in names:
            raise BadQuery("bad_query", f"unknown query parameter {name!r} (known: {', '.join(names)})")


def _integer(query: Mapping[str, str], name: str, default: int, low: int, high: int | None) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"{low}-{high}" if high is not None else f"{low} or more"
        raise BadQuery(f"bad_{name}", f"{name} must be an integer, {bounds}")
    return value

"""Probe: the gateway with its store replaced by dicts, to see what everything but storage costs
(websockets, frames, pipeline, delivery) against the relay.

    .venv/bin/python -m bench --stores memory --idle 0

Not part of the default ``make bench`` and not a way to run the gateway: nothing is durable. For
the store ``memory`` the bench starts the gateway as ``python -m bench.nostore serve ...``, which
swaps ``gateway.app.make_store`` for :class:`MemoryStore` and then runs the real CLI.
"""

from __future__ import annotations

import sys
import uuid
from dataclasses import replace
from typing import Any, Sequence


class MemoryStore:
    """Just enough of gateway.store.Store for web chat conversations, in dicts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.customers: dict[str, Any] = {}
        self.identity: dict[tuple[str, str], str] = {}
        self.conversations: dict[str, Any] = {}
        self.events: dict[str, list[Any]] = {}
        self.client_ids: dict[tuple[str, str, str], Any] = {}

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def create_customer(self, *, name: str | None, tier: str | None = None,
                              attributes: dict[str, Any] | None = None, customer_id: str | None = None) -> Any:
        from gateway.model import Customer, utcnow

        customer = Customer(customer_id or uuid.uuid4().hex, name, tier, dict(attributes or {}), utcnow())
        self.customers[customer.id] = customer
        return customer

    async def get_customer(self, customer_id: str) -> Any:
        from gateway.store import NotFound

        try:
            return self.customers[customer_id]
        except KeyError:
            raise NotFound(customer_id) from None

    async def update_customer(self, customer_id: str, *, name: Any = ..., tier: Any = ..., attributes: Any = ...) -> Any:
        changes = {k: v for k, v in (("name", name), ("tier", tier), ("attributes", attributes)) if v is not ...}
        self.customers[customer_id] = replace(self.customers[customer_id], **changes)
        return self.customers[customer_id]

    async def add_identity(self, customer_id: str, channel: str, address: str) -> None:
        self.identity[(channel, address)] = customer_id

    async def find_customer(self, channel: str, address: str) -> Any:
        customer_id = self.identity.get((channel, address))
        return self.customers.get(customer_id) if customer_id else None

    async def identities(self, customer_id: str) -> Sequence[Any]:
        from gateway.model import Identity

        return sorted(Identity(ch, addr, cid) for (ch, addr), cid in self.identity.items() if cid == customer_id)

    async def create_conversation(self, customer_id: str, channel: str) -> Any:
        from gateway.model import Conversation, ConversationState, utcnow

        now = utcnow()
        conversation = Conversation(uuid.uuid4().hex, customer_id, channel, ConversationState.BOT, None, None, 0, now, now)
        self.conversations[conversation.id] = conversation
        self.events[conversation.id] = []
        return conversation

    async def get_conversation(self, conversation_id: str) -> Any:
        from gateway.store import NotFound

        try:
            return self.conversations[conversation_id]
        except KeyError:
            raise NotFound(conversation_id) from None

    async def latest_conversation(self, customer_id: str, channel: str) -> Any:
        found = [c for c in self.conversations.values() if c.customer_id == customer_id and c.channel == channel]
        return found[-1] if found else None

    async def open_conversations(self) -> Sequence[Any]:
        return [c for c in self.conversations.values() if c.state.is_open]

    async def append_event(self, conversation_id: str, *, author: Any, kind: Any, text: str | None = None,
                           client_id: str | None = None, data: dict[str, Any] | None = None,
                           change: Any = None) -> tuple[Any, bool]:
        from gateway.model import KEEP, Author, ConversationState, Event, EventKind, utcnow

        author, kind = Author(author), EventKind(kind)
        conversation = await self.get_conversation(conversation_id)
        key = (conversation_id, author.value, client_id or "")
        if client_id is not None and key in self.client_ids:
            return self.client_ids[key], False
        now = utcnow()
        event = Event(conversation_id, conversation.last_seq + 1, author, kind, text, client_id, dict(data or {}), now)
        updates: dict[str, Any] = {"last_seq": event.seq, "updated_at": now}
        if change is not None:
            updates["state"] = ConversationState(change.state)
            if change.queue is not KEEP:
                updates["queue"] = change.queue
            if change.agent_id is not KEEP:
                updates["agent_id"] = change.agent_id
        self.conversations[conversation_id] = replace(conversation, **updates)
        self.events[conversation_id].append(event)
        if client_id is not None:
            self.client_ids[key] = event
        return event, True

    async def events_after(self, conversation_id: str, seq: int, limit: int | None = None) -> Sequence[Any]:
        events = self.events.get(conversation_id, [])[seq:]  # seq n is at index n - 1
        return events[:limit] if limit is not None else events


def serve(argv: list[str]) -> int:
    import gateway.app
    from gateway.cli import main

    gateway.app.make_store = MemoryStore  # type: ignore[assignment]
    return main(argv)


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))

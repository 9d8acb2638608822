"""The customer 360: what an agent sees of a customer in every offer and what
``GET /api/customers/{id}`` answers (the shape is in docs/customers.md)."""

from __future__ import annotations

from typing import Any

from ..model import Conversation, Customer, EventKind
from ..store import Store
from .directory import CustomerDirectory

HISTORY = 10         # the last conversations shown, on every channel
FIRST_LINE = 200     # characters of a conversation's first customer line
LOOK_FOR_FIRST = 20  # events read to find it


def identity_json(identity: Any) -> dict[str, Any]:
    return {"kind": identity.kind, "channel": identity.channel, "address": identity.address,
            "verified": identity.verified, "source": identity.source}


async def conversation_summary(store: Store, conversation: Conversation) -> dict[str, Any]:
    """One line of the history: channel, state, dates, queue, agent, disposition, first line."""
    first_line = None
    for event in await store.events_after(conversation.id, 0, LOOK_FOR_FIRST):
        if event.kind is EventKind.MESSAGE and event.author.value == "customer" and event.text:
            first_line = event.text[:FIRST_LINE]
            break
    disposition = None
    if not conversation.state.is_open and conversation.last_seq > 0:
        last = await store.events_after(conversation.id, conversation.last_seq - 1, 1)
        if last and last[0].kind is EventKind.CLOSED:
            disposition = last[0].data.get("disposition")
    return {"id": conversation.id, "channel": conversation.channel, "state": conversation.state.value,
            "queue": conversation.queue, "agent_id": conversation.agent_id,
            "created_at": conversation.created_at.isoformat(),
            "closed_at": conversation.closed_at.isoformat() if conversation.closed_at else None,
            "disposition": disposition, "first_line": first_line}


async def customer_360(store: Store, directory: CustomerDirectory, customer: Customer, *, tier: str | None,
                       tier_reason: str | None, current: str | None = None, history: int = HISTORY) -> dict[str, Any]:
    """The profile (name, tier and why, attributes), identities verified and claimed, open
    conversations on other channels, the last ``history`` conversations on every channel and
    the pending link suggestions. ``current``: the conversation being offered (left out of
    the history)."""
    verified = await store.identities(customer.id)
    claimed = await store.claims(customer.id)
    recent = [c for c in await store.list_conversations(customer_id=customer.id, limit=history + 1) if c.id != current]
    recent = recent[:history]
    summaries = [await conversation_summary(store, c) for c in recent]
    return {
        "id": customer.id, "name": customer.name, "tier": tier, "tier_reason": tier_reason,
        "attributes": customer.attributes,
        "identities": [identity_json(i) for i in [*verified, *claimed]],
        "open_conversations": [s for s in summaries if s["state"] != "closed"],
        "conversations": summaries,
        "link_suggestions": await directory.suggestions(customer),
    }

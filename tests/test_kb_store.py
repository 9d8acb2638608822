"""The knowledge base's tables (migration 6) on both engines: outcomes counted once per
(conversation, message, outcome), and proposals decided once."""

from __future__ import annotations

import asyncio

import pytest

from gateway.model import Author, EventKind
from gateway.store import NotFound, Store


async def test_outcomes_are_counted_once_per_message_and_outcome(store: Store) -> None:
    customer = await store.create_customer(name=None)
    a = await store.create_conversation(customer.id, "webchat")
    b = await store.create_conversation(customer.id, "webchat")
    for conversation in (a, b):
        await store.append_event(conversation.id, author=Author.BOT, kind=EventKind.MESSAGE, text="answer")
    assert await store.add_kb_outcome(a.id, 1, "track-parcel", "answered")
    assert not await store.add_kb_outcome(a.id, 1, "track-parcel", "answered")  # a retried write
    assert await store.add_kb_outcome(a.id, 1, "track-parcel", "handed_off")
    assert await store.add_kb_outcome(b.id, 1, "track-parcel", "answered")
    assert await store.add_kb_outcome(b.id, 1, "invoice", "helpful_yes")
    assert await store.kb_outcome_counts() == {("track-parcel", "answered"): 2, ("track-parcel", "handed_off"): 1,
                                               ("invoice", "helpful_yes"): 1}
    with pytest.raises(ValueError, match="unknown outcome"):
        await store.add_kb_outcome(a.id, 1, "invoice", "loved")


async def test_proposals_are_listed_and_decided_once(store: Store) -> None:
    customer = await store.create_customer(name=None)
    conversation = await store.create_conversation(customer.id, "webchat")
    entry = await store.add_kb_proposal(conversation_id=conversation.id, agent_id="alice", kind="entry", faq_id=None,
                                        lang="en", question="Sundays?", answer="Express only.")
    phrasing = await store.add_kb_proposal(conversation_id=conversation.id, agent_id="bob", kind="phrasing",
                                           faq_id="track-parcel", lang="zh", question="包裹在哪\x00", answer=None)
    assert phrasing.question == "包裹在哪\ufffd"  # the text rule: NUL is not storable
    assert [p.id for p in await store.kb_proposals()] == [entry.id, phrasing.id]
    assert [p.id for p in await store.kb_proposals("pending")] == [entry.id, phrasing.id]
    got = await store.get_kb_proposal(entry.id)
    assert (got.kind, got.answer, got.status, got.decided_at) == ("entry", "Express only.", "pending", None)

    # Two decisions at once: exactly one wins.
    decided = await asyncio.gather(store.decide_kb_proposal(entry.id, "approved", "added entry sundays"),
                                   store.decide_kb_proposal(entry.id, "rejected", "no"))
    winners = [d for d in decided if d is not None]
    assert len(winners) == 1 and winners[0].decided_at is not None
    assert (await store.get_kb_proposal(entry.id)).status == winners[0].status
    assert [p.id for p in await store.kb_proposals("pending")] == [phrasing.id]
    assert (await store.decide_kb_proposal(phrasing.id, "rejected", "too vague")).note == "too vague"

    with pytest.raises(NotFound):
        await store.get_kb_proposal("no-such-proposal")
    with pytest.raises(NotFound):
        await store.decide_kb_proposal("no-such-proposal", "approved")
    with pytest.raises(NotFound):
        await store.add_kb_proposal(conversation_id="nope", agent_id="a", kind="entry", faq_id=None, lang="en",
                                    question="q", answer="a")

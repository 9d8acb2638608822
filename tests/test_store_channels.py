"""The storage contract for what channels keep beside conversations (attachments, channel
references, the outbox), run against both engines through the parametrized ``store`` fixture."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from gateway.model import Author, Conversation, EventKind, OutboxItem, OutboxStatus, utcnow
from gateway.store import NotFound, Store, StoreUnavailable, open_store

EMAIL = "email"


async def new_conversation(store: Store, channel: str = EMAIL) -> Conversation:
    customer = await store.create_customer(name="Ada")
    return await store.create_conversation(customer.id, channel)


async def reply(store: Store, conv: Conversation, text: str = "reply", *, outbox: str | None = EMAIL,
                **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("author", Author.AGENT)
    return await store.append_event(conv.id, kind=EventKind.MESSAGE, text=text, outbox=outbox, **kw)


async def pending_items(store: Store, count: int, channel: str = EMAIL) -> tuple[list[OutboxItem], datetime]:
    """``count`` agent replies on ``channel``, one conversation each, and the time all are due."""
    items = []
    for i in range(count):
        conv = await new_conversation(store)
        await reply(store, conv, f"r{i}", outbox=channel)
        items += await store.outbox_items(conv.id)
    return items, max(item.next_attempt_at for item in items)


# attachments ------------------------------------------------------------------------------------
async def test_attachment_round_trip_keeps_every_byte(store: Store) -> None:
    conv = await new_conversation(store)
    data = bytes(range(256)) * 4096 + b"\x00tail"  # 1 MiB and a bit, every byte value, NULs too
    made = await store.put_attachment(conv.id, name="报告 Q3.pdf", content_type="application/pdf", data=data)
    assert (made.conversation_id, made.name, made.content_type) == (conv.id, "报告 Q3.pdf", "application/pdf")
    assert made.size == len(data) and made.sha256 == hashlib.sha256(data).hexdigest()
    assert len(made.id) == 32 and int(made.id, 16) >= 0  # made like conversation ids
    assert made.created_at.utcoffset() == timedelta(0)
    assert made.summary() == {"id": made.id, "name": "报告 Q3.pdf", "content_type": "application/pdf",
                              "size": len(data), "sha256": made.sha256}

    stored, stored_data = await store.get_attachment(made.id)
    assert stored == made and stored_data == data and type(stored_data) is bytes

    empty = await store.put_attachment(conv.id, name="empty.txt", content_type="text/plain",
                                       data=bytearray())
    assert (await store.get_attachment(empty.id))[1] == b""
    assert empty.size == 0 and empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert empty.id != made.id


async def test_attachment_refusals(store: Store) -> None:
    conv = await new_conversation(store)
    with pytest.raises(NotFound):
        await store.get_attachment("no-such-attachment")
    with pytest.raises(NotFound):
        await store.put_attachment("no-such-conversation", name="a", content_type="text/plain", data=b"x")
    with pytest.raises(TypeError):
        await store.put_attachment(conv.id, name="a", content_type="text/plain", data="text, not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.put_attachment(conv.id, name="a", content_type="text/plain", data=5)  # type: ignore[arg-type]


# channel references ---------------------------------------------------------------------------
async def test_refs_first_writer_wins(store: Store) -> None:
    first, second = await new_conversation(store), await new_conversation(store)
    assert await store.add_ref(EMAIL, "<a@mail.example>", first.id, 3)
    assert not await store.add_ref(EMAIL, "<a@mail.example>", second.id, 1)  # taken: nothing changes
    found = await store.find_ref(EMAIL, ["<a@mail.example>"])
    assert found is not None and (found.conversation_id, found.seq) == (first.id, 3)
    assert found.created_at.utcoffset() == timedelta(0)

    assert await store.add_ref("sms", "<a@mail.example>", second.id)  # the channel is part of the key
    on_sms = await store.find_ref("sms", ["<a@mail.example>"])
    assert on_sms is not None and (on_sms.conversation_id, on_sms.seq) == (second.id, None)

    with pytest.raises(NotFound):
        await store.add_ref(EMAIL, "<b@mail.example>", "no-such-conversation")
    with pytest.raises(NotFound):  # unknown conversation, even when the ref is taken
        await store.add_ref(EMAIL, "<a@mail.example>", "no-such-conversation")
    assert await store.find_ref(EMAIL, ["<b@mail.example>"]) is None


async def test_find_ref_takes_the_first_recorded_in_the_order_given(store: Store) -> None:
    a, b = await new_conversation(store), await new_conversation(store)
    await store.add_ref(EMAIL, "<old@x>", a.id, 1)
    await store.add_ref(EMAIL, "<new@x>", b.id, 2)
    assert (await store.find_ref(EMAIL, ["<unknown@x>", "<new@x>", "<old@x>"])).conversation_id == b.id  # type: ignore[union-attr]
    assert (await store.find_ref(EMAIL, ("<old@x>", "<new@x>", "<old@x>"))).conversation_id == a.id  # type: ignore[union-attr]
    assert await store.find_ref(EMAIL, []) is None
    assert await store.find_ref(EMAIL, ["<unknown@x>"]) is None
    assert await store.find_ref("sms", ["<old@x>"]) is None
    with pytest.raises(TypeError):  # a lone string is not a list of refs
        await store.find_ref(EMAIL, "<old@x>")


async def test_find_ref_among_more_refs_than_sqlite_takes_parameters(store: Store) -> None:
    conv = await new_conversation(store)
    await store.add_ref(EMAIL, "<needle@x>", conv.id)
    haystack = [f"<{i}@x>" for i in range(40_000)] + ["<needle@x>"]
    found = await store.find_ref(EMAIL, haystack)
    assert found is not None and found.ref == "<needle@x>"


async def test_conversation_refs_oldest_first(store: Store) -> None:
    conv, other = await new_conversation(store), await new_conversation(store)
    await store.add_ref(EMAIL, "<z-first@x>", conv.id, 1)
    await store.add_ref("token", "AB12CD", conv.id)
    await store.add_ref(EMAIL, "<a-third@x>", conv.id, 4)
    await store.add_ref(EMAIL, "<elsewhere@x>", other.id, 1)
    every = await store.conversation_refs(conv.id)
    assert [(r.channel, r.ref, r.seq) for r in every] == [
        (EMAIL, "<z-first@x>", 1), ("token", "AB12CD", None), (EMAIL, "<a-third@x>", 4)]
    assert all(r.conversation_id == conv.id for r in every)
    assert [r.ref for r in await store.conversation_refs(conv.id, EMAIL)] == ["<z-first@x>", "<a-third@x>"]
    assert [r.ref for r in await store.conversation_refs(conv.id, "token")] == ["AB12CD"]
    assert await store.conversation_refs(conv.id, "sms") == []
    assert await store.conversation_refs("no-such-conversation") == []


# the outbox: written with its event ----------------------------------------------------------------
async def test_append_with_outbox_writes_one_pending_item(store: Store) -> None:
    conv = await new_conversation(store)
    await reply(store, conv, "no delivery", outbox=None)
    event, created = await reply(store, conv, "deliver me")
    assert created
    [item] = await store.outbox_items(conv.id)
    assert (item.conversation_id, item.seq, item.channel, item.status, item.attempts) == (
        conv.id, event.seq, EMAIL, OutboxStatus.PENDING, 0)
    assert item.next_attempt_at == event.at == item.created_at  # due at once
    assert (item.last_error, item.sent_ref) == (None, None)
    assert len(item.id) == 32 and await store.outbox_item(item.id) == item
    assert await store.outbox_items("no-such-conversation") == []


async def test_a_resent_client_id_writes_no_outbox_item(store: Store) -> None:
    conv = await new_conversation(store)
    first, created = await reply(store, conv, "once", client_id="m-1")
    again, created_again = await reply(store, conv, "once (resent)", client_id="m-1")
    assert created and not created_again and again == first
    assert [item.seq for item in await store.outbox_items(conv.id)] == [first.seq]


async def test_an_unstorable_append_leaves_no_outbox_item(store: Store) -> None:
    conv = await new_conversation(store)
    outcomes = await asyncio.gather(
        reply(store, conv, "good"),
        reply(store, conv, "bad", data={"bad": object()}),
        reply(store, replace(conv, id="no-such-conversation"), "lost"),
        reply(store, conv, "good too"),
        return_exceptions=True)
    assert isinstance(outcomes[1], TypeError) and isinstance(outcomes[2], NotFound), outcomes
    assert [item.seq for item in await store.outbox_items(conv.id)] == [1, 2]
    assert [e.text for e in await store.events_after(conv.id, 0)] == ["good", "good too"]


async def test_many_concurrent_appends_with_and_without_outbox(store: Store) -> None:
    conversations = [await new_conversation(store) for _ in range(5)]
    calls = []
    for i in range(200):
        conv = conversations[i % 5]
        outbox = EMAIL if i % 2 else None
        client_id = f"c{i // 10}" if i % 3 == 0 else None  # some resends, with and without outbox
        calls.append(reply(store, conv, f"m{i}", outbox=outbox, client_id=client_id))
    calls.append(reply(store, conversations[0], "bad", data={"nan": float("nan")}))
    calls.append(reply(store, replace(conversations[1], id="no-such-conversation"), "lost"))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[-2], ValueError) and isinstance(outcomes[-1], NotFound)

    for k, conv in enumerate(conversations):
        wanted = sorted(event.seq for i, (event, created) in enumerate(outcomes[:200])  # type: ignore[misc]
                        if i % 5 == k and i % 2 and created)
        items = await store.outbox_items(conv.id)
        assert [item.seq for item in items] == wanted
        assert all(item.status is OutboxStatus.PENDING and item.attempts == 0 for item in items)
        events = await store.events_after(conv.id, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # gapless, as ever
    created_with_outbox = sum(1 for i, o in enumerate(outcomes[:200]) if i % 2 and o[1])  # type: ignore[index]
    assert (await store.outbox_counts()).get((EMAIL, OutboxStatus.PENDING)) == created_with_outbox


# the outbox: claims, retries, outcomes -------------------------------------------------------------
async def test_claim_hands_each_item_out_once(store: Store) -> None:
    items, due = await pending_items(store, 3)
    _, sms_due = await pending_items(store, 1, channel="sms")
    first = await store.claim_outbox(EMAIL, now=due, lease=60, limit=2)
    assert [i.id for i in first] == [i.id for i in items[:2]]  # longest due first
    assert all(i.attempts == 1 and i.status is OutboxStatus.PENDING for i in first)
    assert first[0] == replace(items[0], attempts=1)  # come back as claimed
    second = await store.claim_outbox(EMAIL, now=due, lease=60)
    assert [i.id for i in second] == [items[2].id]  # the claimed ones are not handed out again
    assert await store.claim_outbox(EMAIL, now=due, lease=60) == []
    assert (await store.outbox_item(items[0].id)).attempts == 1
    assert len(await store.claim_outbox("sms", now=sms_due, lease=60)) == 1  # each channel on its own


async def test_an_item_is_not_claimed_before_it_is_due(store: Store) -> None:
    items, due = await pending_items(store, 1)
    assert await store.claim_outbox(EMAIL, now=items[0].next_attempt_at - timedelta(microseconds=1), lease=60) == []
    assert len(await store.claim_outbox(EMAIL, now=due, lease=60)) == 1


async def test_an_expired_claim_can_be_claimed_again(store: Store) -> None:
    [item], t0 = await pending_items(store, 1)
    assert [i.attempts for i in await store.claim_outbox(EMAIL, now=t0, lease=30)] == [1]
    assert await store.claim_outbox(EMAIL, now=t0 + timedelta(seconds=29.999), lease=30) == []
    again = await store.claim_outbox(EMAIL, now=t0 + timedelta(seconds=30), lease=30)
    assert [(i.id, i.attempts) for i in again] == [(item.id, 2)]  # a process that died in it counts


async def test_retry_releases_the_claim_and_waits_until_it_is_due(store: Store) -> None:
    [item], t0 = await pending_items(store, 1)
    await store.claim_outbox(EMAIL, now=t0, lease=300)
    await store.retry_outbox(item.id, error="451 try later", next_attempt_at=t0 + timedelta(seconds=10))
    retried = await store.outbox_item(item.id)
    assert (retried.status, retried.attempts, retried.last_error) == (OutboxStatus.PENDING, 1, "451 try later")
    assert retried.next_attempt_at == t0 + timedelta(seconds=10)
    assert await store.claim_outbox(EMAIL, now=t0 + timedelta(seconds=9), lease=300) == []
    # Due again inside the first claim's lease: retry released it.
    assert [i.attempts for i in await store.claim_outbox(EMAIL, now=t0 + timedelta(seconds=10), lease=300)] == [2]


async def test_finish_ends_an_item_for_good(store: Store) -> None:
    (sent, failed, skipped), t0 = await pending_items(store, 3)
    await store.claim_outbox(EMAIL, now=t0, lease=60)
    await store.retry_outbox(sent.id, error="connection refused", next_attempt_at=t0)
    await store.claim_outbox(EMAIL, now=t0, lease=60)
    await store.finish_outbox(sent.id, OutboxStatus.SENT, sent_ref="<r1@gateway.example>")
    await store.finish_outbox(failed.id, OutboxStatus.FAILED, error="550 no such user")
    await store.finish_outbox(skipped.id, OutboxStatus.SKIPPED, error="bot interval")
    done = await store.outbox_item(sent.id)
    assert (done.status, done.attempts, done.sent_ref) == (OutboxStatus.SENT, 2, "<r1@gateway.example>")
    assert done.last_error == "connection refused"  # why it took two tries
    assert ((await store.outbox_item(failed.id)).status, (await store.outbox_item(failed.id)).last_error) == (
        OutboxStatus.FAILED, "550 no such user")
    assert (await store.outbox_item(skipped.id)).status is OutboxStatus.SKIPPED
    assert await store.claim_outbox(EMAIL, now=t0 + timedelta(days=1), lease=60) == []


async def test_a_finished_item_keeps_its_outcome(store: Store) -> None:
    # A twin that claimed the item after a lease ran out must neither undo a send nor send again.
    [item], t0 = await pending_items(store, 1)
    await store.finish_outbox(item.id, OutboxStatus.SENT, sent_ref="<r@x>")
    await store.retry_outbox(item.id, error="timeout", next_attempt_at=t0)
    await store.finish_outbox(item.id, OutboxStatus.FAILED, error="timeout")
    after = await store.outbox_item(item.id)
    assert (after.status, after.sent_ref, after.last_error) == (OutboxStatus.SENT, "<r@x>", None)
    assert await store.claim_outbox(EMAIL, now=t0 + timedelta(days=1), lease=60) == []


async def test_outbox_refusals(store: Store) -> None:
    [item], t0 = await pending_items(store, 1)
    for call in (store.finish_outbox("no-such-item", OutboxStatus.SENT),
                 store.retry_outbox("no-such-item", error="x", next_attempt_at=t0),
                 store.outbox_item("no-such-item")):
        with pytest.raises(NotFound):
            await call
    with pytest.raises(ValueError, match="retry_outbox"):
        await store.finish_outbox(item.id, OutboxStatus.PENDING)
    with pytest.raises(ValueError, match="timezone"):
        await store.claim_outbox(EMAIL, now=t0.replace(tzinfo=None), lease=60)
    with pytest.raises(ValueError, match="timezone"):
        await store.retry_outbox(item.id, error="x", next_attempt_at=t0.replace(tzinfo=None))
    for lease in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="lease"):
            await store.claim_outbox(EMAIL, now=t0, lease=lease)
    with pytest.raises(ValueError, match="limit"):
        await store.claim_outbox(EMAIL, now=t0, lease=60, limit=-1)
    assert await store.claim_outbox(EMAIL, now=t0, lease=60, limit=0) == []
    assert await store.outbox_item(item.id) == item  # none of it touched the item


async def test_outbox_counts_by_channel_and_status(store: Store) -> None:
    assert await store.outbox_counts() == {}
    items, t0 = await pending_items(store, 3)
    [sms], _ = await pending_items(store, 1, channel="sms")
    await store.finish_outbox(items[0].id, OutboxStatus.SENT)
    await store.finish_outbox(sms.id, OutboxStatus.FAILED, error="no route")
    assert await store.outbox_counts() == {(EMAIL, OutboxStatus.PENDING): 2, (EMAIL, OutboxStatus.SENT): 1,
                                           ("sms", OutboxStatus.FAILED): 1}


async def test_concurrent_claimers_in_two_processes_never_share_an_item(store: Store) -> None:
    items, due = await pending_items(store, 120)
    other = await open_store(store.url)  # a second gateway process: its own connections
    claimed: list[str] = []

    async def claimer(s: Store) -> None:
        while batch := await s.claim_outbox(EMAIL, now=due, lease=600, limit=7):
            claimed.extend(i.id for i in batch)

    try:
        await asyncio.gather(*(claimer(s) for _ in range(4) for s in (store, other)))
    finally:
        await other.close()
    assert sorted(claimed) == sorted(i.id for i in items)  # every item, each once
    assert {i.attempts for c in items for i in [await store.outbox_item(c.id)]} == {1}


# durability and availability ----------------------------------------------------------------------
async def test_channel_tables_survive_close_and_reopen(store: Store) -> None:
    conv = await new_conversation(store)
    attachment = await store.put_attachment(conv.id, name="a.txt", content_type="text/plain", data=b"kept")
    await store.add_ref(EMAIL, "<kept@x>", conv.id, 1)
    await reply(store, conv)
    [item] = await store.outbox_items(conv.id)
    await store.close()
    reopened = await open_store(store.url)
    try:
        assert await reopened.get_attachment(attachment.id) == (attachment, b"kept")
        assert (await reopened.find_ref(EMAIL, ["<kept@x>"])).conversation_id == conv.id  # type: ignore[union-attr]
        assert await reopened.outbox_item(item.id) == item
    finally:
        await reopened.close()


async def test_closed_store_is_unavailable_for_channel_tables(store: Store) -> None:
    conv = await new_conversation(store)
    await store.close()
    calls = (store.put_attachment(conv.id, name="a", content_type="text/plain", data=b"x"),
             store.get_attachment("x"), store.add_ref(EMAIL, "r", conv.id), store.find_ref(EMAIL, ["r"]),
             store.conversation_refs(conv.id), store.claim_outbox(EMAIL, now=utcnow(), lease=1),
             store.finish_outbox("x", OutboxStatus.SENT), store.outbox_item("x"), store.outbox_counts(),
             reply(store, conv))
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call

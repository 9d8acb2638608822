"""The text rule (gateway/store/text.py): what a store cannot hold is normalised the same way on
both engines, identifiers that hold it name nothing, and one append that cannot be stored fails
alone even when it shares a group commit with others."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from gateway.model import Author, EventKind, OutboxStatus
from gateway.store import NotFound, Store, StoreUnavailable
from gateway.store.batching import AppendBatcher, AppendRequest
from gateway.store.text import REPLACEMENT as R, bad_identifier, storable

NUL, LONE = "\x00", "\ud800"


def test_storable_replaces_nul_and_lone_surrogates_only() -> None:
    assert storable("plain") == "plain"
    assert storable("a\x00b") == f"a{R}b"
    assert storable("é\x00\ud83d🙂") == f"é{R}{R}🙂"  # a paired emoji stays as it is
    assert storable("tab\tand\x01ctrl") == "tab\tand\x01ctrl"  # storable, so kept in free text
    assert bad_identifier("m\x00") and bad_identifier("m\x01") and bad_identifier("m\ud800")
    assert not bad_identifier("msg-1_é🙂")


async def test_unstorable_text_is_normalised_alike_on_both_engines(store: Store) -> None:
    customer = await store.create_customer(
        name=f"Me{NUL}i{LONE}", attributes={f"k{NUL}": f"v{NUL}", "nested": {"list": [f"x{LONE}", 1.5]}})
    expected_attributes = {f"k{R}": f"v{R}", "nested": {"list": [f"x{R}", 1.5]}}
    assert (customer.name, customer.attributes) == (f"Me{R}i{R}", expected_attributes)
    assert await store.get_customer(customer.id) == customer

    updated = await store.update_customer(customer.id, name=f"Ada{NUL}", attributes={"email": f"a{NUL}@x.example"})
    assert (updated.name, updated.attributes) == (f"Ada{R}", {"email": f"a{R}@x.example"})

    await store.add_identity(customer.id, "email", f"ada{NUL}@x.example")
    assert [i.address for i in await store.identities(customer.id)] == [f"ada{R}@x.example"]
    found = await store.find_customer("email", f"ada{NUL}@x.example")  # found as it was stored
    assert found is not None and found.id == customer.id

    conversation = await store.create_conversation(customer.id, "webchat")
    event, created = await store.append_event(
        conversation.id, author=Author.CUSTOMER, kind=EventKind.MESSAGE, text=f"hi{NUL}there{LONE}",
        client_id="c1", data={f"note{NUL}": [f"n{LONE}"]})
    assert created and event.text == f"hi{R}there{R}" and event.data == {f"note{R}": [f"n{R}"]}
    assert await store.events_after(conversation.id, 0) == [event]


async def test_ids_no_store_can_hold_name_nothing(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    conversation = await store.create_conversation(customer.id, "webchat")
    for bad in (f"x{NUL}", f"x{LONE}"):
        with pytest.raises(NotFound):
            await store.get_customer(bad)
        with pytest.raises(NotFound):
            await store.update_customer(bad, name="x")
        with pytest.raises(NotFound):
            await store.add_identity(bad, "email", "a@x.example")
        with pytest.raises(NotFound):
            await store.create_conversation(bad, "webchat")
        with pytest.raises(NotFound):
            await store.get_conversation(bad)
        with pytest.raises(NotFound):
            await store.events_after(bad, 0)
        with pytest.raises(NotFound):
            await store.append_event(bad, author=Author.CUSTOMER, kind=EventKind.MESSAGE, text="hi")
        assert await store.identities(bad) == []
        assert await store.latest_conversation(bad, "webchat") is None
        with pytest.raises(ValueError):
            await store.create_customer(name="x", customer_id=bad)
        with pytest.raises(ValueError):
            await store.append_event(conversation.id, author=Author.CUSTOMER, kind=EventKind.MESSAGE,
                                     text="hi", client_id=bad)
    assert await store.events_after(conversation.id, 0) == []


async def test_channel_tables_follow_the_text_rule(store: Store) -> None:
    customer = await store.create_customer(name="Ada")
    conversation = await store.create_conversation(customer.id, "email")
    attachment = await store.put_attachment(conversation.id, name=f"a{NUL}b{LONE}.pdf",
                                            content_type=f"application/pdf{NUL}", data=b"\x00pdf")
    assert (attachment.name, attachment.content_type) == (f"a{R}b{R}.pdf", f"application/pdf{R}")
    assert await store.get_attachment(attachment.id) == (attachment, b"\x00pdf")  # bytes are bytes: kept

    # A ref is free text, like an identity's address: stored normalised, found as it was stored.
    assert await store.add_ref(f"email{NUL}", f"<m{NUL}@x>", conversation.id, 1)
    found = await store.find_ref(f"email{NUL}", [f"<m{NUL}@x>"])
    assert found is not None and (found.channel, found.ref) == (f"email{R}", f"<m{R}@x>")
    assert not await store.add_ref(f"email{R}", f"<m{LONE}@x>", conversation.id)  # the same ref, stored
    assert [r.ref for r in await store.conversation_refs(conversation.id, f"email{NUL}")] == [f"<m{R}@x>"]

    event, _ = await store.append_event(conversation.id, author=Author.AGENT, kind=EventKind.MESSAGE,
                                        text="hi", outbox=f"email{NUL}")
    [item] = await store.outbox_items(conversation.id)
    assert (item.channel, item.seq) == (f"email{R}", event.seq)
    [claimed] = await store.claim_outbox(f"email{NUL}", now=item.next_attempt_at, lease=60)
    await store.retry_outbox(item.id, error=f"refused{NUL}", next_attempt_at=item.next_attempt_at)
    assert (await store.outbox_item(item.id)).last_error == f"refused{R}"
    await store.finish_outbox(item.id, OutboxStatus.SENT, sent_ref=f"<r{LONE}@x>")
    assert (await store.outbox_item(item.id)).sent_ref == f"<r{R}@x>"
    assert await store.outbox_counts() == {(f"email{R}", OutboxStatus.SENT): 1}

    for bad in (f"x{NUL}", f"x{LONE}"):  # ids no store can hold name nothing
        with pytest.raises(NotFound):
            await store.get_attachment(bad)
        with pytest.raises(NotFound):
            await store.put_attachment(bad, name="a", content_type="text/plain", data=b"x")
        with pytest.raises(NotFound):
            await store.add_ref("email", "<n@x>", bad)
        with pytest.raises(NotFound):
            await store.outbox_item(bad)
        with pytest.raises(NotFound):
            await store.finish_outbox(bad, OutboxStatus.SENT)
        with pytest.raises(NotFound):
            await store.retry_outbox(bad, error="x", next_attempt_at=item.next_attempt_at)
        assert await store.conversation_refs(bad) == []
        assert await store.outbox_items(bad) == []


async def test_unstorable_appends_in_one_group_commit_fail_alone(store: Store) -> None:
    # 20 bystanders share group commits with a client id and a number no engine can hold: only
    # those two appends fail; every bystander's message is stored, NUL text normalised.
    customer = await store.create_customer(name="Ada")
    bystanders = [await store.create_conversation(customer.id, "webchat") for _ in range(20)]
    poisoned = await store.create_conversation(customer.id, "webchat")

    def say(conversation_id: str, text: str, **kw: Any) -> Any:
        return store.append_event(conversation_id, author=Author.CUSTOMER, kind=EventKind.MESSAGE, text=text, **kw)

    outcomes = await asyncio.gather(
        *(say(c.id, f"hello {i}", client_id=f"b{i}") for i, c in enumerate(bystanders[:10])),
        say(poisoned.id, "bad id", client_id=f"p{NUL}"),
        say(poisoned.id, "nan", data={"score": math.nan}),
        say(poisoned.id, f"nul{NUL}text", client_id="p2"),
        *(say(c.id, f"hello {i}", client_id=f"b{i}") for i, c in enumerate(bystanders[10:], start=10)),
        return_exceptions=True)
    assert isinstance(outcomes[10], ValueError) and isinstance(outcomes[11], ValueError), outcomes[10:12]
    for i, conversation in enumerate(bystanders):
        assert [(e.seq, e.text) for e in await store.events_after(conversation.id, 0)] == [(1, f"hello {i}")]
    assert [(e.seq, e.text) for e in await store.events_after(poisoned.id, 0)] == [(1, f"nul{R}text")]


# the batcher alone, with a write function that behaves as the engines promise ---------------------
class Engine:
    """Commits a batch all or nothing, like both engines: a poisoned request raises for the
    whole batch; ``down`` makes every write raise StoreUnavailable."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.writes = 0
        self.down = False

    async def write(self, batch: list[AppendRequest]) -> list[Any]:
        self.writes += 1
        await asyncio.sleep(0)
        if self.down:
            raise StoreUnavailable("database went away")
        if any(r.text == "poison" for r in batch):
            raise RuntimeError("the statement failed")  # e.g. a DataError: nothing committed
        self.committed.extend(r.conversation_id for r in batch)
        return [(r.conversation_id, True) for r in batch]


def request(conversation_id: str, text: str = "hi") -> AppendRequest:
    return AppendRequest(conversation_id, Author.CUSTOMER, EventKind.MESSAGE, text, None, {}, None)


async def test_batcher_fails_only_the_poisoned_append_and_commits_the_rest_in_order() -> None:
    engine = Engine()
    batcher = AppendBatcher(engine.write)
    requests = [request(f"c{i}", "poison" if i in (7, 30) else "hi") for i in range(40)]
    outcomes = await asyncio.gather(*(batcher.append(r) for r in requests), return_exceptions=True)
    for i, outcome in enumerate(outcomes):
        if i in (7, 30):
            assert isinstance(outcome, RuntimeError), (i, outcome)
        else:
            assert outcome == (f"c{i}", True), (i, outcome)
    assert engine.committed == [f"c{i}" for i in range(40) if i not in (7, 30)]  # each once, in order


async def test_batcher_fails_the_whole_batch_at_once_when_the_store_is_unavailable() -> None:
    engine = Engine()
    engine.down = True
    batcher = AppendBatcher(engine.write)
    outcomes = await asyncio.gather(*(batcher.append(request(f"c{i}")) for i in range(20)), return_exceptions=True)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes)
    assert engine.writes == 1  # not split and retried: nothing is wrong with the appends

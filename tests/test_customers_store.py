"""Identities, claims, merges and unmerges in the store (gateway/store/customer_links.py), on
both engines; concurrent merges on PostgreSQL; the upgrade of a version-4 database."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from gateway.model import Author, ConversationState, EventKind, StateChange
from gateway.store import NotFound, Store, open_store
from gateway.store.customer_links import MergeRefused, merged_profile
from gateway.store.migrations import MIGRATIONS
from tests.support import raw_execute


async def snapshot(store: Store, *customer_ids: str) -> dict[str, Any]:
    """Everything a merge may touch, field by field."""
    state: dict[str, Any] = {}
    for cid in customer_ids:
        customer = await store.get_customer(cid)
        state[cid] = {
            "customer": (customer.name, customer.tier, customer.attributes, customer.merged_into),
            "identities": sorted((i.channel, i.address, i.kind, i.source) for i in await store.identities(cid)),
            "claims": sorted((c.kind, c.address, c.channel) for c in await store.claims(cid)),
            "conversations": sorted(c.id for c in await store.list_conversations(customer_id=cid, limit=1000)),
        }
    return state


async def two_customers(store: Store) -> tuple[str, str]:
    mei = await store.create_customer(name="Mei Chen", tier="vip", attributes={"email": "mei@example.com", "plan": "gold"})
    await store.add_identity(mei.id, "mail", "mei@example.com", kind="email")
    await store.create_conversation(mei.id, "mail")
    visitor = await store.create_customer(name="Mei", attributes={"email": "mei@example.com", "plan": "free",
                                                                   "language": "zh"})
    await store.add_identity(visitor.id, "webchat", "token-hash-1", kind="webchat")
    await store.add_identity(visitor.id, "tg", "5553001", kind="telegram")
    await store.add_claim(visitor.id, "email", "mei@example.com", "webchat")
    await store.add_claim(visitor.id, "phone", "+4930123456", "webchat")
    await store.create_conversation(visitor.id, "webchat")
    await store.create_conversation(visitor.id, "tg")
    return mei.id, visitor.id


async def test_a_verified_identity_links_across_channels_by_kind(store: Store) -> None:
    first, created = await store.identify_verified("mail", "mei@example.com", kind="email", name="Mei",
                                                   attributes={"email": "mei@example.com"})
    assert created
    again, created = await store.identify_verified("support-mail", "mei@example.com", kind="email", name=None,
                                                   attributes={})
    assert (again.id, created) == (first.id, False)  # another channel of the same kind: the same customer
    other, created = await store.identify_verified("tg", "mei@example.com", kind="telegram", name=None, attributes={})
    assert created and other.id != first.id  # another kind is another identity
    alone, created = await store.identify_verified("ivr", "+4930123456", kind="phone", name=None, attributes={},
                                                   link=False)
    assert created
    assert [(i.channel, i.kind) for i in await store.identities(first.id)] == [("mail", "email"), ("support-mail", "email")]
    assert (await store.find_verified("email", "mei@example.com")).id == first.id  # type: ignore[union-attr]
    assert await store.find_verified("email", "nobody@example.com") is None


async def test_relinking_a_verified_identity_moves_every_row_of_it(store: Store) -> None:
    a = await store.create_customer(name="A")
    b = await store.create_customer(name="B")
    await store.add_identity(a.id, "mail", "x@example.com", kind="email")
    await store.add_identity(a.id, "support-mail", "x@example.com", kind="email")
    await store.add_identity(b.id, "email", "x@example.com", kind="email", source="admin")
    assert await store.identities(a.id) == []
    assert [(i.channel, i.source) for i in await store.identities(b.id)] == [
        ("email", "admin"), ("mail", "channel"), ("support-mail", "channel")]


async def test_claims_never_link(store: Store) -> None:
    mei = await store.create_customer(name="Mei")
    await store.add_identity(mei.id, "mail", "mei@example.com", kind="email")
    visitor = await store.create_customer(name=None)
    assert await store.add_claim(visitor.id, "email", "mei@example.com", "webchat")
    assert not await store.add_claim(visitor.id, "email", "mei@example.com", "webchat")  # once
    assert (await store.find_verified("email", "mei@example.com")).id == mei.id  # type: ignore[union-attr]
    [claim] = await store.claims(visitor.id)
    assert (claim.kind, claim.address, claim.verified, claim.channel) == ("email", "mei@example.com", False, "webchat")
    await store.drop_claim(visitor.id, "email", "mei@example.com")
    assert await store.claims(visitor.id) == []


async def test_merge_then_unmerge_gives_back_the_exact_prior_state(store: Store) -> None:
    mei, visitor = await two_customers(store)
    target_claim = await store.create_customer(name="unused")  # a third customer nobody touches
    before = await snapshot(store, mei, visitor, target_claim.id)

    merge = await store.merge_customers(mei, visitor, by="admin")
    merged = await snapshot(store, mei, visitor)
    assert merged[visitor]["identities"] == merged[visitor]["claims"] == merged[visitor]["conversations"] == []
    assert merged[visitor]["customer"][3] == mei  # merged_into
    assert merged[mei]["conversations"] == sorted(before[mei]["conversations"] + before[visitor]["conversations"])
    assert merged[mei]["identities"] == sorted(before[mei]["identities"] + before[visitor]["identities"])
    assert merged[mei]["claims"] == sorted(before[visitor]["claims"])
    # The target's value wins; what it lacks comes from the other; what lost is kept in the audit.
    assert merged[mei]["customer"][:3] == ("Mei Chen", "vip", {"email": "mei@example.com", "plan": "gold", "language": "zh"})
    assert merge.moved["kept_from_source"] == {"plan": "free", "(name)": "Mei"}
    assert [m.id for m in await store.customer_merges(visitor)] == [merge.id]
    conversation = await store.create_conversation(visitor, "webchat")  # a merged customer's lands on the target
    assert conversation.customer_id == mei
    assert await store.add_identity(visitor, "webchat", "token-hash-2", kind="webchat") == mei

    with pytest.raises(MergeRefused) as refused:
        await store.merge_customers(visitor, target_claim.id, by="admin")
    assert refused.value.code == "already_merged"

    undone = await store.unmerge_customers(mei, merge.id, by="admin")
    assert undone.undone_by == "admin" and undone.undone_at is not None
    after = await snapshot(store, mei, visitor, target_claim.id)
    # Exactly as before, except what the target gained after the merge: it stays with the target.
    after[mei]["conversations"].remove(conversation.id)
    after[mei]["identities"].remove(("webchat", "token-hash-2", "webchat", "channel"))
    assert after == before

    with pytest.raises(MergeRefused) as refused:
        await store.unmerge_customers(mei, merge.id, by="admin")
    assert refused.value.code == "already_undone"


async def test_merge_refusals(store: Store) -> None:
    mei, visitor = await two_customers(store)
    with pytest.raises(MergeRefused) as refused:
        await store.merge_customers(mei, mei, by="admin")
    assert refused.value.code == "same_customer"
    with pytest.raises(NotFound):
        await store.merge_customers(mei, "nobody", by="admin")
    with pytest.raises(NotFound):
        await store.merge_customers("nobody", mei, by="admin")
    with pytest.raises(NotFound):
        await store.unmerge_customers(mei, "no-such-merge", by="admin")
    merge = await store.merge_customers(mei, visitor, by="admin")
    with pytest.raises(NotFound):  # a merge is undone through its target
        await store.unmerge_customers(visitor, merge.id, by="admin")


async def test_unmerge_refuses_what_would_lose_a_later_change(store: Store) -> None:
    mei, visitor = await two_customers(store)
    merge = await store.merge_customers(mei, visitor, by="admin")
    await store.update_customer(mei, tier="platinum")
    with pytest.raises(MergeRefused) as refused:
        await store.unmerge_customers(mei, merge.id, by="admin")
    assert refused.value.code == "profile_changed" and "tier" in str(refused.value)
    await store.update_customer(mei, tier="vip")  # put back: the unmerge may go on

    third = await store.create_customer(name="Bo")
    later = await store.merge_customers(third.id, mei, by="admin")
    with pytest.raises(MergeRefused) as refused:
        await store.unmerge_customers(mei, merge.id, by="admin")
    assert refused.value.code == "later_merge" and later.id in str(refused.value)
    await store.unmerge_customers(third.id, later.id, by="admin")

    other = await store.create_customer(name="Other")
    await store.add_identity(other.id, "tg", "5553001", kind="telegram", source="admin")  # one moved identity
    with pytest.raises(MergeRefused) as refused:
        await store.unmerge_customers(mei, merge.id, by="admin")
    assert refused.value.code == "identity_moved" and "5553001" in str(refused.value)
    await store.add_identity(mei, "tg", "5553001", kind="telegram")
    assert (await store.unmerge_customers(mei, merge.id, by="admin")).undone_at is not None


def test_the_merge_rule_target_wins() -> None:
    from gateway.model import Customer

    target = Customer(id="t", name=None, tier="vip", attributes={"a": 1, "b": 2})
    source = Customer(id="s", name="Mei", tier="standard", attributes={"b": 3, "c": 4})
    after, lost = merged_profile(target, source)
    assert after == {"name": "Mei", "tier": "vip", "attributes": {"a": 1, "b": 2, "c": 4}}
    assert lost == {"b": 3, "(tier)": "standard"}


async def test_concurrent_merges_on_postgres_lose_nothing(pg_url: str) -> None:
    stores = [await open_store(pg_url) for _ in range(3)]
    try:
        store = stores[0]
        customers = []
        for n in range(6):
            customer = await store.create_customer(name=f"c{n}")
            await store.add_identity(customer.id, "mail", f"c{n}@example.com", kind="email")
            for _ in range(2):
                await store.create_conversation(customer.id, "mail")
            customers.append(customer.id)
        all_conversations = {c.id for cid in customers for c in await store.list_conversations(customer_id=cid)}
        # Overlapping merges from three connections pools at once, in both directions, with
        # identities and conversations added to the customers being merged meanwhile.
        pairs = [(0, 1), (1, 0), (1, 2), (2, 3), (3, 2), (4, 5), (5, 4), (0, 5), (3, 4)]

        async def merge(i: int, target: int, source: int) -> None:
            try:
                await stores[i % 3].merge_customers(customers[target], customers[source], by="admin")
            except MergeRefused:
                pass  # one of two merges of the same pair wins; the other finds it merged

        async def add(i: int, n: int) -> None:
            conversation = await stores[i % 3].create_conversation(customers[n], "webchat")
            all_conversations.add(conversation.id)
            await stores[(i + 1) % 3].add_identity(customers[n], "webchat", f"hash-{i}", kind="webchat")

        await asyncio.gather(*[merge(i, t, s) for i, (t, s) in enumerate(pairs)], *[add(i, i % 6) for i in range(6)])
        live = [cid for cid in customers if (await store.get_customer(cid)).merged_into is None]
        owners: dict[str, str] = {}
        for cid in customers:
            for identity in await store.identities(cid):
                assert cid in live, f"identity {identity} on merged customer {cid}"
                owners[identity.address] = cid
            for conversation in await store.list_conversations(customer_id=cid, limit=100):
                assert cid in live, f"conversation on merged customer {cid}"
                all_conversations.discard(conversation.id)
        assert all_conversations == set()  # every conversation is on a live customer
        assert set(owners) == {f"c{n}@example.com" for n in range(6)} | {f"hash-{i}" for i in range(6)}
    finally:
        for opened in stores:
            await opened.close()


async def test_a_version_4_database_upgrades_with_its_identities(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.store import migrations

    with monkeypatch.context() as at_version_4:
        at_version_4.setattr(migrations, "MIGRATIONS", tuple(m for m in MIGRATIONS if m.version <= 4))
        old = await open_store(store_url)
        await old.close()
    now = datetime.now().astimezone()
    at: object = now.isoformat(timespec="microseconds") if store_url.startswith("sqlite") else now
    for sql, args in (("INSERT INTO customers (id, name, created_at) VALUES (?, 'Mei', ?)", ("old-mei", at)),
                      ("INSERT INTO identities (channel, address, customer_id) VALUES ('email', 'mei@example.com', "
                       "'old-mei')", ()),
                      ("INSERT INTO identities (channel, address, customer_id) VALUES ('tg-cn', '42', 'old-mei')", ())):
        await raw_execute(store_url, sql, *args)
    upgraded = await open_store(store_url)
    try:
        assert sorted((i.channel, i.kind, i.source) for i in await upgraded.identities("old-mei")) == [
            ("email", "email", "channel"), ("tg-cn", "tg-cn", "channel")]
        await upgraded.set_identity_kinds({"tg-cn": "telegram", "email": "email"})  # what the gateway does at start
        assert (await upgraded.find_verified("telegram", "42")).id == "old-mei"  # type: ignore[union-attr]
        customer, created = await upgraded.identify_verified("mail", "mei@example.com", kind="email", name=None,
                                                             attributes={})
        assert (customer.id, created, customer.merged_into) == ("old-mei", False, None)
        conversation = await upgraded.create_conversation("old-mei", "mail")
        await upgraded.append_event(conversation.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                                    change=StateChange(ConversationState.CLOSED))
    finally:
        await upgraded.close()

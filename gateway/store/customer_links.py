"""Identities, claims and merges: one implementation for both engines.

Each engine hands :class:`CustomerLinks` a :class:`LinkTx`, one transaction with its dialect
(placeholders, timestamps, row locks). What is kept:

- ``identities``: the verified identities, keyed by (channel, address), the channel's own
  lookup; ``kind`` (the channel's type) and the normalised address say who it is across
  channels. A verified (kind, address) belongs to one customer: linking it anywhere moves every
  row of it.
- ``identity_claims``: what a customer typed in (kind, address); never a link, several
  customers may claim one address.
- ``customer_merges``: the audit of every merge, with what moved, so an unmerge puts it back
  exactly. A merged customer keeps its row with ``merged_into``; whatever is added to it later
  (an identity, a conversation) lands on the customer it was merged into.

Concurrency: on PostgreSQL a merge locks both customer rows ``FOR UPDATE`` in id order (two
merges of the same customers queue up, never deadlock), and additions lock the customer they
add to ``FOR SHARE``, so they wait for a merge under way and then follow it. A verified
identity is taken under an advisory lock on its (kind, address). SQLite runs one write
transaction at a time.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any, AsyncContextManager, Awaitable, Callable, Protocol, Sequence, TypeVar

from ..model import Conversation, Customer, CustomerMerge, Identity, utcnow
from .base import NotFound, StoreError
from .text import cannot_hold, dumps, storable, storable_json

T = TypeVar("T")
CUSTOMER_COLS = "id, name, tier, attributes, created_at, merged_into"
MAX_MERGE_HOPS = 64  # a chain of merges longer than this is a bug, not data


class MergeRefused(StoreError):
    """A merge or unmerge that cannot be done; ``code`` and the message say why (the API's 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class TransientConflict(StoreError):
    """The database broke a lock cycle by aborting this transaction (PostgreSQL's deadlock
    detection); nothing of it was written, and :func:`retried` runs it again."""


RETRIES = 5


def retried(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a whole transaction again when it was aborted to break a lock cycle: rare (an
    addition following a merge chain while merges of the same customers run), and harmless,
    as the aborted attempt wrote nothing."""
    @functools.wraps(method)
    async def run(*args: Any, **kwargs: Any) -> T:
        for attempt in range(RETRIES):
            try:
                return await method(*args, **kwargs)
            except TransientConflict:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    return run


class LinkTx(Protocol):
    """One transaction of an engine. SQL is written with ``?`` placeholders."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    def at(self, value: datetime | None) -> Any: ...          # a timestamp as the engine stores it
    def read_at(self, value: Any) -> datetime | None: ...
    async def lock_customers(self, ids: Sequence[str], *, share: bool = False) -> None: ...
    async def lock_identity(self, kind: str, address: str) -> None: ...


def _customer(tx: LinkTx, row: Any) -> Customer:
    return Customer(id=row["id"], name=row["name"], tier=row["tier"], attributes=json.loads(row["attributes"]),
                    created_at=tx.read_at(row["created_at"]) or utcnow(), merged_into=row["merged_into"])


async def customer_row(tx: LinkTx, customer_id: str) -> Customer | None:
    rows = await tx.fetch(f"SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?", customer_id)
    return _customer(tx, rows[0]) if rows else None


async def live_customer(tx: LinkTx, customer_id: str) -> Customer:
    """The customer, or the one it was merged into, locked FOR SHARE on PostgreSQL (a merge
    under way finishes first; one that merges it meanwhile waits for this transaction). The
    chain is read without locks and only the live end is locked, so an addition never holds a
    merged customer's row while it waits for another. NotFound when absent."""
    current = customer_id
    for _ in range(MAX_MERGE_HOPS):
        if cannot_hold(current):
            break
        customer = await customer_row(tx, current)
        if customer is None:
            break
        if customer.merged_into is not None:
            current = customer.merged_into
            continue
        await tx.lock_customers([current], share=True)
        customer = await customer_row(tx, current)  # as of the lock: a merge may have committed
        if customer is None:
            break
        if customer.merged_into is None:
            return customer
        current = customer.merged_into
    raise NotFound(f"customer {customer_id!r} not found")


async def insert_conversation(tx: LinkTx, conversation: Conversation) -> Conversation:
    """Insert a new conversation; a merged customer's goes to the customer it was merged into."""
    customer = await live_customer(tx, conversation.customer_id)
    await tx.execute("INSERT INTO conversations (id, customer_id, channel, state, queue, agent_id, last_seq, "
                     "created_at, updated_at, closed_at) VALUES (?, ?, ?, ?, NULL, NULL, 0, ?, ?, NULL)",
                     conversation.id, customer.id, conversation.channel, conversation.state.value,
                     tx.at(conversation.created_at), tx.at(conversation.updated_at))
    return replace(conversation, customer_id=customer.id)


def _merge(tx: LinkTx, row: Any) -> CustomerMerge:
    moved = row["moved"]
    return CustomerMerge(id=row["id"], target_id=row["target_id"], source_id=row["source_id"],
                         merged_by=row["merged_by"], merged_at=tx.read_at(row["merged_at"]) or utcnow(),
                         moved=json.loads(moved) if isinstance(moved, str) else moved,
                         undone_at=tx.read_at(row["undone_at"]), undone_by=row["undone_by"])


def _profile(customer: Customer) -> dict[str, Any]:
    return {"name": customer.name, "tier": customer.tier, "attributes": customer.attributes}


def merged_profile(target: Customer, source: Customer) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the target's profile after the merge, the source's values the target's won over).

    The rule (docs/customers.md): the target's value wins; a name or tier the target lacks is
    the source's; attributes are the union, the target's value where both have the key."""
    attributes = {**source.attributes, **target.attributes}
    lost = {k: v for k, v in source.attributes.items() if k in target.attributes and target.attributes[k] != v}
    for key in ("name", "tier"):
        mine, theirs = getattr(target, key), getattr(source, key)
        if mine and theirs and mine != theirs:
            lost[f"({key})"] = theirs
    return {"name": target.name or source.name, "tier": target.tier or source.tier,
            "attributes": attributes}, lost


class CustomerLinks:
    """Identities, claims and merges; a part of each store (see the engines' ``_links``)."""

    _links: Callable[..., AsyncContextManager[LinkTx]]  # _links(write=False) for reads

    # verified identities ----------------------------------------------------------------------
    @retried
    async def add_identity(self, customer_id: str, channel: str, address: str, *, kind: str | None = None,
                           source: str = "channel") -> str:
        """Link (channel, address) to the customer (or the one it was merged into; its id is
        returned). A verified (kind, address) belongs to one customer: every row of it moves."""
        if cannot_hold(customer_id):
            raise NotFound(f"customer {customer_id!r} not found")
        channel, address = storable(channel), storable(address)
        kind = storable(kind or channel)
        async with self._links() as tx:
            await tx.lock_identity(kind, address)
            customer = await live_customer(tx, customer_id)
            await _put_identity(tx, customer.id, channel, address, kind, source)
        return customer.id

    @retried
    async def identify_verified(self, channel: str, address: str, *, kind: str, name: str | None,
                                attributes: dict[str, Any], source: str = "channel",
                                link: bool = True) -> tuple[Customer, bool]:
        """(customer, created): the customer of (channel, address); else, when ``link``, the one
        holding a verified identity of (kind, address) on any channel (this row is added to it);
        else a new customer with this identity. One transaction, so two first contacts of one
        person at once make one customer."""
        channel, address, kind = storable(channel), storable(address), storable(kind)
        async with self._links() as tx:
            await tx.lock_identity(kind, address)
            rows = await tx.fetch("SELECT customer_id FROM identities WHERE channel = ? AND address = ?",
                                  channel, address)
            if rows:
                return await live_customer(tx, rows[0]["customer_id"]), False
            if link:
                rows = await tx.fetch("SELECT customer_id FROM identities WHERE kind = ? AND address = ? "
                                      "ORDER BY channel LIMIT 1", kind, address)
                if rows:
                    customer = await live_customer(tx, rows[0]["customer_id"])
                    await _put_identity(tx, customer.id, channel, address, kind, source)
                    return customer, False
            customer = Customer(id=uuid.uuid4().hex, name=None if name is None else storable(name), tier=None,
                                attributes=storable_json(dict(attributes)), created_at=utcnow())
            await tx.execute("INSERT INTO customers (id, name, tier, attributes, created_at) VALUES (?, ?, ?, ?, ?)",
                             customer.id, customer.name, None, dumps(customer.attributes), tx.at(customer.created_at))
            await _put_identity(tx, customer.id, channel, address, kind, source)
            return customer, True

    async def find_customer(self, channel: str, address: str) -> Customer | None:
        channel, address = storable(channel), storable(address)  # found as add_identity stored it
        async with self._links(write=False) as tx:
            rows = await tx.fetch("SELECT customer_id FROM identities WHERE channel = ? AND address = ?",
                                  channel, address)
            return await customer_row(tx, rows[0]["customer_id"]) if rows else None

    async def find_verified(self, kind: str, address: str) -> Customer | None:
        """The customer holding a verified identity (kind, address) on any channel."""
        async with self._links(write=False) as tx:
            rows = await tx.fetch("SELECT customer_id FROM identities WHERE kind = ? AND address = ? "
                                  "ORDER BY channel LIMIT 1", storable(kind), storable(address))
            return await customer_row(tx, rows[0]["customer_id"]) if rows else None

    async def identities(self, customer_id: str) -> Sequence[Identity]:
        """Every verified identity of the customer, sorted by channel and address."""
        if cannot_hold(customer_id):
            return []
        async with self._links(write=False) as tx:
            rows = await tx.fetch("SELECT channel, address, customer_id, kind, source FROM identities "
                                  "WHERE customer_id = ? ORDER BY channel, address", customer_id)
        return [Identity(r["channel"], r["address"], r["customer_id"], kind=r["kind"] or r["channel"],
                         source=r["source"]) for r in rows]

    @retried
    async def set_identity_kinds(self, kinds: dict[str, str]) -> None:
        """channel name -> type: rows of a channel whose name is not its type (a renamed or a
        second channel of a type) learn their kind. Run at start; cheap when nothing changes."""
        async with self._links() as tx:
            for channel, kind in sorted(kinds.items()):
                if channel != kind:
                    await tx.execute("UPDATE identities SET kind = ? WHERE channel = ? AND kind = ?",
                                     kind, channel, channel)

    # claims -------------------------------------------------------------------------------------
    @retried
    async def add_claim(self, customer_id: str, kind: str, address: str, channel: str | None) -> bool:
        """Record that the customer says it is (kind, address). False when already claimed."""
        kind, address = storable(kind), storable(address)
        async with self._links() as tx:
            customer = await live_customer(tx, customer_id)
            if await tx.fetch("SELECT 1 FROM identity_claims WHERE customer_id = ? AND kind = ? AND address = ?",
                              customer.id, kind, address):
                return False
            await tx.execute("INSERT INTO identity_claims (customer_id, kind, address, channel, created_at) "
                             "VALUES (?, ?, ?, ?, ?)", customer.id, kind, address, channel, tx.at(utcnow()))
        return True

    async def claims(self, customer_id: str) -> Sequence[Identity]:
        if cannot_hold(customer_id):
            return []
        async with self._links(write=False) as tx:
            rows = await tx.fetch("SELECT customer_id, kind, address, channel FROM identity_claims "
                                  "WHERE customer_id = ? ORDER BY kind, address", customer_id)
        return [Identity(r["channel"] or "", r["address"], r["customer_id"], kind=r["kind"], verified=False,
                         source="claimed") for r in rows]

    @retried
    async def drop_claim(self, customer_id: str, kind: str, address: str) -> None:
        async with self._links() as tx:
            await tx.execute("DELETE FROM identity_claims WHERE customer_id = ? AND kind = ? AND address = ?",
                             customer_id, storable(kind), storable(address))

    # merges -------------------------------------------------------------------------------------
    @retried
    async def merge_customers(self, target_id: str, source_id: str, *, by: str) -> CustomerMerge:
        """Move the source's identities, claims and conversations to the target, merge the
        profiles (``merged_profile``) and record it all. NotFound for an unknown customer;
        MergeRefused for a customer into itself or one already merged."""
        if target_id == source_id:
            raise MergeRefused("same_customer", f"cannot merge customer {target_id!r} into itself")
        for customer_id in (target_id, source_id):
            if cannot_hold(customer_id):
                raise NotFound(f"customer {customer_id!r} not found")
        async with self._links() as tx:
            await tx.lock_customers(sorted({target_id, source_id}))
            target, source = await customer_row(tx, target_id), await customer_row(tx, source_id)
            for wanted, found in ((target_id, target), (source_id, source)):
                if found is None:
                    raise NotFound(f"customer {wanted!r} not found")
                if found.merged_into is not None:
                    raise MergeRefused("already_merged", f"customer {wanted!r} was merged into "
                                       f"{found.merged_into!r}; merge with that one, or unmerge first")
            assert target is not None and source is not None
            identities = await tx.fetch("SELECT channel, address, kind, source, created_at FROM identities "
                                        "WHERE customer_id = ? ORDER BY channel, address", source.id)
            claims = await tx.fetch("SELECT kind, address, channel, 'claimed' AS source, created_at FROM identity_claims "
                                    "WHERE customer_id = ? ORDER BY kind, address", source.id)
            held = {(r["kind"], r["address"]) for r in await tx.fetch(
                "SELECT kind, address FROM identity_claims WHERE customer_id = ?", target.id)}
            conversations = [r["id"] for r in await tx.fetch(
                "SELECT id FROM conversations WHERE customer_id = ? ORDER BY id", source.id)]
            after, lost = merged_profile(target, source)
            moved_claims = [c for c in claims if (c["kind"], c["address"]) not in held]
            dropped = [c for c in claims if (c["kind"], c["address"]) in held]
            await tx.execute("UPDATE identities SET customer_id = ? WHERE customer_id = ?", target.id, source.id)
            await tx.execute("UPDATE identity_claims SET customer_id = ? WHERE customer_id = ? AND NOT EXISTS "
                             "(SELECT 1 FROM identity_claims t WHERE t.customer_id = ? AND t.kind = identity_claims.kind "
                             "AND t.address = identity_claims.address)", target.id, source.id, target.id)
            await tx.execute("DELETE FROM identity_claims WHERE customer_id = ?", source.id)
            await tx.execute("UPDATE conversations SET customer_id = ? WHERE customer_id = ?", target.id, source.id)
            await tx.execute("UPDATE customers SET name = ?, tier = ?, attributes = ? WHERE id = ?",
                             after["name"], after["tier"], dumps(after["attributes"]), target.id)
            await tx.execute("UPDATE customers SET merged_into = ? WHERE id = ?", target.id, source.id)
            moved = {"identities": [_row_json(tx, r) for r in identities],
                     "claims": [_row_json(tx, r) for r in moved_claims],
                     "dropped_claims": [_row_json(tx, r) for r in dropped],
                     "conversations": conversations,
                     "target_before": _profile(target), "target_after": after, "kept_from_source": lost}
            merge = CustomerMerge(id=uuid.uuid4().hex, target_id=target.id, source_id=source.id, merged_by=storable(by),
                                  merged_at=utcnow(), moved=moved, undone_at=None, undone_by=None)
            await tx.execute("INSERT INTO customer_merges (id, target_id, source_id, merged_by, merged_at, moved) "
                             "VALUES (?, ?, ?, ?, ?, ?)", merge.id, merge.target_id, merge.source_id, merge.merged_by,
                             tx.at(merge.merged_at), dumps(moved))
        return merge

    @retried
    async def unmerge_customers(self, target_id: str, merge_id: str, *, by: str) -> CustomerMerge:
        """Put back exactly what ``merge_id`` moved into ``target_id``. NotFound for an unknown
        merge of this customer; MergeRefused (with what changed) when something done since
        conflicts: a later merge of either customer, a changed profile, a moved identity,
        claim or conversation. What the target gained after the merge stays with it."""
        if cannot_hold(target_id) or cannot_hold(merge_id):
            raise NotFound(f"no merge {merge_id!r} into customer {target_id!r}")
        async with self._links() as tx:
            rows = await tx.fetch("SELECT * FROM customer_merges WHERE id = ? AND target_id = ?", merge_id, target_id)
            if not rows:
                raise NotFound(f"no merge {merge_id!r} into customer {target_id!r}")
            merge = _merge(tx, rows[0])
            await tx.lock_customers(sorted({merge.target_id, merge.source_id}))
            rows = await tx.fetch("SELECT * FROM customer_merges WHERE id = ?", merge_id)  # after the locks
            merge = _merge(tx, rows[0])
            if merge.undone_at is not None:
                raise MergeRefused("already_undone", f"merge {merge_id!r} was undone at {merge.undone_at.isoformat()}")
            later = await tx.fetch(
                "SELECT id FROM customer_merges WHERE undone_at IS NULL AND id <> ? AND merged_at >= ? AND "
                "(target_id IN (?, ?) OR source_id IN (?, ?)) ORDER BY merged_at", merge.id, tx.at(merge.merged_at),
                merge.target_id, merge.source_id, merge.target_id, merge.source_id)
            if later:
                raise MergeRefused("later_merge", f"merge {later[0]['id']!r} involved these customers after this one; "
                                   "unmerge it first")
            target = await customer_row(tx, merge.target_id)
            source = await customer_row(tx, merge.source_id)
            assert target is not None and source is not None  # customers are never deleted
            if source.merged_into != target.id:
                raise MergeRefused("not_merged", f"customer {source.id!r} is no longer merged into {target.id!r}")
            now = _profile(target)
            changed = [key for key in ("name", "tier", "attributes") if now[key] != merge.moved["target_after"][key]]
            if changed:
                raise MergeRefused("profile_changed", f"customer {target.id!r}'s {', '.join(changed)} changed since "
                                   "the merge; an unmerge would lose that change")
            moved = merge.moved
            for row in moved["identities"]:
                found = await tx.fetch("SELECT customer_id FROM identities WHERE channel = ? AND address = ?",
                                       row["channel"], row["address"])
                if not found or found[0]["customer_id"] != target.id:
                    raise MergeRefused("identity_moved", f"identity {row['channel']}:{row['address']} is no longer "
                                       f"on customer {target.id!r}")
            for row in moved["claims"]:
                if not await tx.fetch("SELECT 1 FROM identity_claims WHERE customer_id = ? AND kind = ? AND address = ?",
                                      target.id, row["kind"], row["address"]):
                    raise MergeRefused("claim_changed", f"claim {row['kind']}:{row['address']} is no longer on "
                                       f"customer {target.id!r} (verified or dropped since)")
            for conversation_id in moved["conversations"]:
                found = await tx.fetch("SELECT customer_id FROM conversations WHERE id = ?", conversation_id)
                if not found or found[0]["customer_id"] != target.id:
                    raise MergeRefused("conversation_moved", f"conversation {conversation_id!r} is no longer "
                                       f"customer {target.id!r}'s")
            for row in moved["identities"]:
                await tx.execute("UPDATE identities SET customer_id = ? WHERE channel = ? AND address = ?",
                                 source.id, row["channel"], row["address"])
            for row in moved["claims"]:
                await tx.execute("DELETE FROM identity_claims WHERE customer_id = ? AND kind = ? AND address = ?",
                                 target.id, row["kind"], row["address"])
            for row in [*moved["claims"], *moved["dropped_claims"]]:
                await tx.execute("INSERT INTO identity_claims (customer_id, kind, address, channel, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)", source.id, row["kind"], row["address"], row["channel"],
                                 tx.at(_parse(row["created_at"])))
            for conversation_id in moved["conversations"]:
                await tx.execute("UPDATE conversations SET customer_id = ? WHERE id = ?", source.id, conversation_id)
            before = moved["target_before"]
            await tx.execute("UPDATE customers SET name = ?, tier = ?, attributes = ? WHERE id = ?",
                             before["name"], before["tier"], dumps(before["attributes"]), target.id)
            await tx.execute("UPDATE customers SET merged_into = NULL WHERE id = ?", source.id)
            undone = utcnow()
            await tx.execute("UPDATE customer_merges SET undone_at = ?, undone_by = ? WHERE id = ?",
                             tx.at(undone), storable(by), merge.id)
        return CustomerMerge(id=merge.id, target_id=merge.target_id, source_id=merge.source_id,
                             merged_by=merge.merged_by, merged_at=merge.merged_at, moved=merge.moved,
                             undone_at=undone, undone_by=storable(by))

    async def customer_merges(self, customer_id: str) -> Sequence[CustomerMerge]:
        """Every merge into or from the customer, oldest first."""
        if cannot_hold(customer_id):
            return []
        async with self._links(write=False) as tx:
            rows = await tx.fetch("SELECT * FROM customer_merges WHERE target_id = ? OR source_id = ? "
                                  "ORDER BY merged_at, id", customer_id, customer_id)
            return [_merge(tx, r) for r in rows]


async def _put_identity(tx: LinkTx, customer_id: str, channel: str, address: str, kind: str, source: str) -> None:
    # Every row of this (kind, address) is one person's: relinking moves them all.
    await tx.execute("UPDATE identities SET customer_id = ? WHERE kind = ? AND address = ? AND customer_id <> ?",
                     customer_id, kind, address, customer_id)
    await tx.execute(
        "INSERT INTO identities (channel, address, customer_id, kind, source, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (channel, address) DO UPDATE SET customer_id = excluded.customer_id, kind = excluded.kind",
        channel, address, customer_id, kind, storable(source), tx.at(utcnow()))


def _row_json(tx: LinkTx, row: Any) -> dict[str, Any]:
    created = row["created_at"]
    at = tx.read_at(created) if created is not None else None
    return {"channel": row["channel"], "address": row["address"], "kind": row["kind"], "source": row["source"],
            "created_at": at.isoformat() if at is not None else None}


def _parse(value: str | None) -> datetime:
    return datetime.fromisoformat(value) if value else utcnow()

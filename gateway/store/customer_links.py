"""Identities and claims (merges: customer_merges.py): one implementation for both engines.

Each engine hands :class:`CustomerLinks` a :class:`~gateway.store.link_tx.LinkTx`, one
transaction with its dialect (placeholders, timestamps, row locks). What is kept:

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
merges of the same customers queue up), and additions lock the customer they add to ``FOR
SHARE``, so they wait for a merge under way and then follow it. A verified identity is taken
under an advisory lock on its (kind, address). The rare lock cycle PostgreSQL breaks by aborting
one transaction is retried (link_tx.retried). SQLite runs one write transaction at a time.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, AsyncContextManager, Callable, Sequence

from ..model import Conversation, Customer, Identity, utcnow
from .base import NotFound
from .customer_merges import CustomerMerges, merged_profile
from .link_tx import CUSTOMER_COLS, LinkTx, MergeRefused, TransientConflict, customer_row, retried
from .text import cannot_hold, dumps, storable, storable_json

MAX_MERGE_HOPS = 64  # a chain of merges longer than this is a bug, not data


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


class CustomerLinks(CustomerMerges):
    """Identities and claims (merges: customer_merges.py); a part of each store (see the
    engines' ``_links``)."""

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

async def _put_identity(tx: LinkTx, customer_id: str, channel: str, address: str, kind: str, source: str) -> None:
    # Every row of this (kind, address) is one person's: relinking moves them all.
    await tx.execute("UPDATE identities SET customer_id = ? WHERE kind = ? AND address = ? AND customer_id <> ?",
                     customer_id, kind, address, customer_id)
    await tx.execute(
        "INSERT INTO identities (channel, address, customer_id, kind, source, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (channel, address) DO UPDATE SET customer_id = excluded.customer_id, kind = excluded.kind",
        channel, address, customer_id, kind, storable(source), tx.at(utcnow()))


__all__ = ["CUSTOMER_COLS", "CustomerLinks", "LinkTx", "MergeRefused", "TransientConflict", "insert_conversation",
           "live_customer", "merged_profile", "retried"]

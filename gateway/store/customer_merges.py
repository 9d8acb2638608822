"""Merges and unmerges of customers, audited (the ``customer_merges`` table), for both engines
over customer_links.py's transaction seam. The rules are in docs/customers.md."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, AsyncContextManager, Callable, Sequence

from ..model import Customer, CustomerMerge, utcnow
from .base import NotFound
from .link_tx import LinkTx, MergeRefused, customer_row, retried
from .text import cannot_hold, dumps, storable


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


class CustomerMerges:
    """The merge half of :class:`~gateway.store.customer_links.CustomerLinks`."""

    _links: Callable[..., AsyncContextManager[LinkTx]]

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
            # The same person learned again on another channel since (the merged email now also
            # on a second mailbox): moving the old row back would put one identity on two customers.
            taken = {(row["channel"], row["address"]) for row in moved["identities"]}
            for row in moved["identities"]:
                if row.get("kind") is None:
                    continue
                for again in await tx.fetch("SELECT channel, address FROM identities WHERE customer_id = ? AND "
                                            "kind = ? AND address = ?", target.id, row["kind"], row["address"]):
                    if (again["channel"], again["address"]) not in taken:
                        raise MergeRefused("identity_added", f"identity {row['kind']}:{row['address']} was learned "
                                           f"again on channel {again['channel']!r} since the merge; an unmerge would "
                                           "put it on two customers")
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


def _row_json(tx: LinkTx, row: Any) -> dict[str, Any]:
    created = row["created_at"]
    at = tx.read_at(created) if created is not None else None
    return {"channel": row["channel"], "address": row["address"], "kind": row["kind"], "source": row["source"],
            "created_at": at.isoformat() if at is not None else None}


def _parse(value: str | None) -> datetime:
    return datetime.fromisoformat(value) if value else utcnow()

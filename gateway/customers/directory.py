"""Who a contact is: one customer across channels.

- A **verified** identity (the channel proves it: an email's From, a Telegram user id, a caller
  id, a signed web chat identity, an address the admin API set) that matches another
  customer's verified identity of the same kind links at once: the contact is that customer.
- A **claimed** identity (typed by the customer: the email in the web chat form) never links
  and never reveals anything to the customer. When it matches another customer's verified
  identity it is a **link suggestion**, shown to agents only; an agent's confirmation or a
  one-time code mailed to the address turns it into a merge.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from ..model import Customer, CustomerMerge
from ..store import Store
from ..store.customer_links import MergeRefused
from .addresses import BadAddress, normalise

log = logging.getLogger("contactgate.customers")

Address = tuple[str, str]  # (kind, address)


# Channel types whose addresses are of another identity kind.
CHANNEL_KINDS = {"ivr": "phone"}


class CustomerDirectory:
    """Identify, suggest, link, merge and unmerge customers (the store keeps the rows)."""

    def __init__(self, store: Store, kinds: Callable[[], dict[str, str]]) -> None:
        self.store = store
        self._kinds = kinds  # channel name -> channel type, from the live config

    def kind_of(self, channel: str) -> str:
        """The identity kind of a channel's own addresses: its type (email, telegram, webchat),
        ``phone`` for a voice channel (the caller id the provider vouches for)."""
        kind = self._kinds().get(channel, channel)
        return CHANNEL_KINDS.get(kind, kind)

    async def identify(self, channel: str, address: str, *, name: str | None = None,
                       profile: dict[str, Any] | None = None, verified: bool = True, kind: str | None = None,
                       also: Sequence[Address] = (), claims: Sequence[Address] = ()) -> Customer:
        """The customer known by (channel, address); else the one a verified identity of
        ``also`` or of the address itself belongs to; else a new one.

        ``verified`` False: the address identifies the customer on this channel only (it is
        kept as a claim of its kind too). ``also``: more verified identities of the contact
        (a signed web chat user id and email). ``claims``: what the customer typed in."""
        kind = kind or self.kind_of(channel)
        profile = {k: v for k, v in (profile or {}).items() if v not in (None, "")}
        if verified:
            address = _normal(kind, address)
        customer = await self.store.find_customer(channel, address)
        more = [(also_kind, _normal(also_kind, also_address)) for also_kind, also_address in also]
        if customer is None and more:
            first_kind, first_address = more.pop(0)
            customer, _ = await self.store.identify_verified(
                channel, first_address, kind=first_kind, name=name, attributes=profile, source="signed")
            await self.store.add_identity(customer.id, channel, address, kind=kind)
        elif customer is None:
            customer, created = await self.store.identify_verified(
                channel, address, kind=kind, name=name, attributes=profile, link=verified,
                source="channel" if verified else "unverified")
            if created:
                log.info("new customer", extra={"customer_id": customer.id, "channel": channel})
            elif verified:
                log.info("identity linked", extra={"customer_id": customer.id, "channel": channel, "kind": kind})
        elif customer.merged_into is not None:
            customer = await self.store.get_customer(customer.merged_into)
        for also_kind, also_address in more:
            await self.store.add_identity(customer.id, channel, also_address, kind=also_kind, source="signed")
        if not verified:
            claims = [*claims, (kind, address)]
        await self._claim(customer, channel, claims)
        if (name and not customer.name) or any(customer.attributes.get(k) != v for k, v in profile.items()):
            customer = await self.store.update_customer(
                customer.id, name=customer.name or name, attributes={**customer.attributes, **profile})
        return customer

    async def _claim(self, customer: Customer, channel: str, claims: Sequence[Address]) -> None:
        if not claims:
            return
        mine = {(i.kind, i.address) for i in await self.store.identities(customer.id)}
        for claim_kind, claim_address in claims:
            try:
                claim_address = normalise(claim_kind, claim_address)
            except BadAddress:
                continue  # what a customer typed need not be an address; it is not a claim then
            if (claim_kind, claim_address) not in mine:
                await self.store.add_claim(customer.id, claim_kind, claim_address, channel)

    async def suggestions(self, customer: Customer) -> list[dict[str, Any]]:
        """The customer's claims that match another customer's verified identity: for agents
        only (never shown to the customer)."""
        found: list[dict[str, Any]] = []
        for claim in await self.store.claims(customer.id):
            other = await self.store.find_verified(claim.kind, claim.address)
            if other is None or other.id == customer.id:
                continue
            earlier = await self.store.list_conversations(customer_id=other.id, limit=100)
            found.append({"customer_id": other.id, "name": other.name, "kind": claim.kind, "address": claim.address,
                          "conversations": len(earlier), "tier": other.tier})
        return found

    async def merge(self, target_id: str, source_id: str, *, by: str) -> CustomerMerge:
        merge = await self.store.merge_customers(target_id, source_id, by=by)
        log.info("customers merged", extra={"merge_id": merge.id, "into": target_id, "from": source_id, "by": by})
        return merge

    async def unmerge(self, target_id: str, merge_id: str, *, by: str) -> CustomerMerge:
        merge = await self.store.unmerge_customers(target_id, merge_id, by=by)
        log.info("merge undone", extra={"merge_id": merge.id, "into": target_id, "from": merge.source_id, "by": by})
        return merge

    async def confirm_suggestion(self, customer_id: str, other_id: str, *, by: str) -> CustomerMerge:
        """An agent confirms a suggestion: the visitor (``customer_id``) merges into the
        customer whose verified identity it claimed. Only a pending suggestion may be confirmed."""
        customer = await self.store.get_customer(customer_id)
        if not any(s["customer_id"] == other_id for s in await self.suggestions(customer)):
            raise MergeRefused("no_suggestion", f"customer {customer_id!r} has no link suggestion to {other_id!r}")
        return await self.merge(other_id, customer_id, by=by)

    async def prove_claim(self, customer_id: str, kind: str, address: str) -> CustomerMerge | None:
        """The customer proved (kind, address) (a mailed code came back): a customer who holds
        it verified absorbs this one; else it becomes this customer's verified identity."""
        other = await self.store.find_verified(kind, address)
        await self.store.drop_claim(customer_id, kind, address)
        if other is not None and other.id != customer_id:
            return await self.merge(other.id, customer_id, by="code")
        await self.store.add_identity(customer_id, kind, address, kind=kind, source="code")
        return None


def _normal(kind: str, address: str) -> str:
    try:
        return normalise(kind, address)
    except BadAddress:
        # A channel's own address it cannot spell otherwise: kept as the channel gave it.
        return address.strip() or address

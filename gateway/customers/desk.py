"""The customer side of the desk: the 360 in offers, the agent's frames about customers
(``customer``, ``history``, ``merge_customers``/``link_customers``, ``send_verification``),
the visitor's ``verify_email`` and ``verify`` frames, and what agents are told after a merge.

Frames and their answers are in docs/protocol.md; the rules in docs/customers.md.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from routing import Contact, resolve_tier

from ..model import Author, Conversation, ConversationState, Customer, CustomerMerge, EventKind, StateChange
from ..store import NotFound
from ..store.customer_links import MergeRefused
from .codes import CODE_SENDS, CODE_TTL
from .view import customer_360

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger("contactgate.customers")

AGENT_CUSTOMER_FRAMES = ("customer", "history", "merge_customers", "link_customers", "send_verification")
HISTORY_PAGE = 50  # events per history frame at most


class CustomerDesk:
    def __init__(self, pipeline: "Pipeline") -> None:
        self.pipeline = pipeline

    @property
    def store(self):  # type: ignore[no-untyped-def]
        return self.pipeline.store

    def _error(self, code: str, message: str) -> Exception:
        from ..pipeline import ConversationError  # the pipeline imports this module

        return ConversationError(code, message)

    # the 360 ------------------------------------------------------------------------------------
    def tier_of(self, customer: Customer, conversation: Conversation | None) -> tuple[str | None, str]:
        """(tier, why): the conversation's routing tier when it has one, else what the profile
        and tier rules give now (``profile``, ``tiers.rules[i]``, ``tiers.default``, ``crm``)."""
        config = self.pipeline.config
        attributes = customer.attributes
        contact = Contact(channel=conversation.channel if conversation else "", email=attributes.get("email"),
                          phone=attributes.get("phone"), attributes=attributes, language=attributes.get("language"))
        tier, why = resolve_tier(config.tiers, customer.tier, contact)
        routed = self.pipeline.routed_tier(conversation.id) if conversation is not None else None
        return routed if routed is not None else (tier, why)

    async def view(self, customer_id: str, conversation: Conversation | None = None, *,
                   tier_now: bool = False) -> dict[str, Any]:
        """The 360; about ``conversation`` (left out of the history), with the tier it was
        routed with unless ``tier_now``: what routing would give a new conversation now."""
        customer = await self.live(customer_id)
        # The tier as routing would give it: with the email or phone of the verified identities.
        tier, why = self.tier_of(await self._with_identities(customer), None if tier_now else conversation)
        return await customer_360(self.store, self.pipeline.customers, customer, tier=tier, tier_reason=why,
                                  current=conversation.id if conversation else None)

    async def routing_customer(self, customer_id: str) -> Customer:
        """The customer as routing sees it: the live one (after merges), with the ``email`` and
        ``phone`` attributes it lacks taken from its verified identities, so tier rules and the
        CRM lookup match an address learned on any channel."""
        return await self._with_identities(await self.live(customer_id))

    async def _with_identities(self, customer: Customer) -> Customer:
        missing = [kind for kind in ("email", "phone") if not customer.attributes.get(kind)]
        if not missing:
            return customer
        found = {i.kind: i.address for i in await self.store.identities(customer.id) if i.kind in missing}
        return replace(customer, attributes={**customer.attributes, **found}) if found else customer

    async def live(self, customer_id: str) -> Customer:
        customer = await self.store.get_customer(customer_id)
        for _ in range(64):
            if customer.merged_into is None:
                break
            customer = await self.store.get_customer(customer.merged_into)
        return customer

    # agent frames ---------------------------------------------------------------------------------
    async def agent_frame(self, agent_id: str, kind: str, conversation_id: str, frame: dict[str, Any]) -> dict[str, Any]:
        """The answer to one of AGENT_CUSTOMER_FRAMES about a conversation the agent works or is
        offered; ConversationError otherwise."""
        if not await self._may_see(agent_id, conversation_id):
            raise self._error("unknown_conversation", f"conversation {conversation_id!r} is not yours")
        conversation = await self.pipeline.get_conversation(conversation_id)
        if kind == "customer":
            return {"type": "customer", "conversation_id": conversation_id,
                    "customer": await self.view(conversation.customer_id, conversation)}
        if kind == "history":
            return await self._history(conversation, frame)
        if kind in ("merge_customers", "link_customers"):
            other = frame.get("customer_id")
            if not isinstance(other, str) or not other:
                raise self._error("bad_frame", f'"{kind}" needs the suggestion\'s "customer_id"')
            try:
                merge = await self.pipeline.customers.confirm_suggestion(conversation.customer_id, other,
                                                                        by=f"agent:{agent_id}")
            except MergeRefused as exc:
                raise self._error(exc.code, str(exc)) from None
            await self.merged(merge)
            conversation = await self.pipeline.get_conversation(conversation_id)
            return {"type": "customers_merged", "conversation_id": conversation_id, "merge": merge.summary(),
                    "customer": await self.view(conversation.customer_id, conversation)}
        if kind == "send_verification":
            address = await self.send_code(conversation)
            return {"type": "verification_sent", "conversation_id": conversation_id, "kind": "email",
                    "address": address, "expires_in": CODE_TTL}
        raise self._error("unknown_type", f"unknown frame type {kind!r}")

    async def _may_see(self, agent_id: str, conversation_id: str) -> bool:
        try:
            return await self.pipeline.agent_may_see(agent_id, conversation_id)
        except NotFound:
            return False

    async def _history(self, conversation: Conversation, frame: dict[str, Any]) -> dict[str, Any]:
        """One earlier conversation of the same customer, paged by seq."""
        from ..hub import event_frame  # the hub imports this module

        of, after, limit = frame.get("of"), frame.get("after", 0), frame.get("limit", HISTORY_PAGE)
        if not isinstance(of, str) or not of:
            raise self._error("bad_frame", '"history" needs "of": the id of one of the customer\'s conversations')
        if (any(not isinstance(v, int) or isinstance(v, bool) for v in (after, limit))
                or after < 0 or not 1 <= limit <= HISTORY_PAGE):
            raise self._error("bad_frame", f'"after" must be a seq >= 0 and "limit" 1-{HISTORY_PAGE}')
        try:
            earlier = await self.store.get_conversation(of)
        except NotFound:
            earlier = None
        if earlier is None or earlier.customer_id != conversation.customer_id:
            # The same answer for another customer's conversation as for none at all.
            raise self._error("unknown_conversation", f"no conversation {of!r} of this customer")
        events = list(await self.store.events_after(of, after, limit + 1))
        more = len(events) > limit
        events = events[:limit]
        return {"type": "history", "conversation_id": conversation.id, "of": of, "channel": earlier.channel,
                "state": earlier.state.value, "events": [event_frame(e) for e in events],
                "next_after": events[-1].seq if more and events else None}

    # verification by code ---------------------------------------------------------------------------
    async def send_verification(self, conversation_id: str) -> str:
        return await self.send_code(await self.pipeline.get_conversation(conversation_id))

    async def send_code(self, conversation: Conversation) -> str:
        """Mail a one-time code to the email the conversation's customer claimed, through the
        configured email channel's outbox. Returns the address."""
        customer = await self.live(conversation.customer_id)
        email = customer.attributes.get("email")
        claimed = {c.address for c in await self.store.claims(customer.id) if c.kind == "email"}
        if not isinstance(email, str) or email.lower() not in claimed:
            raise self._error("nothing_to_verify", "there is no claimed email to verify (say hello with an email)")
        channel = next((c.channel_name for c in self.pipeline.config.channels if c.type == "email"), None)
        if channel is None:
            raise self._error("no_email_channel", "verification by code mails the code; no email channel is configured")
        address = email.lower()
        code = await self.pipeline.codes.new(conversation.id, "email", address)
        if code is None:
            raise self._error("too_many_codes", f"this conversation asked for {CODE_SENDS} codes already; "
                              "an agent can link the customer instead")
        # A conversation of its own on the email channel carries the mail: the outbox delivers it
        # (retries, delivery_failed) to the customer's email, the claimed address.
        mail = await self.store.create_conversation(customer.id, channel)
        minutes = int(CODE_TTL // 60)
        await self.store.append_event(mail.id, author=Author.BOT, kind=EventKind.MESSAGE, outbox=channel,
                                      text=f"Your verification code is {code}. Type it in the chat within "
                                           f"{minutes} minutes. If you did not ask for it, ignore this mail.",
                                      data={"verification": True, "subject": "Your verification code"})
        await self.store.append_event(mail.id, author=Author.SYSTEM, kind=EventKind.CLOSED,
                                      data={"closed_by": "verification"},
                                      change=StateChange(ConversationState.CLOSED))
        log.info("verification code sent", extra={"customer_id": customer.id, "channel": channel})
        return address

    async def verify(self, conversation_id: str, code: str) -> dict[str, Any]:
        """The visitor typed a code. The answer never says anything of another customer."""
        checked = await self.pipeline.codes.check(conversation_id, code)
        proved = checked.proved
        if checked.outcome != "verified" or proved is None:
            return {"type": "verify_failed", "reason": checked.outcome, "tries_left": checked.tries_left}
        conversation = await self.pipeline.get_conversation(conversation_id)
        merge = await self.pipeline.customers.prove_claim(conversation.customer_id, *proved)
        if merge is not None:
            await self.merged(merge)
        return {"type": "verified", "kind": proved[0]}

    # after a merge or an unmerge --------------------------------------------------------------------
    async def merged(self, merge: CustomerMerge, *, undone: bool = False) -> None:
        """Open conversations stay where they are; their agents are told, with the new 360."""
        moved = set(merge.moved["conversations"])
        self.pipeline.customers_moved(moved, merge.source_id if undone else merge.target_id,
                                      merge.source_id, merge.target_id)
        for customer_id in (merge.target_id, merge.source_id):
            for conversation in await self.store.list_conversations(customer_id=customer_id, limit=100):
                if not conversation.state.is_open or conversation.agent_id is None:
                    continue
                frame = {"type": "customer_unmerged" if undone else "customer_merged",
                         "conversation_id": conversation.id, "merge": merge.summary(),
                         # The customer's tier now (what the next conversation gets; this one
                         # keeps the tier it was routed with); the history without it, as in the offer.
                         "customer": await self.view(conversation.customer_id, conversation, tier_now=True)}
                self.pipeline.notice(conversation.agent_id, frame)

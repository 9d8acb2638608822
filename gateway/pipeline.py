"""The pipeline: the only code that moves a conversation from one state to the next.

    bot --(handoff)--> queued --(offer)--> offered --(accept)--> assigned --(close)--> closed
                          ^                   |
                          +--(offer withdrawn)+

Every step is one store transaction that appends an event and changes the state together; the
event is then published to the customer's channel and the agent hub. A per-conversation lock
keeps each conversation's steps in order; the dispatch lock is always taken before a
conversation lock, never after, so the two cannot deadlock.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import weakref
from dataclasses import replace
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

from adapters.base import Inbound, Receipt
from routing import Contact, WaitingEntry, choose_queue, resolve_tier

from .config import GatewayConfig
from .dispatcher import Dispatcher, Presence
from .logs import about
from .model import (
    Author, Conversation, ConversationState as S, Customer, Event, EventKind, StateChange, utcnow,
)
from .selfservice import Answer, Handoff, SelfService
from .store import NotFound, Store

log = logging.getLogger("contactgate.pipeline")

Subscriber = Callable[[Conversation, Event], Awaitable[None]]


class ConversationError(Exception):
    """A request that does not fit the conversation's state. ``code`` goes into error frames."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class Pipeline:
    def __init__(self, config: GatewayConfig, store: Store, selfservice: SelfService,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.store = store
        self.selfservice = selfservice
        self.clock = clock
        self.dispatcher = Dispatcher(config.agents)
        self._subscribers: list[Subscriber] = []
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._dispatch_lock = asyncio.Lock()
        self._unanswered: dict[str, int] = {}

    @property
    def max_frame_bytes(self) -> int:
        return self.config.server.max_frame_bytes

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
        return lock

    # start-up --------------------------------------------------------------------------------
    async def recover(self) -> None:
        """Rebuild queues and agent load from the store after a restart."""
        for conversation in await self.store.open_conversations():
            with about(conversation.id):
                if conversation.state is S.ASSIGNED and conversation.agent_id:
                    self.dispatcher.restore_assignment(conversation.id, conversation.agent_id)
                elif conversation.state in (S.QUEUED, S.OFFERED) and conversation.queue:
                    customer = await self.store.get_customer(conversation.customer_id)
                    entry = self._waiting_entry(conversation, customer, conversation.queue, conversation.updated_at)
                    self.dispatcher.enqueue(entry)
                    if conversation.state is S.OFFERED:
                        # The offer died with the old process: the conversation waits again.
                        await self._append(conversation, Author.SYSTEM, EventKind.QUEUED,
                                           data=self._queued_data(conversation.id, conversation.queue, "restart"),
                                           change=StateChange(S.QUEUED, agent_id=None))
        log.info("recovered open conversations", extra={"waiting": len(self.dispatcher.waiting)})

    # customers -------------------------------------------------------------------------------
    async def identify(self, channel: str, address: str, *, name: str | None = None,
                       profile: dict[str, Any] | None = None) -> Customer:
        """The customer known by (channel, address); a new one when unknown.

        An email in the profile links to the customer already known by that email, so a VIP
        pushed by the CRM is recognised on any channel.
        """
        profile = {k: v for k, v in (profile or {}).items() if v not in (None, "")}
        customer = await self.store.find_customer(channel, address)
        if customer is None and profile.get("email"):
            customer = await self.store.find_customer("email", str(profile["email"]).lower())
            if customer is not None:
                await self.store.add_identity(customer.id, channel, address)
        if customer is None:
            customer = await self.store.create_customer(name=name, attributes=profile)
            await self.store.add_identity(customer.id, channel, address)
            if profile.get("email"):
                await self.store.add_identity(customer.id, "email", str(profile["email"]).lower())
            log.info("new customer", extra={"customer_id": customer.id, "channel": channel})
        elif (name and not customer.name) or any(customer.attributes.get(k) != v for k, v in profile.items()):
            customer = await self.store.update_customer(
                customer.id, name=customer.name or name, attributes={**customer.attributes, **profile})
        return customer

    async def identify_known(self, channel: str, address: str) -> Customer | None:
        return await self.store.find_customer(channel, address)

    async def current_conversation(self, customer: Customer, channel: str, *,
                                   seen_seq: int = 0) -> tuple[Conversation, bool]:
        """(conversation, is_new): the customer's open conversation on this channel; or the last
        closed one while it still has events the customer has not seen; else a new one."""
        latest = await self.store.latest_conversation(customer.id, channel)
        if latest is not None and (latest.state.is_open or latest.last_seq > seen_seq):
            return latest, False
        conversation = await self.store.create_conversation(customer.id, channel)
        with about(conversation.id):
            log.info("conversation opened", extra={"customer_id": customer.id, "channel": channel})
            if self.config.selfservice.greeting:
                async with self._lock(conversation.id):
                    conversation, _ = await self._append(
                        conversation, Author.BOT, EventKind.MESSAGE, text=self.config.selfservice.greeting)
        return conversation, True

    async def get_conversation(self, conversation_id: str) -> Conversation:
        try:
            return await self.store.get_conversation(conversation_id)
        except NotFound:
            raise ConversationError("unknown_conversation", f"no conversation {conversation_id!r}") from None

    async def events_after(self, conversation_id: str, seq: int, limit: int | None = None) -> Sequence[Event]:
        return await self.store.events_after(conversation_id, seq, limit)

    # customer side -------------------------------------------------------------------------------
    async def receive(self, inbound: Inbound) -> Receipt:
        """One message from a channel that has no session of its own (email, messaging apps)."""
        customer = await self.identify(inbound.channel, inbound.address, name=inbound.name, profile=inbound.profile)
        # Such channels have no "seen" cursor: a closed conversation is over, the next message opens a new one.
        conversation, _ = await self.current_conversation(customer, inbound.channel, seen_seq=2**62)
        return await self.customer_message(conversation.id, inbound.text, inbound.client_id)

    async def customer_message(self, conversation_id: str, text: str, client_id: str | None) -> Receipt:
        routed = False
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self.get_conversation(conversation_id)
                if not conversation.state.is_open:
                    # A resend of a message stored before the close is still acknowledged.
                    if client_id is not None:
                        existing = await self._existing(conversation, client_id)
                        if existing is not None:
                            return Receipt(existing, False)
                    raise ConversationError("conversation_closed", "this conversation is closed; say hello again to start a new one")
                conversation, (event, created) = await self._append_receipt(
                    conversation, Author.CUSTOMER, EventKind.MESSAGE, text=text, client_id=client_id)
                if created and conversation.state is S.BOT:
                    routed = await self._self_service(conversation, text)
            if routed:
                await self.dispatch()
            return Receipt(event, created)

    async def customer_leaves(self, conversation_id: str) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self.get_conversation(conversation_id)
                if not conversation.state.is_open:
                    return
                await self._close(conversation, closed_by="customer")
            await self.dispatch()

    async def _self_service(self, conversation: Conversation, text: str) -> bool:
        """Answer or hand off. Returns True when the conversation went to routing."""
        reply = self.selfservice.reply(text, self._unanswered.get(conversation.id, 0))
        if isinstance(reply, Answer):
            self._unanswered.pop(conversation.id, None)
            await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=reply.text,
                               data={"faq": reply.faq_id, "score": round(reply.score, 3)})
            return False
        if not isinstance(reply, Handoff):
            self._unanswered[conversation.id] = self._unanswered.get(conversation.id, 0) + 1
            await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=reply.text, data={"faq": None})
            return False
        self._unanswered.pop(conversation.id, None)
        conversation, _ = await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=reply.text,
                                             data={"handoff": reply.reason})
        await self._route(conversation)
        return True

    async def _route(self, conversation: Conversation) -> None:
        customer = await self.store.get_customer(conversation.customer_id)
        contact = self._contact(conversation, customer)
        decision = choose_queue(self.config.routing, contact)
        entry = self._waiting_entry(conversation, customer, decision.queue, self.clock())
        self.dispatcher.enqueue(entry)
        data = self._queued_data(conversation.id, decision.queue, "handoff")
        data.update(tier=contact.tier, rule=decision.rule)
        log.info("queued", extra={"queue": decision.queue, "tier": contact.tier, "rule": decision.rule,
                                  "position": data["position"]})
        await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                           change=StateChange(S.QUEUED, queue=decision.queue, agent_id=None))

    def _contact(self, conversation: Conversation, customer: Customer) -> Contact:
        attributes = customer.attributes
        contact = Contact(channel=conversation.channel, email=attributes.get("email"),
                          phone=attributes.get("phone"), attributes=attributes)
        tier, _why = resolve_tier(self.config.tiers, customer.tier, contact)
        return replace(contact, tier=tier)

    def _waiting_entry(self, conversation: Conversation, customer: Customer, queue: str, since: datetime) -> WaitingEntry:
        tier = self._contact(conversation, customer).tier or self.config.tiers.default
        queue_config = next((q for q in self.config.queues if q.name == queue), None)
        priority = queue_config.priority.get(tier, 0) if queue_config else 0
        return WaitingEntry(conversation.id, queue, priority, since)

    def _queued_data(self, conversation_id: str, queue: str, reason: str) -> dict[str, Any]:
        return {"queue": queue, "position": self.dispatcher.position(conversation_id) or 1, "reason": reason}

    # routing -----------------------------------------------------------------------------------
    async def dispatch(self) -> None:
        """Offer waiting conversations to free agents until no offer can be made."""
        async with self._dispatch_lock:
            while True:
                made = 0
                for offer in self.dispatcher.plan(self.clock()):
                    with about(offer.conversation_id, offer.agent_id):
                        async with self._lock(offer.conversation_id):
                            if not self.dispatcher.can_offer(offer):
                                continue
                            conversation = await self.store.get_conversation(offer.conversation_id)
                            if conversation.state is not S.QUEUED:
                                continue
                            customer = await self.store.get_customer(conversation.customer_id)
                            self.dispatcher.offered(offer)
                            log.info("offered", extra={"queue": offer.queue})
                            summary = {"id": customer.id, "name": customer.name,
                                       "tier": self._contact(conversation, customer).tier}
                            await self._append(conversation, Author.SYSTEM, EventKind.OFFERED,
                                               data={"agent_id": offer.agent_id, "queue": offer.queue, "customer": summary},
                                               change=StateChange(S.OFFERED, agent_id=offer.agent_id))
                            made += 1
                if not made:
                    return

    # agent side --------------------------------------------------------------------------------
    async def accept(self, agent_id: str, conversation_id: str) -> Event:
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                if self.dispatcher.offer_of(conversation_id) != agent_id:
                    raise ConversationError("no_offer", f"conversation {conversation_id!r} is not offered to you")
                conversation = await self.get_conversation(conversation_id)
                agent = self.dispatcher.agents[agent_id]
                self.dispatcher.accepted(conversation_id, agent_id)
                log.info("assigned")
                _, event = await self._append(conversation, Author.SYSTEM, EventKind.ASSIGNED,
                                              data={"agent": {"id": agent_id, "name": agent.name}},
                                              change=StateChange(S.ASSIGNED, agent_id=agent_id))
                return event

    async def agent_message(self, agent_id: str, conversation_id: str, text: str, client_id: str | None) -> Receipt:
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                conversation = await self._assigned_to(agent_id, conversation_id)
                _, (event, created) = await self._append_receipt(
                    conversation, Author.AGENT, EventKind.MESSAGE, text=text, client_id=client_id,
                    data={"agent_id": agent_id})
                return Receipt(event, created)

    async def agent_close(self, agent_id: str, conversation_id: str, disposition: str | None = None) -> Event:
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                conversation = await self._assigned_to(agent_id, conversation_id)
                event = await self._close(conversation, closed_by=agent_id, disposition=disposition)
            await self.dispatch()
            return event

    async def set_presence(self, agent_id: str, status: Presence) -> None:
        with about(agent=agent_id):
            log.info("presence", extra={"status": status})
            ended = self.dispatcher.set_presence(agent_id, status, self.clock())
            for conversation_id in ended:
                await self.withdraw_offer(conversation_id, reason="agent_" + status)
            await self.dispatch()

    async def withdraw_offer(self, conversation_id: str, reason: str) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                agent_id = self.dispatcher.withdraw_offer(conversation_id, self.clock())
                if agent_id is None:
                    return
                conversation = await self.store.get_conversation(conversation_id)
                if conversation.state is not S.OFFERED or conversation.queue is None:
                    return
                log.info("offer withdrawn", extra={"reason": reason, "agent_id": agent_id})
                data = self._queued_data(conversation_id, conversation.queue, reason)
                data["withdrawn_from"] = agent_id
                await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                                   change=StateChange(S.QUEUED, agent_id=None))

    async def _assigned_to(self, agent_id: str, conversation_id: str) -> Conversation:
        conversation = await self.get_conversation(conversation_id)
        if conversation.state is not S.ASSIGNED or conversation.agent_id != agent_id:
            raise ConversationError("not_assigned", f"conversation {conversation_id!r} is not assigned to you")
        return conversation

    async def _close(self, conversation: Conversation, closed_by: str, disposition: str | None = None) -> Event:
        self.dispatcher.forget(conversation.id, self.clock())
        self._unanswered.pop(conversation.id, None)
        log.info("closed", extra={"closed_by": closed_by, "state_before": conversation.state.value})
        _, event = await self._append(conversation, Author.SYSTEM, EventKind.CLOSED,
                                      data={"closed_by": closed_by, "disposition": disposition,
                                            "state_before": conversation.state.value},
                                      change=StateChange(S.CLOSED))
        return event

    # the one way events are written --------------------------------------------------------------
    async def _append(self, conversation: Conversation, author: Author, kind: EventKind, *,
                      text: str | None = None, data: dict[str, Any] | None = None,
                      change: StateChange | None = None) -> tuple[Conversation, Event]:
        conversation, (event, _) = await self._append_receipt(conversation, author, kind, text=text, data=data, change=change)
        return conversation, event

    async def _append_receipt(self, conversation: Conversation, author: Author, kind: EventKind, *,
                              text: str | None = None, client_id: str | None = None,
                              data: dict[str, Any] | None = None, change: StateChange | None = None,
                              ) -> tuple[Conversation, tuple[Event, bool]]:
        event, created = await self.store.append_event(
            conversation.id, author=author, kind=kind, text=text, client_id=client_id, data=data, change=change)
        if not created:
            return conversation, (event, False)
        conversation = _after(conversation, event, change)
        await self._publish(conversation, event)
        return conversation, (event, True)

    async def _existing(self, conversation: Conversation, client_id: str) -> Event | None:
        for event in await self.store.events_after(conversation.id, 0):
            if event.author is Author.CUSTOMER and event.client_id == client_id:
                return event
        return None

    async def _publish(self, conversation: Conversation, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                await subscriber(conversation, event)
            except Exception:  # one broken connection must not stop the others' delivery
                log.exception("delivery failed", extra={"seq": event.seq})


def _after(conversation: Conversation, event: Event, change: StateChange | None) -> Conversation:
    from .model import KEEP

    updates: dict[str, Any] = {"last_seq": event.seq, "updated_at": event.at}
    if change is not None:
        updates["state"] = change.state
        if change.queue is not KEEP:
            updates["queue"] = change.queue
        if change.agent_id is not KEEP:
            updates["agent_id"] = change.agent_id
        if change.state is S.CLOSED:
            updates["closed_at"] = event.at
    return replace(conversation, **updates)


def web_identity(token: str) -> str:
    """The identity address a web chat token maps to: its hash, so the database never holds
    a token a thief could resume a conversation with."""
    return hashlib.sha256(token.encode()).hexdigest()

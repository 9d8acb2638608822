"""The pipeline: the only code that moves a conversation from one state to the next.

    bot --(handoff)--> queued --(offer)--> offered --(accept)--> assigned --(close)--> closed
                        ^  ^                  |                      |
                        |  +--(timeout, decline, agent away)         |
                        +-----(transfer, agent offline past grace)---+

Every step is one store transaction that appends an event and changes the state together; the
event is then published to the customer's channel and the agent hub. A per-conversation lock
keeps each conversation's steps in order; the dispatch lock is always taken before a
conversation lock, never after, so the two cannot deadlock.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

from adapters.base import BotTurn, Deliver, IncomingFile, Inbound, OutboxPolicy, Receipt, SessionPolicy
from routing import Contact, Offer, WaitingEntry, choose_queue, resolve_tier
from routing.config import QueueConfig, Step
from routing.hours import is_open, open_now
from routing.rules import step_timeout
from routing.servicelevel import ServiceLevels

from .attachments import AttachmentsConfig, Refused, clean_name, clean_type, refusal_note, screen
from .config import GatewayConfig, localized
from .crm import CrmClient
from .desk.dispositions import checked_disposition
from .desk.reads import ReadState
from .desk.satisfaction import Satisfaction
from .customers import CustomerDirectory, VerificationCodes
from .customers.desk import CustomerDesk
from .dispatcher import Dispatcher, Presence, Route
from .faq import detect_lang
from .limits import Limits
from .locks import KeyedLocks
from .logs import about
from .model import (
    KEEP, Attachment, Author, ChannelRef, Conversation, ConversationState as S, Customer, Event, EventKind, StateChange, utcnow,
)
from .outbox import OutboxWorker
from .presence import Absence, CustomerPresence, was_left_message
from .scheduler import Scheduler
from .selfservice import SelfService
from .selfservice.knowledge import conversation_kb
from .selfservice.conversation import Turn, stalled_turn, take_turn
from .selfservice.supervisor import BotSupervisor
from .state.bot import BotMemo
from .store import NotFound, Store
from .waiting import WaitNews

log = logging.getLogger("contactgate.pipeline")

Subscriber = Callable[[Conversation, Event], Awaitable[None]]
# (conversation id, channel, status frame): transient news for a waiting customer (position).
StatusSubscriber = Callable[[str, str, dict[str, Any]], Awaitable[None]]
# (agent id, frame): news for one agent that is not a conversation event.
AgentNotice = Callable[[str, dict[str, Any]], None]

RESTART_ONLY = ("server", "store", "channels")  # config sections a hot reload cannot change
# Routes of a conversation waiting again after it was answered: service level counts a
# customer's first wait only.
NOT_A_FIRST_WAIT = ("transfer", "returned")
OUTBOUND = (Author.AGENT, Author.BOT)  # whose messages a channel with an outbox delivers
MAX_ROUTING_TEXT = 2000  # characters of the customer's bot-phase text kept for keyword rules


class ConversationError(Exception):
    """A request that does not fit the conversation's state. ``code`` goes into error frames."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class Pipeline:
    def __init__(self, config: GatewayConfig, store: Store, selfservice: SelfService,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.config = config
        self.boot_config = config  # what the process started with: server, store, channels stay
        self.store = store
        self.selfservice = selfservice
        self.clock = clock
        self.scheduler = Scheduler(clock)
        self.presence = CustomerPresence(self.scheduler, self._customer_absent)
        self.dispatcher = Dispatcher(config.agents, config.queues, config.routing.default_queue)
        self.stats = ServiceLevels({q.name: q.service_level.window for q in config.queues})
        self._subscribers: list[Subscriber] = []
        self._status_subscribers: list[StatusSubscriber] = []
        self._agent_notices: list[AgentNotice] = []
        self._lock = KeyedLocks()  # async with self._lock(conversation_id): one change at a time
        self._dispatch_lock = asyncio.Lock()
        self.bot = BotSupervisor(store, self.scheduler, clock, lambda: self.config.selfservice, self._bot_stalled)
        self._routing_text: dict[str, str] = {}        # bot-phase text, for keyword/language rules
        self._topics: dict[str, set[str]] = {}         # FAQ ids answered, for topic rules
        self._transfer: dict[str, dict[str, Any]] = {}  # note and origin shown with the next offer
        self._assigned_at: dict[str, datetime] = {}
        # (tier, why: tiers.rules[i], profile, crm, ...) decided at handoff (CRM asked once)
        self._tiers: dict[str, tuple[str, str]] = {}
        # Open conversations as of their last append. The pipeline writes every change, so this
        # is exact, and a message costs one store call (the append) instead of two.
        self._open: dict[str, Conversation] = {}
        self._crm: CrmClient | None = None
        self._outboxes: dict[str, OutboxWorker] = {}   # channel -> its worker in this process
        self._arrivals = KeyedLocks()  # (channel, provider id): one delivery of a message at a time
        self.limits = Limits(lambda: self.config.limits)  # reads the live config: reloads apply at once
        self.wait_news = WaitNews(self.dispatcher, self.stats, self.scheduler, clock, self._tell_customer)
        self.reads = ReadState(self.dispatcher, self.notice, self._tell_customer, self.get_conversation)
        self.satisfaction = Satisfaction(lambda: self.config, store, self._lock, self._append, self._append_receipt, clock)
        self.customers = CustomerDirectory(store, lambda: {c.channel_name: c.type for c in self.config.channels})
        self.codes = VerificationCodes(store, clock)  # web chat visitors proving a claimed email
        self.customer_desk = CustomerDesk(self)
        # GatewayPort's verification by code (gateway/customers/desk.py).
        self.send_verification, self.verify_code = self.customer_desk.send_verification, self.customer_desk.verify

    @property
    def max_frame_bytes(self) -> int:
        return self.config.server.max_frame_bytes

    @property
    def allowed_origins(self) -> list[str]:
        """``server.allowed_origins``: the gateway's other names (gateway/origins.py)."""
        return self.config.server.allowed_origins

    @property
    def attachments(self) -> AttachmentsConfig:
        return self.config.attachments

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def subscribe_status(self, subscriber: StatusSubscriber) -> None:
        self._status_subscribers.append(subscriber)

    def subscribe_agent_notices(self, notice: AgentNotice) -> None:
        self._agent_notices.append(notice)

    def notice(self, agent_id: str, frame: dict[str, Any]) -> None:
        for notice in self._agent_notices:
            notice(agent_id, frame)

    def tier_of(self, conversation_id: str) -> str | None:
        routed = self._tiers.get(conversation_id)  # decided at handoff; the supervisor board shows it
        return routed[0] if routed else None

    def verifies_email(self) -> bool:
        return any(c.type == "email" for c in self.config.channels)

    def queue_config(self, name: str) -> QueueConfig | None:
        return self.dispatcher.queues.get(name)

    # start-up --------------------------------------------------------------------------------
    async def recover(self) -> None:
        """Rebuild queues and agent load from the store after a restart."""
        now = self.clock()
        await self.store.set_identity_kinds({c.channel_name: self.customers.kind_of(c.channel_name)
                                             for c in self.config.channels})
        for conversation in await self.store.open_conversations():
            with about(conversation.id):
                if conversation.state is S.ASSIGNED and conversation.agent_id:
                    self.dispatcher.restore_assignment(conversation.id, conversation.agent_id, conversation.channel)
                    self._assigned_at[conversation.id] = conversation.updated_at
                elif conversation.state is S.BOT:
                    await self.bot.recover(conversation)
                elif conversation.state in (S.QUEUED, S.OFFERED) and conversation.queue:
                    events = await self.store.events_after(conversation.id, 0)
                    if was_left_message(events):
                        self.presence.mark_left_message(conversation.id)
                    queue = await self._requeue(conversation, "recovered", _waiting_since(conversation, events))
                    if conversation.state is S.OFFERED:
                        # The offer died with the old process: the conversation waits again.
                        await self._append(conversation, Author.SYSTEM, EventKind.QUEUED,
                                           data=self.wait_news.queued_data(conversation.id, queue, "restart", now),
                                           change=StateChange(S.QUEUED, queue=queue, agent_id=None))
        # Agents are not connected yet: those who had conversations get the usual grace to come
        # back before their conversations return to the queues.
        for agent in list(self.dispatcher.agents.values()):
            if agent.assigned and not agent.connected:
                self._schedule_grace(agent.id)
        self.wait_news.schedule()
        log.info("recovered open conversations", extra={"waiting": len(self.dispatcher.waiting)})

    async def reconfigure(self, config: GatewayConfig, selfservice: SelfService) -> list[str]:
        """Swap in a validated config. Conversations keep their place; those whose queue is
        gone move to the default queue and are told. Returns the sections that only a restart
        applies (server, store, channels) when they changed."""
        restart_only = [name for name in RESTART_ONLY if getattr(config, name) != getattr(self.boot_config, name)]
        # Those sections keep running as started until a restart.
        config = config.model_copy(update={name: getattr(self.boot_config, name) for name in RESTART_ONLY})
        for agent_id in set(self.dispatcher.agents) - {a.id for a in config.agents}:
            await self._remove_agent(agent_id)
        if config.tiers.crm != self.config.tiers.crm and self._crm is not None:
            await self._crm.close()
            self._crm = None
        self.config = config
        old, self.selfservice = self.selfservice, selfservice
        kept = {id(kb.matcher) for kb in (selfservice.default_kb, *selfservice.knowledge_bases)}
        for kb in (old.default_kb, *old.knowledge_bases):  # every KB's, not only the default's
            if id(kb.matcher) not in kept and hasattr(kb.matcher, "close"):
                kb.matcher.close()  # the semantic matcher's worker: ends once its queue is done
        self.stats.set_windows({q.name: q.service_level.window for q in config.queues})
        moved = self.dispatcher.configure(config.agents, config.queues, config.routing.default_queue)
        now = self.clock()
        for conversation_id in moved:
            with about(conversation_id):
                async with self._lock(conversation_id):
                    conversation = await self._conversation(conversation_id)
                    queue = self.dispatcher.waiting[conversation_id].queue
                    log.info("queue removed by reload; moved", extra={"from": conversation.queue, "queue": queue})
                    await self._append(conversation, Author.SYSTEM, EventKind.QUEUED,
                                       data=self.wait_news.queued_data(conversation_id, queue, "queue_removed", now),
                                       change=StateChange(conversation.state, queue=queue))
        await self.dispatch()
        return restart_only

    async def _remove_agent(self, agent_id: str) -> None:
        """An agent removed from the config: its offers and conversations go back to the queues,
        and its desk is told and closed."""
        with about(agent=agent_id):
            log.info("agent removed by reload")
            self.notice(agent_id, {"type": "removed", "reason": "this agent was removed from the configuration"})
            self.dispatcher.set_connected(agent_id, False)
            await self.set_presence(agent_id, "offline")

    async def _requeue(self, conversation: Conversation, why: str, since: datetime, *, head: bool = False,
                       queue: str | None = None, reserved_for: str | None = None) -> str:
        """Put a conversation back to wait in one queue (a single step, no rule): after a restart,
        a transfer, or its agent going offline. ``queue`` defaults to its own queue, or the default
        queue when that is gone. Returns the queue."""
        if queue is None:
            queue = (conversation.queue if conversation.queue in self.dispatcher.queues
                     else self.config.routing.default_queue)
        customer = await self.store.get_customer(conversation.customer_id)
        tier_priority = self._tier_priority(conversation, customer, queue)
        self.dispatcher.enqueue(
            WaitingEntry(conversation.id, queue, tier_priority, since, channel=conversation.channel, head=head,
                         reserved_for=reserved_for, customer_id=customer.id),
            Route(why, (Step(queues=[queue]),), 0, tier_priority))
        return queue

    async def start(self) -> None:
        await self.scheduler.start()

    async def stop(self) -> None:
        for channel in list(self._outboxes):
            await self.stop_outbox(channel)
        await self.scheduler.stop()
        if self._crm is not None:
            await self._crm.close()

    # customers -------------------------------------------------------------------------------
    async def identify(self, channel: str, address: str, *, name: str | None = None,
                       profile: dict[str, Any] | None = None, verified: bool = True, kind: str | None = None,
                       also: Sequence[tuple[str, str]] = (), claims: Sequence[tuple[str, str]] = ()) -> Customer:
        """The customer known by (channel, address), linked across channels by verified
        identities; a new one when unknown (gateway/customers/directory.py). Profile fields a
        customer typed in are attributes and ``claims``: never a link, never a leak."""
        return await self.customers.identify(channel, address, name=name, profile=profile, verified=verified,
                                             kind=kind, also=also, claims=claims)

    def routed_tier(self, conversation_id: str) -> tuple[str, str] | None:
        """(tier, why) the conversation was routed with, kept for its life (docs/customers.md)."""
        return self._tiers.get(conversation_id)

    def customers_moved(self, conversation_ids: set[str], customer_id: str, source_id: str, target_id: str) -> None:
        """A merge (or unmerge) moved these conversations: open ones stay where they are, under
        their new customer; sticky routing follows the merged customer."""
        for cid in conversation_ids & self._open.keys():
            self._open[cid] = replace(self._open[cid], customer_id=customer_id)
        self.dispatcher.customers_merged(source_id, target_id)

    async def identify_known(self, channel: str, address: str) -> Customer | None:
        return await self.store.find_customer(channel, address)

    async def current_conversation(self, customer: Customer, channel: str, *, seen_seq: int = 0,
                                   greet: bool = True) -> tuple[Conversation, bool]:
        """(conversation, is_new): the customer's open conversation on this channel; or the last
        closed one while it still has events the customer has not seen; else a new one, which
        the bot greets unless ``greet`` is false (a callback request)."""
        latest = await self.store.latest_conversation(customer.id, channel)
        if latest is not None and (latest.state.is_open or latest.last_seq > seen_seq):
            return latest, False
        conversation = await self.store.create_conversation(customer.id, channel)
        self.presence.changed(conversation)  # absent until its first session joins
        with about(conversation.id):
            log.info("conversation opened", extra={"customer_id": customer.id, "channel": channel})
            if greet and self.config.selfservice.greeting:
                # Before the customer wrote anything: the language of their profile, if it has one.
                known = customer.attributes.get("language")
                text = localized(self.config.selfservice.greeting, known if isinstance(known, str) else "en")
                async with self._lock(conversation.id):
                    conversation, _ = await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=text)
        return conversation, True

    async def get_conversation(self, conversation_id: str) -> Conversation:
        try:
            return await self._conversation(conversation_id)
        except NotFound:
            raise ConversationError("unknown_conversation", f"no conversation {conversation_id!r}") from None

    async def _conversation(self, conversation_id: str) -> Conversation:
        cached = self._open.get(conversation_id)
        return cached if cached is not None else await self.store.get_conversation(conversation_id)

    async def events_after(self, conversation_id: str, seq: int, limit: int | None = None) -> Sequence[Event]:
        return await self.store.events_after(conversation_id, seq, limit)

    # customer side -------------------------------------------------------------------------------
    async def receive(self, inbound: Inbound) -> Receipt:
        """One message from a channel that has no session of its own (email, messaging apps).

        Its provider id (``client_id``) is recorded as a ref of the conversation it went to
        before the message is stored, so a redelivery, even one whose first delivery died
        half way, finds that conversation, where the store's client-id check makes it a no-op."""
        if (answer := await self.satisfaction.from_channel(inbound)) is not None:
            return answer  # a press of the satisfaction question's button (gateway/desk/satisfaction.py)
        if inbound.client_id is None:
            return await self._receive(inbound, None)
        async with self._arrivals(f"{inbound.channel}\n{inbound.client_id}"):
            ref = await self.store.find_ref(inbound.channel, [inbound.client_id])
            if ref is not None:
                conversation = await self._conversation(ref.conversation_id)
                existing = await self._existing(conversation, inbound.client_id)
                if existing is not None:
                    return Receipt(existing, False)
                if conversation.state.is_open:
                    return await self._receive(inbound, conversation)
            return await self._receive(inbound, None)

    async def _receive(self, inbound: Inbound, conversation: Conversation | None) -> Receipt:
        customer = await self.identify(inbound.channel, inbound.address, name=inbound.name, profile=inbound.profile)
        follows = None
        if conversation is None:
            conversation, follows = await self._thread(inbound, customer)
            if inbound.client_id is not None and not await self.store.add_ref(
                    inbound.channel, inbound.client_id, conversation.id):
                # Another process stored the same message meanwhile: that one counts.
                ref = await self.store.find_ref(inbound.channel, [inbound.client_id])
                if ref is not None and ref.conversation_id != conversation.id:
                    other = await self._conversation(ref.conversation_id)
                    if other.state.is_open:
                        conversation = other
        details = dict(inbound.details)
        if follows is not None:
            details["follows"] = follows
        return await self.customer_message(conversation.id, inbound.text, inbound.client_id, files=inbound.files,
                                           original=inbound.original, details=details, bot=inbound.bot,
                                           bot_interval=inbound.bot_interval, question=inbound.question)

    async def _thread(self, inbound: Inbound, customer: Customer) -> tuple[Conversation, str | None]:
        """The conversation a message continues (adapters.base.Thread), and the closed one a new
        conversation follows, if any."""
        thread = inbound.thread
        if thread is None:
            # No threads on the channel: a closed conversation is over, the next message opens a new one.
            conversation, _ = await self.current_conversation(customer, inbound.channel, seen_seq=2**62)
            return conversation, None
        found = None
        ref = await self.store.find_ref(inbound.channel, thread.refs) if thread.refs else None
        if ref is not None:
            found = await self._conversation(ref.conversation_id)
        elif thread.token:
            ref = await self.store.find_ref(inbound.channel, [thread.token])
            if ref is not None:
                candidate = await self._conversation(ref.conversation_id)
                if candidate.customer_id == customer.id:  # a token alone is a hint, not a key
                    found = candidate
        if found is not None and found.state.is_open:
            return found, None
        conversation = await self.store.create_conversation(customer.id, inbound.channel)
        with about(conversation.id):
            log.info("conversation opened", extra={"customer_id": customer.id, "channel": inbound.channel,
                                                   "follows": found.id if found else None})
        return conversation, (found.id if found is not None else None)

    async def customer_message(self, conversation_id: str, text: str, client_id: str | None, *,
                               files: Sequence[IncomingFile] = (), original: IncomingFile | None = None,
                               details: dict[str, Any] | None = None, bot: BotTurn = "answer",
                               bot_interval: float = 0.0, question: str | None = None) -> Receipt:
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
                data = dict(details or {})
                refused = await self._store_files(conversation.id, files, original, data)
                conversation, (event, created) = await self._append_receipt(
                    conversation, Author.CUSTOMER, EventKind.MESSAGE, text=text, client_id=client_id, data=data or None)
                if created and refused:
                    conversation, _ = await self._append(
                        conversation, Author.BOT, EventKind.MESSAGE, text=refusal_note(refused, self.config.attachments),
                        data={"refused": [{"name": r.name, "size": r.size, "reason": r.reason} for r in refused]})
                if created and conversation.state is S.BOT:
                    routed = await self._self_service(conversation, text, bot, data.get("choice"),
                                                      heard_at=event.at, bot_interval=bot_interval,
                                                      question=question)
            if routed:
                await self.dispatch()
            return Receipt(event, created)

    async def _store_files(self, conversation_id: str, files: Sequence[IncomingFile], original: IncomingFile | None,
                           data: dict[str, Any]) -> list[Refused]:
        """Store the files the limits let through (their summaries go into ``data``); the
        original message too, unless it is larger than a message may be or holds a refused
        file (what is refused is not stored). Returns the refused files."""
        if not files and original is None:
            return []
        config = self.config.attachments
        kept, refused = screen(files, config)
        stored = [await self.store.put_attachment(conversation_id, name=clean_name(f.name), content_type=clean_type(f.content_type),
                                                  data=f.data) for f in kept]
        if stored:
            data["attachments"] = [a.summary() for a in stored]
        if original is not None and not refused and len(original.data) <= config.max_message_bytes:
            kept_original = await self.store.put_attachment(conversation_id, name=original.name,
                                                            content_type=clean_type(original.content_type), data=original.data)
            data["original"] = kept_original.summary()
        if refused:
            log.info("attachments refused", extra={"refused": [r.name for r in refused]})
        return refused

    async def customer_leaves(self, conversation_id: str, disposition: str | None = None) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self.get_conversation(conversation_id)
                if not conversation.state.is_open:
                    return
                await self._close(conversation, closed_by="customer", disposition=disposition)
            await self.dispatch()

    async def _self_service(self, conversation: Conversation, text: str, turn: BotTurn = "answer",
                            choice: Any = None, *, heard_at: datetime | None = None, bot_interval: float = 0.0,
                            question: str | None = None) -> bool:
        """The bot's turn (gateway/selfservice/conversation.py; ``turn``: adapters.base.BotTurn)
        for a message stored at ``heard_at`` (``bot_interval``, ``question``: adapters.base.Inbound's).
        Returns True when the conversation went to routing."""
        cid = conversation.id
        self._routing_text[cid] = (self._routing_text.get(cid, "") + "\n" + text)[-MAX_ROUTING_TEXT:]
        if turn == "quiet":
            return False
        memo = await self.bot.memo(cid)
        kb = None  # several knowledge bases: the first whose `when` holds for this contact
        if self.selfservice.knowledge_bases:
            customer = await self.store.get_customer(conversation.customer_id)
            kb = self.selfservice.for_contact(self.contact(conversation, customer, self.clock()))
        done = await take_turn(self.selfservice, self.config.selfservice, memo, text, turn, choice,
                               conversation.channel, self.clock(), kb, heard_at=heard_at, bot_interval=bot_interval,
                               question=question)
        return await self._bot_says(conversation, done, memo)

    async def _bot_says(self, conversation: Conversation, done: Turn, memo: BotMemo) -> bool:
        if done.topic is not None:
            self._topics.setdefault(conversation.id, set()).add(done.topic)
        event = None
        for say in done.says:
            conversation, event = await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=say.text,
                                                     data=say.data)
        await self.bot.after(conversation.id, event.seq if event else None, done, memo)
        return await self._route(conversation) if done.handoff is not None else False

    async def _bot_stalled(self, conversation_id: str) -> None:
        """The watchdog: no progress with the bot for ``selfservice.policy.stalled_after``."""
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self._conversation(conversation_id)
                memo = await self.bot.memo(conversation_id)
                if conversation.state is not S.BOT or not self.bot.is_stalled(memo):
                    return
                log.info("stalled with the bot: handed off")
                kb = await conversation_kb(self, conversation_id)  # its guesses from the conversation's KB
                routed = await self._bot_says(conversation, await stalled_turn(
                    self.selfservice, self.config.selfservice, memo, kb), memo)
            if routed:
                await self.dispatch()

    def contact(self, conversation: Conversation, customer: Customer, now: datetime) -> Contact:
        """What routing knows of this contact right now."""
        attributes = customer.attributes
        text = self._routing_text.get(conversation.id, "")
        contact = Contact(channel=conversation.channel, email=attributes.get("email"),
                          phone=attributes.get("phone"), attributes=attributes,
                          language=attributes.get("language") or (detect_lang(text) if text.strip() else None),
                          text=text, topics=frozenset(self._topics.get(conversation.id, ())),
                          open_hours=open_now(self.config.hours, now))
        tier = self.tier_of(conversation.id)
        if tier is None:
            tier, _why = resolve_tier(self.config.tiers, customer.tier, contact)
        return replace(contact, tier=tier)

    async def _routing_contact(self, conversation: Conversation, customer: Customer, now: datetime) -> Contact:
        """The contact with its tier decided in full: the profile's tier, else the first tier
        rule, else the CRM's answer (when configured), else the CRM fallback or the default.
        The tier is kept for the conversation's life, so the CRM is asked once."""
        self._tiers.pop(conversation.id, None)
        contact = self.contact(conversation, customer, now)
        _, why = resolve_tier(self.config.tiers, customer.tier, contact)
        crm_config = self.config.tiers.crm
        if why == "tiers.default" and crm_config is not None:
            why = "crm"
            if self._crm is None:
                self._crm = CrmClient(crm_config)
            tier = await self._crm.lookup_tier(customer_id=customer.id, email=contact.email, phone=contact.phone,
                                               channel=conversation.channel)
            tier = tier or crm_config.fallback_tier or self.config.tiers.default
            contact = replace(contact, tier=tier)
        self._tiers[conversation.id] = (contact.tier or self.config.tiers.default, why)
        return contact

    def _tier_priority(self, conversation: Conversation, customer: Customer, queue: str) -> int:
        tier = self.contact(conversation, customer, self.clock()).tier or self.config.tiers.default
        config = self.queue_config(queue)
        return config.priority.get(tier, 0) if config else 0

    async def _route(self, conversation: Conversation) -> bool:
        """Hand the conversation to routing. Returns True when it now waits for an agent."""
        now = self.clock()
        customer = await self.customer_desk.routing_customer(conversation.customer_id)  # all its verified identities
        contact = await self._routing_contact(conversation, customer, now)
        decision = choose_queue(self.config.routing, contact)
        steps = decision.steps
        home = self.queue_config(decision.queue)
        assert home is not None  # config validation guarantees every step's queue exists
        if home.hours is not None and not is_open(self.config.hours[home.hours], now):
            outside = home.outside_hours
            log.info("outside hours", extra={"queue": home.name, "action": outside.action})
            conversation, _ = await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=outside.text,
                                                 data={"outside_hours": home.hours, "action": outside.action})
            if outside.action == "callback":
                await self.store.update_customer(customer.id, attributes={
                    **customer.attributes, "callback_requested": now.isoformat()})
                await self._close(conversation, closed_by="system", disposition="callback_requested")
                return False
            if outside.action == "leave_message" and outside.queue:
                steps = (Step(queues=[outside.queue]),)
                home = self.queue_config(outside.queue) or home
                self.presence.mark_left_message(conversation.id)
        step = steps[0]
        tier_priority = home.priority.get(contact.tier or self.config.tiers.default, 0)
        preferred = (self.dispatcher.preferred_agent(customer.id, now, home.sticky_window)
                     if home.strategy == "sticky" else None)
        entry = WaitingEntry(conversation.id, home.name, tier_priority + step.priority_boost, now,
                             queues=tuple(step.queues), channel=conversation.channel,
                             preferred_agent=preferred, customer_id=customer.id)
        self.dispatcher.enqueue(entry, Route(decision.rule, steps, 0, tier_priority))
        data = self.wait_news.queued_data(conversation.id, home.name, "handoff", now)
        data.update(tier=contact.tier, rule=decision.rule, queues=list(step.queues))
        if self.presence.is_left_message(conversation.id):
            data["left_message"] = True
        log.info("queued", extra={"queue": home.name, "tier": contact.tier, "rule": decision.rule,
                                  "position": data["position"]})
        conversation, _ = await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                                             change=StateChange(S.QUEUED, queue=home.name, agent_id=None))
        if step.say:
            await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=step.say, data={"step": 0})
        self._schedule_step(conversation.id, step, home)
        self.wait_news.schedule()
        return True

    def _schedule_step(self, conversation_id: str, step: Step, home: QueueConfig) -> None:
        timeout = step_timeout(step, home.max_wait)
        if timeout is None:
            self.scheduler.cancel(("step", conversation_id))
            return

        async def next_step() -> None:
            await self._next_step(conversation_id)

        self.scheduler.call_later(("step", conversation_id), timeout, next_step)

    async def _next_step(self, conversation_id: str) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                entry = self.dispatcher.waiting.get(conversation_id)
                step = self.dispatcher.advance_step(conversation_id)
                if entry is None or step is None:
                    return
                # A new step is a fresh start for agents who passed on it earlier.
                self.dispatcher.waiting[conversation_id] = replace(
                    self.dispatcher.waiting[conversation_id], excluded=frozenset())
                conversation = await self._conversation(conversation_id)
                now = self.clock()
                route = self.dispatcher.routes[conversation_id]
                data = self.wait_news.queued_data(conversation_id, entry.queue, "step", now)
                data.update(step=route.step, queues=list(step.queues), priority_boost=step.priority_boost)
                log.info("next routing step", extra={"step": route.step, "queues": step.queues})
                conversation, _ = await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data)
                if step.say:
                    await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=step.say,
                                       data={"step": route.step})
                home = self.queue_config(entry.queue)
                if home is not None:
                    self._schedule_step(conversation_id, step, home)
        await self.dispatch()

    async def _tell_customer(self, conversation_id: str, channel: str, frame: dict[str, Any]) -> None:
        """Transient news for the customer's live sessions (not stored, no seq)."""
        for subscriber in self._status_subscribers:
            try:
                await subscriber(conversation_id, channel, frame)
            except Exception:
                log.exception("status delivery failed", extra={"conversation_id": conversation_id})

    # routing -----------------------------------------------------------------------------------
    async def dispatch(self) -> None:
        """Offer waiting conversations to free agents until no offer can be made."""
        async with self._dispatch_lock:
            while True:
                made = 0
                now = self.clock()
                for offer in self.dispatcher.plan(now):
                    with about(offer.conversation_id, offer.agent_id):
                        async with self._lock(offer.conversation_id):
                            if not self.dispatcher.can_offer(offer, now):
                                continue
                            conversation = await self._conversation(offer.conversation_id)
                            if conversation.state is not S.QUEUED:
                                continue
                            made += 1
                            await self._offer(conversation, offer.agent_id, offer.queue)
                if not made:
                    return

    async def _offer(self, conversation: Conversation, agent_id: str, queue: str) -> None:
        customer = await self.store.get_customer(conversation.customer_id)
        entry = self.dispatcher.waiting[conversation.id]
        self.dispatcher.offered(Offer(conversation.id, queue, agent_id), self.clock())
        home = self.queue_config(entry.queue) or self.queue_config(queue)
        timeout = home.offer_timeout if home else 30.0
        log.info("offered", extra={"queue": queue, "timeout": timeout})
        summary = {"id": customer.id, "name": customer.name,
                   "tier": self.contact(conversation, customer, self.clock()).tier}
        data: dict[str, Any] = {"agent_id": agent_id, "queue": queue, "customer": summary,
                                "timeout": timeout, "waited": round((self.clock() - entry.enqueued_at).total_seconds(), 3)}
        data.update(self._transfer.get(conversation.id, {}))
        if self.presence.is_left_message(conversation.id):
            data["left_message"] = True
        conversation, _ = await self._append(conversation, Author.SYSTEM, EventKind.OFFERED, data=data,
                                             change=StateChange(S.OFFERED, agent_id=agent_id))
        if home is not None and home.auto_accept:
            await self._assign(conversation, agent_id)
            return

        async def expire() -> None:
            await self._offer_expired(conversation.id, agent_id)

        self.scheduler.call_later(("offer", conversation.id), timeout, expire)

    async def _offer_expired(self, conversation_id: str, agent_id: str) -> None:
        with about(conversation_id, agent_id):
            if self.dispatcher.offer_of(conversation_id) != agent_id:
                return
            missed = self.dispatcher.missed_offer(agent_id)
            await self.withdraw_offer(conversation_id, reason="offer_timeout", exclude=True)
            limit = self.config.desk.missed_offers_before_away
            if missed >= limit:
                reason = f"missed {missed} offers in a row"
                log.info("agent set away", extra={"reason": reason})
                self.notice(agent_id, {"type": "presence", "status": "away", "reason": reason})
                await self.set_presence(agent_id, "away")
        await self.dispatch()

    # agent side --------------------------------------------------------------------------------
    async def accept(self, agent_id: str, conversation_id: str) -> Event:
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                if self.dispatcher.offer_of(conversation_id) != agent_id:
                    raise ConversationError("no_offer", f"conversation {conversation_id!r} is not offered to you")
                conversation = await self.get_conversation(conversation_id)
                return await self._assign(conversation, agent_id)

    async def _assign(self, conversation: Conversation, agent_id: str) -> Event:
        now = self.clock()
        self.scheduler.cancel(("offer", conversation.id))
        self.scheduler.cancel(("step", conversation.id))
        agent = self.dispatcher.agents[agent_id]
        route = self.dispatcher.routes.get(conversation.id)
        entry = self.dispatcher.accepted(conversation.id, agent_id)
        self._transfer.pop(conversation.id, None)
        self._assigned_at[conversation.id] = now
        # Service level counts a customer's first answer, not a transfer or a return.
        if entry is not None and route is not None and route.rule not in NOT_A_FIRST_WAIT:
            self.stats.answered(entry.queue, (now - entry.enqueued_at).total_seconds(), now)
        log.info("assigned")
        _, event = await self._append(conversation, Author.SYSTEM, EventKind.ASSIGNED,
                                      data={"agent": {"id": agent_id, "name": agent.name}},
                                      change=StateChange(S.ASSIGNED, agent_id=agent_id))
        return event

    async def decline(self, agent_id: str, conversation_id: str) -> None:
        with about(conversation_id, agent_id):
            if self.dispatcher.offer_of(conversation_id) != agent_id:
                raise ConversationError("no_offer", f"conversation {conversation_id!r} is not offered to you")
            self.dispatcher.declined(agent_id)
            await self.withdraw_offer(conversation_id, reason="declined", exclude=True)
        await self.dispatch()

    async def agent_message(self, agent_id: str, conversation_id: str, text: str, client_id: str | None,
                            attachments: Sequence[str] = (), *, data: dict[str, Any] | None = None) -> Receipt:
        """``attachments``: ids the agent uploaded to this conversation (``upload``); ``data``:
        what else the event keeps (the KB suggestion it sends)."""
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                conversation = await self._assigned_to(agent_id, conversation_id)
                data = {**(data or {}), "agent_id": agent_id}
                if attachments:
                    data["attachments"] = [a.summary() for a in await self._own_attachments(conversation_id, attachments)]
                _, (event, created) = await self._append_receipt(
                    conversation, Author.AGENT, EventKind.MESSAGE, text=text, client_id=client_id, data=data)
                return Receipt(event, created)

    async def _own_attachments(self, conversation_id: str, ids: Sequence[str]) -> list[Attachment]:
        found = []
        for attachment_id in dict.fromkeys(ids):
            try:
                attachment, _ = await self.store.get_attachment(attachment_id)
            except NotFound:
                attachment = None
            if attachment is None or attachment.conversation_id != conversation_id:
                raise ConversationError("unknown_attachment",
                                        f"no attachment {attachment_id!r} in conversation {conversation_id!r}")
            found.append(attachment)
        return found

    async def upload(self, agent_id: str, conversation_id: str, file: IncomingFile) -> Attachment:
        """A file an agent will send with a reply in a conversation assigned to it."""
        await self._assigned_to(agent_id, conversation_id)
        limit = self.config.attachments.max_bytes
        if len(file.data) > limit:
            raise ConversationError("attachment_too_large", f"files up to {limit} bytes are accepted")
        return await self.store.put_attachment(conversation_id, name=clean_name(file.name),
                                               content_type=clean_type(file.content_type), data=file.data)

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]:
        return await self.store.get_attachment(attachment_id)

    async def agent_may_see(self, agent_id: str, conversation_id: str) -> bool:
        """Whether the agent works, is offered, or once worked this conversation."""
        conversation = await self._conversation(conversation_id)
        if conversation.agent_id == agent_id:
            return True
        return any(e.kind is EventKind.ASSIGNED and e.data.get("agent", {}).get("id") == agent_id
                   for e in await self.store.events_after(conversation_id, 0))

    async def agent_close(self, agent_id: str, conversation_id: str, disposition: str | None = None) -> Event:
        disposition = checked_disposition(self.config.desk, disposition)
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                conversation = await self._assigned_to(agent_id, conversation_id)
                event = await self._close(conversation, closed_by=agent_id, disposition=disposition)
                await self.satisfaction.ask(conversation_id)
            queue = self.queue_config(conversation.queue or "")
            until = self.dispatcher.start_wrap_up(agent_id, self.clock(), queue.wrap_up if queue else 0)
            if until is not None:
                self.notice(agent_id, {"type": "wrap_up", "until": until.isoformat()})
                self.scheduler.call_at(("wrap_up", agent_id), until, self.dispatch)
            await self.dispatch()
            return event

    async def transfer(self, agent_id: str, conversation_id: str, *, to_agent: str | None = None,
                       to_queue: str | None = None, note: str | None = None) -> Event:
        """Hand an assigned conversation to another agent or queue, with a note for the receiver."""
        if (to_agent is None) == (to_queue is None):
            raise ConversationError("bad_transfer", 'give exactly one of "to_agent" or "to_queue"')
        if to_queue is not None and to_queue not in self.dispatcher.queues:
            raise ConversationError("unknown_queue", f"no queue {to_queue!r}")
        if to_agent is not None:
            target = self.dispatcher.agents.get(to_agent)
            if target is None or to_agent == agent_id:
                raise ConversationError("unknown_agent", f"cannot transfer to agent {to_agent!r}")
            if not target.can_take(self.clock()):
                raise ConversationError("agent_unavailable", f"agent {to_agent!r} is not available")
        with about(conversation_id, agent_id):
            async with self._lock(conversation_id):
                conversation = await self._assigned_to(agent_id, conversation_id)
                now = self.clock()
                self.dispatcher.forget(conversation_id, now)
                queue = await self._requeue(conversation, "transfer", now, head=True, queue=to_queue,
                                            reserved_for=to_agent)
                from_agent = self.dispatcher.agents[agent_id]
                self._transfer[conversation_id] = {"note": note, "transferred_from": {"id": agent_id, "name": from_agent.name}}
                log.info("transferred", extra={"to_agent": to_agent, "to_queue": to_queue})
                data = self.wait_news.queued_data(conversation_id, queue, "transfer", now)
                data.update(from_agent=agent_id, to_agent=to_agent, to_queue=to_queue, note=note)
                _, event = await self._append(conversation, Author.SYSTEM, EventKind.TRANSFERRED, data=data,
                                              change=StateChange(S.QUEUED, queue=queue, agent_id=None))
            self.wait_news.schedule()
            await self.dispatch()
            return event

    # typing: transient, never stored -----------------------------------------------------------------
    async def customer_typing(self, conversation_id: str, active: bool) -> None:
        """The customer is typing (or stopped): the agent the conversation is assigned to hears
        it. No store, no lock, no seq: a hint the next one supersedes, read from memory."""
        agent_id = self.dispatcher.assignee(conversation_id)
        if agent_id is not None:
            self.notice(agent_id, {"type": "typing", "conversation_id": conversation_id,
                                   "author": "customer", "active": active})

    async def agent_typing(self, agent_id: str, conversation_id: str, active: bool) -> None:
        """The agent is typing (or stopped) in a conversation assigned to it: the customer's
        live sessions hear it. Raises ConversationError("not_assigned") otherwise."""
        channel = self.dispatcher.assigned_channel(agent_id, conversation_id)
        if channel is None:
            raise ConversationError("not_assigned", f"conversation {conversation_id!r} is not assigned to you")
        await self._tell_customer(conversation_id, channel, {"type": "typing", "author": "agent", "active": active})

    # presence ------------------------------------------------------------------------------------
    async def set_presence(self, agent_id: str, status: Presence) -> None:
        with about(agent=agent_id):
            log.info("presence", extra={"status": status})
            ended = self.dispatcher.set_presence(agent_id, status, self.clock())
            for conversation_id in ended:
                await self.withdraw_offer(conversation_id, reason="agent_" + status)
            if status == "offline":
                await self._return_conversations(agent_id)
            await self.dispatch()

    async def agent_connected(self, agent_id: str, status: Presence) -> None:
        """The agent's connection is in place. Connected and status change before any await, so
        a storage failure afterwards (withdrawing offers, dispatching) leaves it connected."""
        self.scheduler.cancel(("grace", agent_id))
        self.dispatcher.set_connected(agent_id, True)
        await self.set_presence(agent_id, status)

    async def agent_disconnected(self, agent_id: str) -> None:
        """The websocket dropped: no offers meanwhile; after the grace period the agent is offline
        and its conversations go back to the head of their queues."""
        with about(agent=agent_id):
            for conversation_id in self.dispatcher.set_connected(agent_id, False):
                await self.withdraw_offer(conversation_id, reason="agent_disconnected")
            if self.config.desk.disconnect_grace <= 0:
                await self._agent_gone(agent_id)
            else:
                self._schedule_grace(agent_id)
            await self.dispatch()

    def _schedule_grace(self, agent_id: str) -> None:
        async def gone() -> None:
            await self._agent_gone(agent_id)

        self.scheduler.call_later(("grace", agent_id), self.config.desk.disconnect_grace, gone)

    async def _agent_gone(self, agent_id: str) -> None:
        agent = self.dispatcher.agents.get(agent_id)
        if agent is not None and not agent.connected:
            await self.set_presence(agent_id, "offline")

    async def _return_conversations(self, agent_id: str) -> None:
        agent = self.dispatcher.agents.get(agent_id)
        if agent is None:
            return
        for conversation_id in list(agent.assigned):
            with about(conversation_id, agent_id):
                async with self._lock(conversation_id):
                    conversation = await self._conversation(conversation_id)
                    if conversation.state is not S.ASSIGNED or conversation.agent_id != agent_id:
                        agent.assigned.pop(conversation_id, None)
                        continue
                    now = self.clock()
                    self.dispatcher.forget(conversation_id, now)
                    queue = await self._requeue(conversation, "returned", now, head=True)
                    log.info("agent offline: conversation back at the head of its queue", extra={"queue": queue})
                    data = self.wait_news.queued_data(conversation_id, queue, "agent_offline", now)
                    data["returned_from"] = agent_id
                    conversation, _ = await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                                                         change=StateChange(S.QUEUED, queue=queue, agent_id=None))
                    await self._append(conversation, Author.SYSTEM, EventKind.MESSAGE,
                                       text="Your agent was disconnected. You are first in line for the next one.")
        self.wait_news.schedule()

    async def withdraw_offer(self, conversation_id: str, reason: str, exclude: bool = False) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                self.scheduler.cancel(("offer", conversation_id))
                agent_id = self.dispatcher.withdraw_offer(conversation_id, self.clock(), exclude=exclude)
                if agent_id is None:
                    return
                entry = self.dispatcher.waiting.get(conversation_id)
                if entry is not None and entry.reserved_for == agent_id:
                    # A transfer to one agent who did not take it falls back to the queue.
                    self.dispatcher.waiting[conversation_id] = replace(entry, reserved_for=None)
                conversation = await self._conversation(conversation_id)
                if conversation.state is not S.OFFERED or conversation.queue is None:
                    return
                log.info("offer withdrawn", extra={"reason": reason, "agent_id": agent_id})
                data = self.wait_news.queued_data(conversation_id, conversation.queue, reason, self.clock())
                data["withdrawn_from"] = agent_id
                await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                                   change=StateChange(S.QUEUED, agent_id=None))

    async def _assigned_to(self, agent_id: str, conversation_id: str) -> Conversation:
        conversation = await self.get_conversation(conversation_id)
        if conversation.state is not S.ASSIGNED or conversation.agent_id != agent_id:
            raise ConversationError("not_assigned", f"conversation {conversation_id!r} is not assigned to you")
        return conversation

    async def _close(self, conversation: Conversation, closed_by: str, disposition: str | None = None) -> Event:
        now = self.clock()
        cid = conversation.id
        for key in (("offer", cid), ("step", cid)):
            self.scheduler.cancel(key)
        route = self.dispatcher.routes.get(cid)
        entry = self.dispatcher.forget(cid, now)
        self._count_abandoned(conversation, entry, route, now)
        assigned_at = self._assigned_at.pop(cid, None)
        if assigned_at is not None and conversation.queue:
            self.stats.handled(conversation.queue, (now - assigned_at).total_seconds(), now)
        self.bot.forget(cid)
        for table in (self._routing_text, self._topics, self._transfer, self._tiers):
            table.pop(cid, None)  # type: ignore[attr-defined]
        self.reads.forget(cid)
        self.wait_news.forget(cid)
        log.info("closed", extra={"closed_by": closed_by, "disposition": disposition,
                                  "state_before": conversation.state.value})
        _, event = await self._append(conversation, Author.SYSTEM, EventKind.CLOSED,
                                      data={"closed_by": closed_by, "disposition": disposition,
                                            "state_before": conversation.state.value},
                                      change=StateChange(S.CLOSED))
        return event

    def _count_abandoned(self, conversation: Conversation, entry: WaitingEntry | None, route: Route | None,
                         now: datetime) -> None:
        # As with answers: service level counts a customer's first wait, not a transfer's.
        if (entry is not None and conversation.state in (S.QUEUED, S.OFFERED)
                and route is not None and route.rule not in NOT_A_FIRST_WAIT):
            self.stats.abandoned(entry.queue, (now - entry.enqueued_at).total_seconds(), now)

    # customers who left without a word (gateway/presence.py keeps the books) --------------------------
    async def track_sessions(self, channel: str, policy: SessionPolicy) -> None:
        """A channel with live sessions starts: every open conversation of it is absent until a
        session joins, so after a restart each waiting one gets ``abandon_after`` to be resumed."""
        self.presence.track(channel, policy)
        for conversation in await self.store.open_conversations():
            if conversation.channel == channel:
                self.presence.changed(self._open.get(conversation.id, conversation))

    async def customer_presence(self, conversation_id: str, connected: bool) -> None:
        with about(conversation_id):
            async with self._lock(conversation_id):
                # The books first: a failed read below must not leave a customer who left "here".
                self.presence.set_connected(conversation_id, connected)
                conversation = await self._conversation(conversation_id)
                self.presence.changed(conversation)
            # The agent holding the offer or the conversation sees whether anyone is there.
            if conversation.state in (S.OFFERED, S.ASSIGNED) and conversation.agent_id:
                self.notice(conversation.agent_id, {"type": "customer_presence", "conversation_id": conversation_id,
                                                    "connected": connected})

    def customer_connected(self, conversation: Conversation) -> bool | None:
        """Whether the customer has a live session now; None on channels without sessions."""
        return self.presence.connected(conversation)

    async def _customer_absent(self, conversation_id: str, absence: Absence) -> None:
        """The absence timer fired: close an idle bot chat; end an abandoned wait as its home
        queue's ``when_abandoned`` says."""
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self._conversation(conversation_id)
                if self.presence.absence(conversation) != absence:
                    return  # the customer came back, or the conversation moved on meanwhile
                if absence == "idle":
                    await self._close(conversation, closed_by="system", disposition="idle")
                else:
                    await self._abandon(conversation)
            await self.dispatch()

    async def _abandon(self, conversation: Conversation) -> None:
        cid = conversation.id
        entry = self.dispatcher.waiting.get(cid)
        home = self.queue_config(entry.queue if entry is not None else conversation.queue or "")
        rule = home.when_abandoned if home is not None else None
        if rule is None or rule.action == "close" or rule.queue not in self.dispatcher.queues:
            await self._close(conversation, closed_by="system", disposition="abandoned")
            return
        now = self.clock()
        for key in (("offer", cid), ("step", cid)):
            self.scheduler.cancel(key)
        offered_to = self.dispatcher.offer_of(cid)
        route = self.dispatcher.routes.get(cid)
        self._count_abandoned(conversation, self.dispatcher.forget(cid, now), route, now)
        self.presence.mark_left_message(cid)
        queue = await self._requeue(conversation, "left_message", now, queue=rule.queue)
        log.info("abandoned: left message", extra={"queue": queue, "from": entry.queue if entry else None})
        data = self.wait_news.queued_data(cid, queue, "left_message", now)
        data["left_message"] = True
        if offered_to is not None:
            data["withdrawn_from"] = offered_to
        conversation, _ = await self._append(conversation, Author.SYSTEM, EventKind.QUEUED, data=data,
                                             change=StateChange(S.QUEUED, queue=queue, agent_id=None))
        if rule.text:
            await self._append(conversation, Author.BOT, EventKind.MESSAGE, text=rule.text,
                               data={"left_message": True})
        self.wait_news.schedule()

    # channels that deliver through the outbox (gateway/outbox.py) -------------------------------
    async def use_outbox(self, channel: str, deliver: Deliver, policy: OutboxPolicy) -> None:
        worker = OutboxWorker(channel, self.store, deliver, policy, on_failed=self._undelivered,
                              on_sent=self.store.add_ref, clock=self.clock)
        self._outboxes[channel] = worker
        worker.start()
        log.info("outbox started", extra={"channel": channel})

    @property
    def outboxes(self) -> dict[str, OutboxWorker]:
        """The outbox workers of this process, by channel (for /metrics)."""
        return self._outboxes

    async def stop_outbox(self, channel: str) -> None:
        worker = self._outboxes.pop(channel, None)
        if worker is not None:
            await worker.stop()

    async def add_ref(self, channel: str, ref: str, conversation_id: str, seq: int | None = None) -> bool:
        return await self.store.add_ref(channel, ref, conversation_id, seq)

    async def find_ref(self, channel: str, refs: Sequence[str]) -> ChannelRef | None:
        return await self.store.find_ref(channel, refs)

    def open_now(self, hours: str) -> bool:
        """Whether the business hours named ``hours`` are open now (unknown names are open)."""
        config = self.config.hours.get(hours)
        return config is None or is_open(config, self.clock())

    async def conversation_refs(self, conversation_id: str, channel: str) -> Sequence[ChannelRef]:
        return await self.store.conversation_refs(conversation_id, channel)

    async def get_customer(self, customer_id: str) -> Customer:
        return await self.store.get_customer(customer_id)

    async def _undelivered(self, conversation_id: str, seq: int, reason: str, attempts: int, *,
                           bounce: bool = False) -> Event:
        """Record that the message ``seq`` did not reach the customer: its agent sees it."""
        with about(conversation_id):
            async with self._lock(conversation_id):
                conversation = await self._conversation(conversation_id)
                data: dict[str, Any] = {"seq": seq, "reason": reason, "attempts": attempts}
                if bounce:
                    data["bounce"] = True
                _, event = await self._append(conversation, Author.SYSTEM, EventKind.DELIVERY_FAILED,
                                              text=f"Message {seq} was not delivered: {reason}", data=data)
                return event

    async def delivery_failed(self, channel: str, ref: str, reason: str) -> Event | None:
        found = await self.store.find_ref(channel, [ref])
        if found is None or found.seq is None:
            return None
        return await self._undelivered(found.conversation_id, found.seq, reason, 0, bounce=True)

    async def count_kb_outcome(self, conversation_id: str, seq: int, faq_id: str, outcome: str) -> None:
        await self.store.add_kb_outcome(conversation_id, seq, faq_id, outcome)

    async def record_notice(self, channel: str, refs: Sequence[str], notice: str, *, text: str | None = None,
                            data: dict[str, Any] | None = None) -> Event | None:
        found = await self.store.find_ref(channel, refs) if refs else None
        if found is None:
            return None
        with about(found.conversation_id):
            async with self._lock(found.conversation_id):
                conversation = await self._conversation(found.conversation_id)
                log.info("notice recorded", extra={"notice": notice})
                _, event = await self._append(conversation, Author.SYSTEM, EventKind.NOTICE, text=text,
                                              data={"notice": notice, **(data or {})})
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
        worker = self._outboxes.get(conversation.channel) if kind is EventKind.MESSAGE and author in OUTBOUND else None
        event, created = await self.store.append_event(
            conversation.id, author=author, kind=kind, text=text, client_id=client_id, data=data, change=change,
            outbox=worker.channel if worker is not None else None)
        if not created:
            return conversation, (event, False)
        if worker is not None:
            worker.wake()
        conversation = _after(conversation, event, change)
        if conversation.state.is_open:
            self._open[conversation.id] = conversation
        else:
            self._open.pop(conversation.id, None)
        if change is not None:
            self.presence.changed(conversation)
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


def _waiting_since(conversation: Conversation, events: Sequence[Event]) -> datetime:
    """When the conversation began its current wait: its customer keeps its place in line
    across a restart, however much it typed meanwhile."""
    since = conversation.updated_at
    for event in reversed(events):
        if event.kind in (EventKind.ASSIGNED, EventKind.TRANSFERRED):
            break
        if event.kind is EventKind.QUEUED:
            since = event.at
    return since


def _after(conversation: Conversation, event: Event, change: StateChange | None) -> Conversation:
    """The conversation as the store has it after appending ``event`` with ``change``.

    Spelled out rather than ``dataclasses.replace``: this runs for every message."""
    c = conversation
    if change is None:
        return Conversation(c.id, c.customer_id, c.channel, c.state, c.queue, c.agent_id,
                            event.seq, c.created_at, event.at, c.closed_at)
    return Conversation(
        c.id, c.customer_id, c.channel, change.state,
        c.queue if change.queue is KEEP else change.queue,
        c.agent_id if change.agent_id is KEEP else change.agent_id,
        event.seq, c.created_at, event.at,
        (c.closed_at or event.at) if change.state is S.CLOSED else None)

"""The adapter protocol and the one ``Inbound`` shape every channel hands to the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, Sequence

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.attachments import AttachmentsConfig
    from gateway.desk.reads import ReadState
    from gateway.desk.satisfaction import Satisfaction
    from gateway.limits import Limits
    from gateway.model import Attachment, ChannelRef, Conversation, Customer, Event, OutboxItem
    from gateway.selfservice import SelfService


@dataclass(frozen=True, slots=True)
class IncomingFile:
    """A file a customer sent (or an agent uploaded), before it is stored."""

    name: str
    content_type: str
    data: bytes
    # Set (with empty ``data``) for a file the channel did not fetch because it is larger than
    # the ``attachments:`` limits allow: it is refused like any file too large, by this size.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Thread:
    """Which conversation a message of a channel with threads (email) continues.

    ``refs`` are the provider ids it answers, best first (In-Reply-To, then References): any
    conversation they name is the one. ``token`` (from the subject) only counts when it names
    a conversation of the same customer. A message matching neither opens a new conversation;
    one that continues a closed conversation opens a new one that follows it."""

    refs: tuple[str, ...] = ()
    token: str | None = None


# What the bot does with a customer's message while the conversation is with it: answer it
# (the FAQ, or a handoff if asked), stay quiet (an edit of an earlier message, a "start"
# command), greet (repeat the greeting: a "help" command) or hand off to an agent at once.
BotTurn = Literal["answer", "quiet", "greet", "handoff"]

# Set in a bot message's data when it replies to the customer's answer to the bot's question
# (a pick of its choices, a yes or no to "did this help?"): a person is replying, so a channel
# that limits the bot's replies against autoresponder loops (email's bot_interval) sends it.
REPLYING = "replying"

# Set (true) in a customer message's data when its text is the channel's account of what the
# customer did, not their words ("pressed 2", "Incoming call from …"): the agent's KB
# suggestions are not matched against it, nor is it a knowledge-capture question.
NOT_WORDS = "not_words"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One contact from any channel, normalized."""

    channel: str                    # the channel's configured name
    address: str                    # who, in the channel's own terms (email, chat id, web token hash)
    text: str
    client_id: str | None = None    # the provider's message id: a redelivery of it is stored once
    name: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # email, phone, language, ...
    files: tuple[IncomingFile, ...] = ()   # checked against the ``attachments:`` limits
    original: IncomingFile | None = None   # the message as it arrived (an .eml), kept for agents
    thread: Thread | None = None           # None: the customer's current conversation on the channel
    details: dict[str, Any] = field(default_factory=dict)  # shown with the message (an email subject)
    bot: BotTurn = "answer"
    # Seconds: the bot answers at most one of the conversation's messages in this time (email's
    # bot_interval, against autoresponder loops); another one inside it, unless it answers the
    # bot's own question, is handed to a person ("bot_interval"). 0: no limit.
    bot_interval: float = 0.0
    # With bot="handoff": the customer's question the handoff's guesses (the top KB entries
    # shown with the offer) are for, when ``text`` is not it (a call's: what the caller said,
    # the text being the menu's path). None: the conversation's last question to the bot.
    question: str | None = None


class ChannelUnavailable(Exception):
    """A channel cannot start (its port is taken, its certificate does not load, its provider
    rejected the credentials); the message names the channel and says why. The gateway then
    stops with that one line."""


class DeliveryError(Exception):
    """An outbound message could not be delivered by the channel."""


class TemporaryFailure(DeliveryError):
    """Try again later (a 4xx reply, a refused or dropped connection, a timeout). ``retry_after``:
    seconds the provider asked us to wait (a 429's), instead of the policy's backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentFailure(DeliveryError):
    """Trying again will not help (a 5xx reply, an address that does not exist)."""


@dataclass(frozen=True, slots=True)
class Skipped:
    """The channel decided not to send this event (a bot answer too soon after the last one)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not now: the channel's own flood limit says wait ``seconds``. Not an attempt: the item
    keeps its place and its count of tries, and the worker goes on with other conversations."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Sent:
    """Delivered; ``ref`` is the provider's id of what went out (an email Message-ID), by which
    replies and bounces find the conversation again."""

    ref: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    """How the core's outbox retries a channel's deliveries (gateway/outbox.py)."""

    attempts: int = 8          # tries in all, then the agent gets delivery_failed
    backoff: float = 30.0      # seconds before the second try; doubled each time after
    backoff_max: float = 3600.0
    lease: float = 300.0       # seconds one process owns an item while it tries it


class RetrySettings(BaseModel):
    """A channel's ``retry:`` keys: how the outbox tries its messages again. A channel with other
    defaults subclasses it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=8, ge=1, le=100)
    backoff: float = Field(default=30.0, gt=0)        # seconds before the second try, doubled after
    backoff_max: float = Field(default=3600.0, gt=0)

    def policy(self, lease: float) -> OutboxPolicy:
        return OutboxPolicy(attempts=self.attempts, backoff=self.backoff, backoff_max=self.backoff_max, lease=lease)


class Deliver(Protocol):
    """A channel's way of sending one outbound event (an agent's or the bot's message).

    Return :class:`Sent`, :class:`Skipped` or :class:`Deferred`; raise :class:`TemporaryFailure`
    to be retried (after its ``retry_after``, else with backoff, up to the policy's attempts) or
    :class:`PermanentFailure` to fail at once. A conversation's items are handed over in seq
    order, one at a time: the next waits until the one before it is sent, skipped or failed."""

    async def __call__(self, conversation: "Conversation", event: "Event",
                       item: "OutboxItem") -> "Sent | Skipped | Deferred": ...


@dataclass(frozen=True, slots=True)
class Receipt:
    """What the gateway says back once an inbound message is durably stored."""

    event: "Event"
    created: bool   # False: the same client id was seen before; nothing new was stored


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long the gateway keeps a conversation of a channel with live sessions (web chat) whose
    customer has no live session left. 0 = never."""

    abandon_after: float     # seconds, while it waits for an agent (queued or offered)
    idle_close_after: float  # seconds, while it is still with the bot


class GatewayPort(Protocol):
    """What an adapter may ask of the gateway (implemented by ``gateway.pipeline.Pipeline``)."""

    max_frame_bytes: int
    selfservice: "SelfService"  # the live FAQ and its thresholds (a reload swaps it)
    limits: "Limits"  # rate limits and the client address of a request (``limits:`` config)
    reads: "ReadState"  # read frames of a channel's live sessions (gateway/desk/reads.py)
    satisfaction: "Satisfaction"  # answers to the satisfaction question (gateway/desk/satisfaction.py)

    @property
    def allowed_origins(self) -> list[str]:
        """``server.allowed_origins``: pages of the gateway's other names (gateway/origins.py)."""

    @property
    def attachments(self) -> "AttachmentsConfig":
        """The live ``attachments:`` limits (a channel need not fetch a file they refuse)."""

    async def identify(self, channel: str, address: str, *, name: str | None = None,
                       profile: dict[str, Any] | None = None, verified: bool = True, kind: str | None = None,
                       also: Sequence[tuple[str, str]] = (), claims: Sequence[tuple[str, str]] = ()) -> "Customer":
        """The customer of (channel, address), linked across channels by verified identities
        (``also``: more of them, e.g. a signed web chat email); ``claims`` are what the
        customer typed in: never a link (docs/customers.md)."""

    def verifies_email(self) -> bool:
        """Whether :meth:`send_verification` has an email channel to mail codes through."""

    async def send_verification(self, conversation_id: str) -> str:
        """Mail a one-time code to the email the conversation's customer claimed; its address."""

    async def verify_code(self, conversation_id: str, code: str) -> dict[str, Any]:
        """The frame that answers a code the customer typed (``verified`` or ``verify_failed``)."""

    async def identify_known(self, channel: str, address: str) -> "Customer | None": ...

    async def current_conversation(self, customer: "Customer", channel: str, *, seen_seq: int = 0,
                                   greet: bool = True) -> "tuple[Conversation, bool]":
        """(conversation, is_new); a new one is greeted by the bot unless ``greet`` is false."""

    async def get_conversation(self, conversation_id: str) -> "Conversation": ...

    async def customer_message(self, conversation_id: str, text: str, client_id: str | None, *,
                               files: Sequence[IncomingFile] = (), details: dict[str, Any] | None = None,
                               bot: BotTurn = "answer") -> Receipt:
        """A message of a live session (with ``files``: checked against ``attachments:``, stored
        with it; ``bot="quiet"``: the bot does not answer it). ``details``: what the event's data
        keeps besides the text, e.g. ``{"choice": {"value": ...}}`` for a pick of one of the bot's
        choices (a button)."""

    async def customer_leaves(self, conversation_id: str, disposition: str | None = None) -> None:
        """The customer ended the conversation (a caller hung up): it closes, with
        ``disposition``; a wait it ends counts as abandoned in its queue's figures."""

    async def customer_typing(self, conversation_id: str, active: bool) -> None:
        """The customer is typing (or stopped); its agent hears it. Never stored."""

    async def receive(self, inbound: Inbound) -> Receipt:
        """One message from a channel without live sessions, stored with its files; a
        redelivery of the same ``client_id`` returns the first receipt (``created`` False)."""

    async def record_notice(self, channel: str, refs: Sequence[str], notice: str, *,
                            text: str | None = None, data: dict[str, Any] | None = None) -> "Event | None":
        """Mail that must not start or continue a conversation (an auto-reply, a read receipt)
        is recorded, for the agent, on the conversation one of ``refs`` names, if any."""

    async def count_kb_outcome(self, conversation_id: str, seq: int, faq_id: str, outcome: str) -> None:
        """Self-service the channel did itself (an IVR's answer read out, event ``seq``): counted
        in the KB's deflection figures like the bot's (``outcome``: answered, handed_off, ...);
        once per (conversation, seq, outcome)."""

    async def delivery_failed(self, channel: str, ref: str, reason: str) -> "Event | None":
        """What we sent as ``ref`` did not arrive (a bounce): its conversation records a
        ``delivery_failed`` for that message, if ``ref`` names one."""

    async def use_outbox(self, channel: str, deliver: Deliver, policy: OutboxPolicy) -> None:
        """From now on the agent's and the bot's messages on ``channel`` are written to the
        durable outbox with the event, and ``deliver`` is called for each (in this or another
        process) until it is sent or fails for good. Call it from ``start``."""

    async def stop_outbox(self, channel: str) -> None:
        """Stop delivering for ``channel`` in this process (call it from ``stop``); what is not
        sent yet stays in the outbox for the next start, or another process."""

    async def add_ref(self, channel: str, ref: str, conversation_id: str, seq: int | None = None) -> bool:
        """Name a conversation (and one of its events) by a provider id or token. First
        writer wins: False when ``ref`` already names something on the channel."""

    async def conversation_refs(self, conversation_id: str, channel: str) -> "Sequence[ChannelRef]": ...

    async def find_ref(self, channel: str, refs: Sequence[str]) -> "ChannelRef | None":
        """The conversation (and event) the first of ``refs`` recorded on ``channel`` names."""

    def open_now(self, hours: str) -> bool:
        """Whether the business hours of that name (``hours:`` in config.yaml) are open now."""

    async def get_customer(self, customer_id: str) -> "Customer": ...

    async def get_attachment(self, attachment_id: str) -> "tuple[Attachment, bytes]": ...

    async def track_sessions(self, channel: str, policy: SessionPolicy) -> None:
        """This channel has live customer sessions: from now on its open conversations count as
        absent while no session is bound to them, and end by ``policy``. Call it from ``start``,
        before any session joins: every open conversation of the channel starts absent (after a
        restart nobody is connected). Channels without sessions (email, messaging apps) never
        call it, so their conversations never end this way."""

    async def customer_presence(self, conversation_id: str, connected: bool) -> None:
        """The conversation's first live session joined (True) or its last one left (False)."""

    async def events_after(self, conversation_id: str, seq: int, limit: int | None = None) -> Sequence["Event"]: ...


class Adapter(Protocol):
    """One channel. ``routes`` are mounted before start; ``send`` delivers an event outward."""

    name: str

    def routes(self) -> list[web.RouteDef]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking contacts; close live connections with 1001 (going away)."""

    async def send(self, conversation: "Conversation", event: "Event") -> None:
        """Deliver a conversation event to the customer, if this channel shows that kind."""

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        """Transient news for a customer (position and estimated wait while waiting, the agent
        typing); not stored, not sequenced. A channel without a live session may ignore it."""

"""The adapter protocol and the one ``Inbound`` shape every channel hands to the gateway."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from aiohttp import web

if TYPE_CHECKING:
    from gateway.limits import Limits
    from gateway.model import Conversation, Customer, Event


@dataclass(frozen=True, slots=True)
class Inbound:
    """One contact from any channel, normalized."""

    channel: str                    # the channel's configured name
    address: str                    # who, in the channel's own terms (email, chat id, web token hash)
    text: str
    client_id: str | None = None    # the provider's or client's message id, for dedupe
    name: str | None = None
    profile: dict[str, Any] = field(default_factory=dict)  # email, phone, language, ...


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
    limits: "Limits"  # rate limits and the client address of a request (``limits:`` config)

    async def identify(self, channel: str, address: str, *, name: str | None = None,
                       profile: dict[str, Any] | None = None) -> "Customer": ...

    async def identify_known(self, channel: str, address: str) -> "Customer | None": ...

    async def current_conversation(self, customer: "Customer", channel: str, *,
                                   seen_seq: int = 0) -> "tuple[Conversation, bool]":
        """(conversation, is_new)"""

    async def get_conversation(self, conversation_id: str) -> "Conversation": ...

    async def customer_message(self, conversation_id: str, text: str, client_id: str | None) -> Receipt: ...

    async def customer_leaves(self, conversation_id: str) -> None: ...

    async def customer_typing(self, conversation_id: str, active: bool) -> None:
        """The customer is typing (or stopped); its agent hears it. Never stored."""

    async def receive(self, inbound: Inbound) -> Receipt: ...

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

"""The domain model: customers, their identities, conversations and conversation events.

Plain frozen dataclasses shared by every layer. The pipeline is the only code that moves a
conversation from one :class:`ConversationState` to the next.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ConversationState(str, enum.Enum):
    BOT = "bot"            # self-service is answering
    QUEUED = "queued"      # waiting in an agent queue
    OFFERED = "offered"    # offered to one agent, waiting for accept
    ASSIGNED = "assigned"  # an agent is working it
    CLOSED = "closed"

    @property
    def is_open(self) -> bool:
        return self is not ConversationState.CLOSED


class Author(str, enum.Enum):
    CUSTOMER = "customer"
    BOT = "bot"
    AGENT = "agent"
    SYSTEM = "system"


class EventKind(str, enum.Enum):
    MESSAGE = "message"    # text from customer, bot or agent
    QUEUED = "queued"      # handed to routing; data: queue, position
    OFFERED = "offered"    # offered to one agent; data: agent_id (not shown to the customer)
    ASSIGNED = "assigned"  # an agent accepted; data: agent id and name
    TRANSFERRED = "transferred"  # back to a queue or to one agent; data: from_agent, to_queue/to_agent, note
    CLOSED = "closed"      # data: closed_by, disposition
    NOTICE = "notice"      # mail the channel recorded without answering (an auto-reply); data: notice, from, subject
    DELIVERY_FAILED = "delivery_failed"  # an outbound message did not reach the customer; data: seq, reason, attempts
    SATISFACTION = "satisfaction"  # the customer's answer to the satisfaction question; data: score, comment, queue, agent_id


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str | None
    tier: str | None  # a tier set on the profile wins over config rules
    attributes: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    merged_into: str | None = None  # merged into that customer (gateway/customers/); undone by an unmerge


@dataclass(frozen=True, slots=True)
class Identity:
    """How a customer is known on one channel: (channel, address) -> customer.

    ``verified``: the channel proved it (an email's From, a Telegram user id, a caller id, an
    address the admin API set, a signed web chat identity). A claimed one (an email typed into
    the web chat form) never links to another customer; it may become a link suggestion."""

    channel: str   # the channel's name ("webchat", "support-mail"); for a claim, where it was typed
    address: str   # the channel's own address (an email, a chat id, a hashed web token), normalised
    customer_id: str
    kind: str = ""          # the channel's type: "email", "telegram", "phone", "webchat", "wechat", ...
    verified: bool = True
    source: str = "channel"  # how it was learned: channel, admin, signed, code, agent, merge


@dataclass(frozen=True, slots=True)
class CustomerMerge:
    """One merge of ``source_id`` into ``target_id``, as audited: ``moved`` holds what moved
    (identities, claims, conversations) and the target's profile before and after, so an
    unmerge can put it back exactly."""

    id: str
    target_id: str
    source_id: str
    merged_by: str          # "admin" or "agent:<id>"
    merged_at: datetime
    moved: dict[str, Any]
    undone_at: datetime | None = None
    undone_by: str | None = None

    def summary(self) -> dict[str, Any]:
        moved = self.moved
        return {"id": self.id, "into": self.target_id, "from": self.source_id, "by": self.merged_by,
                "at": self.merged_at.isoformat(), "undone_at": self.undone_at.isoformat() if self.undone_at else None,
                "undone_by": self.undone_by,
                "moved": {"identities": [{"channel": i["channel"], "address": i["address"], "kind": i["kind"]}
                                         for i in moved["identities"]],
                          "claims": [{"kind": c["kind"], "address": c["address"]} for c in moved["claims"]],
                          "conversations": moved["conversations"]},
                "kept_from_source": moved.get("kept_from_source", {})}


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    customer_id: str
    channel: str
    state: ConversationState
    queue: str | None
    agent_id: str | None
    last_seq: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a conversation; ``seq`` counts 1, 2, 3, ... with no gaps."""

    conversation_id: str
    seq: int
    author: Author
    kind: EventKind
    text: str | None
    client_id: str | None
    data: dict[str, Any]
    at: datetime


KEEP: Any = object()  # sentinel: leave this column as it is


@dataclass(frozen=True, slots=True)
class StateChange:
    """A conversation transition committed in the same transaction as the event that records it.

    Fields left as ``KEEP`` are not changed; ``None`` clears a column.
    """

    state: ConversationState
    queue: str | None = KEEP
    agent_id: str | None = KEEP




@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that came with, or went out with, a conversation's message. The bytes are kept
    apart (``Store.get_attachment``); events carry :meth:`summary`."""

    id: str
    conversation_id: str
    name: str
    content_type: str
    size: int       # bytes
    sha256: str     # hex digest of the bytes
    created_at: datetime

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "content_type": self.content_type, "size": self.size,
                "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """A name a channel knows a conversation (and one of its events) by: a provider's message
    id (an email Message-ID we sent or received), a subject token. Unique per channel."""

    channel: str
    ref: str
    conversation_id: str
    seq: int | None
    created_at: datetime


class OutboxStatus(str, enum.Enum):
    PENDING = "pending"  # to be sent (again) at next_attempt_at
    SENT = "sent"
    FAILED = "failed"    # the last attempt failed, or the channel refused it for good
    SKIPPED = "skipped"  # the channel decided not to send it (a bot answer inside the bot interval)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One outbound event (``seq`` of ``conversation_id``) a channel without live sessions must
    deliver. Written in the transaction that appends the event; retried until sent or failed."""

    id: str
    conversation_id: str
    seq: int
    channel: str
    status: OutboxStatus
    attempts: int             # claims so far (a claim is one attempt, even if the process died in it)
    next_attempt_at: datetime
    last_error: str | None
    sent_ref: str | None      # the provider's id of what was sent (an email Message-ID)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class QueueSample:
    """One minute of a queue as the supervisor board charts it: its service level (percent,
    None while the window has no data) and how many conversations waited, at the start of
    ``minute`` (UTC, seconds and below zero). One per (queue, minute), whoever wrote it first."""

    queue: str
    minute: datetime
    service_level: float | None
    waiting: int

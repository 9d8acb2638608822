"""The storage protocol. Both engines pass the same suite (tests/test_store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Sequence

from .codes import CodeTables
from .kb import KbTables
from ..model import (
    Attachment, Author, ChannelRef, Conversation, ConversationState, Customer, CustomerMerge, Event, EventKind, Identity,
    OutboxItem, OutboxStatus, QueueSample, StateChange,
)


class StoreError(Exception):
    """Root of storage errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (connection refused, lost, pool closed)."""


class NotFound(StoreError):
    """The referenced row does not exist."""


class Store(KbTables, CodeTables, Protocol):
    url: str  # what the store was opened with; open_store(store.url) reaches the same data

    async def open(self) -> None:
        """Connect and apply pending schema migrations (idempotent)."""

    async def close(self) -> None:
        """Let in-flight writes finish, then release connections."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless a trivial query round-trips."""

    # customers and identities -------------------------------------------------------------
    async def create_customer(
        self, *, name: str | None, tier: str | None = None, attributes: dict[str, Any] | None = None,
        customer_id: str | None = None,
    ) -> Customer: ...

    async def get_customer(self, customer_id: str) -> Customer:
        """Raise NotFound when absent."""

    async def update_customer(
        self, customer_id: str, *, name: str | None = ..., tier: str | None = ...,
        attributes: dict[str, Any] | None = ...,
    ) -> Customer:
        """Change only the given fields (Ellipsis = keep). Raise NotFound when absent."""

    async def add_identity(self, customer_id: str, channel: str, address: str, *, kind: str | None = None,
                           source: str = "channel") -> str:
        """Link (channel, address), a verified identity of ``kind`` (default: the channel), to
        the customer, or to the one it was merged into (whose id is returned). Every row of the
        same (kind, address) moves with it: a verified identity is one customer's."""

    async def identify_verified(self, channel: str, address: str, *, kind: str, name: str | None,
                                attributes: dict[str, Any], source: str = "channel",
                                link: bool = True) -> tuple[Customer, bool]:
        """(customer, created) for a verified identity, in one transaction: the customer of
        (channel, address); else (``link``) the one with a verified (kind, address) on any
        channel; else a new one (customer_links.py)."""

    async def find_customer(self, channel: str, address: str) -> Customer | None: ...

    async def find_verified(self, kind: str, address: str) -> Customer | None: ...

    async def identities(self, customer_id: str) -> Sequence[Identity]:
        """Every verified identity of the customer, sorted by channel and address."""

    async def set_identity_kinds(self, kinds: dict[str, str]) -> None:
        """channel name -> type, for rows written before identities had a kind."""

    async def add_claim(self, customer_id: str, kind: str, address: str, channel: str | None) -> bool:
        """The customer says it is (kind, address): never a link. False when already claimed."""

    async def claims(self, customer_id: str) -> Sequence[Identity]:
        """The customer's claims (``verified`` False)."""

    async def drop_claim(self, customer_id: str, kind: str, address: str) -> None: ...

    async def merge_customers(self, target_id: str, source_id: str, *, by: str) -> CustomerMerge:
        """Raise NotFound for an unknown customer, MergeRefused for itself or a merged one."""

    async def unmerge_customers(self, target_id: str, merge_id: str, *, by: str) -> CustomerMerge:
        """Raise NotFound for an unknown merge, MergeRefused (with why) on a conflict."""

    async def customer_merges(self, customer_id: str) -> Sequence[CustomerMerge]: ...

    # conversations and events ---------------------------------------------------------------
    async def create_conversation(self, customer_id: str, channel: str) -> Conversation:
        """A new conversation in state ``bot`` with ``last_seq`` 0."""

    async def get_conversation(self, conversation_id: str) -> Conversation:
        """Raise NotFound when absent."""

    async def latest_conversation(self, customer_id: str, channel: str) -> Conversation | None: ...

    async def open_conversations(self) -> Sequence[Conversation]:
        """Every conversation not closed, oldest first (to rebuild queues after a restart)."""

    async def append_event(
        self, conversation_id: str, *, author: Author, kind: EventKind, text: str | None = None,
        client_id: str | None = None, data: dict[str, Any] | None = None,
        change: StateChange | None = None, outbox: str | None = None,
    ) -> tuple[Event, bool]:
        """Durably append the next event (seq = last_seq + 1) and apply ``change`` atomically.

        When ``client_id`` is given and an event of the same author with that client id already
        exists in the conversation, nothing is written and ``(existing, False)`` is returned.
        Otherwise returns ``(event, True)`` once committed. Raise NotFound for an unknown
        conversation.

        ``outbox``: a channel name. When given and the event is created, a pending
        :class:`OutboxItem` for (conversation, seq) on that channel, due now, is written in the
        same transaction: the event is never stored without its delivery.
        """

    async def events_after(
        self, conversation_id: str, seq: int, limit: int | None = None
    ) -> Sequence[Event]:
        """Events with seq > ``seq`` in seq order."""

    # attachments ---------------------------------------------------------------------------
    async def put_attachment(self, conversation_id: str, *, name: str, content_type: str,
                             data: bytes) -> Attachment:
        """Store the bytes durably (size and SHA-256 are computed here) under a new id. Free
        text follows the text rule. Raise NotFound for an unknown conversation."""

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]:
        """Raise NotFound when absent (an id no store can hold names nothing)."""

    # channel references: provider message ids and subject tokens -----------------------------
    async def add_ref(self, channel: str, ref: str, conversation_id: str, seq: int | None = None) -> bool:
        """Record that ``ref`` names the conversation (and its event ``seq``) on ``channel``.
        First writer wins: False when the ref was already recorded (nothing changes then)."""

    async def find_ref(self, channel: str, refs: Sequence[str]) -> ChannelRef | None:
        """The first of ``refs``, in the order given, that is recorded on ``channel``."""

    async def conversation_refs(self, conversation_id: str, channel: str | None = None) -> Sequence[ChannelRef]:
        """Every ref of the conversation (of one channel, when given), oldest first."""

    # the outbox (gateway/outbox.py drives it) -------------------------------------------------
    async def claim_outbox(self, channel: str, *, now: datetime, lease: float, limit: int = 20) -> Sequence[OutboxItem]:
        """Pending items of ``channel`` due at ``now`` (next_attempt_at <= now) whose claim, if
        any, expired; longest due first (then oldest, then by conversation and seq), at most
        ``limit``. Each is claimed until now + ``lease``
        seconds and its ``attempts`` counted up, atomically, so no other process (or task)
        claims it meanwhile. The items come back as claimed (attempts already counted).
        ValueError for a naive ``now``, a lease that is not positive or a negative limit."""

    async def finish_outbox(self, item_id: str, status: OutboxStatus, *, error: str | None = None,
                            sent_ref: str | None = None) -> None:
        """End an item: SENT (with the provider's id), FAILED or SKIPPED (with why). The claim
        is released. Raise NotFound when absent; ValueError for PENDING. An item already
        finished keeps its outcome (a twin whose lease ran out must not undo a send)."""

    async def retry_outbox(self, item_id: str, *, error: str, next_attempt_at: datetime,
                           attempted: bool = True) -> None:
        """The attempt failed for now: pending again from ``next_attempt_at``, claim released.
        ``attempted=False``: it was not tried (the channel deferred it), so the claim's count of
        ``attempts`` is taken back.
        Raise NotFound when absent. An item already finished keeps its outcome (never resent)."""

    async def outbox_item(self, item_id: str) -> OutboxItem:
        """Raise NotFound when absent."""

    async def outbox_items(self, conversation_id: str) -> Sequence[OutboxItem]:
        """The conversation's items in seq order (for the admin API and tests)."""

    async def outbox_counts(self) -> dict[tuple[str, OutboxStatus], int]:
        """(channel, status) -> items, for /metrics."""

    # the supervisor board's queue samples (gateway/board/history.py) -----------------------
    async def add_queue_samples(self, samples: Sequence[QueueSample]) -> int:
        """Store each sample under its queue and minute (the minute cut to the minute, UTC) unless
        that (queue, minute) is already stored: the first writer wins, so several processes
        sampling the same minute store it once. Returns how many were written. ValueError for a
        naive minute, a service level outside 0-100 or a negative waiting count."""

    async def queue_samples(self, since: datetime) -> Sequence[QueueSample]:
        """Samples from the minute of ``since`` on, by queue, then minute."""

    async def prune_queue_samples(self, before: datetime) -> int:
        """Delete samples of minutes before the minute of ``before``; returns how many."""

    # listing (admin API) --------------------------------------------------------------------
    async def list_conversations(
        self, *, state: ConversationState | None = None, queue: str | None = None,
        customer_id: str | None = None, channel: str | None = None, limit: int = 50,
        before: ConversationKey | None = None,
    ) -> Sequence[Conversation]:
        """Conversations matching every filter given, newest first (``created_at``, then ``id``,
        both descending), at most ``limit``. ``before`` is the key of the last one of the
        previous page: only conversations after it in that order are returned, so a page is
        stable however many conversations are created meanwhile."""


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Where a conversation sits in the newest-first listing."""

    created_at: datetime
    id: str

    @classmethod
    def of(cls, conversation: Conversation) -> "ConversationKey":
        return cls(conversation.created_at, conversation.id)


def conversation_filters(state: ConversationState | None, queue: str | None, customer_id: str | None,
                         channel: str | None) -> list[tuple[str, Any]]:
    """(column, value) of each listing filter given, for both engines' WHERE clauses."""
    given = (("state", None if state is None else ConversationState(state).value), ("queue", queue),
             ("customer_id", customer_id), ("channel", channel))
    return [(column, value) for column, value in given if value is not None]

"""The storage protocol. Both engines pass the same suite (tests/test_store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, Sequence

from ..model import Author, Conversation, ConversationState, Customer, Event, EventKind, Identity, StateChange


class StoreError(Exception):
    """Root of storage errors."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (connection refused, lost, pool closed)."""


class NotFound(StoreError):
    """The referenced row does not exist."""


class Store(Protocol):
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

    async def add_identity(self, customer_id: str, channel: str, address: str) -> None:
        """Link (channel, address) to the customer; relinking an existing identity moves it."""

    async def find_customer(self, channel: str, address: str) -> Customer | None: ...

    async def identities(self, customer_id: str) -> Sequence[Identity]:
        """Every (channel, address) linked to the customer, sorted."""

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
        change: StateChange | None = None,
    ) -> tuple[Event, bool]:
        """Durably append the next event (seq = last_seq + 1) and apply ``change`` atomically.

        When ``client_id`` is given and an event of the same author with that client id already
        exists in the conversation, nothing is written and ``(existing, False)`` is returned.
        Otherwise returns ``(event, True)`` once committed. Raise NotFound for an unknown
        conversation.
        """

    async def events_after(
        self, conversation_id: str, seq: int, limit: int | None = None
    ) -> Sequence[Event]:
        """Events with seq > ``seq`` in seq order."""

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

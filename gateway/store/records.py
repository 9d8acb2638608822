"""What both engines check and build alike for attachments, channel references and the outbox,
so the two cannot drift apart: the attachment's metadata, the refs looked up, the outbox's
arguments and the order items are claimed in."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Sequence

from ..model import Attachment, OutboxItem, OutboxStatus, utcnow
from .base import NotFound
from .text import cannot_hold, storable

FINAL_STATUSES = frozenset({OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.SKIPPED})


def new_id() -> str:
    """A row id, made as customer and conversation ids are."""
    return uuid.uuid4().hex


def new_attachment(conversation_id: str, name: str, content_type: str, data: bytes) -> tuple[Attachment, bytes]:
    """The attachment to store and its bytes. NotFound for a conversation id no store can hold;
    TypeError unless ``data`` is bytes-like (``bytes(5)`` would quietly make five zero bytes)."""
    if cannot_hold(conversation_id):
        raise NotFound(f"conversation {conversation_id!r} not found")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"attachment data must be bytes, not {type(data).__name__}")
    payload = bytes(data)
    attachment = Attachment(id=new_id(), conversation_id=conversation_id, name=storable(name),
                            content_type=storable(content_type), size=len(payload),
                            sha256=hashlib.sha256(payload).hexdigest(), created_at=utcnow())
    return attachment, payload


def wanted_refs(refs: Sequence[str]) -> list[str]:
    """``refs`` as add_ref stored them (the text rule), each once, in the order given. A lone
    string would be searched letter by letter: refuse it."""
    if isinstance(refs, str):
        raise TypeError("refs must be a sequence of refs, not one string")
    return list(dict.fromkeys(storable(ref) for ref in refs))


def claim_until(now: datetime, lease: float, limit: int) -> datetime:
    """The end of a claim made at ``now``, once claim_outbox's arguments are checked."""
    aware(now, "now")
    if not lease > 0:
        raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
    if limit < 0:
        raise ValueError("limit must be >= 0")
    return now + timedelta(seconds=lease)


def aware(at: datetime, what: str) -> datetime:
    """``at`` itself; ValueError when it has no time zone (each engine would guess differently)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, not {at!r}")
    return at


def final_status(status: OutboxStatus) -> OutboxStatus:
    """``status`` as an OutboxStatus that ends an item; ValueError for PENDING (use retry_outbox)."""
    status = OutboxStatus(status)
    if status not in FINAL_STATUSES:
        raise ValueError(f"finish_outbox ends an item: {status.value!r} is not final, use retry_outbox")
    return status


def optional_text(value: str | None) -> str | None:
    return None if value is None else storable(value)


def claim_order(item: OutboxItem) -> tuple[datetime, datetime, str, int]:
    """The order claim_outbox hands items out in: longest due first, then oldest, then by
    conversation and seq (a conversation's items due together go out in seq order)."""
    return (item.next_attempt_at, item.created_at, item.conversation_id, item.seq)

"""Order of the conversations waiting in a queue: higher priority first, then longer wait."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable


@dataclass(frozen=True, slots=True)
class WaitingEntry:
    conversation_id: str
    queue: str
    priority: int
    enqueued_at: datetime


def order_key(entry: WaitingEntry) -> tuple[int, datetime, str]:
    # conversation id last: a total order, so two processes sort ties the same way.
    return (-entry.priority, entry.enqueued_at, entry.conversation_id)


def queue_order(entries: Iterable[WaitingEntry]) -> list[WaitingEntry]:
    return sorted(entries, key=order_key)


def position_in_queue(entries: Iterable[WaitingEntry], conversation_id: str) -> int | None:
    """1-based position of the conversation among the entries of its own queue."""
    entries = list(entries)
    target = next((e for e in entries if e.conversation_id == conversation_id), None)
    if target is None:
        return None
    key = order_key(target)
    return 1 + sum(1 for e in entries if e.queue == target.queue and order_key(e) < key)

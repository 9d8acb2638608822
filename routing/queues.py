"""Order of the conversations waiting in a queue.

Higher effective priority first, then longer wait. Effective priority = the tier's priority in
the queue + the routing step's boost + aging (``aging.boost`` per ``aging.every`` seconds waited,
up to ``aging.max_boost``), so a low tier that waited long enough overtakes newcomers of a high
tier and nobody starves. A conversation put back at the head (its agent went offline) precedes
everyone in its queue.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Mapping

from .config import Aging, QueueConfig

NO_AGING = Aging(boost=0)


@dataclass(frozen=True, slots=True)
class WaitingEntry:
    conversation_id: str
    queue: str                     # the home queue: where it is counted and positioned
    priority: int                  # tier priority in the home queue + the step's boost
    enqueued_at: datetime          # when it started waiting; kept across steps and re-offers
    queues: tuple[str, ...] = ()   # every queue whose agents may take it (the current step)
    channel: str = "webchat"
    excluded: frozenset[str] = frozenset()   # agents who declined or missed it
    preferred_agent: str | None = None       # sticky routing: who served this customer last
    head: bool = False                       # returned after its agent went offline
    reserved_for: str | None = None          # transferred to one agent: only that agent
    customer_id: str | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return self.queues or (self.queue,)


def effective_priority(entry: WaitingEntry, aging: Aging, now: datetime) -> int:
    if aging.boost == 0:
        return entry.priority
    waited = max(0.0, (now - entry.enqueued_at).total_seconds())
    return entry.priority + min(aging.max_boost, int(waited // aging.every) * aging.boost)


def order_key(entry: WaitingEntry, aging: Aging = NO_AGING, now: datetime | None = None
              ) -> tuple[bool, int, datetime, str]:
    priority = effective_priority(entry, aging, now) if now is not None else entry.priority
    # conversation id last: a total order, so two processes sort ties the same way.
    return (not entry.head, -priority, entry.enqueued_at, entry.conversation_id)


def queue_order(entries: Iterable[WaitingEntry], queues: Mapping[str, QueueConfig] | None = None,
                now: datetime | None = None) -> list[WaitingEntry]:
    def key(entry: WaitingEntry) -> tuple[bool, int, datetime, str]:
        config = queues.get(entry.queue) if queues else None
        return order_key(entry, config.aging if config else NO_AGING, now)

    return sorted(entries, key=key)


def position_in_queue(entries: Iterable[WaitingEntry], conversation_id: str,
                      queues: Mapping[str, QueueConfig] | None = None, now: datetime | None = None) -> int | None:
    """1-based position of the conversation among the entries of its own home queue."""
    entries = list(entries)
    target = next((e for e in entries if e.conversation_id == conversation_id), None)
    if target is None:
        return None
    same = [e for e in entries if e.queue == target.queue]
    return 1 + queue_order(same, queues, now).index(target)


def positions(entries: Iterable[WaitingEntry], queues: Mapping[str, QueueConfig] | None = None,
              now: datetime | None = None) -> dict[str, int]:
    """Every waiting conversation's 1-based position in its home queue, in one pass per queue."""
    by_queue: dict[str, list[WaitingEntry]] = {}
    for entry in entries:
        by_queue.setdefault(entry.queue, []).append(entry)
    out: dict[str, int] = {}
    for members in by_queue.values():
        for index, entry in enumerate(queue_order(members, queues, now), start=1):
            out[entry.conversation_id] = index
    return out


class WaitingIndex(MutableMapping[str, WaitingEntry]):
    """The waiting conversations, indexed for fast "who is next for these queues".

    A mapping of conversation id -> entry. Behind it, each target queue keeps its entries in
    groups of equal (home queue, head, priority), each sorted by (enqueued_at, id). Within a
    group the order key only grows along the list (an older entry has aged at least as much),
    so merging the groups' lists yields a queue's entries in exact order, lazily: the next
    conversation among 10,000 waiting costs a few comparisons, not a sort.
    """

    def __init__(self, entries: Iterable[WaitingEntry] = ()) -> None:
        self._entries: dict[str, WaitingEntry] = {}
        self._groups: dict[str, dict[tuple[str, bool, int], list[tuple[datetime, str]]]] = {}
        for entry in entries:
            self[entry.conversation_id] = entry

    # mapping protocol -----------------------------------------------------------------------
    def __getitem__(self, conversation_id: str) -> WaitingEntry:
        return self._entries[conversation_id]

    def __setitem__(self, conversation_id: str, entry: WaitingEntry) -> None:
        if conversation_id in self._entries:
            self._unindex(self._entries[conversation_id])
        self._entries[conversation_id] = entry
        for queue in _index_keys(entry):
            group = self._groups.setdefault(queue, {}).setdefault(_group_key(entry), [])
            insort(group, (entry.enqueued_at, entry.conversation_id))

    def __delitem__(self, conversation_id: str) -> None:
        self._unindex(self._entries.pop(conversation_id))

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._entries

    def _unindex(self, entry: WaitingEntry) -> None:
        item = (entry.enqueued_at, entry.conversation_id)
        for queue in _index_keys(entry):
            groups = self._groups[queue]
            group = groups[_group_key(entry)]
            del group[bisect_left(group, item)]
            if not group:
                del groups[_group_key(entry)]
                if not groups:
                    del self._groups[queue]

    # order ------------------------------------------------------------------------------------
    def best_first(self, queues: Iterable[str], configs: Mapping[str, QueueConfig] | None = None,
                   now: datetime | None = None) -> Iterator[WaitingEntry]:
        """Entries targeting any of ``queues``, best first, each once."""
        runs = []
        for queue in set(queues):
            for (home, _head, _priority), group in self._groups.get(queue, {}).items():
                config = configs.get(home) if configs else None
                aging = config.aging if config else NO_AGING
                runs.append(self._run(group, aging, now))
        seen: set[str] = set()
        for _, entry in heapq.merge(*runs, key=lambda pair: pair[0]):
            if entry.conversation_id not in seen:
                seen.add(entry.conversation_id)
                yield entry

    def _run(self, group: list[tuple[datetime, str]], aging: Aging, now: datetime | None
             ) -> Iterator[tuple[tuple[bool, int, datetime, str], WaitingEntry]]:
        for _, conversation_id in group:
            entry = self._entries.get(conversation_id)
            if entry is not None:
                yield order_key(entry, aging, now), entry


# Index key of the conversations transferred to one agent ("@" + agent id; no queue name starts
# with "@"): they wait in their old queue, which the receiving agent need not serve.
RESERVED = "@"


def _index_keys(entry: WaitingEntry) -> tuple[str, ...]:
    if entry.reserved_for is None:
        return entry.targets
    return (*entry.targets, RESERVED + entry.reserved_for)


def _group_key(entry: WaitingEntry) -> tuple[str, bool, int]:
    return (entry.queue, entry.head, entry.priority)

"""Which agent gets the offer: an available agent serving the queue, with free capacity,
idle the longest. ``plan_offers`` applies that to every waiting conversation at once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Iterable, Sequence

from .queues import WaitingEntry, queue_order


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    available: bool
    capacity: int
    load: int                 # conversations assigned plus offers outstanding
    queues: frozenset[str]
    idle_since: datetime      # when the agent last had nothing to do (or came online)

    @property
    def free(self) -> int:
        return self.capacity - self.load


@dataclass(frozen=True, slots=True)
class Offer:
    conversation_id: str
    queue: str
    agent_id: str


def pick_agent(
    queue: str, agents: Iterable[AgentView], just_offered: dict[str, int] | None = None
) -> AgentView | None:
    """``just_offered`` counts offers an agent got in the current planning pass: such an agent
    is no longer idle, so it goes behind everyone who still is."""
    just_offered = just_offered or {}
    eligible = [a for a in agents if a.available and a.free > 0 and queue in a.queues]
    if not eligible:
        return None
    # Longest idle first; the least loaded among equals; id for a stable tie-break.
    return min(eligible, key=lambda a: (just_offered.get(a.id, 0), a.idle_since, a.load, a.id))


def plan_offers(
    waiting: Iterable[WaitingEntry], agents: Sequence[AgentView], offered: frozenset[str] = frozenset()
) -> list[Offer]:
    """Offers to make now, best-first across all queues, never exceeding any agent's capacity.

    ``offered`` holds conversations that already have an outstanding offer: one at a time.
    """
    pool = {a.id: a for a in agents}
    offers: list[Offer] = []
    given: dict[str, int] = {}
    for entry in queue_order(waiting):
        if entry.conversation_id in offered:
            continue
        agent = pick_agent(entry.queue, pool.values(), given)
        if agent is None:
            continue
        offers.append(Offer(entry.conversation_id, entry.queue, agent.id))
        pool[agent.id] = replace(agent, load=agent.load + 1)
        given[agent.id] = given.get(agent.id, 0) + 1
    return offers

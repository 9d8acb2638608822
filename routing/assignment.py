"""Which agent gets the offer.

An agent is eligible for a waiting conversation when it is available (not away, offline or in
wrap-up), has free capacity on the conversation's channel, serves one of the conversation's
target queues with the skills that queue requires, and has not declined or missed it (unless
nobody else could take it now). Among the eligible, the home queue's strategy picks:

- ``longest_idle``: idle the longest (default);
- ``least_occupied``: the lowest share of capacity in use;
- ``round_robin``: the next agent by id after the one this queue offered to last;
- ``sticky``: the customer's previous agent when eligible, else longest idle.

``plan_offers`` applies that to every waiting conversation, best first, never exceeding anyone's
capacity within the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Container, Iterable, Mapping, Sequence

from .config import QueueConfig
from .queues import RESERVED, WaitingEntry, WaitingIndex


@dataclass(frozen=True, slots=True)
class AgentView:
    id: str
    available: bool
    capacity: int | Mapping[str, int]   # total, or per channel
    load: Mapping[str, int]             # channel -> conversations assigned or offered
    queues: frozenset[str]
    idle_since: datetime                # when the agent last had nothing to do
    skills: Mapping[str, int] = field(default_factory=dict)

    def capacity_for(self, channel: str) -> int:
        if isinstance(self.capacity, int):
            return self.capacity
        return self.capacity.get(channel, self.capacity.get("default", 0))

    @property
    def total_load(self) -> int:
        return sum(self.load.values())

    def free_for(self, channel: str) -> int:
        if isinstance(self.capacity, int):
            return self.capacity - self.total_load
        return self.capacity_for(channel) - self.load.get(channel, 0)

    @property
    def occupancy(self) -> float:
        total = self.capacity if isinstance(self.capacity, int) else sum(self.capacity.values())
        return self.total_load / total if total else 1.0

    def has_skills(self, required: Mapping[str, int]) -> bool:
        return all(self.skills.get(skill, 0) >= level for skill, level in required.items())

    def with_offer(self, channel: str) -> "AgentView":
        load = dict(self.load)
        load[channel] = load.get(channel, 0) + 1
        return replace(self, load=load)


@dataclass(frozen=True, slots=True)
class Offer:
    conversation_id: str
    queue: str          # the queue through which the agent takes it
    agent_id: str


def serves(agent: AgentView, entry: WaitingEntry, queues: Mapping[str, QueueConfig],
           honour_exclusion: bool = True) -> str | None:
    """The first of the entry's target queues this agent may take it through, or None."""
    if not agent.available or agent.free_for(entry.channel) <= 0:
        return None
    if honour_exclusion and agent.id in entry.excluded:
        return None
    if entry.reserved_for is not None:
        return entry.queue if agent.id == entry.reserved_for else None
    for queue in entry.targets:
        config = queues.get(queue)
        if queue in agent.queues and (config is None or agent.has_skills(config.skills)):
            return queue
    return None


def pick_agent(entry: WaitingEntry, agents: Iterable[AgentView], queues: Mapping[str, QueueConfig], *,
               last_offered: Mapping[str, str] | None = None, just_offered: Mapping[str, int] | None = None,
               ) -> tuple[AgentView, str] | None:
    """(agent, queue it takes the conversation through), or None when nobody is eligible.

    ``just_offered`` counts offers an agent got in the current planning pass: such an agent is
    no longer idle, so it goes behind everyone who still is.
    """
    just_offered = just_offered or {}
    agents = list(agents)
    eligible = [(agent, queue) for agent in agents if (queue := serves(agent, entry, queues)) is not None]
    if not eligible and entry.excluded:
        # Everyone who could take it now has declined or missed it: better offered again than
        # forgotten (an agent who keeps missing offers is set away after a few).
        eligible = [(agent, queue) for agent in agents
                    if (queue := serves(agent, entry, queues, honour_exclusion=False)) is not None]
    if not eligible:
        return None
    config = queues.get(entry.queue)
    strategy = config.strategy if config else "longest_idle"
    if strategy == "sticky" and entry.preferred_agent is not None:
        for agent, queue in eligible:
            if agent.id == entry.preferred_agent:
                return agent, queue
    if strategy == "round_robin":
        last = (last_offered or {}).get(entry.queue, "")
        ordered = sorted(eligible, key=lambda pair: pair[0].id)
        return next((pair for pair in ordered if pair[0].id > last), ordered[0])
    if strategy == "least_occupied":
        return min(eligible, key=lambda p: (p[0].occupancy, just_offered.get(p[0].id, 0), p[0].idle_since, p[0].id))
    return min(eligible, key=lambda p: (just_offered.get(p[0].id, 0), p[0].idle_since, p[0].total_load, p[0].id))


def plan_offers(waiting: WaitingIndex | Iterable[WaitingEntry], agents: Sequence[AgentView],
                queues: Mapping[str, QueueConfig], now: datetime, *, offered: Container[str] = frozenset(),
                last_offered: Mapping[str, str] | None = None) -> list[Offer]:
    """Offers to make now, best-first across all queues, never exceeding any agent's capacity.

    ``offered`` holds conversations that already have an outstanding offer: one at a time.
    Only the queues some agent with room can serve are looked at, and only until every such
    agent is full, so the cost follows the offers made, not the number waiting.
    """
    index = waiting if isinstance(waiting, WaitingIndex) else WaitingIndex(waiting)
    pool = {a.id: a for a in agents if a.available and _has_room(a)}
    rr = dict(last_offered or {})
    offers: list[Offer] = []
    given: dict[str, int] = {}
    served = {queue for agent in pool.values() for queue in agent.queues}
    served.update(RESERVED + agent_id for agent_id in pool)  # transfers to one agent
    for entry in index.best_first(served, queues, now):
        if not pool:
            break
        if entry.conversation_id in offered:
            continue
        picked = pick_agent(entry, pool.values(), queues, last_offered=rr, just_offered=given)
        if picked is None:
            continue
        agent, queue = picked
        offers.append(Offer(entry.conversation_id, queue, agent.id))
        agent = agent.with_offer(entry.channel)
        if _has_room(agent):
            pool[agent.id] = agent
        else:
            del pool[agent.id]
        given[agent.id] = given.get(agent.id, 0) + 1
        rr[entry.queue] = agent.id
    return offers


def _has_room(agent: AgentView) -> bool:
    if isinstance(agent.capacity, int):
        return agent.total_load < agent.capacity
    return any(agent.capacity_for(channel) > agent.load.get(channel, 0) for channel in agent.capacity)

"""Queue and agent state, in process, with every read-modify-write in this one place.

The routing core decides (``routing.plan_offers``); this class holds the state it decides over
and records what the pipeline made of each decision. A Redis-backed twin for several gateway
processes will implement the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Literal

from routing import AgentConfig, AgentView, Offer, WaitingEntry, plan_offers, position_in_queue

Presence = Literal["available", "away", "offline"]


@dataclass
class AgentState:
    id: str
    name: str
    capacity: int
    queues: frozenset[str]
    status: Presence = "offline"
    assigned: set[str] = field(default_factory=set)
    offers: set[str] = field(default_factory=set)
    idle_since: datetime | None = None

    @property
    def load(self) -> int:
        return len(self.assigned) + len(self.offers)

    def view(self, now: datetime) -> AgentView:
        return AgentView(self.id, self.status == "available", self.capacity, self.load, self.queues,
                         self.idle_since or now)


class Dispatcher:
    def __init__(self, agents: Iterable[AgentConfig]) -> None:
        self.waiting: dict[str, WaitingEntry] = {}
        self.offers: dict[str, str] = {}          # conversation id -> agent id
        self.agents: dict[str, AgentState] = {}
        self.configure_agents(agents)

    def configure_agents(self, agents: Iterable[AgentConfig]) -> None:
        known = self.agents
        self.agents = {}
        for agent in agents:
            state = known.get(agent.id) or AgentState(agent.id, agent.name, agent.capacity, frozenset(agent.queues))
            state.name, state.capacity, state.queues = agent.name, agent.capacity, frozenset(agent.queues)
            self.agents[agent.id] = state

    # queue -----------------------------------------------------------------------------------
    def enqueue(self, entry: WaitingEntry) -> int:
        self.waiting[entry.conversation_id] = entry
        return self.position(entry.conversation_id) or 1

    def position(self, conversation_id: str) -> int | None:
        return position_in_queue(self.waiting.values(), conversation_id)

    def is_waiting(self, conversation_id: str) -> bool:
        return conversation_id in self.waiting and conversation_id not in self.offers

    def forget(self, conversation_id: str, now: datetime) -> None:
        """The conversation left routing (closed): drop its entry, offer and assignment."""
        self.waiting.pop(conversation_id, None)
        agent_id = self.offers.pop(conversation_id, None)
        for agent in self.agents.values():
            if conversation_id in agent.assigned or agent.id == agent_id:
                agent.assigned.discard(conversation_id)
                agent.offers.discard(conversation_id)
                if agent.load == 0:
                    agent.idle_since = now

    # offers ------------------------------------------------------------------------------------
    def plan(self, now: datetime) -> list[Offer]:
        views = [agent.view(now) for agent in self.agents.values()]
        return plan_offers(self.waiting.values(), views, frozenset(self.offers))

    def can_offer(self, offer: Offer) -> bool:
        agent = self.agents.get(offer.agent_id)
        return (self.is_waiting(offer.conversation_id) and agent is not None
                and agent.status == "available" and agent.load < agent.capacity)

    def offered(self, offer: Offer) -> None:
        self.offers[offer.conversation_id] = offer.agent_id
        self.agents[offer.agent_id].offers.add(offer.conversation_id)

    def offer_of(self, conversation_id: str) -> str | None:
        return self.offers.get(conversation_id)

    def withdraw_offer(self, conversation_id: str, now: datetime) -> str | None:
        """The offer ended without an accept; the conversation waits again in its place."""
        agent_id = self.offers.pop(conversation_id, None)
        if agent_id and agent_id in self.agents:
            agent = self.agents[agent_id]
            agent.offers.discard(conversation_id)
            if agent.load == 0:
                agent.idle_since = now
        return agent_id

    def accepted(self, conversation_id: str, agent_id: str) -> None:
        self.offers.pop(conversation_id, None)
        self.waiting.pop(conversation_id, None)
        agent = self.agents[agent_id]
        agent.offers.discard(conversation_id)
        agent.assigned.add(conversation_id)

    def restore_assignment(self, conversation_id: str, agent_id: str) -> None:
        if agent_id in self.agents:
            self.agents[agent_id].assigned.add(conversation_id)

    # presence ----------------------------------------------------------------------------------
    def set_presence(self, agent_id: str, status: Presence, now: datetime) -> list[str]:
        """Returns the conversations whose offers to this agent end because it left."""
        agent = self.agents[agent_id]
        if status == "available" and agent.status != "available" and agent.load == 0:
            agent.idle_since = now
        agent.status = status
        if status == "available":
            return []
        return [cid for cid, aid in self.offers.items() if aid == agent_id]

    def offers_for(self, agent_id: str) -> list[str]:
        return [cid for cid, aid in self.offers.items() if aid == agent_id]

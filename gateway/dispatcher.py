"""Queue and agent state, in process, with every read-modify-write in this one place.

The routing core decides (``routing.plan_offers``); this class holds the state it decides over
and records what the pipeline made of each decision. A Redis-backed twin for several gateway
processes will implement the same methods. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Iterable, Literal

from routing import AgentConfig, AgentView, Offer, QueueConfig, WaitingEntry, plan_offers, positions
from routing.assignment import serves
from routing.queues import WaitingIndex
from routing.config import Step

Presence = Literal["available", "away", "offline"]


@dataclass
class Route:
    """Where a waiting conversation is in its rule's steps."""

    rule: str
    steps: tuple[Step, ...]
    step: int
    tier_priority: int


@dataclass
class AgentState:
    config: AgentConfig
    status: Presence = "offline"
    connected: bool = False
    assigned: dict[str, str] = field(default_factory=dict)   # conversation id -> channel
    offers: dict[str, str] = field(default_factory=dict)     # conversation id -> channel
    idle_since: datetime | None = None
    wrap_up_until: datetime | None = None
    missed_in_a_row: int = 0

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def load(self) -> int:
        return len(self.assigned) + len(self.offers)

    def can_take(self, now: datetime) -> bool:
        return (self.status == "available" and self.connected
                and (self.wrap_up_until is None or now >= self.wrap_up_until))

    def view(self, now: datetime) -> AgentView:
        load: dict[str, int] = {}
        for channel in (*self.assigned.values(), *self.offers.values()):
            load[channel] = load.get(channel, 0) + 1
        return AgentView(self.id, self.can_take(now), self.config.capacity, load,
                         frozenset(self.config.queues), self.idle_since or now, self.config.skills)


class Dispatcher:
    def __init__(self, agents: Iterable[AgentConfig], queues: Iterable[QueueConfig], default_queue: str) -> None:
        self.waiting = WaitingIndex()
        self.routes: dict[str, Route] = {}
        self.offers: dict[str, str] = {}          # conversation id -> agent id
        self.agents: dict[str, AgentState] = {}
        self.queues: dict[str, QueueConfig] = {}
        self.last_offered: dict[str, str] = {}    # queue -> agent id (round robin)
        self.last_agent: dict[str, tuple[str, datetime]] = {}  # customer id -> (agent, when) (sticky)
        self.default_queue = default_queue
        self.configure(agents, queues, default_queue)

    # configuration (start and hot reload) ----------------------------------------------------------
    def configure(self, agents: Iterable[AgentConfig], queues: Iterable[QueueConfig], default_queue: str) -> list[str]:
        """Swap in new agents and queues. Agents keep their state; conversations waiting in a
        removed queue move to the default queue, keeping their place. Returns those moved."""
        known = self.agents
        self.agents = {}
        for config in agents:
            state = known.get(config.id) or AgentState(config)
            state.config = config
            self.agents[config.id] = state
        self.queues = {q.name: q for q in queues}
        self.default_queue = default_queue
        moved = []
        for cid, entry in list(self.waiting.items()):
            targets = tuple(q for q in entry.targets if q in self.queues)
            if entry.queue not in self.queues or not targets:
                self.waiting[cid] = replace(entry, queue=default_queue, queues=(default_queue,))
                moved.append(cid)
            elif targets != entry.targets:
                self.waiting[cid] = replace(entry, queues=targets)
        return moved

    # queue -----------------------------------------------------------------------------------
    def enqueue(self, entry: WaitingEntry, route: Route | None = None) -> None:
        self.waiting[entry.conversation_id] = entry
        if route is not None:
            self.routes[entry.conversation_id] = route

    def positions(self, now: datetime) -> dict[str, int]:
        return positions(self.waiting.values(), self.queues, now)

    def position(self, conversation_id: str, now: datetime) -> int | None:
        """1-based place among the conversations of its home queue: walks that queue in order up
        to it (no sort of everyone waiting on every enqueue)."""
        entry = self.waiting.get(conversation_id)
        if entry is None:
            return None
        place = 0
        for other in self.waiting.best_first(entry.targets, self.queues, now):
            if other.queue == entry.queue:
                place += 1
            if other.conversation_id == conversation_id:
                return place
        return None

    def is_waiting(self, conversation_id: str) -> bool:
        return conversation_id in self.waiting and conversation_id not in self.offers

    def advance_step(self, conversation_id: str) -> Step | None:
        """Move to the rule's next step (wider queues, a boost). None when there is none."""
        entry, route = self.waiting.get(conversation_id), self.routes.get(conversation_id)
        if entry is None or route is None or route.step + 1 >= len(route.steps):
            return None
        route.step += 1
        step = route.steps[route.step]
        queues = tuple(q for q in step.queues if q in self.queues) or (self.default_queue,)
        self.waiting[conversation_id] = replace(
            entry, queues=queues, priority=route.tier_priority + step.priority_boost)
        return step

    def forget(self, conversation_id: str, now: datetime) -> WaitingEntry | None:
        """The conversation left routing (closed, or assigned elsewhere): drop its entry, offer
        and assignment. Returns its waiting entry, if it was waiting."""
        entry = self.waiting.pop(conversation_id, None)
        self.routes.pop(conversation_id, None)
        self.offers.pop(conversation_id, None)
        for agent in self.agents.values():
            if conversation_id in agent.assigned or conversation_id in agent.offers:
                agent.assigned.pop(conversation_id, None)
                agent.offers.pop(conversation_id, None)
                if agent.load == 0:
                    agent.idle_since = now
        return entry

    # offers ------------------------------------------------------------------------------------
    def plan(self, now: datetime) -> list[Offer]:
        views = [agent.view(now) for agent in self.agents.values()]
        return plan_offers(self.waiting, views, self.queues, now,
                           offered=self.offers.keys(), last_offered=self.last_offered)

    def can_offer(self, offer: Offer, now: datetime) -> bool:
        agent = self.agents.get(offer.agent_id)
        entry = self.waiting.get(offer.conversation_id)
        if not self.is_waiting(offer.conversation_id) or agent is None or entry is None:
            return False
        # The plan may be stale (a step widened, a reload changed queues): check it still fits.
        return serves(agent.view(now), entry, self.queues, honour_exclusion=False) is not None

    def offered(self, offer: Offer, now: datetime) -> None:
        entry = self.waiting[offer.conversation_id]
        self.offers[offer.conversation_id] = offer.agent_id
        agent = self.agents[offer.agent_id]
        agent.offers[offer.conversation_id] = entry.channel
        # "Idle since" is the agent's last offer or last finished conversation: the longest-idle
        # strategy spreads work to whoever has waited longest for some, busy or not.
        agent.idle_since = now
        self.last_offered[entry.queue] = offer.agent_id

    def offer_of(self, conversation_id: str) -> str | None:
        return self.offers.get(conversation_id)

    def withdraw_offer(self, conversation_id: str, now: datetime, exclude: bool = False) -> str | None:
        """The offer ended without an accept; the conversation waits again in its place.
        ``exclude``: that agent is not offered this conversation again."""
        agent_id = self.offers.pop(conversation_id, None)
        if agent_id is None:
            return None
        agent = self.agents.get(agent_id)
        if agent is not None:
            agent.offers.pop(conversation_id, None)
            if agent.load == 0:
                agent.idle_since = now
        entry = self.waiting.get(conversation_id)
        if exclude and entry is not None:
            self.waiting[conversation_id] = replace(entry, excluded=entry.excluded | {agent_id})
        return agent_id

    def declined(self, agent_id: str) -> None:
        """An explicit decline shows the agent is at the desk: its run of missed offers ends."""
        self.agents[agent_id].missed_in_a_row = 0

    def missed_offer(self, agent_id: str) -> int:
        agent = self.agents[agent_id]
        agent.missed_in_a_row += 1
        return agent.missed_in_a_row

    def accepted(self, conversation_id: str, agent_id: str) -> WaitingEntry | None:
        entry = self.waiting.pop(conversation_id, None)
        self.routes.pop(conversation_id, None)
        self.offers.pop(conversation_id, None)
        agent = self.agents[agent_id]
        channel = agent.offers.pop(conversation_id, None) or (entry.channel if entry else "webchat")
        agent.assigned[conversation_id] = channel
        agent.missed_in_a_row = 0
        if entry is not None and entry.customer_id:
            self.last_agent[entry.customer_id] = (agent_id, entry.enqueued_at)
        return entry

    def assignee(self, conversation_id: str) -> str | None:
        """The agent the conversation is assigned to, if any."""
        for agent in self.agents.values():
            if conversation_id in agent.assigned:
                return agent.id
        return None

    def assigned_channel(self, agent_id: str, conversation_id: str) -> str | None:
        """The channel of the conversation if it is assigned to this agent, else None."""
        agent = self.agents.get(agent_id)
        return agent.assigned.get(conversation_id) if agent is not None else None

    def restore_assignment(self, conversation_id: str, agent_id: str, channel: str) -> None:
        if agent_id in self.agents:
            self.agents[agent_id].assigned[conversation_id] = channel

    def preferred_agent(self, customer_id: str, now: datetime, window: float) -> str | None:
        last = self.last_agent.get(customer_id)
        if last is None or (now - last[1]).total_seconds() > window:
            return None
        return last[0]

    def customers_merged(self, source_id: str, target_id: str) -> None:
        """Sticky routing of a merged customer: whoever served either of them last."""
        served = [s for s in (self.last_agent.get(source_id), self.last_agent.get(target_id)) if s is not None]
        if served:
            self.last_agent[target_id] = max(served, key=lambda s: s[1])

    # agents ------------------------------------------------------------------------------------
    def set_presence(self, agent_id: str, status: Presence, now: datetime) -> list[str]:
        """Returns the conversations whose offers to this agent end because it left."""
        agent = self.agents.get(agent_id)
        if agent is None:  # removed by a reload meanwhile
            return []
        if status == "available" and agent.status != "available":
            agent.missed_in_a_row = 0
            if agent.load == 0:
                agent.idle_since = now
        agent.status = status
        if status != "available":
            self._release_reservations(agent_id)
        return [] if status == "available" and agent.connected else self.offers_for(agent_id)

    def _release_reservations(self, agent_id: str) -> None:
        """Transfers waiting for this agent go to their queue: it left, they must not wait on it."""
        for cid, entry in list(self.waiting.items()):
            if entry.reserved_for == agent_id:
                self.waiting[cid] = replace(entry, reserved_for=None)

    def set_connected(self, agent_id: str, connected: bool) -> list[str]:
        agent = self.agents.get(agent_id)
        if agent is None:  # removed by a reload meanwhile
            return []
        agent.connected = connected
        if not connected:
            self._release_reservations(agent_id)
        return [] if connected else self.offers_for(agent_id)

    def offers_for(self, agent_id: str) -> list[str]:
        return [cid for cid, aid in self.offers.items() if aid == agent_id]

    def start_wrap_up(self, agent_id: str, now: datetime, seconds: float) -> datetime | None:
        if seconds <= 0 or agent_id not in self.agents:
            return None
        until = now + timedelta(seconds=seconds)
        agent = self.agents[agent_id]
        agent.wrap_up_until = max(agent.wrap_up_until or until, until)
        return agent.wrap_up_until

    def seats(self, queue: str, now: datetime) -> tuple[int, int]:
        """(agents available to this queue, their free seats). Away and offline agents count in
        neither: they answer nobody until they come back."""
        agents = free = 0
        for agent in self.agents.values():
            if queue in agent.config.queues and agent.can_take(now):
                agents += 1
                view = agent.view(now)
                free += max(0, (view.capacity if isinstance(view.capacity, int) else sum(view.capacity.values()))
                            - view.total_load)
        return agents, free

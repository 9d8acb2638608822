"""The supervisor board's figures, computed on demand from the pipeline's live state.

Per queue: the row of ``GET /api/queues`` itself (``gateway.reports.queue_report``, the one
function ``/metrics`` reads too), plus its colour and forecast (routing/forecast.py). Then the
waiting conversations about to breach, and the agents with their load per channel and the time
in their current state. ``GET /api/board`` answers this; ``/board/ws`` pushes it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable

from routing.forecast import about_to_breach, lowest_service_level, queue_colour

from ..dispatcher import AgentState
from ..pipeline import Pipeline
from ..reports import agent_status, queue_report


class StatusClock:
    """When each agent's board status (available, busy, away, offline) began. Observed on every
    board check (about once a second, and on every conversation event): an agent first seen
    here has been in its state at least since ``started``."""

    def __init__(self, started: datetime) -> None:
        self.started = started
        self._since: dict[str, tuple[str, datetime]] = {}

    def observe(self, agents: Iterable[AgentState], now: datetime) -> None:
        seen: dict[str, tuple[str, datetime]] = {}
        for agent in agents:
            status = agent_status(agent)
            before = self._since.get(agent.id)
            if before is None:
                seen[agent.id] = (status, self.started)
            elif before[0] != status:
                seen[agent.id] = (status, now)
            else:
                seen[agent.id] = before
        self._since = seen  # agents removed by a reload are forgotten

    def since(self, agent_id: str) -> datetime:
        entry = self._since.get(agent_id)
        return entry[1] if entry is not None else self.started


def board_snapshot(pipeline: Pipeline, now: datetime, clock: StatusClock) -> dict[str, Any]:
    """Everything the board shows, as JSON: ``queues``, ``breaching``, ``agents``."""
    settings = pipeline.config.board
    dispatcher = pipeline.dispatcher
    clock.observe(dispatcher.agents.values(), now)
    waits: dict[str, list[float]] = {}
    for entry in dispatcher.waiting.values():
        waits.setdefault(entry.queue, []).append((now - entry.enqueued_at).total_seconds())
    queues = []
    for row in queue_report(pipeline, now):
        name = row["queue"]
        level = dispatcher.queues[name].service_level
        counts = pipeline.stats.snapshot(name, now, level.answer_within, level.percent)
        span = min(settings.rate_window, level.window)
        rate = pipeline.stats.answered_since(name, now - timedelta(seconds=span), now) / span
        lowest = lowest_service_level(answered_within=counts.answered_within_target, offered=counts.offered,
                                      waits=waits.get(name, []), target_seconds=level.answer_within,
                                      answer_rate=rate, horizon=settings.horizon)
        queues.append({**row, "counted": counts.offered, "colour": queue_colour(row["service_level"], lowest, level.percent),
                       "forecast": {"lowest_service_level": None if lowest is None else round(lowest, 2),
                                    "horizon": settings.horizon,
                                    "answers_per_minute": round(rate * 60, 3)}})
    return {"at": now.isoformat(), "queues": queues, "breaching": breaching(pipeline, now),
            "agents": [agent_figures(pipeline, agent, now, clock) for agent in dispatcher.agents.values()],
            "settings": {"horizon": settings.horizon, "breach_share": settings.breach_share,
                         "tick": settings.tick, "history_hours": settings.history_hours}}


def breaching(pipeline: Pipeline, now: datetime) -> list[dict[str, Any]]:
    """Waiting conversations past ``board.breach_share`` of their queue's answer target (or past
    the target), the longest wait first."""
    share = pipeline.config.board.breach_share
    dispatcher = pipeline.dispatcher
    found = []
    for entry in dispatcher.waiting.values():
        queue = dispatcher.queues.get(entry.queue)
        if queue is None:
            continue
        waited = (now - entry.enqueued_at).total_seconds()
        target = queue.service_level.answer_within
        if about_to_breach(waited, target, share):
            found.append({"conversation_id": entry.conversation_id, "queue": entry.queue,
                          "tier": pipeline.tier_of(entry.conversation_id), "channel": entry.channel,
                          "waited": round(waited, 3), "answer_within": target, "past_target": waited > target,
                          "offered_to": dispatcher.offers.get(entry.conversation_id)})
    found.sort(key=lambda item: (-item["waited"], item["conversation_id"]))
    return found


def agent_figures(pipeline: Pipeline, agent: AgentState, now: datetime, clock: StatusClock) -> dict[str, Any]:
    """An agent's presence, its conversations per channel against capacity, and how long it has
    been in its current board status."""
    load = agent.view(now).load
    channels = sorted({*load, *(c.channel_name for c in pipeline.config.channels)})
    shared = agent.config.capacity if isinstance(agent.config.capacity, int) else None
    since = clock.since(agent.id)
    return {"id": agent.id, "name": agent.name, "status": agent_status(agent), "presence": agent.status,
            "connected": agent.connected, "queues": list(agent.config.queues),
            "conversations": agent.load, "capacity": shared,
            "channels": [{"channel": channel, "conversations": load.get(channel, 0),
                          "capacity": None if shared is not None else agent.config.capacity_for(channel)}
                         for channel in channels],
            "since": since.isoformat(), "in_state": round(max(0.0, (now - since).total_seconds()), 3),
            "wrap_up_until": agent.wrap_up_until.isoformat() if agent.wrap_up_until and agent.wrap_up_until > now else None}


# Fields that grow by themselves as time passes: left out when the board asks "did anything change?"
GROWING = ("at", "longest_wait", "waited", "in_state")


def shape(snapshot: Any) -> Any:
    """The snapshot without the figures that grow with the clock: equal shapes mean nothing
    happened (only the slow tick pushes them then)."""
    if isinstance(snapshot, dict):
        return {k: shape(v) for k, v in snapshot.items() if k not in GROWING}
    if isinstance(snapshot, list):
        return [shape(v) for v in snapshot]
    return snapshot

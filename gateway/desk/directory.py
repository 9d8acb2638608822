"""The directory an agent picks a transfer target from: the queues and the agents with presence.

Sent on the agent socket in answer to ``{"type": "directory"}`` (docs/protocol.md, "Transfer"):
asked for when the console opens its transfer picker, so presence is as of that moment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..dispatcher import AgentState, Dispatcher


def agent_status(agent: AgentState, now: datetime) -> str:
    """``available``, ``wrap_up``, ``away`` or ``offline``, as a colleague sees it."""
    if not agent.connected:
        return "offline"
    if agent.status != "available":
        return "away"
    if agent.wrap_up_until is not None and now < agent.wrap_up_until:
        return "wrap_up"
    return "available"


def directory(dispatcher: Dispatcher, agent_id: str, now: datetime) -> dict[str, Any]:
    """The frame: every queue by name, every other agent with its status and whether it can
    take a transfer now (a transfer to an agent needs ``available``)."""
    agents = [{"id": agent.id, "name": agent.name, "status": agent_status(agent, now),
               "queues": list(agent.config.queues)}
              for agent in sorted(dispatcher.agents.values(), key=lambda a: a.name.casefold())
              if agent.id != agent_id]
    return {"type": "directory", "queues": [{"name": q.name, "description": q.description} for q in dispatcher.queues.values()], "agents": agents}

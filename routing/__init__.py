"""The routing core: pure functions of (config, contact, queue state, agent state) -> decision.

Nothing in this package does I/O or reads a clock; the gateway passes ``now`` in. That keeps every
decision unit-testable, property-testable and benchmarkable without a server.
"""

from .config import (
    AgentConfig,
    AttributeTest,
    Condition,
    QueueConfig,
    RoutingConfig,
    RoutingRule,
    TierRule,
    TiersConfig,
)
from .contact import Contact
from .tiers import resolve_tier
from .rules import RouteDecision, choose_queue
from .queues import WaitingEntry, effective_priority, positions, queue_order, position_in_queue
from .assignment import AgentView, Offer, pick_agent, plan_offers, serves

__all__ = [
    "AgentConfig", "AttributeTest", "Condition", "QueueConfig", "RoutingConfig", "RoutingRule",
    "TierRule", "TiersConfig", "Contact", "resolve_tier", "RouteDecision", "choose_queue",
    "WaitingEntry", "effective_priority", "positions", "queue_order", "position_in_queue",
    "AgentView", "Offer", "pick_agent", "plan_offers", "serves",
]

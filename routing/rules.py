"""Which queue takes a contact."""

from __future__ import annotations

from dataclasses import dataclass

from .config import RoutingConfig
from .contact import Contact


@dataclass(frozen=True, slots=True)
class RouteDecision:
    queue: str
    rule: str  # the rule's name, "routing.rules[i]" or "routing.default_queue"


def choose_queue(routing: RoutingConfig, contact: Contact) -> RouteDecision:
    for index, rule in enumerate(routing.rules):
        if contact.satisfies(rule.when):
            return RouteDecision(rule.queue, rule.name or f"routing.rules[{index}]")
    return RouteDecision(routing.default_queue, "routing.default_queue")

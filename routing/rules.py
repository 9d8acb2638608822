"""Which rule takes a contact, and so which steps it goes through."""

from __future__ import annotations

from dataclasses import dataclass

from .compiled import rule_index
from .config import RoutingConfig, Step
from .contact import Contact


@dataclass(frozen=True, slots=True)
class RouteDecision:
    rule: str                 # the rule's name, "routing.rules[i]" or "routing.default_queue"
    steps: tuple[Step, ...]   # at least one

    @property
    def queue(self) -> str:
        """The home queue: the first queue of the first step."""
        return self.steps[0].queues[0]


def choose_queue(routing: RoutingConfig, contact: Contact) -> RouteDecision:
    index = rule_index(routing, lambda: [rule.when for rule in routing.rules]).first_match(contact)
    if index is not None:
        rule = routing.rules[index]
        return RouteDecision(rule.name or f"routing.rules[{index}]", tuple(rule.steps))
    return RouteDecision("routing.default_queue", (Step(queues=[routing.default_queue]),))


def step_timeout(step: Step, home_max_wait: float | None) -> float | None:
    """Seconds before the next step applies: the step's own timeout, else the queue's max wait."""
    return step.timeout if step.timeout is not None else home_max_wait

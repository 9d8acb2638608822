"""What routing knows about a contact: who, on which channel, with which attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .compiled import compile_condition, matches
from .config import Condition


@dataclass(frozen=True, slots=True)
class Contact:
    channel: str
    tier: str | None = None          # resolved tier (None before resolve_tier)
    email: str | None = None
    phone: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    language: str | None = None
    text: str = ""                           # what the customer wrote to the bot so far
    topics: frozenset[str] = frozenset()     # FAQ entry ids recognised in the conversation
    open_hours: frozenset[str] = frozenset()  # names of `hours:` open at the time of routing

    @property
    def email_domain(self) -> str | None:
        if not self.email or "@" not in self.email:
            return None
        return self.email.rsplit("@", 1)[1].lower()

    def satisfies(self, when: Condition) -> bool:
        return matches(compile_condition(when), self)

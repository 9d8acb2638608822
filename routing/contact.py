"""What routing knows about a contact: who, on which channel, with which attributes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
        if when.channel is not None and self.channel not in when.channel:
            return False
        if when.tier is not None and self.tier not in when.tier:
            return False
        if when.email_domain is not None:
            domain = self.email_domain
            # "example.com" also matches "eu.example.com": companies mail from subdomains.
            if domain is None or not any(domain == d or domain.endswith("." + d) for d in when.email_domain):
                return False
        if when.phone_prefix is not None:
            digits = (self.phone or "").replace(" ", "")
            if not digits or not any(digits.startswith(p) for p in when.phone_prefix):
                return False
        if when.attribute is not None and not all(test.holds(self.attributes) for test in when.attribute):
            return False
        if when.language is not None and self.language not in when.language:
            return False
        if when.topic is not None and not self.topics.intersection(when.topic):
            return False
        if when.keywords is not None:
            text = self.text.lower()
            if not any(keyword.lower() in text for keyword in when.keywords):
                return False
        if when.within_hours is not None and when.within_hours not in self.open_hours:
            return False
        if when.outside_hours is not None and when.outside_hours in self.open_hours:
            return False
        return True

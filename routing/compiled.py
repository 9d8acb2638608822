"""Conditions compiled into small checks, once per config.

A rule's condition becomes a tuple of closures, one per key it sets, so matching a contact
against 1,000 rules runs 1,000 short loops over prebuilt checks instead of re-reading the
config models each time. ``Contact.satisfies`` and ``choose_queue`` both go through here: one
definition of what a condition means.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .config import AttributeTest, Condition

if TYPE_CHECKING:
    from .contact import Contact

Check = Callable[["Contact"], bool]
_MISSING = object()


def compile_condition(when: Condition) -> tuple[Check, ...]:
    cached = when.__pydantic_private__.get("_checks") if when.__pydantic_private__ else None
    if cached is not None:
        return cached
    checks = tuple(_checks(when))
    if when.__pydantic_private__ is not None:
        when.__pydantic_private__["_checks"] = checks
    return checks


def matches(checks: tuple[Check, ...], contact: "Contact") -> bool:
    for check in checks:
        if not check(contact):
            return False
    return True


def _checks(when: Condition) -> list[Check]:
    checks: list[Check] = []
    # Cheap set lookups first: most rules are ruled out by channel or tier.
    if when.channel is not None:
        channels = frozenset(when.channel)
        checks.append(lambda c: c.channel in channels)
    if when.tier is not None:
        tiers = frozenset(when.tier)
        checks.append(lambda c: c.tier in tiers)
    if when.language is not None:
        languages = frozenset(when.language)
        checks.append(lambda c: c.language in languages)
    if when.within_hours is not None:
        name = when.within_hours
        checks.append(lambda c: name in c.open_hours)
    if when.outside_hours is not None:
        closed = when.outside_hours
        checks.append(lambda c: closed not in c.open_hours)
    if when.topic is not None:
        topics = frozenset(when.topic)
        checks.append(lambda c: not topics.isdisjoint(c.topics))
    for test in when.attribute or ():
        checks.append(_attribute_check(test))
    if when.email_domain is not None:
        domains = tuple(when.email_domain)
        suffixes = tuple("." + d for d in domains)

        def email_domain(c: "Contact") -> bool:
            domain = c.email_domain
            # "example.com" also matches "eu.example.com": companies mail from subdomains.
            return domain is not None and (domain in domains or domain.endswith(suffixes))

        checks.append(email_domain)
    if when.phone_prefix is not None:
        prefixes = tuple(when.phone_prefix)

        def phone_prefix(c: "Contact") -> bool:
            digits = (c.phone or "").replace(" ", "")
            return bool(digits) and digits.startswith(prefixes)

        checks.append(phone_prefix)
    if when.keywords is not None:
        keywords = tuple(k.lower() for k in when.keywords)

        def keyword(c: "Contact") -> bool:
            text = c.text.lower()
            return any(k in text for k in keywords)

        checks.append(keyword)
    return checks


def _attribute_check(test: AttributeTest) -> Check:
    if "." not in test.name and test.op == "==" and isinstance(test.value, str):
        # The common case (segment == 'gold'): one dict lookup.
        name, value = test.name, test.value
        return lambda c: c.attributes.get(name, _MISSING) == value
    return lambda c: test.holds(c.attributes)


class RuleIndex:
    """Ordered conditions with an index, for "the first one that holds".

    Each condition is filed under its most selective exact key: an ``attribute`` equality test
    ("segment == 'gold'"), else its tiers, else its channels; conditions with none of those are
    always tried. A contact then only tries the conditions filed under its own values, in the
    original order, so the first match is the same as a scan from the top would find.
    """

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self.checks = [compile_condition(c) for c in conditions]
        self.always: list[int] = []
        self.by_attribute: dict[str, dict[Any, list[int]]] = {}
        self.by_tier: dict[str | None, list[int]] = {}
        self.by_channel: dict[str, list[int]] = {}
        for index, when in enumerate(conditions):
            equality = next((t for t in when.attribute or () if t.op == "==" and "." not in t.name
                             and isinstance(t.value, str)), None)
            if equality is not None:
                self.by_attribute.setdefault(equality.name, {}).setdefault(equality.value, []).append(index)
            elif when.tier is not None:
                for tier in when.tier:
                    self.by_tier.setdefault(tier, []).append(index)
            elif when.channel is not None:
                for channel in when.channel:
                    self.by_channel.setdefault(channel, []).append(index)
            else:
                self.always.append(index)

    def first_match(self, contact: "Contact") -> int | None:
        runs = [self.always]
        for name, buckets in self.by_attribute.items():
            value = contact.attributes.get(name, _MISSING)
            if isinstance(value, str) and value in buckets:
                runs.append(buckets[value])
        if contact.tier in self.by_tier:
            runs.append(self.by_tier[contact.tier])
        if contact.channel in self.by_channel:
            runs.append(self.by_channel[contact.channel])
        candidates = runs[0] if len(runs) == 1 else heapq.merge(*runs)
        for index in candidates:
            if matches(self.checks[index], contact):
                return index
        return None


def rule_index(owner: Any, conditions: Callable[[], Sequence[Condition]]) -> RuleIndex:
    """The RuleIndex cached on a config model's private ``_index`` slot."""
    private = owner.__pydantic_private__
    index = private.get("_index") if private else None
    if index is None:
        index = RuleIndex(conditions())
        if private is not None:
            private["_index"] = index
    return index

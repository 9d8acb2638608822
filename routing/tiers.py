"""Which tier a customer belongs to."""

from __future__ import annotations

from .compiled import rule_index
from .config import TiersConfig
from .contact import Contact


def resolve_tier(tiers: TiersConfig, profile_tier: str | None, contact: Contact) -> tuple[str, str]:
    """Return (tier, why). A tier stored on the profile wins; then the first matching rule."""
    if profile_tier:
        return profile_tier, "profile"
    index = rule_index(tiers, lambda: [rule.when for rule in tiers.rules]).first_match(contact)
    if index is not None:
        return tiers.rules[index].tier, f"tiers.rules[{index}]"
    return tiers.default, "tiers.default"

"""Which tier a customer belongs to."""

from __future__ import annotations

from .config import TiersConfig
from .contact import Contact


def resolve_tier(tiers: TiersConfig, profile_tier: str | None, contact: Contact) -> tuple[str, str]:
    """Return (tier, why). A tier stored on the profile wins; then the first matching rule."""
    if profile_tier:
        return profile_tier, "profile"
    for index, rule in enumerate(tiers.rules):
        if contact.satisfies(rule.when):
            return rule.tier, f"tiers.rules[{index}]"
    return tiers.default, "tiers.default"

"""The self-service layer: answer from the knowledge base, or hand off to a human.

A pure policy over the customer's text and how many turns in a row went unanswered; the pipeline
records what it decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pathlib import Path

from .config import ConfigError, GatewayConfig, SelfServiceConfig, load_config
from .faq import FaqError, FaqIndex


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    faq_id: str
    score: float


@dataclass(frozen=True, slots=True)
class NoAnswer:
    text: str


@dataclass(frozen=True, slots=True)
class Handoff:
    text: str
    reason: str  # "asked" (a handoff phrase) or "unanswered" (too many misses)


Reply = Answer | NoAnswer | Handoff

_CJK = re.compile(r"[\u3400-\u9fff]")


class SelfService:
    def __init__(self, config: SelfServiceConfig, faq: FaqIndex | None) -> None:
        self.config = config
        self.faq = faq
        latin = [re.escape(p) for p in config.handoff_phrases if not _CJK.search(p)]
        self._cjk_phrases = [p for p in config.handoff_phrases if _CJK.search(p)]
        # Whole words only: "agent" asks for a person, "agents' fees" may not.
        self._latin = re.compile(r"\b(?:" + "|".join(latin) + r")\b", re.IGNORECASE) if latin else None

    @classmethod
    def from_config(cls, config: SelfServiceConfig) -> "SelfService":
        return cls(config, FaqIndex.load(config.faq) if config.faq else None)

    def asks_for_human(self, text: str) -> bool:
        if self._latin is not None and self._latin.search(text):
            return True
        return any(phrase in text for phrase in self._cjk_phrases)

    def reply(self, text: str, unanswered_before: int, channel: str | None = None) -> Reply:
        """``channel``: the conversation's channel, whose ``selfservice.channels`` entry (if
        any) sets its own ``min_score`` and ``max_unanswered``."""
        if self.asks_for_human(text):
            return Handoff(self.config.handoff, "asked")
        own = self.config.channels.get(channel) if channel is not None else None
        min_score = own.min_score if own is not None and own.min_score is not None else self.config.min_score
        max_unanswered = (own.max_unanswered if own is not None and own.max_unanswered is not None
                          else self.config.max_unanswered)
        match = self.faq.match(text, min_score=min_score) if self.faq else None
        if match is not None:
            return Answer(match.entry.answer, match.entry.id, match.score)
        if unanswered_before + 1 >= max_unanswered:
            return Handoff(self.config.handoff, "unanswered")
        return NoAnswer(self.config.no_answer)


def load_gateway_config(path: Path) -> tuple[GatewayConfig, SelfService]:
    """config.yaml validated and its FAQ loaded, once: what serve, check-config, simulate and a
    hot reload all start from. A bad FAQ is a config error of ``selfservice.faq``."""
    config = load_config(path)
    try:
        return config, SelfService.from_config(config.selfservice)
    except FaqError as exc:
        raise ConfigError(str(path), [f"0: selfservice.faq: {exc}"]) from None

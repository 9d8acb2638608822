"""Several knowledge bases: which one answers a conversation, and the thresholds of each.

``selfservice.faq`` is the KB named ``default``; ``selfservice.knowledge_bases`` adds more, each
with a ``when`` in routing's words (channel, language, attribute, email_domain, phone_prefix,
keywords; docs/routing.md#conditions) and thresholds of its own, because a calibration is valid
for one KB only. The first KB whose ``when`` holds answers; when none does, the default.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from routing.config import Condition
from routing.contact import Contact

from ..config import SelfServiceConfig
from ..faq import FaqIndex, detect_lang
from ..store import NotFound
from .calibration import load_calibration, made_for_another_kb
from .evaluate import CalibrationError
from .matcher import Matcher, Thresholds

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger("contactgate")

__all__ = ["DEFAULT_KB", "KnowledgeBase", "KnowledgeBaseError", "choose_kb", "conversation_kb", "thresholds_for"]

DEFAULT_KB = "default"


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    name: str  # "default" for selfservice.faq, else its knowledge_bases[].name
    matcher: Matcher | None  # None: no FAQ configured
    thresholds: Thresholds
    when: Condition | None = None  # None: the default, which holds when no other does

    @property
    def index(self) -> FaqIndex | None:
        """The lexical index (also inside a semantic matcher): the entries by id."""
        return getattr(self.matcher, "index", None)

    def has_entry(self, faq_id: str) -> bool:
        return self.index is not None and any(e.id == faq_id for e in self.index.entries)


class KnowledgeBaseError(ValueError):
    """A KB of ``selfservice.knowledge_bases`` that cannot be loaded; ``key`` is where in the
    config (``("knowledge_bases", 1, "faq")``), so the error can name its line."""

    def __init__(self, key: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.key = key


def choose_kb(kbs: Sequence[KnowledgeBase], default: KnowledgeBase, contact: Contact) -> KnowledgeBase:
    for kb in kbs:
        if kb.when is not None and contact.satisfies(kb.when):
            return kb
    return default


async def conversation_kb(pipeline: "Pipeline", conversation_id: str | None, text: str = "") -> KnowledgeBase:
    """The KB that answers the conversation, as the bot's turn picks it: ``for_contact`` of what
    routing knows of the contact now. ``text``: what the customer said, for when the process holds
    none of the bot's text (a restart), so a ``language`` or ``keywords`` condition still holds."""
    selfservice = pipeline.selfservice
    if not selfservice.knowledge_bases or conversation_id is None:
        return selfservice.default_kb
    try:
        conversation = await pipeline.store.get_conversation(conversation_id)  # its channel and customer
    except NotFound:
        return selfservice.default_kb
    customer = await pipeline.store.get_customer(conversation.customer_id)
    contact = pipeline.contact(conversation, customer, pipeline.clock())
    if not contact.text.strip() and text.strip():
        contact = replace(contact, text=text, language=contact.language or detect_lang(text))
    return selfservice.for_contact(contact)


def thresholds_for(config: SelfServiceConfig, matcher: Matcher, *, calibration: Path | None,
                   min_score: float, thresholds: Mapping[str, float], choices_min_score: float | None,
                   choices_thresholds: Mapping[str, float]) -> Thresholds:
    """The thresholds of one KB: the calibration file's (for this matcher's version), then the
    config's per language over them. A calibration made for the semantic matcher is ignored
    when the extra is missing and ``matcher`` is its lexical stand-in. Raises
    :class:`CalibrationError` for a file made for another matcher or version."""
    by_lang: dict[str, float] = {}
    choices: dict[str, float] = {}
    if calibration is not None:
        made = load_calibration(calibration)
        name, version, calibrated, floors = made.matcher, made.version, made.thresholds, made.choices
        fell_back = matcher.name != config.matcher
        if fell_back and name == config.matcher:
            calibrated = floors = {}  # made for the matcher we could not start: not valid for this one
        elif (name, version) != (matcher.name, matcher.version):
            raise CalibrationError(
                f"{calibration}: calibrated for matcher {name} {version}, but the"
                f" matcher is {matcher.name} {matcher.version}; re-calibrate:"
                f" contactgate faq-eval KB QUESTIONS.yaml --config CONFIG --calibrate")
        elif made_for_another_kb(made, matcher):
            log.warning("selfservice: the KB changed since its calibration; its thresholds still"
                        " apply, re-calibrate to keep the wrong-answer rate measured",
                        extra={"calibration": str(calibration), "kb_digest": made.kb_digest,
                               "fix": "contactgate faq-eval KB QUESTIONS.yaml --config CONFIG --calibrate"})
        by_lang.update(calibrated)
        choices.update(floors)
    by_lang.update(thresholds)
    choices.update(choices_thresholds)
    return Thresholds(min_score, by_lang, choices_min_score, choices)

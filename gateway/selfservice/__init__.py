"""The self-service layer: answer from the knowledge base, or hand off to a human.

A pure policy over the customer's text and how many turns in a row went unanswered; the pipeline
records what it decides. Matching is behind :class:`~gateway.selfservice.matcher.Matcher`
(``matcher.py``); ``evaluate.py`` measures it, ``calibration.py`` calibrates the thresholds.

The score an answer needs: ``selfservice.thresholds`` for the question's language, else the
``selfservice.calibration`` file's, else ``selfservice.min_score``; and at least the channel's
``selfservice.channels.<name>.min_score`` (a channel can ask for surer answers, never looser).
 Each KB of ``selfservice.knowledge_bases`` has its own
(``knowledge.py``); :meth:`SelfService.for_contact` says which KB answers a conversation.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from dataclasses import dataclass

from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

from adapters import registry
from routing.contact import Contact

from ..config import ConfigError, GatewayConfig, SelfServiceConfig, load_config, localized
from ..configfile import dotted, read_yaml_file
from ..faq import FaqError, FaqIndex, detect_lang
from .evaluate import CalibrationError
from .knowledge import DEFAULT_KB, KnowledgeBase, KnowledgeBaseError, choose_kb, thresholds_for
from .matcher import LexicalMatcher, Matcher, Thresholds, choose

log = logging.getLogger("contactgate")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One KB entry the matcher thought of for a question, with its score: what a "did you
    mean" choice, an agent's suggestion and a handoff's top guesses are made of."""

    faq_id: str
    question: str
    answer: str
    score: float


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    faq_id: str
    score: float
    candidates: tuple[Candidate, ...] = ()  # the top guesses, best first (this answer first)


@dataclass(frozen=True, slots=True)
class Choices:
    """"Did you mean": no entry was sure enough to answer, these (up to 3) were close."""

    text: str
    options: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class NoAnswer:
    text: str
    candidates: tuple[Candidate, ...] = ()


@dataclass(frozen=True, slots=True)
class Handoff:
    text: str
    reason: str  # "asked" (a handoff phrase) or "unanswered" (too many misses)
    candidates: tuple[Candidate, ...] = ()  # the bot's top guesses, for the agent's offer


Reply = Answer | Choices | NoAnswer | Handoff

MAX_CHOICES = 3

_CJK = re.compile(r"[\u3400-\u9fff]")


class SelfService:
    def __init__(self, config: SelfServiceConfig, faq: FaqIndex | Matcher | None,
                 thresholds: Thresholds | None = None,
                 knowledge_bases: tuple[KnowledgeBase, ...] = ()) -> None:
        """``faq``: a matcher, or a bare index (matched lexically, as built): the default KB.
        ``knowledge_bases``: the others, in the config's order (:meth:`for_contact`)."""
        self.config = config
        if isinstance(faq, FaqIndex):
            faq = LexicalMatcher(faq)
        self.matcher: Matcher | None = faq
        self.thresholds = thresholds or Thresholds(
            config.min_score, dict(config.thresholds),
            config.choices_min_score, dict(config.choices_thresholds))
        self.default_kb = KnowledgeBase(DEFAULT_KB, self.matcher, self.thresholds)
        self.knowledge_bases = knowledge_bases
        # Why the configured matcher is not the one in use (the [semantic] extra is missing):
        # serve and a reload log it once logging is set up.
        self.notice: str | None = None
        latin = [re.escape(p) for p in config.handoff_phrases if not _CJK.search(p)]
        self._cjk_phrases = [p for p in config.handoff_phrases if _CJK.search(p)]
        # Whole words only: "agent" asks for a person, "agents' fees" may not.
        self._latin = re.compile(r"\b(?:" + "|".join(latin) + r")\b", re.IGNORECASE) if latin else None

    @property
    def faq(self) -> FaqIndex | None:
        """The lexical index (also inside a semantic matcher), for what lists the entries."""
        return getattr(self.matcher, "index", None)

    @classmethod
    def from_config(cls, config: SelfServiceConfig) -> "SelfService":
        """Raises :class:`FaqError` for a bad KB and :class:`CalibrationError` for a calibration
        file that cannot be read or was made for another matcher."""
        # One worker thread for every KB's model calls: concurrency stays bounded however many
        # KBs there are (the model itself is shared and used by one thread at a time).
        executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="faq-embed")
                    if config.matcher == "semantic" else None)
        kbs = []
        for index, kb in enumerate(config.knowledge_bases):
            key: tuple[str | int, ...] = ("knowledge_bases", index, "faq")
            try:
                own = build_matcher(config.model_copy(update={"faq": kb.faq}), quiet=True, executor=executor)
                key = ("knowledge_bases", index, "calibration")
                kbs.append(KnowledgeBase(kb.name, own, thresholds_for(
                    config, own, calibration=kb.calibration,
                    min_score=kb.min_score if kb.min_score is not None else config.min_score,
                    thresholds=kb.thresholds,
                    choices_min_score=kb.choices_min_score if kb.choices_min_score is not None else config.choices_min_score,
                    choices_thresholds=kb.choices_thresholds), kb.when))
            except (FaqError, CalibrationError) as exc:
                raise KnowledgeBaseError(key, str(exc)) from None
        if not config.faq:
            return cls(config, None, knowledge_bases=tuple(kbs))
        matcher = build_matcher(config, quiet=True, executor=executor)
        fell_back = matcher.name != config.matcher
        made = cls(config, matcher, thresholds_for(
            config, matcher, calibration=config.calibration, min_score=config.min_score,
            thresholds=config.thresholds, choices_min_score=config.choices_min_score,
            choices_thresholds=config.choices_thresholds), tuple(kbs))
        if fell_back:
            made.notice = getattr(matcher, "fallback_reason", None) or f"{config.matcher} unavailable"
            if config.calibration is not None:
                made.notice += "; the calibration file is for it, so thresholds and min_score apply"
        return made

    def log_notice(self) -> None:
        if self.notice is not None:
            log.warning("semantic matcher unavailable; matching lexically",
                        extra={"reason": self.notice, "fix": "pip install 'contactgate[semantic]'"})

    def for_contact(self, contact: Contact) -> KnowledgeBase:
        """The KB that answers this contact: the first of ``selfservice.knowledge_bases`` whose
        ``when`` holds, else the default (``selfservice.faq``). Pass it to :meth:`reply`."""
        return choose_kb(self.knowledge_bases, self.default_kb, contact)

    def kb_for_channel(self, channel: str, language: str | None = None) -> KnowledgeBase:
        """The KB for what a channel and a language (en, zh) alone tell: the one an IVR's
        ``faq: <id>`` options read (a ``when`` that asks more, e.g. a phone_prefix, does not hold)."""
        return self.for_contact(Contact(channel=channel, language=language))

    def close(self) -> None:
        """Let the model's worker end once the questions queued for it are answered."""
        for kb in (self.default_kb, *self.knowledge_bases):
            if hasattr(kb.matcher, "close"):
                kb.matcher.close()

    async def areply(self, text: str, unanswered_before: int, channel: str | None = None, *,
                     kb: KnowledgeBase | None = None) -> Reply:
        """:meth:`reply` for the event loop: a matcher that runs a model (it has an
        ``executor``) is asked in its worker thread, one question at a time, so the loop
        never waits on it; the lexical one is fast enough to run inline (~0.1 ms)."""
        kb = kb or self.kb_for_question(text, channel)
        executor = getattr(kb.matcher, "executor", None)
        if executor is None:
            return self.reply(text, unanswered_before, channel, kb=kb)
        return await asyncio.get_running_loop().run_in_executor(
            executor, functools.partial(self.reply, text, unanswered_before, channel, kb=kb))

    def kb_for_question(self, text: str, channel: str | None) -> KnowledgeBase:
        """Without a contact: the KB for what a question alone tells, its channel and language."""
        if not self.knowledge_bases:
            return self.default_kb
        return self.for_contact(Contact(channel=channel or "", language=detect_lang(text), text=text))

    def asks_for_human(self, text: str) -> bool:
        if self._latin is not None and self._latin.search(text):
            return True
        return any(phrase in text for phrase in self._cjk_phrases)

    def without_handoff_phrases(self, text: str) -> str:
        """``text`` without its handoff phrases ("How do I track it? I need an agent" keeps the
        question; "人工" leaves nothing), for matching what a customer asked."""
        if self._latin is not None:
            text = self._latin.sub(" ", text)
        for phrase in self._cjk_phrases:
            text = text.replace(phrase, " ")
        return text

    def reply(self, text: str, unanswered_before: int, channel: str | None = None, *,
              kb: KnowledgeBase | None = None) -> Reply:
        """``channel``: the conversation's channel, whose ``selfservice.channels`` entry (if
        any) sets its own ``max_unanswered`` and a ``min_score`` the threshold is raised to. ``kb``: the KB to answer from
        (:meth:`for_contact`); None: the one the channel and the question's language choose."""
        kb = kb or self.kb_for_question(text, channel)
        lang = detect_lang(text)
        if self.asks_for_human(text):
            return Handoff(localized(self.config.handoff, lang), "asked")
        own = self.config.channels.get(channel) if channel is not None else None
        threshold = kb.thresholds.for_text(text)
        if own is not None and own.min_score is not None:
            threshold = max(threshold, own.min_score)
        ranked = kb.matcher.rank(text) if kb.matcher else []
        guesses = tuple(Candidate(m.entry.id, m.entry.question, m.entry.answer, m.score)
                        for m in ranked[:MAX_CHOICES])
        match = choose(ranked, threshold)
        if match is not None:
            best = Candidate(match.entry.id, match.entry.question, match.entry.answer, match.score)
            return Answer(match.entry.answer, match.entry.id, match.score,
                          (best,) + tuple(g for g in guesses if g.faq_id != best.faq_id)[:MAX_CHOICES - 1])
        # A "did you mean" is a miss too: after max_unanswered of either in a row, a person.
        missed = self.miss(text, unanswered_before, channel, guesses)
        floor = kb.thresholds.choices_for_text(text)
        if isinstance(missed, NoAnswer) and floor is not None:
            close = tuple(g for g in guesses if g.score >= floor)
            if close:
                return Choices(localized(self.config.did_you_mean, lang), close)
        return missed

    def miss(self, text: str, unanswered_before: int, channel: str | None = None,
             guesses: tuple[Candidate, ...] = ()) -> Handoff | NoAnswer:
        """A message the bot does not try to answer (a "no" to its choices): "I don't know" in
        the language of ``text``, or after ``max_unanswered`` misses in a row a handoff."""
        lang = detect_lang(text)
        if unanswered_before + 1 >= self._max_unanswered(channel):
            return Handoff(localized(self.config.handoff, lang), "unanswered", guesses)
        return NoAnswer(localized(self.config.no_answer, lang), guesses)

    def _max_unanswered(self, channel: str | None) -> int:
        own = self.config.channels.get(channel) if channel is not None else None
        return own.max_unanswered if own is not None and own.max_unanswered is not None else self.config.max_unanswered


def load_gateway_config(path: Path) -> tuple[GatewayConfig, SelfService]:
    """config.yaml validated and its FAQ loaded, once: what serve, check-config, simulate and a
    hot reload all start from. A bad FAQ is a config error of ``selfservice.faq``."""
    config = load_config(path)
    try:
        selfservice = SelfService.from_config(config.selfservice)
    except FaqError as exc:
        key, message = ("faq",), str(exc)
    except CalibrationError as exc:
        key, message = ("calibration",), str(exc)
    except KnowledgeBaseError as exc:
        key, message = exc.key, str(exc)
    else:
        missing = missing_entries(config, selfservice)
        if not missing:
            return config, selfservice
        selfservice.close()
        doc = read_yaml_file(path)
        raise ConfigError(str(path), [f"{doc.line_of(where) or 0}: {dotted(where)}: {message}"
                                      for where, message in missing])
    where = ("selfservice", *key)
    line = read_yaml_file(path).line_of(where) or 0
    raise ConfigError(str(path), [f"{line}: {dotted(where)}: {message}"]) from None


def missing_entries(config: GatewayConfig, selfservice: SelfService) -> list[tuple[tuple[str | int, ...], str]]:
    """Entry ids a channel names (an IVR's ``faq: <id>`` options) that the KB answering that
    channel's calls has not, with their keys: the KB of the channel and each language the
    caller may speak there (``SelfService.kb_for_channel``), else the default."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, channel in enumerate(config.channels):
        settings = registry.validate_settings(channel.type, channel.settings)  # valid: load_config checked it
        for key, faq_id, languages in getattr(settings, "faq_references", lambda: [])():
            by_kb: dict[str, tuple[KnowledgeBase, list[str]]] = {}
            for lang in languages:
                kb = selfservice.kb_for_channel(channel.channel_name, lang)
                by_kb.setdefault(kb.name, (kb, []))[1].append(lang)
            for kb, langs in by_kb.values():
                if kb.has_entry(faq_id):
                    continue
                which = "selfservice.faq" if kb.name == DEFAULT_KB else f"selfservice.knowledge_bases {kb.name!r}"
                calls = f"calls on channel {channel.channel_name!r}" + (f" in {', '.join(langs)}" if len(by_kb) > 1 else "")
                if kb.index is None:
                    message = f"no KB answers {calls}: set selfservice.faq, or leave out faq: {faq_id}"
                else:
                    message = f"no entry {faq_id!r} in {which}, the KB that answers {calls}"
                problems.append((("channels", index, *key), message))
    return problems


def build_matcher(config: SelfServiceConfig, *, quiet: bool = False,
                  executor: ThreadPoolExecutor | None = None) -> Matcher:
    """The configured matcher over ``config.faq``. ``semantic`` without its extra installed is
    logged once (unless ``quiet``) and falls back to ``lexical``; nothing else changes.
    ``executor``: the semantic matcher's worker (a new one when None)."""
    if config.faq is None:
        raise ValueError("build_matcher needs selfservice.faq")
    lexical = LexicalMatcher.load(config.faq, synonyms=config.synonyms,
                                  typo_tolerance=config.typo_tolerance)
    if config.matcher == "lexical":
        return lexical
    from .semantic import SemanticUnavailable, semantic_matcher

    try:
        return semantic_matcher(lexical, config.semantic, executor)
    except SemanticUnavailable as exc:
        if not quiet:
            log.warning("semantic matcher unavailable; matching lexically",
                        extra={"reason": str(exc), "fix": "pip install 'contactgate[semantic]'"})
        lexical.fallback_reason = str(exc)
        return lexical

"""The seam between the self-service policy and the ways of matching a question to the KB.

A :class:`Matcher` ranks KB entries for a question (best first, scores in 0..1); the policy and
``contactgate faq-eval`` decide what to do with the ranking through :class:`Thresholds`, one per
language, because scores of different languages are not comparable. Two implementations:
:class:`LexicalMatcher` (TF-IDF over words, characters and bigrams, see ``gateway/faq.py``) and
``SemanticMatcher`` (``gateway/selfservice/semantic.py``, the optional ``[semantic]`` extra).

Each matcher has a ``version``: thresholds calibrated for one matcher (or one model, or one set
of matching options) are not valid for another, and a calibration file records the version it
was made with.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..faq import FaqEntry, FaqIndex, FaqMatch, detect_lang

__all__ = ["LexicalMatcher", "Matcher", "Thresholds", "choose", "lexical_version"]


@runtime_checkable
class Matcher(Protocol):
    """Ranks the entries of one knowledge base for a customer's question."""

    name: str  # "lexical" or "semantic", as in selfservice.matcher
    version: str  # what a calibration is valid for

    @property
    def entries(self) -> tuple[FaqEntry, ...]: ...

    def rank(self, text: str, limit: int | None = None) -> list[FaqMatch]:
        """Candidates best first: entries in the question's language before the others, each
        group by score (0..1). Entries that have nothing in common with ``text`` may be left
        out. Must not raise for any ``str``."""
        ...


def choose(ranked: Sequence[FaqMatch], threshold: float) -> FaqMatch | None:
    """The answer of a ranking at ``threshold``: the first candidate that reaches it (so the
    best one in the question's language if any does, else the best in another language)."""
    for m in ranked:
        if m.score >= threshold:
            return m
    return None


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The score an answer needs, per language of the question (:func:`detect_lang`), and for
    languages not listed."""

    default: float
    by_lang: Mapping[str, float] = field(default_factory=dict)
    # The "did you mean" band, below the answer's: candidates scoring at least this (per
    # language, else ``choices_default``) are offered as choices. None: no such band.
    choices_default: float | None = None
    choices_by_lang: Mapping[str, float] = field(default_factory=dict)

    def for_text(self, text: str) -> float:
        return self.by_lang.get(detect_lang(text), self.default)

    def choices_for_text(self, text: str) -> float | None:
        """The score a "did you mean" choice needs for ``text``; None when there is no band."""
        return self.choices_by_lang.get(detect_lang(text), self.choices_default)


def lexical_version(synonyms: Iterable[Iterable[str]], typo_tolerance: bool) -> str:
    """``lexical-1`` plus a digest of the options that change scores: a calibration made without
    synonyms is not valid with them."""
    groups = sorted("|".join(g) for g in synonyms)
    if not groups and not typo_tolerance:
        return "lexical-1"
    digest = hashlib.sha256(("\n".join(groups) + f"\ntypos={typo_tolerance}").encode()).hexdigest()[:12]
    return f"lexical-1+{digest}"


class LexicalMatcher:
    """:class:`~gateway.faq.FaqIndex` behind the :class:`Matcher` protocol."""

    name = "lexical"

    def __init__(self, index: FaqIndex, *, synonyms: Iterable[Iterable[str]] = (),
                 typo_tolerance: bool = False) -> None:
        """``index`` must have been built with the same ``synonyms`` and ``typo_tolerance``
        (they go into :attr:`version`); :meth:`load` does both."""
        self.index = index
        self.version = lexical_version(synonyms, typo_tolerance)
        self.fallback_reason: str | None = None  # set when it stands in for the semantic one

    @classmethod
    def load(cls, path, *, synonyms: Iterable[Iterable[str]] = (),  # type: ignore[no-untyped-def]
             typo_tolerance: bool = False) -> "LexicalMatcher":
        synonyms = [list(g) for g in synonyms]
        index = FaqIndex.load(path, synonyms=synonyms, typo_tolerance=typo_tolerance)
        return cls(index, synonyms=synonyms, typo_tolerance=typo_tolerance)

    @property
    def entries(self) -> tuple[FaqEntry, ...]:
        return self.index.entries

    def rank(self, text: str, limit: int | None = None) -> list[FaqMatch]:
        return self.index.rank(text, limit)

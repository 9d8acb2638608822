"""The knowledge base's top entries for a text, for agents: the suggestions on an offer and on
each customer message of an assigned conversation (docs/protocol.md), and the bot's top guesses
on a handoff it decided itself."""

from __future__ import annotations

import asyncio
from typing import Any

from . import Candidate, SelfService
from .knowledge import KnowledgeBase
from .matcher import Matcher


def _rank(matcher: Matcher | None, text: str, limit: int) -> list[Candidate]:
    if matcher is None or limit <= 0 or not text.strip():
        return []
    return [Candidate(m.entry.id, m.entry.question, m.entry.answer, m.score)
            for m in matcher.rank(text, limit)[:limit]]


async def top_entries(selfservice: SelfService, text: str, limit: int,
                      kb: KnowledgeBase | None = None) -> list[Candidate]:
    """Best first, from ``kb`` (default: ``selfservice.faq``'s). A matcher that runs a model is
    asked in its worker thread (see ``areply``)."""
    matcher = kb.matcher if kb is not None else selfservice.matcher
    executor = getattr(matcher, "executor", None)
    if executor is None:
        return _rank(matcher, text, limit)
    return await asyncio.get_running_loop().run_in_executor(executor, _rank, matcher, text, limit)


def entry_lang(kb: KnowledgeBase, faq_id: str, question: str) -> str | None:
    index = kb.index
    for entry in index.entries if index is not None else ():
        if entry.id == faq_id and entry.question == question:
            return entry.lang
    return None


def suggestion_json(kb: KnowledgeBase, candidate: Candidate) -> dict[str, Any]:
    """``kb``: the KB the candidate came from, for its language."""
    return {"faq_id": candidate.faq_id, "lang": entry_lang(kb, candidate.faq_id, candidate.question),
            "question": candidate.question, "answer": candidate.answer, "score": round(candidate.score, 3)}


def guess_json(candidate: Candidate) -> dict[str, Any]:
    """A top guess as a handoff's bot message keeps it (the answer is in the KB)."""
    return {"faq_id": candidate.faq_id, "question": candidate.question, "score": round(candidate.score, 3)}

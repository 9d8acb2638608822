"""FAQ entries by id for the IVR's ``faq: <id>`` options."""

from __future__ import annotations

from typing import Any


def answer_of(index: Any, faq_id: str, language: str) -> str | None:
    """The answer of entry ``faq_id`` in ``language`` (en, zh), else in any language; None when
    the knowledge base (a ``gateway.faq.FaqIndex``, or None) has no such entry."""
    if index is None:
        return None
    entries = [e for e in index.entries if e.id == faq_id]
    chosen = next((e for e in entries if e.lang == language), entries[0] if entries else None)
    return chosen.answer if chosen is not None else None

"""The knowledge base at the agent's desk (docs/protocol.md): the bot's handoff and the top KB
suggestions on each offer, suggestions on each customer message of an assigned conversation,
the answer a ``send_suggestion`` frame sends, and an agent's proposal for the KB.

Suggestions and ``send_suggestion`` read the KB that answers the conversation (the same
``SelfService.for_contact`` choice the bot makes), so an agent is shown what the bot would say."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from adapters.base import NOT_WORDS

from ..model import Author, Event, EventKind
from ..store import NotFound
from ..store.kb import KbProposal
from ..faq import _primary_lang
from .capture import ProposalRejected, read_proposal
from .conversation import pick_number, yes_or_no
from . import SelfService
from .knowledge import DEFAULT_KB, conversation_kb
from .suggest import suggestion_json, top_entries

if TYPE_CHECKING:
    from ..pipeline import Pipeline

RECENT = 3  # customer messages an offer's suggestions are matched against


# The suggestions of the texts seen last, per KB as loaded (a reload makes a new SelfService,
# whose cache starts empty): an agent's resume replays every customer message of its
# conversations, and each would otherwise be ranked again (with the semantic matcher, in the
# worker thread the bot's answers wait for).
KEPT = 512
_kept: "weakref.WeakKeyDictionary[SelfService, OrderedDict[tuple[int, str, bytes], list[dict[str, Any]]]]" = \
    weakref.WeakKeyDictionary()


def asked(pipeline: "Pipeline", event: Event) -> str:
    """What a customer message asks the KB, for its suggestions: the text without its handoff
    phrases; "" for what the customer says to the bot rather than asks (a pick of its choices, a
    command, a yes or no to "did this help?", a handoff phrase alone: "人工") and for the channel's account
    of what the customer did (NOT_WORDS: "pressed 2")."""
    text = event.text or ""
    policy = pipeline.config.selfservice.policy
    if (event.data.get("choice") is not None or event.data.get("command") or event.data.get(NOT_WORDS)
            or pick_number(text) is not None or yes_or_no(text, policy.yes_words, policy.no_words) is not None):
        return ""
    rest = pipeline.selfservice.without_handoff_phrases(text)
    return text if rest == text else (rest if any(ch.isalnum() for ch in rest) else "")


def is_question(pipeline: "Pipeline", event: Event) -> bool:
    """A knowledge-capture question: a message that asks something and no handoff phrase."""
    return bool(asked(pipeline, event).strip()) and not pipeline.selfservice.asks_for_human(event.text or "")


async def suggestions(pipeline: "Pipeline", text: str, conversation_id: str | None = None) -> list[dict[str, Any]]:
    """The top entries for ``text`` from the KB of the conversation (:func:`conversation_kb`)."""
    limit = pipeline.config.selfservice.policy.agent_suggestions
    selfservice = pipeline.selfservice
    kb = await conversation_kb(pipeline, conversation_id, text)
    kept = _kept.setdefault(selfservice, OrderedDict())
    key = (limit, kb.name, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())  # texts may be long
    found = kept.get(key)
    if found is None:
        found = [suggestion_json(kb, c) for c in await top_entries(selfservice, text, limit, kb)]
        kept[key] = found
        if len(kept) > KEPT:
            kept.popitem(last=False)
    else:
        kept.move_to_end(key)
    return list(found)


async def offer_extras(pipeline: "Pipeline", conversation_id: str, events: Sequence[Event]) -> dict[str, Any]:
    """``handoff`` (why the bot handed off, with its top guesses and their scores) and
    ``suggestions`` (for the customer's last messages, from the conversation's KB) for an offer's frame."""
    extras: dict[str, Any] = {}
    for event in reversed(events):
        if event.author is Author.BOT and event.kind is EventKind.MESSAGE and event.data.get("handoff"):
            extras["handoff"] = {"reason": event.data["handoff"], "guesses": event.data.get("guesses") or []}
            break
    said = [asked(pipeline, e) for e in events if e.author is Author.CUSTOMER and e.kind is EventKind.MESSAGE]
    said = [text for text in said if text.strip()]
    extras["suggestions"] = await suggestions(pipeline, "\n".join(said[-RECENT:]), conversation_id)
    return extras


async def suggested_reply(pipeline: "Pipeline", conversation_id: str, frame: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(text, data) of a ``send_suggestion`` frame: the entry's answer from the conversation's KB
    (the one its suggestions came from), or the agent's edit of it."""
    faq_id, lang, edited = frame.get("faq_id"), frame.get("lang"), frame.get("text")
    if not isinstance(faq_id, str) or not faq_id:
        raise ProposalRejected("bad_suggestion", '"faq_id" must be the id of a KB entry (from "suggestions")')
    if lang is not None and not isinstance(lang, str):
        raise ProposalRejected("bad_suggestion", '"lang" must be a language of the entry, e.g. "en", or left out')
    if edited is not None and (not isinstance(edited, str) or not edited.strip()):
        raise ProposalRejected("bad_suggestion", '"text" must be the edited answer (a non-empty string) or left out')
    index = (await conversation_kb(pipeline, conversation_id)).index
    entries = [e for e in (index.entries if index is not None else ()) if e.id == faq_id]
    entry = next((e for e in entries if e.lang == lang), entries[0] if entries and lang is None else None)
    if entry is None:
        raise ProposalRejected("unknown_entry", f"the KB has no entry {faq_id!r}" + (f" in {lang!r}" if lang else ""))
    text = edited if edited is not None else entry.answer
    return text, {"suggestion": {"faq_id": entry.id, "lang": entry.lang, "edited": text != entry.answer}}


def bot_phase_text(events: Sequence[Event]) -> str:
    """What the customer said to the bot (up to its handoff): what its turns chose the KB by."""
    said = []
    for event in events:
        if event.kind is EventKind.MESSAGE and event.author is Author.BOT and event.data.get("handoff"):
            break
        if event.kind is EventKind.MESSAGE and event.author is Author.CUSTOMER and event.text:
            said.append(event.text)
    return "\n".join(said)


async def kb_file(pipeline: "Pipeline", conversation_id: str) -> Path | None:
    """The KB file a proposal from this conversation is approved into: the file of the
    conversation's KB (the one its suggestions came from; None: no KB file)."""
    events = await pipeline.events_after(conversation_id, 0)
    kb = await conversation_kb(pipeline, conversation_id, bot_phase_text(events))
    config = pipeline.config.selfservice
    if kb.name == DEFAULT_KB:
        return config.faq
    return next((own.faq for own in config.knowledge_bases if own.name == kb.name), None)


async def propose(pipeline: "Pipeline", agent_id: str, conversation_id: str, fields: Any) -> KbProposal:
    """Store an agent's proposal for the KB, from a conversation the agent works or worked: a
    phrasing of an entry of the conversation's KB, or a new entry for it."""
    try:
        mine = await pipeline.agent_may_see(agent_id, conversation_id)
    except NotFound:  # no such conversation: as little said as for another agent's
        mine = False
    if not mine:
        raise ProposalRejected("not_assigned", f"conversation {conversation_id!r} is not one of yours")
    events = await pipeline.events_after(conversation_id, 0)
    index = (await conversation_kb(pipeline, conversation_id, bot_phase_text(events))).index
    known = {e.id for e in index.entries} if index is not None else set()
    langs = {_primary_lang(e.lang) for e in index.entries} if index is not None else set()
    proposed = read_proposal(fields, events, known, langs=langs, is_question=lambda e: is_question(pipeline, e))
    return await pipeline.store.add_kb_proposal(
        conversation_id=conversation_id, agent_id=agent_id, kind=proposed.kind, faq_id=proposed.faq_id,
        lang=proposed.lang, question=proposed.question, answer=proposed.answer)

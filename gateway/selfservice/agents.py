"""The knowledge base at the agent's desk (docs/protocol.md): the bot's handoff and the top KB
suggestions on each offer, suggestions on each customer message of an assigned conversation,
the answer a ``send_suggestion`` frame sends, and an agent's proposal for the KB."""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Sequence

from ..model import Author, Event, EventKind
from ..store import NotFound
from ..store.kb import KbProposal
from .capture import ProposalRejected, read_proposal
from . import SelfService
from .suggest import suggestion_json, top_entries

if TYPE_CHECKING:
    from ..pipeline import Pipeline

RECENT = 3  # customer messages an offer's suggestions are matched against


# The suggestions of the texts seen last, per KB as loaded (a reload makes a new SelfService,
# whose cache starts empty): an agent's resume replays every customer message of its
# conversations, and each would otherwise be ranked again (with the semantic matcher, in the
# worker thread the bot's answers wait for).
KEPT = 512
_kept: "weakref.WeakKeyDictionary[SelfService, OrderedDict[tuple[int, bytes], list[dict[str, Any]]]]" = \
    weakref.WeakKeyDictionary()


async def suggestions(pipeline: "Pipeline", text: str) -> list[dict[str, Any]]:
    limit = pipeline.config.selfservice.policy.agent_suggestions
    selfservice = pipeline.selfservice
    kept = _kept.setdefault(selfservice, OrderedDict())
    key = (limit, hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())  # texts may be long
    found = kept.get(key)
    if found is None:
        found = [suggestion_json(selfservice, c) for c in await top_entries(selfservice, text, limit)]
        kept[key] = found
        if len(kept) > KEPT:
            kept.popitem(last=False)
    else:
        kept.move_to_end(key)
    return list(found)


async def offer_extras(pipeline: "Pipeline", events: Sequence[Event]) -> dict[str, Any]:
    """``handoff`` (why the bot handed off, with its top guesses and their scores) and
    ``suggestions`` (for the customer's last messages) for an offer's frame."""
    extras: dict[str, Any] = {}
    for event in reversed(events):
        if event.author is Author.BOT and event.kind is EventKind.MESSAGE and event.data.get("handoff"):
            extras["handoff"] = {"reason": event.data["handoff"], "guesses": event.data.get("guesses") or []}
            break
    said = [e.text for e in events if e.author is Author.CUSTOMER and e.kind is EventKind.MESSAGE and e.text]
    extras["suggestions"] = await suggestions(pipeline, "\n".join(said[-RECENT:]))
    return extras


def suggested_reply(pipeline: "Pipeline", frame: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(text, data) of a ``send_suggestion`` frame: the entry's answer, or the agent's edit of it."""
    faq_id, lang, edited = frame.get("faq_id"), frame.get("lang"), frame.get("text")
    if not isinstance(faq_id, str) or not faq_id:
        raise ProposalRejected("bad_suggestion", '"faq_id" must be the id of a KB entry (from "suggestions")')
    if lang is not None and not isinstance(lang, str):
        raise ProposalRejected("bad_suggestion", '"lang" must be a language of the entry, e.g. "en", or left out')
    if edited is not None and (not isinstance(edited, str) or not edited.strip()):
        raise ProposalRejected("bad_suggestion", '"text" must be the edited answer (a non-empty string) or left out')
    index = pipeline.selfservice.faq
    entries = [e for e in (index.entries if index is not None else ()) if e.id == faq_id]
    entry = next((e for e in entries if e.lang == lang), entries[0] if entries and lang is None else None)
    if entry is None:
        raise ProposalRejected("unknown_entry", f"the KB has no entry {faq_id!r}" + (f" in {lang!r}" if lang else ""))
    text = edited if edited is not None else entry.answer
    return text, {"suggestion": {"faq_id": entry.id, "lang": entry.lang, "edited": text != entry.answer}}


async def propose(pipeline: "Pipeline", agent_id: str, conversation_id: str, fields: Any) -> KbProposal:
    """Store an agent's proposal for the KB, from a conversation the agent works or worked."""
    try:
        mine = await pipeline.agent_may_see(agent_id, conversation_id)
    except NotFound:  # no such conversation: as little said as for another agent's
        mine = False
    if not mine:
        raise ProposalRejected("not_assigned", f"conversation {conversation_id!r} is not one of yours")
    events = await pipeline.events_after(conversation_id, 0)
    index = pipeline.selfservice.faq
    known = {e.id for e in index.entries} if index is not None else set()
    proposed = read_proposal(fields, events, known)
    return await pipeline.store.add_kb_proposal(
        conversation_id=conversation_id, agent_id=agent_id, kind=proposed.kind, faq_id=proposed.faq_id,
        lang=proposed.lang, question=proposed.question, answer=proposed.answer)

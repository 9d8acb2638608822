"""Knowledge capture: what an agent answered becomes a KB entry, or a new phrasing of one
(docs/selfservice.md#knowledge-capture).

An agent proposes (the ``propose_kb`` frame, or ``propose`` on ``close``); an administrator
approves (``POST /api/kb/proposals/{id}/approve``), which writes the KB's YAML file and reloads
the config, or rejects. The file is edited as text, at the place the YAML parser says the entry
is, so its other entries, comments and layout stay as they were: a new entry is appended at the
end; a new phrasing goes into the entry's ``alt`` list (flow ``[...]`` or block ``- ...``), or
becomes one. The new text is loaded as a KB before it replaces the file (a temporary file in the
same directory, then ``os.replace``), so a reader sees the old file or the new one, never half.
Edits are serialized by a lock file beside the KB (``fcntl.flock``: other processes too) and are
idempotent (a phrasing or a question already there is not added again), so concurrent approvals
never lose an entry and a repeated approval writes nothing twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import yaml

from ..configfile import mapping_value
from ..faq import FaqError, FaqIndex, detect_lang, normalize
from ..model import Author, Event, EventKind
from ..pipeline import ConversationError
from ..store.kb import KbProposal, ProposalKind

MAX_TEXT = 2000  # characters of a proposed question or answer
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_file_lock = threading.Lock()  # flock is per open file: threads of this process queue here first


class ProposalRejected(ConversationError):
    """A proposal (or a suggestion) that cannot be made or applied; ``code`` goes into the error
    frame or the API's answer."""


@dataclass(frozen=True, slots=True)
class Proposed:
    kind: ProposalKind
    faq_id: str | None
    lang: str
    question: str
    answer: str | None


def _text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise ProposalRejected("bad_proposal", f'"{key}" must be a non-empty string of at most {MAX_TEXT} characters')
    return value.strip()


def read_proposal(fields: Any, events: Sequence[Event], known_ids: set[str], *,
                  langs: Collection[str] = (), is_question: Callable[[Event], bool] = lambda e: True) -> Proposed:
    """What an agent proposes. ``fields``: ``{"faq_id"?, "question"?, "answer"?, "lang"?}``. With
    an existing ``faq_id`` it is a new phrasing of that entry (the question), else a new entry
    (question and answer; a new ``faq_id`` names it). Left out, the question is the customer's
    last message before the agent's last reply that ``is_question`` (not "agent please", a pick
    or a "no"), and the answer that reply, when it is in the question's language. ``langs``: the
    KB's languages, one of which ``lang`` must be (any when empty)."""
    if not isinstance(fields, dict):
        raise ProposalRejected("bad_proposal", "a proposal is an object: {faq_id?, question?, answer?, lang?}")
    faq_id = _text(fields.get("faq_id"), "faq_id")
    question, answer = _text(fields.get("question"), "question"), _text(fields.get("answer"), "answer")
    lang = _text(fields.get("lang"), "lang")
    if lang is not None and langs and lang not in langs:
        raise ProposalRejected("bad_proposal", f'"lang" must be a language of the KB: {", ".join(sorted(langs))}')
    if faq_id is not None and not _ID.match(faq_id):
        raise ProposalRejected("bad_proposal", '"faq_id" must be letters, digits, ".", "_" or "-" (at most 64)')
    reply_at = next((i for i in range(len(events) - 1, -1, -1)
                     if events[i].author is Author.AGENT and events[i].kind is EventKind.MESSAGE and events[i].text), None)
    answered_by_default = answer is None and reply_at is not None
    if answered_by_default:
        answer = events[reply_at].text
    if question is None:
        before = events[:reply_at] if reply_at is not None else events
        question = next((e.text for e in reversed(before)
                         if e.author is Author.CUSTOMER and e.kind is EventKind.MESSAGE and e.text and e.text.strip()
                         and is_question(e)), None)
    if not question:
        raise ProposalRejected("bad_proposal", "no question: give \"question\" (the customer has asked nothing yet)")
    kind: ProposalKind = "phrasing" if faq_id is not None and faq_id in known_ids else "entry"
    if kind == "entry" and not answer:
        raise ProposalRejected("bad_proposal", 'a new entry needs an answer: give "answer" or reply first')
    lang = lang or detect_lang(question)
    if kind == "entry" and answered_by_default and detect_lang(answer or "") != lang:
        raise ProposalRejected("bad_proposal", f"your last reply is not in the question's language ({lang}):"
                               ' give "answer" (or "lang")')
    return Proposed(kind, faq_id, lang, question[:MAX_TEXT],
                    (answer or "")[:MAX_TEXT] if kind == "entry" else None)


# writing the KB file -------------------------------------------------------------------------------
def approve_into(path: Path, proposal: KbProposal) -> str:
    """Write the proposal into the KB file; returns what was done (for the proposal's note).
    Raises ProposalRejected when the file cannot take it (then the file is unchanged)."""
    with _file_lock, open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            text = path.read_text(encoding="utf-8")
            new_text, note = _edit(text, proposal)
            if new_text != text:
                _replace(path, new_text)
            return note
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _edit(text: str, proposal: KbProposal) -> tuple[str, str]:
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProposalRejected("kb_unreadable", f"the KB file is not valid YAML: {exc}") from None
    if data is None:
        root, data = None, []
    if not isinstance(data, list) or (root is not None and not isinstance(root, yaml.SequenceNode)):
        raise ProposalRejected("kb_unreadable", "the KB file's top level is not a list of entries")
    if root is not None and root.flow_style:
        raise ProposalRejected("kb_layout", "the KB file is one flow list [...]; add the entry by hand")
    if proposal.kind == "entry":
        return _add_entry(text, data, proposal)
    for n, raw in enumerate(data):
        if isinstance(raw, dict) and raw.get("id") == proposal.faq_id:
            assert root is not None
            return _add_phrasing(text, raw, root.value[n], proposal)
    raise ProposalRejected("unknown_entry", f"the KB has no entry {proposal.faq_id!r} any more")


def _quote(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _slug(question: str, taken: set[str], fallback: str) -> str:
    words = re.findall(r"[a-z0-9]+", question.lower())[:5]
    base = "-".join(words) or f"kb-{fallback[:8]}"
    found, n = base, 2
    while found in taken:
        found, n = f"{base}-{n}", n + 1
    return found


def _phrasings(raw: Any, lang: str) -> list[Any]:
    """An entry's question and alternatives in ``lang``, as the file has them (either layout)."""
    if not isinstance(raw, dict):
        return []
    if "question" in raw or "answer" in raw:
        return [raw.get("question"), *(raw.get("alternatives") or [])] if str(raw.get("lang", "en")) == lang else []
    block = raw.get(lang)
    return [block.get("q"), *(block.get("alt") or [])] if isinstance(block, dict) else []


def _has(phrasings: Sequence[Any], question: str) -> bool:
    """``question`` is one of them, case, spaces and punctuation aside (as the matchers read it)."""
    said = normalize(question)
    return any(isinstance(p, str) and normalize(p) == said for p in phrasings)


def _add_entry(text: str, data: list[Any], proposal: KbProposal) -> tuple[str, str]:
    taken = {str(raw.get("id")) for raw in data if isinstance(raw, dict)}
    for raw in data:
        if _has(_phrasings(raw, proposal.lang), proposal.question):
            return text, f"already in the KB as {raw.get('id')}"
    faq_id = proposal.faq_id if proposal.faq_id and proposal.faq_id not in taken else _slug(proposal.question, taken, proposal.id)
    block = (f"- id: {faq_id}\n  {proposal.lang}: {{q: {_quote(proposal.question)}, a: {_quote(proposal.answer or '')}}}\n")
    head = text if text.endswith("\n") or not text else text + "\n"
    return head + block, f"added entry {faq_id}"


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def _add_phrasing(text: str, raw: dict[str, Any], node: yaml.Node, proposal: KbProposal) -> tuple[str, str]:
    if not isinstance(node, yaml.MappingNode):
        raise ProposalRejected("kb_layout", f"entry {proposal.faq_id} is not a mapping")
    flat = "question" in raw or "answer" in raw
    if flat:
        if str(raw.get("lang", "en")) != proposal.lang:
            raise ProposalRejected("no_language", f"entry {proposal.faq_id} is in {raw.get('lang', 'en')!r}, "
                                   f"not {proposal.lang!r}; add the phrasing by hand")
        holder, key, existing = node, "alternatives", _phrasings(raw, proposal.lang)
    else:
        found = mapping_value(node, proposal.lang)
        block = raw.get(proposal.lang)
        if not isinstance(found, yaml.MappingNode) or not isinstance(block, dict):
            raise ProposalRejected("no_language", f"entry {proposal.faq_id} has no {proposal.lang!r} block; "
                                   "add the language by hand")
        holder, key, existing = found, "alt", _phrasings(raw, proposal.lang)
    if _has(existing, proposal.question):
        return text, f"{proposal.faq_id} already has this phrasing"
    note = f"added a phrasing to {proposal.faq_id} ({proposal.lang})"
    quoted = _quote(proposal.question)
    seq = mapping_value(holder, key)
    if seq is not None:
        if not isinstance(seq, yaml.SequenceNode):
            raise ProposalRejected("kb_layout", f"{proposal.faq_id}: {key} is not a list")
        if seq.flow_style:
            close = seq.end_mark.index - 1  # the "]"
            sep = ", " if seq.value else ""
            return text[:close] + sep + quoted + text[close:], note
        at = _line_end(text, seq.value[-1].end_mark.index)
        return text[:at] + "\n" + " " * seq.start_mark.column + "- " + quoted + text[at:], note
    if holder.flow_style:
        close = holder.end_mark.index - 1  # the "}"
        return text[:close] + f", {key}: [{quoted}]" + text[close:], note
    at = _line_end(text, holder.value[-1][1].end_mark.index)
    return text[:at] + "\n" + " " * holder.start_mark.column + f"{key}: [{quoted}]" + text[at:], note


def _replace(path: Path, new_text: str) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(new_text)
            out.flush()
            os.fsync(out.fileno())
        try:
            FaqIndex.load(temp)
        except FaqError as exc:
            # Named as the KB, not the temporary file; and a KB that did not load before is
            # not this change's doing.
            problem = str(exc).replace(temp, str(path))
            try:
                FaqIndex.load(path)
            except FaqError as before:
                raise ProposalRejected("kb_invalid", f"the KB does not load as it is; fix it first: {before}") from None
            raise ProposalRejected("kb_invalid", f"the KB would not load after this change: {problem}") from None
        if path.exists():
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise

"""Knowledge capture's file edits (gateway/selfservice/capture.py): a proposal goes into the KB's
YAML as text, its other entries and comments kept; the result loads; concurrent approvals lose
nothing; and what an agent's proposal defaults to."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

import pytest

from gateway.faq import FaqIndex
from gateway.model import Author, Event, EventKind
from gateway.selfservice.capture import ProposalRejected, approve_into, read_proposal
from gateway.store.kb import KbProposal

SHIPPED = Path(__file__).resolve().parent.parent / "faq" / "shipping_kb.yaml"
NOW = datetime(2026, 12, 2, 9, tzinfo=timezone.utc)


def proposal(kind: str, question: str, *, faq_id: str | None = None, answer: str | None = None,
             lang: str = "en", pid: str = "p1") -> KbProposal:
    return KbProposal(pid, "c1", "alice", kind, faq_id, lang, question, answer, "pending", None, NOW, None)  # type: ignore[arg-type]


def phrasings(path: Path, faq_id: str, lang: str) -> tuple[str, ...]:
    return next(e for e in FaqIndex.load(path).entries if e.id == faq_id and e.lang == lang).phrasings


def test_a_phrasing_goes_under_the_last_alt_line_and_the_rest_of_the_file_stays(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    shutil.copy(SHIPPED, kb)
    before = kb.read_text(encoding="utf-8").splitlines()
    last_alt = phrasings(kb, "track-parcel", "en")[-1]
    note = approve_into(kb, proposal("phrasing", 'where\'s my "box"?', faq_id="track-parcel"))
    assert note == "added a phrasing to track-parcel (en)"
    after = kb.read_text(encoding="utf-8").splitlines()
    at = next(n for n, line in enumerate(before) if last_alt in line) + 1
    assert after == before[:at] + ['      - "where\'s my \\"box\\"?"'] + before[at:]  # one line, all else kept
    assert phrasings(kb, "track-parcel", "en")[-2:] == (last_alt, 'where\'s my "box"?')
    assert FaqIndex.load(kb).out_of_scope == FaqIndex.load(SHIPPED).out_of_scope
    assert approve_into(kb, proposal("phrasing", 'where\'s my "box"?', faq_id="track-parcel")).endswith(
        "already has this phrasing")
    # Case, spaces and punctuation aside, as the matchers read it: not added twice.
    unchanged = kb.read_text(encoding="utf-8")
    assert approve_into(kb, proposal("phrasing", "WHERE'S  my box!", faq_id="track-parcel")).endswith(
        "already has this phrasing")
    assert kb.read_text(encoding="utf-8") == unchanged
    zh = approve_into(kb, proposal("phrasing", "包裹在哪儿", faq_id="track-parcel", lang="zh"))
    assert zh.endswith("(zh)") and "包裹在哪儿" in phrasings(kb, "track-parcel", "zh")


def test_a_phrasing_goes_into_a_flow_alt_list(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text("# flow style\n"
                  "- id: track\n"
                  '  en: {q: "How do I track my parcel?", alt: ["where is it"], a: "Use the Track page."}\n'
                  '  zh: {q: "如何查询包裹物流?", alt: [], a: "在追踪页面查询。"}\n'
                  "# the end\n", encoding="utf-8")
    approve_into(kb, proposal("phrasing", "tracking number lookup", faq_id="track"))
    approve_into(kb, proposal("phrasing", "查快递", faq_id="track", lang="zh"))
    lines = kb.read_text(encoding="utf-8").splitlines()
    assert lines[2] == '  en: {q: "How do I track my parcel?", alt: ["where is it", "tracking number lookup"], a: "Use the Track page."}'
    assert lines[3] == '  zh: {q: "如何查询包裹物流?", alt: ["查快递"], a: "在追踪页面查询。"}'
    assert len(lines) == 5 and lines[-1] == "# the end"


def test_block_lists_flat_entries_and_entries_without_alt_take_a_phrasing(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text(
        "# block style\n"
        "- id: hours\n"
        "  en:\n"
        "    q: When are you open?\n"
        "    alt:\n"
        "      - opening hours\n"
        "    a: Every day 8-22.\n"
        "- id: flat\n"
        "  question: Do you ship abroad?\n"
        "  answer: Yes, to 40 countries.\n"
        "- id: noalt\n"
        "  en: {q: \"Can I pay cash?\", a: \"Yes, on delivery.\"}\n"
        "# the end\n", encoding="utf-8")
    approve_into(kb, proposal("phrasing", "what time do you open", faq_id="hours"))
    approve_into(kb, proposal("phrasing", "international shipping?", faq_id="flat"))
    approve_into(kb, proposal("phrasing", "cash on delivery", faq_id="noalt"))
    assert phrasings(kb, "hours", "en") == ("When are you open?", "opening hours", "what time do you open")
    assert phrasings(kb, "flat", "en") == ("Do you ship abroad?", "international shipping?")
    assert phrasings(kb, "noalt", "en") == ("Can I pay cash?", "cash on delivery")
    text = kb.read_text(encoding="utf-8")
    assert text.startswith("# block style\n") and text.endswith("# the end\n")
    with pytest.raises(ProposalRejected, match="no 'zh' block"):
        approve_into(kb, proposal("phrasing", "几点开门", faq_id="hours", lang="zh"))
    with pytest.raises(ProposalRejected, match="no entry 'gone'"):
        approve_into(kb, proposal("phrasing", "x", faq_id="gone"))


def test_a_new_entry_is_appended_with_a_free_id(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    shutil.copy(SHIPPED, kb)
    count = len(FaqIndex.load(kb))
    note = approve_into(kb, proposal("entry", "Do you deliver on Sundays?", answer="Only express: 10:00-16:00."))
    assert note == "added entry do-you-deliver-on-sundays"
    again = approve_into(kb, proposal("entry", "Do you deliver on Sundays?", answer="Yes", pid="p2"))
    assert again == "already in the KB as do-you-deliver-on-sundays"
    unchanged = kb.read_text(encoding="utf-8")
    for pid, question in (("p3", "do you deliver on sundays"), ("p4", "DO YOU DELIVER ON SUNDAYS ?!")):
        assert approve_into(kb, proposal("entry", question, faq_id="sunday-delivery", answer="Yes", pid=pid)) == \
            "already in the KB as do-you-deliver-on-sundays"
    alt = phrasings(kb, "track-parcel", "en")[1]  # an alternative phrasing, not the question
    assert approve_into(kb, proposal("entry", alt.upper(), answer="Yes", pid="p5")) == "already in the KB as track-parcel"
    assert kb.read_text(encoding="utf-8") == unchanged
    taken = approve_into(kb, proposal("entry", "Chinese question", faq_id="track-parcel", answer="A", lang="zh"))
    assert taken == "added entry chinese-question"  # an id already taken is not reused
    entries = FaqIndex.load(kb).entries
    assert len(entries) == count + 2
    assert any(e.id == "do-you-deliver-on-sundays" and e.answer == "Only express: 10:00-16:00." for e in entries)


def test_a_change_the_kb_would_not_load_after_is_refused_naming_the_kb(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    kb.write_text('- id: track\n  en: {q: "Where is my parcel?", a: "Use the Track page."}\n', encoding="utf-8")
    with pytest.raises(ProposalRejected) as refused:  # a new entry with an empty answer does not load
        approve_into(kb, proposal("entry", "Do you ship on Sundays?", answer=""))
    assert refused.value.code == "kb_invalid" and "after this change" in str(refused.value)
    assert ".tmp" not in str(refused.value) and str(kb) in str(refused.value)
    # A KB broken before the approval (a duplicate id): said so, not blamed on the proposal.
    broken = kb.read_text(encoding="utf-8") * 2
    kb.write_text(broken, encoding="utf-8")
    with pytest.raises(ProposalRejected, match="does not load as it is; fix it first") as refused:
        approve_into(kb, proposal("phrasing", "where's my box", faq_id="track"))
    assert refused.value.code == "kb_invalid" and kb.read_text(encoding="utf-8") == broken
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_concurrent_approvals_lose_no_entry(tmp_path: Path) -> None:
    kb = tmp_path / "kb.yaml"
    shutil.copy(SHIPPED, kb)
    count = len(FaqIndex.load(kb))
    jobs = [proposal("entry", f"Question number {n}?", answer=f"Answer {n}.", pid=f"p{n}") for n in range(6)]
    jobs += [proposal("phrasing", f"tracking phrasing {n}", faq_id="track-parcel", pid=f"q{n}") for n in range(6)]
    threads = [threading.Thread(target=approve_into, args=(kb, job)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(FaqIndex.load(kb)) == count + 6
    assert sum(p.startswith("tracking phrasing") for p in phrasings(kb, "track-parcel", "en")) == 6
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def event(seq: int, author: Author, text: str) -> Event:
    return Event("c1", seq, author, EventKind.MESSAGE, text, None, {}, NOW)


def test_a_proposal_defaults_to_the_customers_question_and_the_agents_reply() -> None:
    events = [event(1, Author.CUSTOMER, "Do you deliver on Sundays?"), event(2, Author.BOT, "Let me find you an agent."),
              event(3, Author.AGENT, "Only express, 10 to 16."), event(4, Author.CUSTOMER, "thanks")]
    made = read_proposal({}, events, {"track-parcel"})
    assert (made.kind, made.question, made.answer, made.lang) == ("entry", "Do you deliver on Sundays?",
                                                                  "Only express, 10 to 16.", "en")
    phrasing = read_proposal({"faq_id": "track-parcel"}, events, {"track-parcel"})
    assert (phrasing.kind, phrasing.answer) == ("phrasing", None)
    with pytest.raises(ProposalRejected, match="needs an answer"):
        read_proposal({}, events[:2], set())
    with pytest.raises(ProposalRejected, match='"question" must be'):
        read_proposal({"question": ""}, events, set())
    with pytest.raises(ProposalRejected, match="an object"):
        read_proposal("yes", events, set())
    with pytest.raises(ProposalRejected, match="a language of the KB: en, zh"):
        read_proposal({"lang": "fr"}, events, set(), langs={"en", "zh"})
    # The question skips what the customer said to the bot rather than asked ("agent"); a default
    # answer in another language than the question is refused (give "answer").
    asked = [event(1, Author.CUSTOMER, "Do you deliver on Sundays?"), event(2, Author.CUSTOMER, "agent"),
             event(3, Author.AGENT, "只有特快件周日派送。")]
    with pytest.raises(ProposalRejected, match="not in the question's language"):
        read_proposal({}, asked, set(), is_question=lambda e: e.text != "agent")
    made = read_proposal({"answer": "Only express."}, asked, set(), is_question=lambda e: e.text != "agent")
    assert (made.question, made.answer, made.lang) == ("Do you deliver on Sundays?", "Only express.", "en")

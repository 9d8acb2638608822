"""The bot's turn in a conversation: what it says to one customer message, and when it hands
the conversation to a person (docs/selfservice.md#conversation-policy).

Pure of I/O but for asking the matcher: :func:`take_turn` reads the customer's message against
the bot's memory of the conversation (``gateway/state/bot.py``), changes the memory and returns
a :class:`Turn`: the messages to send, in order, whether to hand off and why, and the outcomes to
count for the deflection figures. The pipeline appends the messages and routes the handoff.

In this order:

1. a pick of what the bot asked last: a "did you mean" choice (the button's value, its label,
   or its number "2") is answered with that entry; a "yes" to "did this help?" is thanked, a
   "no" hands off (``not_helpful``);
2. an angry message hands off (``angry``); the same question as the last one (``repeated``);
   more than ``max_bot_turns`` messages (``max_turns``);
3. otherwise :meth:`SelfService.reply`: an answer (with "did this help?"), a "did you mean", "I
   don't know", or its handoff (``asked``, ``unanswered``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adapters.base import REPLYING, BotTurn

from ..config import SelfServiceConfig, localized
from ..faq import detect_lang, normalize
from ..state.bot import BotMemo, Choice
from . import MAX_CHOICES, Answer, Candidate, Choices, Handoff, NoAnswer, SelfService
from .knowledge import KnowledgeBase
from .suggest import guess_json, top_entries

# Outcomes counted per KB entry (gateway/selfservice/deflection.py reads them back).
ANSWERED, HELPFUL_YES, HELPFUL_NO, HANDED_OFF = "answered", "helpful_yes", "helpful_no", "handed_off"


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    data: dict[str, Any]


@dataclass(slots=True)
class Turn:
    says: list[Say] = field(default_factory=list)
    handoff: str | None = None          # the reason, when the conversation goes to a person
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (faq id, outcome)
    topic: str | None = None            # the entry answered (routing's topic rules read it)


_CJK = re.compile(r"[\u3400-\u9fff]")
MAX_VERDICT_WORDS, MAX_VERDICT_CJK = 4, 8  # longer replies to "did this help?" are new questions


def _words(words: list[str]) -> set[str]:
    return {normalize(w) for w in words if normalize(w)}


def is_angry(text: str, words: list[str]) -> bool:
    folded = unicodedata.normalize("NFKC", text).casefold()
    padded = f" {normalize(text)} "
    for word in words:
        word = normalize(word)
        if not word:
            continue
        if _CJK.search(word):
            if word in folded:
                return True
        elif f" {word} " in padded:
            return True
    return False


def yes_or_no(text: str, yes: list[str], no: list[str]) -> str | None:
    """"yes" or "no" for a short reply that is, or starts with, one of the words ("yes, thanks",
    "no it didn't", "没有帮助谢谢"); None for anything else, which is a new question."""
    said = normalize(text)
    words = said.split()
    if len(words) > MAX_VERDICT_WORDS or (len(words) == 1 and _CJK.search(said) and len(said) > MAX_VERDICT_CJK):
        return None
    for verdict, table in (("no", no), ("yes", yes)):  # "no" first: "not really" starts like neither
        for word in sorted(_words(table), key=len, reverse=True):
            if said == word or said.startswith(word + " ") or (_CJK.search(word) and len(word) > 1 and said.startswith(word)):
                return verdict
    return None


def picked(memo: BotMemo, text: str, choice: Any) -> Choice | None:
    """The choice of the bot's last question that the message picks, if any: by the button's
    value (``choice``: ``{"value": ...}`` from web chat and Telegram), by its label, or by its
    number ("2", "#2")."""
    if not memo.choices:
        return None
    value = choice.get("value") if isinstance(choice, dict) else None
    if isinstance(value, str):
        for option in memo.choices:
            if option.value == value:
                return option
        if re.fullmatch(r"#\d", value):  # Telegram's stand-in for a value too long for a button
            text = value
    said = normalize(text)
    for option in memo.choices:
        if normalize(option.text) == said:
            return option
    number = pick_number(text)
    if number is not None and 1 <= number <= len(memo.choices):
        return memo.choices[number - 1]
    return None


def pick_number(text: str) -> int | None:
    """The number of a pick typed as one ("2", "#2", "2."), else None."""
    number = re.fullmatch(r"#?\s*(\d)\s*[.)]?", unicodedata.normalize("NFKC", text).strip())
    return int(number.group(1)) if number else None


async def take_turn(selfservice: SelfService, config: SelfServiceConfig, memo: BotMemo, text: str,
                    turn: BotTurn, choice: Any, channel: str, now: datetime,
                    kb: KnowledgeBase | None = None, *, heard_at: datetime | None = None,
                    bot_interval: float = 0.0, question: str | None = None) -> Turn:
    """The bot's reply to one customer message (``turn``: adapters.base.BotTurn, not "quiet").
    Changes ``memo``; the last message said carries its snapshot. ``kb``: the knowledge base
    that answers this conversation (``SelfService.for_contact``); None: the channel's and the
    question's language choose, as ``SelfService.reply`` does. ``heard_at``: when the message was
    stored (the store's clock, which the channel's delivery reads too); ``bot_interval``
    (adapters.base.Inbound): a message stored less than this many seconds after the one the bot
    took before is handed off (``bot_interval``) unless it answers the bot's question.
    ``question``: with ``turn`` "handoff", what the guesses are for instead of the last question
    (adapters.base.Inbound)."""
    policy = config.policy
    lang = detect_lang(text) if text.strip() else "en"
    heard_at = heard_at or now
    too_soon = bool(bot_interval and memo.heard_at is not None
                    and (heard_at - memo.heard_at).total_seconds() < bot_interval)
    memo.heard_at = heard_at
    if turn == "greet":
        return _said(memo, Turn([Say(localized(config.greeting or config.no_answer, lang), {"faq": None})]))
    if turn == "handoff":  # a command ("/agent"): said in the language of the last question
        if question and question.strip():
            memo.question = normalize(question)
        lang = detect_lang(memo.question) if memo.question else lang
        return _said(memo, await _hand_off(selfservice, config, memo, text, "asked", kb, lang=lang))
    memo.turns += 1
    option = picked(memo, text, choice)
    if option is not None:
        lang = detect_lang(option.text)  # "2" says nothing of the language; the label it picks does
    if memo.asking == "helpful":
        verdict = option.value if option is not None else yes_or_no(text, policy.yes_words, policy.no_words)
        faq = memo.faq
        if verdict == "yes":
            memo.asking, memo.choices, memo.stuck_since, memo.unanswered = None, (), None, 0
            return _said(memo, _replying(Turn([Say(localized(policy.glad, lang), {"faq": None, "helpful": faq})],
                                              outcomes=[(faq, HELPFUL_YES)] if faq else [])))
        if verdict == "no":
            # The guesses are for the question the answer did not help with, not for the "no".
            made = await _hand_off(selfservice, config, memo, memo.question or text, "not_helpful", kb)
            if faq:
                made.outcomes.insert(0, (faq, HELPFUL_NO))
            return _said(memo, _replying(made))
    if memo.asking == "did_you_mean" and option is not None:
        entry = _entry(selfservice, option.value, lang, kb)
        if entry is not None:  # memo.question stays the customer's: a later handoff's guesses are for it
            return _said(memo, _replying(_answer(config, memo, Candidate(
                entry.id, entry.question, entry.answer, memo.scores.get(entry.id, 0.0)), entry.lang, picked=True)))
    if memo.asking == "did_you_mean" and yes_or_no(text, policy.yes_words, policy.no_words) == "no":
        # "None of these": a miss, not a new question to match (a bare "no" matches entries that
        # say "no scan"); its guesses are the question's. It answers the bot's question.
        guesses = tuple(await top_entries(selfservice, memo.question, MAX_CHOICES, kb)) if memo.question else ()
        missed = selfservice.miss(text, memo.unanswered, channel, guesses)
        if isinstance(missed, Handoff):
            return _said(memo, _replying(_handoff_turn(memo, missed.text, missed.reason, missed.candidates)))
        return _said(memo, _replying(_not_answered(memo, missed.text, now)))
    question = normalize(text)
    if is_angry(text, policy.angry_words):
        return _said(memo, await _hand_off(selfservice, config, memo, text, "angry", kb))
    if policy.repeat_hands_off and question and question == memo.question:
        return _said(memo, await _hand_off(selfservice, config, memo, text, "repeated", kb))
    if memo.turns > policy.max_bot_turns:
        return _said(memo, await _hand_off(selfservice, config, memo, text, "max_turns", kb))
    if too_soon and not selfservice.asks_for_human(text):
        # The channel would not send an answer: a person does, and nobody waits for nothing.
        return _said(memo, await _hand_off(selfservice, config, memo, text, "bot_interval", kb))
    previous, memo.question = memo.question, question
    reply = await selfservice.areply(text, memo.unanswered, channel, kb=kb)
    if isinstance(reply, Answer):
        best = reply.candidates[0] if reply.candidates else Candidate(reply.faq_id, "", reply.text, reply.score)
        return _said(memo, _answer(config, memo, best, lang))
    if isinstance(reply, Handoff):
        said = reply.text
        if reply.reason != "asked":
            guesses = reply.candidates or tuple((await top_entries(selfservice, text, MAX_CHOICES, kb)))
        else:
            # "agent please" after a question: the guesses are for that question, not the phrase.
            # A handoff phrase alone ("agent", "/agent", "人工") asks nothing, like a command: said
            # in the language of the question before it; none without one. "How do I track it? I
            # need an agent" as the first message: for the question in it, when the KB has one.
            rest = selfservice.without_handoff_phrases(text)
            alone = not any(ch.isalnum() for ch in rest)
            if previous:
                memo.question = previous
                guesses = tuple(await top_entries(selfservice, previous, MAX_CHOICES, kb))
                said = localized(config.handoff, detect_lang(previous)) if alone else said
            elif alone:
                memo.question, guesses = None, ()
            else:
                guesses = await _asked_in(selfservice, rest, channel, kb)
        return _said(memo, _handoff_turn(memo, said, reply.reason, guesses))
    if isinstance(reply, Choices):
        memo.unanswered += 1
        memo.stuck_since = memo.stuck_since or now
        options = reply.options[:MAX_CHOICES]
        memo.asking = "did_you_mean"
        memo.choices = tuple(Choice(c.question, c.faq_id) for c in options)
        memo.scores = {c.faq_id: round(c.score, 3) for c in options}
        return _said(memo, Turn([Say(reply.text, {
            "faq": None, "did_you_mean": [guess_json(c) for c in options],
            "choices": [c.as_json() for c in memo.choices], "numbered_hint": localized(policy.numbered_hint, lang)})]))
    assert isinstance(reply, NoAnswer)
    return _said(memo, _not_answered(memo, reply.text, now))


async def _asked_in(selfservice: SelfService, text: str, channel: str, kb: KnowledgeBase | None) -> tuple[Candidate, ...]:
    """The guesses for what is left of a message besides its handoff phrases: those the bot would
    at least offer as "did you mean" ("I need a person please" leaves words the KB has no entry for)."""
    kb = kb or selfservice.kb_for_question(text, channel)
    floor = kb.thresholds.choices_for_text(text)
    floor = kb.thresholds.for_text(text) if floor is None else floor
    return tuple(c for c in await top_entries(selfservice, text, MAX_CHOICES, kb) if c.score >= floor)


def _not_answered(memo: BotMemo, text: str, now: datetime) -> Turn:
    """"I don't know" (``text``): a miss, no progress since the first such reply."""
    memo.unanswered += 1
    memo.stuck_since = memo.stuck_since or now
    memo.asking, memo.choices = None, ()
    return Turn([Say(text, {"faq": None})])


def _entry(selfservice: SelfService, faq_id: str, lang: str, kb: KnowledgeBase | None) -> Any:
    matcher = kb.matcher if kb is not None else selfservice.matcher
    found = [e for e in (matcher.entries if matcher is not None else ()) if e.id == faq_id]
    return next((e for e in found if e.lang == lang), found[0] if found else None)


def _answer(config: SelfServiceConfig, memo: BotMemo, best: Candidate, lang: str, *, picked: bool = False) -> Turn:
    policy = config.policy
    memo.unanswered, memo.stuck_since, memo.faq = 0, None, best.faq_id
    data: dict[str, Any] = {"faq": best.faq_id, "score": round(best.score, 3)}
    if picked:
        data["picked"] = True
    text = best.answer
    if policy.ask_helpful:
        labels = policy.helpful_choices.get(lang) or policy.helpful_choices.get("en") or ["Yes", "No"]
        memo.asking, memo.choices = "helpful", (Choice(labels[0], "yes"), Choice(labels[1], "no"))
        text = f"{best.answer}\n\n{localized(policy.helpful_prompt, lang)}"
        data.update(choices=[c.as_json() for c in memo.choices], ask="helpful",
                    numbered_hint=localized(policy.numbered_hint, lang))
    else:
        memo.asking, memo.choices = None, ()
    return Turn([Say(text, data)], outcomes=[(best.faq_id, ANSWERED)], topic=best.faq_id)


async def _hand_off(selfservice: SelfService, config: SelfServiceConfig, memo: BotMemo, text: str,
                    reason: str, kb: KnowledgeBase | None = None, *, lang: str | None = None) -> Turn:
    # A command ("/agent") says nothing of the question: the guesses are for the customer's last
    # question, none when there was none.
    if reason == "asked":
        guesses = await top_entries(selfservice, memo.question, MAX_CHOICES, kb) if memo.question else []
    else:
        guesses = await top_entries(selfservice, text, MAX_CHOICES, kb)
    return _handoff_turn(memo, localized(config.handoff, lang or detect_lang(text)), reason, tuple(guesses))


def _handoff_turn(memo: BotMemo, text: str, reason: str, guesses: tuple[Candidate, ...]) -> Turn:
    outcomes = [(memo.faq, HANDED_OFF)] if memo.faq else []
    memo.asking, memo.choices, memo.stuck_since = None, (), None
    return Turn([Say(text, {"handoff": reason, "guesses": [guess_json(g) for g in guesses]})],
                handoff=reason, outcomes=outcomes)


def _replying(turn: Turn) -> Turn:
    """Mark what the bot says to a customer who answered its question (a pick of its choices,
    a yes or no to "did this help?"): a person replying, not an autoresponder, so a channel that
    limits the bot's replies (email's ``bot_interval``) sends it. Such a turn never asks a
    question that would be answered the same way twice: a pick's answer asks "did this help?",
    whose answer asks nothing, so the marked messages of a chain are at most two."""
    for say in turn.says:
        say.data[REPLYING] = True
    return turn


def _said(memo: BotMemo, turn: Turn) -> Turn:
    if turn.says:
        turn.says[-1].data["bot"] = memo.snapshot()
    return turn


async def stalled_turn(selfservice: SelfService, config: SelfServiceConfig, memo: BotMemo,
                       kb: KnowledgeBase | None = None) -> Turn:
    """The watchdog's handoff: no progress for ``policy.stalled_after`` seconds. Like every
    handoff, it carries the bot's guesses for the customer's last question (``kb``: the
    conversation's, as for :func:`take_turn`)."""
    guesses = await top_entries(selfservice, memo.question, MAX_CHOICES, kb) if memo.question else []
    lang = detect_lang(memo.question or "")
    return _said(memo, _handoff_turn(memo, localized(config.handoff, lang), "stalled", tuple(guesses)))

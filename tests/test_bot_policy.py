"""The bot's conversation policy (gateway/selfservice/conversation.py), turn by turn on the
shipped KB: did you mean and its picks, did this help, angry, repeated, max turns, the memory
kept in the bot's messages; and the numbered choices of channels without buttons."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from adapters.base import REPLYING
from adapters.email.compose import numbered_choices
from gateway.config import SelfServiceConfig, localized
from gateway.model import Author, Event, EventKind
from gateway.selfservice import SelfService
from gateway.selfservice.conversation import is_angry, normalize, picked, stalled_turn, take_turn, yes_or_no
from gateway.state.bot import BotMemo, Choice

FAQ = Path(__file__).resolve().parent.parent / "faq" / "shipping_kb.yaml"
NOW = datetime(2026, 12, 2, 9, tzinfo=timezone.utc)
NEAR_MISS = "parcel broken"  # damaged-parcel ~0.65, then two near 0.28: a did-you-mean of three


def config(**changes: Any) -> SelfServiceConfig:
    policy = changes.pop("policy", {})
    return SelfServiceConfig(faq=FAQ, min_score=0.9, choices_min_score=0.24, max_unanswered=3,
                             policy=policy, **changes)


_services: dict[str, SelfService] = {}


def service(cfg: SelfServiceConfig) -> SelfService:
    """One index per distinct config: loading the KB is what costs here."""
    key = cfg.model_dump_json()
    if key not in _services:
        _services[key] = SelfService.from_config(cfg)
    return _services[key]


async def turn(cfg: SelfServiceConfig, memo: BotMemo, text: str, choice: Any = None, now: datetime = NOW) -> Any:
    return await take_turn(service(cfg), cfg, memo, text, "answer", choice, "webchat", now)


async def test_did_you_mean_offers_three_choices_and_a_pick_by_value_label_or_number_answers() -> None:
    cfg = config()
    for pick, choice in (("anything", {"value": "damaged-parcel"}),
                         ("My parcel arrived damaged, what should I do?", None), ("1", None), ("#1", None)):
        memo = BotMemo()
        asked = await turn(cfg, memo, NEAR_MISS)
        say = asked.says[0]
        assert say.text == cfg.did_you_mean and asked.handoff is None
        assert [c["value"] for c in say.data["choices"]] == ["damaged-parcel", "track-parcel", "signature-proof"]
        assert say.data["choices"][0]["text"] == "My parcel arrived damaged, what should I do?"
        assert [g["faq_id"] for g in say.data["did_you_mean"]] == ["damaged-parcel", "track-parcel", "signature-proof"]
        assert memo.asking == "did_you_mean" and memo.stuck_since == NOW and asked.outcomes == []
        answered = await turn(cfg, memo, pick, choice)
        say = answered.says[0]
        assert say.text.startswith("Sorry about that. Keep the packaging"), pick
        assert say.data["faq"] == "damaged-parcel" and say.data["picked"] is True
        # The pick carries the score its entry had among the choices (under the threshold).
        offered = asked.says[0].data["did_you_mean"][0]["score"]
        assert say.data["score"] == pytest.approx(offered, abs=0.001) and 0.5 < offered < cfg.min_score
        assert answered.outcomes == [("damaged-parcel", "answered")] and answered.topic == "damaged-parcel"
        assert memo.stuck_since is None and memo.unanswered == 0


async def test_a_pick_by_number_answers_in_the_language_of_the_choice() -> None:
    cfg = config()
    memo = BotMemo()
    asked = await turn(cfg, memo, "包裹坏了")
    assert asked.says[0].data["choices"], asked
    first = asked.says[0].data["choices"][0]
    answered = await turn(cfg, memo, "1")
    say = answered.says[0]
    assert say.data["faq"] == first["value"] and say.text.endswith("这个回答对您有帮助吗?")
    glad = await turn(cfg, memo, "1")  # "1. 有帮助"
    assert glad.says[0].text == "很高兴能帮到您!"


async def test_a_pick_that_is_not_one_of_the_choices_is_a_question() -> None:
    cfg = config()
    memo = BotMemo()
    await turn(cfg, memo, NEAR_MISS)
    answered = await turn(cfg, memo, "How much does shipping cost?", {"value": "no-such-entry"})
    assert answered.says[0].data["faq"] == "shipping-cost" and "picked" not in answered.says[0].data
    memo = BotMemo()
    await turn(cfg, memo, NEAR_MISS)
    nothing = await turn(cfg, memo, "4")  # three choices: "4" picks none
    assert nothing.says[0].data["faq"] is None


async def test_did_this_help_yes_thanks_and_no_hands_off_with_the_guesses() -> None:
    cfg = config()
    memo = BotMemo()
    answered = await turn(cfg, memo, "How do I track my parcel?")
    say = answered.says[0]
    assert say.text.endswith("\n\nDid this help?") and say.data["ask"] == "helpful"
    assert say.data["choices"] == [{"text": "Yes", "value": "yes"}, {"text": "No", "value": "no"}]
    glad = await turn(cfg, memo, "Yes!")
    assert glad.says[0].text == "Glad I could help!" and glad.outcomes == [("track-parcel", "helpful_yes")]
    assert memo.asking is None

    memo = BotMemo()
    await turn(cfg, memo, "我的快递到哪了")
    no = await turn(cfg, memo, "没有帮助")
    assert no.handoff == "not_helpful"
    assert no.outcomes == [("track-parcel", "helpful_no"), ("track-parcel", "handed_off")]
    assert no.says[0].data["handoff"] == "not_helpful"
    assert no.says[0].data["guesses"][0]["faq_id"] == "track-parcel"  # for the question, not the "no"

    memo = BotMemo()
    chinese = await turn(cfg, memo, "我的快递到哪了")
    assert chinese.says[0].text.endswith("这个回答对您有帮助吗?")
    assert [c["text"] for c in chinese.says[0].data["choices"]] == ["有帮助", "没有帮助"]
    by_button = await turn(cfg, memo, "没有帮助", {"value": "no"})
    assert by_button.handoff == "not_helpful"


async def test_a_new_question_instead_of_a_yes_or_no_is_answered() -> None:
    cfg = config()
    memo = BotMemo()
    await turn(cfg, memo, "How do I track my parcel?")
    other = await turn(cfg, memo, "How much does shipping cost?")
    assert other.says[0].data["faq"] == "shipping-cost" and other.handoff is None


async def test_no_helpful_question_when_it_is_off() -> None:
    cfg = config(policy={"ask_helpful": False})
    memo = BotMemo()
    answered = await turn(cfg, memo, "How do I track my parcel?")
    assert "choices" not in answered.says[0].data and not answered.says[0].text.endswith("help?")
    assert memo.asking is None


async def test_angry_repeated_and_too_many_turns_hand_off_with_their_reason() -> None:
    cfg = config(policy={"max_bot_turns": 3})
    angry = await turn(cfg, BotMemo(), "This is useless, where is my parcel")
    assert angry.handoff == "angry" and angry.says[0].text == cfg.handoff
    assert angry.says[0].data["guesses"][0]["faq_id"] == "track-parcel"
    assert (await turn(cfg, BotMemo(), "你们这个破机器人太差了")).handoff == "angry"
    # How to complain is a question the KB answers: not an angry word by default.
    for question in ("我要投诉快递员的服务态度。", "how do I file a complaint against a delivery driver"):
        complaint = await turn(config(thresholds={"en": 0.3, "zh": 0.3}), BotMemo(), question)
        assert complaint.handoff is None and complaint.says[0].data["faq"] == "complaint-courier", question

    # Asking for a person after a question: the guesses are the question's, not the phrase's.
    memo = BotMemo()
    await turn(cfg, memo, "what does shipping cost")
    asked = await turn(cfg, memo, "I'd like to talk to an agent please")
    assert asked.handoff == "asked" and asked.says[0].data["guesses"][0]["faq_id"] == "shipping-cost"
    command = await take_turn(service(cfg), cfg, BotMemo(), "/agent", "handoff", None, "telegram", NOW)
    assert command.handoff == "asked" and command.says[0].data["guesses"] == []  # no question before it
    memo = BotMemo()
    await turn(cfg, memo, "包裹坏了怎么办")
    command = await take_turn(service(cfg), cfg, memo, "/agent", "handoff", None, "telegram", NOW)
    assert command.says[0].text == localized(cfg.handoff, "zh")  # the question's language, not the command's

    memo = BotMemo()
    first = await turn(cfg, memo, "where is my stuff?")
    assert first.handoff is None
    again = await turn(cfg, memo, "Where is my stuff")
    assert again.handoff == "repeated"

    memo = BotMemo()
    for text in ("How do I track my parcel?", "How much does shipping cost?", "Can I insure my shipment?"):
        assert (await turn(cfg, memo, text)).handoff is None
    assert (await turn(cfg, memo, "How do I get an invoice?")).handoff == "max_turns"


async def test_a_no_to_did_you_mean_is_a_miss_not_a_question_to_match() -> None:
    """A bare "no" would match entries that say "no scan"; to the bot's choices it means none of
    them: "I don't know", or after max_unanswered misses (the "did you mean" was one) a person,
    with the guesses of the question the choices were for."""
    cfg = config()  # max_unanswered 3
    memo = BotMemo()
    assert (await turn(cfg, memo, NEAR_MISS)).says[0].text == cfg.did_you_mean
    none = await turn(cfg, memo, "no")
    assert none.handoff is None and none.says[0].text == localized(cfg.no_answer, "en")
    assert none.says[0].data[REPLYING] is True and memo.unanswered == 2 and memo.asking is None
    strict = config().model_copy(update={"max_unanswered": 2})
    memo = BotMemo()
    await turn(strict, memo, NEAR_MISS)
    handed = await turn(strict, memo, "no, none of these")
    assert handed.handoff == "unanswered" and handed.says[0].data["guesses"][0]["faq_id"] == "damaged-parcel"


async def test_inside_the_channels_bot_interval_a_new_question_goes_to_a_person() -> None:
    """bot_interval (email's): a message stored less than it after the last one the bot took is
    handed off (reason bot_interval) unless it answers the bot's question; a handoff phrase is
    still "asked", with the earlier question's guesses."""
    from datetime import timedelta

    cfg = config(thresholds={"en": 0.3})
    svc = service(cfg)

    async def mail(memo: BotMemo, text: str, after: float) -> Any:
        return await take_turn(svc, cfg, memo, text, "answer", None, "email", NOW,
                               heard_at=NOW + timedelta(seconds=after), bot_interval=300)

    memo = BotMemo()
    first = await mail(memo, "what does shipping cost", 0)
    assert first.handoff is None and first.says[0].data["faq"] == "shipping-cost"
    assert memo.heard_at == NOW
    soon = await mail(BotMemo.from_snapshot(memo.snapshot()), "How do I track my parcel?", 10)
    assert soon.handoff == "bot_interval" and soon.says[0].data["guesses"][0]["faq_id"] == "track-parcel"
    asked = await mail(BotMemo.from_snapshot(memo.snapshot()), "agent please", 10)
    assert asked.handoff == "asked" and asked.says[0].data["guesses"][0]["faq_id"] == "shipping-cost"
    yes = await mail(BotMemo.from_snapshot(memo.snapshot()), "yes", 10)  # an answer to "did this help?"
    assert yes.handoff is None and yes.says[0].data["helpful"] == "shipping-cost"
    later = await mail(BotMemo.from_snapshot(memo.snapshot()), "How do I track my parcel?", 301)
    assert later.handoff is None and later.says[0].data["faq"] == "track-parcel"


def test_a_short_reply_that_starts_with_yes_or_no_is_a_verdict_a_longer_one_a_question() -> None:
    policy = config().policy
    verdict = [yes_or_no(t, policy.yes_words, policy.no_words) for t in (
        "Yes, thanks!", "no it didn't", "Not really", "没有帮助,谢谢", "有帮助", "no, how much does it cost",
        "不知道怎么寄", "有没有保险", "nothing")]
    assert verdict == ["yes", "no", "no", "no", "yes", None, None, None, None]


def test_angry_words_are_whole_words_in_english_and_substrings_in_chinese() -> None:
    words = config().policy.angry_words
    assert is_angry("DAMN it", words) and is_angry("气死我了", words)
    assert not is_angry("a damning review of the scampi", words)  # "damn", "scam" inside words
    assert normalize("  Where is MY stuff?! ") == "where is my stuff"


def test_the_memory_rides_in_the_bot_message_and_comes_back_from_the_events() -> None:
    memo = BotMemo(turns=2, unanswered=1, question="parcel broken", asking="did_you_mean",
                   choices=(Choice("A?", "a"), Choice("B?", "b")), scores={"a": 0.5, "b": 0.4},
                   faq="x", stuck_since=NOW)
    events = [Event("c", 1, Author.CUSTOMER, EventKind.MESSAGE, "hi", None, {}, NOW),
              Event("c", 2, Author.BOT, EventKind.MESSAGE, "Did you mean?", None, {"bot": memo.snapshot()}, NOW),
              Event("c", 3, Author.CUSTOMER, EventKind.MESSAGE, "2", None, {}, NOW)]
    again = BotMemo.from_events(events)
    assert again == memo
    assert picked(again, "2", None) == Choice("B?", "b")
    assert BotMemo.from_events(events[:1]) == BotMemo()


async def test_the_watchdog_turn_hands_off_as_stalled() -> None:
    cfg = config()
    memo = BotMemo()
    await turn(cfg, memo, "where is my stuff?", now=NOW)
    assert memo.stuck_since == NOW
    await turn(cfg, memo, "hello?", now=NOW + timedelta(minutes=3))
    assert memo.stuck_since == NOW  # the first reply without progress counts
    stalled = await stalled_turn(SelfService.from_config(cfg), cfg, memo)
    assert stalled.handoff == "stalled" and stalled.says[0].data["bot"]["stuck_since"] is None


def test_email_numbers_the_choices_under_the_text() -> None:
    body = numbered_choices("Did you mean one of these?", [{"text": "How do I track my parcel?", "value": "t"},
                                                         {"text": "Lost?", "value": "l"}], "Reply with the number.")
    assert body == "Did you mean one of these?\n\n1. How do I track my parcel?\n2. Lost?\n\nReply with the number."
    assert numbered_choices("Hello", [], None) == "Hello"


async def test_a_texts_suggestions_are_ranked_once_per_kb_as_loaded() -> None:
    """An agent's resume replays every customer message: each is ranked once, not per replay."""
    from types import SimpleNamespace

    from gateway.selfservice import agents

    cfg = config()
    selfservice = SelfService.from_config(cfg)  # its own: the cache lives and goes with it
    ranked: list[str] = []
    real_rank = selfservice.matcher.rank
    selfservice.matcher.rank = lambda text, limit=None: ranked.append(text) or real_rank(text, limit)
    pipeline = SimpleNamespace(config=SimpleNamespace(selfservice=cfg), selfservice=selfservice)
    first = await agents.suggestions(pipeline, "my parcel arrived damaged")
    again = await agents.suggestions(pipeline, "my parcel arrived damaged")
    assert first == again and first[0]["faq_id"] == "damaged-parcel"
    assert ranked == ["my parcel arrived damaged"]
    await agents.suggestions(pipeline, "how do I track my parcel")
    assert len(ranked) == 2
    reloaded = SimpleNamespace(config=pipeline.config, selfservice=SelfService.from_config(cfg))
    assert await agents.suggestions(reloaded, "my parcel arrived damaged") == first  # a new KB ranks anew


async def test_replies_to_the_bots_questions_are_marked_and_nothing_else() -> None:
    """A pick's answer, and what the bot says to a yes or a no, carry REPLYING (a channel that
    limits the bot's replies sends them); a question's own answer or choices do not."""
    cfg = config()
    memo = BotMemo()
    asked = await turn(cfg, memo, NEAR_MISS)
    assert REPLYING not in asked.says[0].data
    picked = await turn(cfg, memo, "1")
    assert picked.says[0].data[REPLYING] is True and memo.asking == "helpful"
    glad = await turn(cfg, memo, "yes")
    assert glad.says[0].data[REPLYING] is True and memo.asking is None
    plain = await turn(cfg, memo, "How do I track my parcel?")
    assert REPLYING not in plain.says[0].data and memo.asking == "helpful"
    no = await turn(cfg, memo, "no")
    assert no.handoff == "not_helpful" and no.says[0].data[REPLYING] is True

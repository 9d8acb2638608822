"""The self-service policy over the shipped FAQ: answer, say "don't know", or hand off."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import SelfServiceConfig, load_config, localized
from gateway.faq import detect_lang
from gateway.selfservice import Answer, Handoff, NoAnswer, SelfService

REPO = Path(__file__).resolve().parent.parent
FAQ = REPO / "faq" / "shipping_kb.yaml"


@pytest.fixture(scope="module")
def shipped() -> SelfService:
    """Self-service as the shipped config.yaml sets it up (FAQ path resolved next to the file)."""
    config = load_config(REPO / "config.yaml", env={}).selfservice
    assert config.faq == FAQ
    assert config.max_unanswered == 2
    return SelfService.from_config(config)


@pytest.fixture(scope="module")
def no_faq() -> SelfService:
    return SelfService.from_config(SelfServiceConfig(faq=None, max_unanswered=2))


@pytest.mark.parametrize("question, faq_id", [
    ("How do I track my parcel?", "track-parcel"),
    ("where is my package", "track-parcel"),
    ("Can I insure my shipment?", "insurance"),
    ("my parcel arrived damaged", "damaged-parcel"),
    ("我的快递到哪了", "track-parcel"),
    ("运费怎么算?", "shipping-cost"),
])
def test_known_question_is_answered(shipped: SelfService, question: str, faq_id: str) -> None:
    reply = shipped.reply(question, unanswered_before=0)
    assert isinstance(reply, Answer), reply
    assert reply.faq_id == faq_id
    assert reply.score >= shipped.config.min_score
    assert reply.text in {e.answer for e in shipped.faq.entries if e.id == faq_id}


def test_an_answer_after_misses_is_still_an_answer(shipped: SelfService) -> None:
    reply = shipped.reply("How do I track my parcel?", unanswered_before=1)
    assert isinstance(reply, Answer)


@pytest.mark.parametrize("text", [
    "I want an AGENT",
    "agent",
    "Agent, please!",
    "can I talk to a human?",
    "Put me through to a real person.",
    "representative",
    "operator please",                   # added by the shipped config
    "转人工",
    "我要转人工服务",
    "请帮我找客服",
    "人工",
])
def test_handoff_phrases(shipped: SelfService, text: str) -> None:
    reply = shipped.reply(text, unanswered_before=0)
    assert reply == Handoff(localized(shipped.config.handoff, detect_lang(text)), "asked")
    assert reply.text == ("正在为您转接人工客服,请稍候。" if detect_lang(text) == "zh" else "Let me find you an agent. Please hold on.")


def test_handoff_phrase_wins_over_an_answer(shipped: SelfService) -> None:
    reply = shipped.reply("How do I track my parcel? Actually, give me an agent.", unanswered_before=0)
    assert isinstance(reply, Handoff) and reply.reason == "asked"


@pytest.mark.parametrize("text", [
    "How much are your agents' fees?",   # "agents" is not the word "agent"
    "Is there an agency near me?",
    "humanitarian shipments",
    "personal delivery",
    "I'm a reagent supplier",
])
def test_words_containing_a_phrase_do_not_hand_off(shipped: SelfService, text: str) -> None:
    assert shipped.asks_for_human(text) is False
    reply = shipped.reply(text, unanswered_before=0)
    assert not isinstance(reply, Handoff), reply


def test_unanswered_turns_hand_off_after_max_unanswered(shipped: SelfService) -> None:
    question = "What is the capital of France?"
    first = shipped.reply(question, unanswered_before=0)
    assert first == NoAnswer(localized(shipped.config.no_answer, "en"))
    second = shipped.reply(question, unanswered_before=1)
    assert second == Handoff(localized(shipped.config.handoff, "en"), "unanswered")


def test_max_unanswered_is_configurable() -> None:
    service = SelfService.from_config(SelfServiceConfig(faq=FAQ, max_unanswered=3))
    assert isinstance(service.reply("Do you sell pizza?", 0), NoAnswer)
    assert isinstance(service.reply("Do you sell pizza?", 1), NoAnswer)
    assert service.reply("Do you sell pizza?", 2).reason == "unanswered"  # type: ignore[union-attr]

    once = SelfService.from_config(SelfServiceConfig(faq=FAQ, max_unanswered=1))
    handoff = once.reply("Do you sell pizza?", 0)  # carries the bot's (weak) guesses, if any
    assert isinstance(handoff, Handoff) and (handoff.text, handoff.reason) == (once.config.handoff, "unanswered")


@pytest.mark.parametrize("question", ["How do I track my parcel?", "Do you sell pizza?", "我的快递到哪了"])
def test_without_faq_every_question_is_unanswered(no_faq: SelfService, question: str) -> None:
    assert no_faq.faq is None
    lang = detect_lang(question)
    assert no_faq.reply(question, unanswered_before=0) == NoAnswer(localized(no_faq.config.no_answer, lang))
    assert no_faq.reply(question, unanswered_before=1) == Handoff(localized(no_faq.config.handoff, lang), "unanswered")


def test_without_faq_handoff_phrases_still_work(no_faq: SelfService) -> None:
    assert no_faq.reply("I want an AGENT", 0) == Handoff(localized(no_faq.config.handoff, "en"), "asked")
    assert no_faq.reply("转人工", 0) == Handoff(localized(no_faq.config.handoff, "zh"), "asked")


def test_no_handoff_phrases_configured() -> None:
    service = SelfService.from_config(SelfServiceConfig(faq=None, handoff_phrases=[], max_unanswered=5))
    assert service.asks_for_human("agent 转人工") is False
    assert isinstance(service.reply("agent", 0), NoAnswer)


def test_regex_characters_in_a_phrase_are_literal() -> None:
    service = SelfService.from_config(SelfServiceConfig(faq=None, handoff_phrases=["a.gent", "live chat"]))
    assert service.asks_for_human("a.gent")
    assert not service.asks_for_human("aXgent")
    assert service.asks_for_human("LIVE CHAT now")


def test_between_the_two_thresholds_the_close_entries_are_offered_as_choices() -> None:
    """The "did you mean" band: not sure enough to answer, close enough to ask."""
    from gateway.selfservice import Choices

    question = "i need to follow my shipment"  # a near miss: no entry is sure (scores ~0.2-0.35)
    missed = SelfService.from_config(SelfServiceConfig(faq=FAQ, min_score=0.9)).reply(question, 0)
    assert isinstance(missed, NoAnswer)
    guesses = missed.candidates
    assert 2 <= len(guesses) <= 3 and guesses[0].score < 0.9
    assert [g.score for g in guesses] == sorted((g.score for g in guesses), reverse=True)

    floor = guesses[1].score  # the first two reach it, a third would not
    banded = SelfServiceConfig(faq=FAQ, min_score=0.9, choices_min_score=floor, did_you_mean="Did you mean?")
    reply = SelfService.from_config(banded).reply(question, unanswered_before=0)
    assert isinstance(reply, Choices), reply
    assert reply.text == "Did you mean?"
    assert [o.faq_id for o in reply.options] == [g.faq_id for g in guesses[:2]]
    # A "did you mean" is a miss: at the max_unanswered-th in a row (2), a person instead.
    again = SelfService.from_config(banded).reply(question, unanswered_before=1)
    assert isinstance(again, Handoff) and again.reason == "unanswered"
    assert [c.faq_id for c in again.candidates] == [g.faq_id for g in guesses]

    answered = SelfService.from_config(SelfServiceConfig(faq=FAQ)).reply("How do I track my parcel?", 0)
    assert isinstance(answered, Answer) and answered.candidates[0].faq_id == answered.faq_id


def test_a_channels_min_score_makes_answers_surer_never_looser() -> None:
    """selfservice.channels.<name>.min_score raises the threshold of the question's language
    (from the calibration or `thresholds`) for that channel's conversations; one below it
    changes nothing (it once replaced it, so mail answered what web chat only offered)."""
    question = "track my box please"
    base = SelfService.from_config(SelfServiceConfig(faq=FAQ, thresholds={"en": 0.3})).reply(question, 0)
    assert isinstance(base, Answer) and 0.3 < base.score < 0.98, base
    score = base.score
    for min_score, answered in [(0.1, True), (score - 0.01, True), (score + 0.01, False)]:
        config = SelfServiceConfig(faq=FAQ, thresholds={"en": 0.3}, channels={"email": {"min_score": min_score}})
        ss = SelfService.from_config(config)
        assert isinstance(ss.reply(question, 0, "webchat"), Answer)  # another channel: the language's
        assert isinstance(ss.reply(question, 0, "email"), Answer) is answered, min_score
    # Below the language's threshold, a channel's lower min_score does not answer.
    strict = SelfServiceConfig(faq=FAQ, thresholds={"en": score + 0.01}, channels={"email": {"min_score": 0.1}})
    assert not isinstance(SelfService.from_config(strict).reply(question, 0, "email"), Answer)


def test_the_bots_texts_per_language_of_the_customers_message() -> None:
    """no_answer, handoff and did_you_mean: a text, or one per language (a language not listed
    takes en)."""
    from gateway.selfservice import Choices

    service = SelfService.from_config(SelfServiceConfig(
        faq=FAQ, min_score=0.99, max_unanswered=3,
        no_answer={"en": "No answer.", "zh": "没有答案。"}, handoff={"en": "An agent comes."},
        did_you_mean={"en": "Did you mean?", "zh": "您是想问?"}))
    assert service.reply("what is the meaning of life", 0).text == "No answer."
    assert service.reply("人生的意义是什么", 0).text == "没有答案。"
    assert service.reply("转人工", 0) == Handoff("An agent comes.", "asked")  # no zh: the en text
    assert service.reply("人生的意义是什么", 2).text == "An agent comes."
    banded = SelfService.from_config(SelfServiceConfig(
        faq=FAQ, min_score=0.99, choices_min_score=0.01, did_you_mean={"en": "Did you mean?", "zh": "您是想问?"}))
    asked = banded.reply("包裹坏了", 0)
    assert isinstance(asked, Choices) and asked.text == "您是想问?"
    assert banded.reply("parcel broken", 0).text == "Did you mean?"


@pytest.mark.parametrize(("line", "message"), [
    ("  handoff: {}\n", "selfservice.handoff: Value error, handoff: give a text, or one per language"),
    ("  no_answer: {en: '  '}\n", "no_answer.en: the text is empty"),
])
def test_bad_bot_texts_are_config_errors(tmp_path: Path, line: str, message: str) -> None:
    from gateway.config import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("channels: [{type: webchat}]\nqueues: [{name: general}]\nrouting: {default_queue: general}\n"
                    "selfservice:\n" + line, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert message in str(err.value), str(err.value)

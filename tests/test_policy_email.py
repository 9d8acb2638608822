""""Did you mean" and "did this help?" by mail: the choices numbered in the reply's text, the
customer's "1" (above the quoted mail) taken as the pick, a "2" (No) handing off."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

from gateway.config import SelfServiceConfig, localized

from support import ALICE_TOKEN, Agent
from support_mail import MailSink
from test_email_e2e import Mailer, body, conversation_events, email_config, start, wait_until
from test_email_faults import email_conversations


@asynccontextmanager
async def desk(tmp_path: Path, config: dict[str, Any], sink: MailSink) -> AsyncIterator[tuple[Any, Mailer, Agent]]:
    """The gateway on ``config``, a customer's mailer and Alice ready on the agent websocket."""
    gateway = await start(tmp_path, config)
    try:
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        yield gateway, Mailer(gateway, sink), alice
    finally:
        await gateway.stop()


async def test_numbered_choices_and_a_reply_with_the_number(tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    config = email_config(sqlite_url, sink.port)
    config["selfservice"].update(min_score=0.9, choices_min_score=0.24, channels={})
    async with desk(tmp_path, config, sink) as (gateway, mail, alice):
        first = await mail.send("parcel broken")
        asked = await mail.reply()
        text = body(asked).replace("\r\n", "\n")  # SMTP's line ends
        assert text.startswith("Did you mean one of these?\n\n1. My parcel arrived damaged, what should I do?\n"
                               "2. How do I track my parcel?\n3. How can I get proof of delivery?\n")
        assert "Reply with the number of your choice." in text

        quoted = "1\n\nOn Wed, 2 Dec 2026, Acme Support wrote:\n> " + text.replace("\n", "\n> ")
        second = await mail.send(quoted, subject="Re: " + asked["Subject"], in_reply_to=asked["Message-ID"],
                                 references=[first, asked["Message-ID"]])
        answer = body(await mail.reply()).replace("\r\n", "\n")
        assert answer.startswith("Sorry about that.") and "Did this help?\n\n1. Yes\n2. No" in answer

        await mail.send("2", subject="Re: " + asked["Subject"], in_reply_to=second)
        offer = (await alice.next("offer"))["conversation"]
        assert offer["channel"] == "email" and offer["handoff"]["reason"] == "not_helpful"


async def test_a_reply_to_the_bots_question_is_answered_inside_the_bot_interval(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    """bot_interval (300 s, the default) keeps the bot to one mail per thread against
    autoresponder loops; a customer's pick of the choices and their yes to "did this help?"
    are a person answering the bot, and are answered at once. A new question inside it is not
    answered by the bot but handed to a person (its handoff is mailed): nobody waits for an
    answer that would not be sent."""
    config = email_config(sqlite_url, sink.port, channel={"bot_interval": 300})
    config["selfservice"].update(min_score=0.9, choices_min_score=0.24, channels={})
    async with desk(tmp_path, config, sink) as (gateway, mail, alice):
        first = await mail.send("parcel broken")
        asked = await mail.reply()
        assert body(asked).startswith("Did you mean one of these?")
        second = await mail.send("1", subject="Re: " + asked["Subject"], in_reply_to=asked["Message-ID"],
                                 references=[first, asked["Message-ID"]])
        answer = await mail.reply()
        assert body(answer).startswith("Sorry about that.") and answer["In-Reply-To"] == second
        assert answer["Auto-Submitted"] == "auto-replied"
        third = await mail.send("1", subject="Re: " + asked["Subject"], in_reply_to=answer["Message-ID"])
        glad = await mail.reply()
        assert glad["In-Reply-To"] == third and "Sorry about that." not in body(glad)

        # A new question inside the interval: the bot hands it off, and that is mailed.
        fourth = await mail.send("How much does shipping cost?", subject="Re: " + asked["Subject"],
                                 in_reply_to=glad["Message-ID"])
        handoff = await mail.reply()
        expected = localized(SelfServiceConfig.model_validate(config["selfservice"]).handoff, "en")
        assert handoff["In-Reply-To"] == fourth and body(handoff).strip() == expected
        offer = (await alice.next("offer"))["conversation"]
        assert offer["handoff"]["reason"] == "bot_interval"
        assert offer["handoff"]["guesses"][0]["faq_id"] == "shipping-cost"  # for the agent: the question's
        [conversation] = await email_conversations(gateway)
        events = await conversation_events(gateway, conversation["id"])
        assert not [e for e in events if e["author"] == "bot" and e["data"].get("faq") == "shipping-cost"]


async def test_two_questions_at_once_the_second_goes_to_a_person(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    """Two mails of one thread at once (a mailbox fetched after a while): the bot answers the
    first; the second, inside bot_interval, is handed off and the handoff mailed. Then the
    customer's "1" to the first answer's "did this help?" reaches the agent; the bot does not
    take it as a pick of choices it never mailed."""
    config = email_config(sqlite_url, sink.port, channel={"bot_interval": 300})
    config["selfservice"].update(channels={})
    async with desk(tmp_path, config, sink) as (gateway, mail, alice):
        first = await mail.send("How do I track my parcel?")
        second = await mail.send("parcel broken", in_reply_to=first)
        replies = [await mail.reply(), await mail.reply()]
        by_answer = {r["In-Reply-To"]: body(r) for r in replies}
        assert "Track page" in by_answer[first] and "Did this help?" in by_answer[first]
        expected = localized(SelfServiceConfig.model_validate(config["selfservice"]).handoff, "en")
        assert by_answer[second].strip() == expected
        offer = (await alice.next("offer"))["conversation"]
        assert offer["handoff"]["reason"] == "bot_interval"
        answer = next(r for r in replies if r["In-Reply-To"] == first)
        await mail.send("1", subject="Re: " + answer["Subject"], in_reply_to=answer["Message-ID"])
        [conversation] = await email_conversations(gateway)

        async def heard() -> bool:
            events = await conversation_events(gateway, conversation["id"])
            return events[-1]["author"] == "customer" and events[-1]["text"] == "1"
        await wait_until(heard)
        events = await conversation_events(gateway, conversation["id"])
        assert [e["data"].get("handoff") for e in events if e["author"] == "bot"][-1] == "bot_interval"
        assert sum(e["author"] == "bot" for e in events) == 2  # the answer and the handoff; nothing for the "1"

""""Did you mean" and "did this help?" by mail: the choices numbered in the reply's text, the
customer's "1" (above the quoted mail) taken as the pick, a "2" (No) handing off."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import SelfServiceConfig, localized

from support import ALICE_TOKEN, Agent
from support_mail import MailSink
from test_email_e2e import Mailer, body, conversation_events, email_config, start, wait_until
from test_email_faults import email_conversations


async def test_numbered_choices_and_a_reply_with_the_number(tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    config = email_config(sqlite_url, sink.port)
    config["selfservice"].update(min_score=0.9, choices_min_score=0.24, channels={})
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
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
    finally:
        await gateway.stop()


async def test_a_reply_to_the_bots_question_is_answered_inside_the_bot_interval(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    """bot_interval (300 s, the default) keeps the bot to one mail per thread against
    autoresponder loops; a customer's pick of the choices and their yes to "did this help?"
    are a person answering the bot, and are answered at once, as is the handoff. A new question
    is not."""
    config = email_config(sqlite_url, sink.port, channel={"bot_interval": 300})
    config["selfservice"].update(min_score=0.9, choices_min_score=0.24, channels={})
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
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

        # A new question inside the interval: answered in the conversation, not mailed.
        await mail.send("How much does shipping cost?", subject="Re: " + asked["Subject"],
                        in_reply_to=glad["Message-ID"])
        [conversation] = await email_conversations(gateway)

        async def answered() -> bool:
            events = await conversation_events(gateway, conversation["id"])
            return sum(e["author"] == "bot" and e["kind"] == "message" for e in events) == 4
        await wait_until(answered)
        with pytest.raises(AssertionError):
            await sink.wait_for(4, timeout=1.5)
        # Asking for a person inside the interval: the bot's handoff, its last word, is mailed.
        await mail.send("agent please", subject="Re: " + asked["Subject"], in_reply_to=glad["Message-ID"])
        handoff = await mail.reply()
        expected = localized(SelfServiceConfig.model_validate(config["selfservice"]).handoff, "en")
        assert handoff["Subject"] == asked["Subject"] and body(handoff).strip() == expected
    finally:
        await gateway.stop()

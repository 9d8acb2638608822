""""Did you mean" and "did this help?" by mail: the choices numbered in the reply's text, the
customer's "1" (above the quoted mail) taken as the pick, a "2" (No) handing off."""

from __future__ import annotations

from pathlib import Path

from support import ALICE_TOKEN, Agent
from support_mail import MailSink
from test_email_e2e import Mailer, body, email_config, start


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

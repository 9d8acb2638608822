"""The email channel end to end: the real gateway process, mail in through its SMTP listener
(aiosmtplib as the sending MTA), replies out to a real SMTP server (tests/support_mail.MailSink)
and the agent on the real websocket. On SQLite and on PostgreSQL where it matters."""

from __future__ import annotations

import asyncio
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import aiosmtplib
import pytest
import pytest_asyncio

import dovecot
from support import ALICE_TOKEN, BOB_TOKEN, Agent, GatewayProcess, database_away, gateway_config
from support_mail import MailSink

ADMIN_TOKEN = "admin-test-token"
SUPPORT = "support@acme.example"
CUSTOMER = "mei@customer.example"


def email_config(store_url: str, sink_port: int, **overrides: Any) -> dict[str, Any]:
    channel = {"type": "email", "name": "email", "address": SUPPORT, "display_name": "Acme Support",
               "listen": {"host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"]},
               "smtp": {"host": "127.0.0.1", "port": sink_port, "security": "none", "timeout": 5},
               "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5},
               "bot_interval": 0}
    channel.update(overrides.pop("channel", {}))
    config = gateway_config(store_url, **overrides)
    config["channels"] = [{"type": "webchat"}, channel]
    config["selfservice"]["channels"] = {"email": {"max_unanswered": 1}}
    config["server"]["admin_token"] = ADMIN_TOKEN
    config["attachments"] = {"max_bytes": 50_000, "max_message_bytes": 120_000}
    return config


class Mailer:
    """The customer's side: mail into the gateway's listener, replies read from the sink."""

    def __init__(self, gateway: GatewayProcess, sink: MailSink) -> None:
        self.gateway = gateway
        self.sink = sink
        self.seen = 0

    @property
    def port(self) -> int:
        record = next(r for r in self.gateway.logs if r.get("msg") == "email: SMTP listener up")
        return int(record["port"])

    async def send(self, text: str, *, subject: str = "Where is my parcel?", sender: str = CUSTOMER,
                   in_reply_to: str | None = None, references: list[str] | None = None,
                   message_id: str | None = None, headers: dict[str, str] | None = None,
                   attachments: list[tuple[str, bytes]] = ()) -> str:
        message = EmailMessage()
        message["From"] = f"Mei Chen <{sender}>"
        message["To"] = SUPPORT
        message["Subject"] = subject
        message["Message-ID"] = message_id or make_msgid(domain="customer.example")
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = " ".join(references or [in_reply_to])
        for name, value in (headers or {}).items():
            message[name] = value
        message.set_content(text)
        for name, data in attachments:
            message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        await self.raw(message.as_bytes(), sender=sender)
        return message["Message-ID"]

    async def raw(self, data: bytes, sender: str = CUSTOMER) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=self.port, timeout=10) as smtp:
            await smtp.sendmail(sender, [SUPPORT], data)  # "" is the null sender of a bounce

    async def reply(self, timeout: float = 10.0) -> EmailMessage:
        """The next mail the gateway sent."""
        self.seen += 1
        _, raw = (await self.sink.wait_for(self.seen, timeout))[self.seen - 1]
        return BytesParser(policy=policy.default).parsebytes(raw)  # type: ignore[return-value]


async def start(tmp_path: Path, config: dict[str, Any]) -> GatewayProcess:
    return await GatewayProcess.write_config(tmp_path, config).start()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, sqlite_url: str, sink: MailSink) -> AsyncIterator[GatewayProcess]:
    process = await start(tmp_path, email_config(sqlite_url, sink.port))
    yield process
    await process.stop()


def body(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


async def conversation_events(gateway: GatewayProcess, conversation_id: str) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(f"{gateway.http}/api/conversations/{conversation_id}") as response:
            assert response.status == 200, await response.text()
            return (await response.json())["events"]


async def test_mail_faq_answer_agent_and_threaded_replies(tmp_path: Path, store_url: str, sink: MailSink) -> None:
    gateway = await start(tmp_path, email_config(store_url, sink.port))
    try:
        mail = Mailer(gateway, sink)
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")

        first = await mail.send("Hello, how do I track my parcel?")
        answer = await mail.reply()
        assert answer["To"].addresses[0].addr_spec == CUSTOMER
        assert answer["In-Reply-To"] == first
        assert answer["Auto-Submitted"] == "auto-replied"
        subject = answer["Subject"]
        assert subject.startswith("Re: Where is my parcel? [#")
        assert "track" in body(answer).lower()

        # The customer's client quotes our answer under the new text; only "agent" counts.
        quoted = "agent please\n\nOn Tue, 1 Dec 2026, Acme Support wrote:\n> " + body(answer).replace("\n", "\n> ")
        second = await mail.send(quoted, subject="Re: " + subject, in_reply_to=answer["Message-ID"],
                                 references=[first, answer["Message-ID"]])
        offer = (await alice.next("offer"))["conversation"]
        assert offer["channel"] == "email" and offer["customer_connected"] is None
        texts = [e["text"] for e in offer["transcript"] if e["author"] == "customer"]
        assert texts == ["Hello, how do I track my parcel?", "agent please"]
        assert offer["transcript"][0]["subject"] == "Where is my parcel?"
        # The whole mail as it arrived is kept, for the agent to read.
        original = offer["transcript"][0]["original"]
        assert original["content_type"] == "message/rfc822"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            async with http.get(f"{gateway.http}/api/attachments/{original['id']}") as response:
                assert b"Message-ID: " + first.encode() in await response.read()
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.next("assigned")
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Hi Mei, I'm Alice. Your number?")
        await alice.next("ack", id="a1")

        # The handoff note is the bot's too; then Alice's reply, threaded to the customer's mail.
        replies = [await mail.reply(), await mail.reply()]
        from_alice = next(r for r in replies if "Alice" in body(r))
        assert from_alice["Auto-Submitted"] is None
        assert from_alice["Subject"] == subject
        assert from_alice["In-Reply-To"] == second
        assert {first, answer["Message-ID"], second} <= set(from_alice["References"].split())

        await mail.send("It is 12345.", subject="Re: " + subject, in_reply_to=from_alice["Message-ID"])
        message = await alice.next("message", conversation_id=offer["id"])
        assert message["text"] == "It is 12345." and message["author"] == "customer"
    finally:
        await gateway.stop()


async def test_same_mail_twice_is_stored_once(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    message_id = await mail.send("Do you ship to Canada?")
    await mail.reply()
    await mail.send("Do you ship to Canada?", message_id=message_id)  # the MTA retried
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(f"{gateway.http}/api/conversations?channel=email") as response:
            conversations = (await response.json())["conversations"]
    assert len(conversations) == 1
    events = await conversation_events(gateway, conversations[0]["id"])
    assert [e["author"] for e in events if e["kind"] == "message"] == ["customer", "bot"]
    with pytest.raises(AssertionError):
        await sink.wait_for(2, timeout=1.0)  # and the bot answered once


async def test_subject_token_alone_threads_only_for_the_same_sender(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    await mail.send("How do I track my parcel?")
    subject = (await mail.reply())["Subject"]
    # A reply whose client dropped In-Reply-To and References: the token finds the thread.
    await mail.send("Still nothing arrived", subject="RE: " + subject)
    # Someone else quoting the same token gets a conversation of their own.
    await mail.send("Is this mine?", subject=subject, sender="stranger@elsewhere.example")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(f"{gateway.http}/api/conversations?channel=email") as response:
            conversations = (await response.json())["conversations"]
    assert len(conversations) == 2
    counts = sorted([len([e for e in await conversation_events(gateway, c["id"])
                          if e["author"] == "customer"]) for c in conversations])
    assert counts == [1, 2]


async def test_auto_replies_and_bounces_never_open_conversations(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.next("ready")
    await mail.send("I am out of office until Monday.", subject="Out of office",
                    headers={"Auto-Submitted": "auto-replied"})
    await mail.send("newsletter", subject="News", headers={"Precedence": "bulk"})
    await mail.send("from ourselves", sender=SUPPORT)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(f"{gateway.http}/api/conversations?channel=email") as response:
            assert (await response.json())["conversations"] == []
    with pytest.raises(AssertionError):
        await sink.wait_for(1, timeout=1.0)

    # A bounce of the agent's reply is shown to the agent as a failed delivery.
    await mail.send("agent")
    offer = (await alice.next("offer"))["conversation"]
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Hello from Alice")
    ack = await alice.next("ack", id="a1")
    sent = [await mail.reply() for _ in range(2)]
    ours = next(r for r in sent if "Alice" in body(r))
    bounce = EmailMessage()
    bounce["From"] = "MAILER-DAEMON@customer.example"
    bounce["To"] = SUPPORT
    bounce["Subject"] = "Undelivered Mail Returned to Sender"
    bounce["Message-ID"] = make_msgid(domain="customer.example")
    bounce.set_content(f"Your message could not be delivered.\n\n--- original ---\nMessage-ID: {ours['Message-ID']}\n")
    await mail.raw(bounce.as_bytes(), sender="")
    failed = await alice.next("delivery_failed", conversation_id=offer["id"])
    assert failed["message_seq"] == ack["seq"] and failed["bounce"] is True


async def test_relay_refusing_twice_then_accepting_sends_once(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    sink.refuse_next(2, "451 4.3.0 try again later")
    await mail.send("How do I track my parcel?")
    await mail.reply()
    with pytest.raises(AssertionError):
        await sink.wait_for(2, timeout=1.5)
    assert sink.attempts == 3


async def test_relay_refusing_for_good_tells_the_agent(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.next("ready")
    await mail.send("agent")
    await mail.reply()  # the handoff note
    offer = (await alice.next("offer"))["conversation"]
    await alice.send(type="accept", conversation_id=offer["id"])
    sink.refuse_next(1, "550 5.1.1 no such user")
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Hello?")
    ack = await alice.next("ack", id="a1")
    failed = await alice.next("delivery_failed", conversation_id=offer["id"])
    assert failed["message_seq"] == ack["seq"] and "550" in failed["reason"] and failed["bounce"] is False


async def test_attachments_kept_refused_and_downloaded_by_the_right_people(gateway: GatewayProcess,
                                                                          sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.next("ready")
    invoice = bytes(range(256)) * 40     # 10 240 bytes: kept
    huge = b"x" * 60_000                 # over max_bytes: refused
    await mail.send("agent, see the invoice", attachments=[("invoice.pdf", invoice), ("scan.tiff", huge)])
    note = await mail.reply()
    assert '"scan.tiff"' in body(note) and "invoice.pdf" not in body(note)
    offer = (await alice.next("offer"))["conversation"]
    first = next(e for e in offer["transcript"] if e["author"] == "customer")
    assert [a["name"] for a in first["attachments"]] == ["invoice.pdf"]
    assert first["attachments"][0]["size"] == len(invoice)
    assert "original" not in first  # it holds the refused file: not kept either
    attachment_id = first["attachments"][0]["id"]
    url = f"{gateway.http}/api/attachments/{attachment_id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {BOB_TOKEN}"}) as r:
            assert r.status == 404  # Bob never had this conversation
        async with http.get(url) as r:
            assert r.status == 401
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.next("assigned")
        async with http.get(url, headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as r:
            assert r.status == 200 and await r.read() == invoice
            assert r.headers["Content-Disposition"].startswith("attachment")
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200
        # Alice replies with a file of her own.
        async with http.post(f"{gateway.http}/api/attachments",
                             params={"conversation_id": offer["id"], "name": "label.png"},
                             data=b"\x89PNG fake", headers={"Authorization": f"Bearer {ALICE_TOKEN}",
                                                           "Content-Type": "image/png"}) as r:
            assert r.status == 201, await r.text()
            uploaded = await r.json()
        async with http.post(f"{gateway.http}/api/attachments",
                             params={"conversation_id": offer["id"], "name": "big.bin"},
                             data=b"y" * 60_000, headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as r:
            assert r.status == 413
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="",
                     attachments=[uploaded["id"]])
    await alice.next("ack", id="a1")
    sent = [await mail.reply() for _ in range(2)]
    with_file = next(m for m in sent if any(True for _ in m.iter_attachments()))
    files = list(with_file.iter_attachments())
    assert [f.get_filename() for f in files] == ["label.png"] and files[0].get_content() == b"\x89PNG fake"


async def test_store_down_answers_451_and_loses_nothing(tmp_path: Path, pg_url: str, pg_admin_dsn: str,
                                                        sink: MailSink) -> None:
    gateway = await start(tmp_path, email_config(pg_url, sink.port))
    try:
        mail = Mailer(gateway, sink)
        async with database_away(pg_url, pg_admin_dsn):
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await mail.send("How do I track my parcel?", message_id="<retry-1@customer.example>")
            assert refused.value.code == 451
        # The MTA retries: stored now, answered once.
        await mail.send("How do I track my parcel?", message_id="<retry-1@customer.example>")
        assert "track" in body(await mail.reply()).lower()
    finally:
        await gateway.stop()


async def test_reply_to_a_closed_conversation_opens_one_that_follows_it(gateway: GatewayProcess,
                                                                       sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.next("ready")
    first = await mail.send("agent")
    await mail.reply()
    offer = (await alice.next("offer"))["conversation"]
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Solved, bye")
    await alice.next("ack", id="a1")
    ours = await mail.reply()
    await alice.send(type="close", conversation_id=offer["id"])
    await alice.next("closed", conversation_id=offer["id"])
    follow_up = await mail.send("agent, it broke again", subject="Re: " + ours["Subject"],
                                in_reply_to=ours["Message-ID"], references=[first, ours["Message-ID"]])
    again = (await alice.next("offer"))["conversation"]
    assert again["id"] != offer["id"]
    assert again["transcript"][0]["follows"] == offer["id"]
    assert again["transcript"][0]["references"] == [first.strip("<>"), ours["Message-ID"].strip("<>")]
    # Our answer in the new conversation keeps the customer's chain: the client threads it all.
    answer = await mail.reply()
    assert answer["In-Reply-To"] == follow_up
    assert answer["References"].split() == [first, ours["Message-ID"], follow_up]


async def wait_until(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_imap_mailbox_mail_before_start_and_after_a_server_restart(
        tmp_path: Path, sqlite_url: str, sink: MailSink, imap_server_alone: dovecot.ImapServer, imap_user: str) -> None:
    imap_server = imap_server_alone  # it stops and starts the server
    waiting_id, waiting = dovecot.mail("My parcel", "How do I track my parcel?", sender=CUSTOMER)
    await imap_server.append(imap_user, waiting)  # arrived while the gateway was down
    imap = {"host": imap_server.host, "port": imap_server.port, "username": imap_user,
            "password": imap_server.password, "backoff_initial": 0.1, "backoff_max": 0.5, "timeout": 10}
    config = email_config(sqlite_url, sink.port, channel={"imap": imap})
    del config["channels"][1]["listen"]
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
        answer = await mail.reply(timeout=20)
        assert answer["In-Reply-To"] == waiting_id and "track" in body(answer).lower()
        await wait_until(lambda: _seen(imap_server, imap_user, waiting_id))

        imap_server.stop_server()
        imap_server.start_server()
        reply_id, reply = dovecot.mail("Re: " + answer["Subject"], "agent please", sender=CUSTOMER)
        reply = reply.replace(b"Subject:", f"In-Reply-To: {answer['Message-ID']}\nSubject:".encode(), 1)
        await imap_server.append(imap_user, reply)
        handoff = await mail.reply(timeout=30)  # the bot's note: the same thread, the same conversation
        assert handoff["In-Reply-To"] == reply_id and handoff["Subject"] == answer["Subject"]
        await wait_until(lambda: _seen(imap_server, imap_user, reply_id))
    finally:
        await gateway.stop()


async def _seen(imap_server: dovecot.ImapServer, user: str, message_id: str) -> bool:
    return message_id in await imap_server.message_ids(user, "SEEN")


async def test_mail_without_message_id_is_answered_and_known_by_its_bytes(gateway: GatewayProcess,
                                                                         sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = CUSTOMER, SUPPORT, "No id"
    message.set_content("How do I track my parcel?")
    await mail.raw(message.as_bytes())
    answer = await mail.reply()
    assert answer["In-Reply-To"] is None and answer["References"] is None and "track" in body(answer).lower()
    await mail.raw(message.as_bytes())  # the same bytes again: stored once, not answered again
    with pytest.raises(AssertionError):
        await sink.wait_for(2, timeout=1.5)


async def test_metrics_count_the_outbox(gateway: GatewayProcess, sink: MailSink) -> None:
    mail = Mailer(gateway, sink)
    sink.refuse_next(1, "451 4.3.0 later")
    await mail.send("How do I track my parcel?")
    await mail.reply()
    expected = ['contactgate_outbox_deliveries_total{channel="email",outcome="sent"} 1.0',
                'contactgate_outbox_deliveries_total{channel="email",outcome="retried"} 1.0']

    async def counted() -> bool:  # the relay took it a moment before the worker counts it
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{gateway.http}/metrics") as response:
                text = await response.text()
        return all(line in text for line in expected)

    await wait_until(counted)

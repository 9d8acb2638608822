"""The email channel probed from outside, as a tester who read only README.md and docs/ would:
the real gateway process (``contactgate serve``), mail in over SMTP (aiosmtplib and raw sockets
as the sending MTA), replies out to a real SMTP server (``MailSink``), the agent on the real
websocket, the transcript over the admin API. Config mistakes through ``contactgate
check-config``; refusals, charsets, quoted replies, the outbox across restarts and processes,
listener AUTH, the bot's interval and the loop guard, attachment names."""

from __future__ import annotations

import asyncio
import base64
import random
import signal
import socket
import sqlite3
import subprocess
import sys
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiohttp
import aiosmtplib
import pytest

from support import ALICE_TOKEN, REPO, Agent, GatewayProcess, serve_until_exit
from support_mail import MailSink
from test_email_e2e import (ADMIN_TOKEN, CUSTOMER, SUPPORT, Mailer, body, conversation_events, email_config,
                            start, wait_until)

from adapters.email import parse_message
from gateway.config import ConfigError, parse_config


# -- bad config: check-config names the key and the line ----------------------------------------

CONFIG_HEAD = """\
queues:
  - name: general
routing:
  default_queue: general
channels:
  - type: webchat
"""

# One email channel per mistake (the line numbers below count from CONFIG_HEAD's first line).
BROKEN_CHANNELS = {
    "address missing": ("""\
  - type: email
    name: no_address
    listen: {port: 2525}
    smtp: {host: 127.0.0.1, security: none}
""", 7, "channels[1].address: required key is missing"),
    "address mistyped": ("""\
  - type: email
    name: mistyped
    adress: support@acme.example
    listen: {port: 2525}
    smtp: {host: 127.0.0.1, security: none}
""", 9, "channels[1].adress: unknown key"),
    "not an address": ("""\
  - type: email
    name: not_address
    address: support.acme.example
    listen: {port: 2525}
    smtp: {host: 127.0.0.1, security: none}
""", 9, "channels[1].address: "),
    "no way in": ("""\
  - type: email
    name: no_way_in
    address: support@acme.example
    smtp: {host: 127.0.0.1, security: none}
""", 7, "channels[1]: "),
    "bad security": ("""\
  - type: email
    name: bad_security
    address: support@acme.example
    listen: {port: 2525}
    smtp:
      host: 127.0.0.1
      security: ssl
""", 13, "channels[1].smtp.security: "),
    "port out of range": ("""\
  - type: email
    name: bad_port
    address: support@acme.example
    listen:
      port: 70000
    smtp: {host: 127.0.0.1, security: none}
""", 11, "channels[1].listen.port: "),
    "relay username without password": ("""\
  - type: email
    name: half_login
    address: support@acme.example
    listen: {port: 2525}
    smtp:
      host: 127.0.0.1
      username: support@acme.example
""", 11, "channels[1].smtp: "),
    "require_starttls without cert": ("""\
  - type: email
    name: no_cert
    address: support@acme.example
    listen:
      port: 2525
      require_starttls: true
    smtp: {host: 127.0.0.1, security: none}
""", 10, "channels[1].listen: "),
    "smtp missing": ("""\
  - type: email
    name: no_relay
    address: support@acme.example
    listen: {port: 2525}
""", 7, "channels[1].smtp: required key is missing"),
    "lists mistyped": ("""\
  - type: email
    name: lists
    address: support@acme.example
    listen: {port: 2525}
    smtp: {host: 127.0.0.1, security: none}
    lists: accepted
""", 12, "channels[1].lists: "),
}


@pytest.mark.parametrize("case", sorted(BROKEN_CHANNELS))
def test_each_email_config_mistake_names_its_key_and_line(case: str) -> None:
    text, line, problem = BROKEN_CHANNELS[case]
    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG_HEAD + text, "config.yaml", env={})
    lines = str(info.value).splitlines()
    assert any(entry.startswith(f"config.yaml:{line}: {problem}") for entry in lines), lines
    # The message says what is wrong in the administrator's words, not as a regular expression.
    assert not any("should match pattern" in entry for entry in lines), lines


def test_check_config_exits_2_and_names_every_broken_email_channel(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG_HEAD + "".join(text for text, _, _ in BROKEN_CHANNELS.values()), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "check-config", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    offset = 0
    for index, (text, line, problem) in enumerate(BROKEN_CHANNELS.values()):
        expected = f"{path}:{line + offset}: " + problem.replace("channels[1]", f"channels[{index + 1}]")
        assert expected in result.stderr, (expected, result.stderr)
        offset += text.count("\n")


# -- helpers -------------------------------------------------------------------------------------

async def email_conversations(gateway: GatewayProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(f"{gateway.http}/api/conversations?channel=email") as response:
            assert response.status == 200, await response.text()
            return (await response.json())["conversations"]


async def customer_messages(gateway: GatewayProcess) -> dict[str, list[dict[str, Any]]]:
    """Every email conversation's customer messages, by the sender's address (``from``)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for conversation in await email_conversations(gateway):
        for event in await conversation_events(gateway, conversation["id"]):
            if event["author"] == "customer" and event["kind"] == "message":
                found.setdefault(event["data"]["from"], []).append(event)
    return found


class SmtpTalk:
    """A raw SMTP client, for what no well-behaved library would send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "SmtpTalk":
        talk = cls(*await asyncio.open_connection("127.0.0.1", port))
        assert (await talk.reply()).startswith("220")
        return talk

    async def reply(self) -> str:
        """One whole reply (every line of a multi-line one), as text."""
        lines = []
        async with asyncio.timeout(10):
            while True:
                line = (await self.reader.readline()).decode("utf-8", "replace")
                assert line, f"the listener hung up after {lines}"
                lines.append(line.rstrip("\r\n"))
                if line[3:4] != "-":
                    return "\n".join(lines)

    async def say(self, command: bytes) -> str:
        self.writer.write(command + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def smtp_code(error: BaseException) -> int:
    assert isinstance(error, aiosmtplib.SMTPResponseException), repr(error)
    return error.code


# -- the listener refuses what it must, and keeps working --------------------------------------

async def test_the_listener_refuses_what_is_not_for_it_and_keeps_working(tmp_path: Path, sqlite_url: str,
                                                                       sink: MailSink) -> None:
    config = email_config(sqlite_url, sink.port, channel={"listen": {
        "host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"], "max_message_bytes": 20_000}})
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
        # Too big: refused with 552 (EHLO says SIZE), never stored.
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mail.port, timeout=10) as smtp:
            await smtp.ehlo()
            assert smtp.supports_extension("size")
            assert smtp.esmtp_extensions["size"] == "20000"
        with pytest.raises(aiosmtplib.SMTPException) as too_big:
            await mail.send("How do I track my parcel? " + "padding " * 5000)
        assert smtp_code(too_big.value) == 552
        # Without SIZE in MAIL FROM, the listener counts the DATA itself.
        talk = await SmtpTalk.open(mail.port)
        assert (await talk.say(b"HELO client.example")).startswith("250")
        assert (await talk.say(b"MAIL FROM:<mei@customer.example>")).startswith("250")
        assert (await talk.say(b"RCPT TO:<support@acme.example>")).startswith("250")
        assert (await talk.say(b"DATA")).startswith("354")
        talk.writer.write(b"From: mei@customer.example\r\nSubject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 400)
        assert (await talk.say(b".")).startswith("552")

        # Garbage on the same connection: answered, nothing stored, the session goes on.
        assert (await talk.say(b"FOO BAR")).startswith("500")
        assert (await talk.say(b"DATA")).startswith("503")
        assert (await talk.say(b"RCPT TO:<support@acme.example>")).startswith("503")
        assert (await talk.say(b"MAIL FROM:<mei@customer.example> NOSUCHPARAM=1"))[0] == "5"
        assert (await talk.say(b"MAIL FROM:<mei customer@example>"))[0] == "5"
        assert (await talk.say(b"\xff\xfe\x00 binary"))[0] == "5"
        assert (await talk.say(b"NOOP")).startswith("250")
        # A recipient outside accept_recipients: 550, so the listener is no open sink.
        assert (await talk.say(b"MAIL FROM:<mei@customer.example>")).startswith("250")
        assert (await talk.say(b"RCPT TO:<someone@elsewhere.example>")).startswith("550")
        assert (await talk.say(b"RCPT TO:<support@acme.example.evil.example>")).startswith("550")
        assert (await talk.say(b"QUIT")).startswith("221")
        await talk.close()
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as outside:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mail.port, timeout=10) as smtp:
                await smtp.sendmail(CUSTOMER, ["help@other.example"], b"From: x@y.example\r\n\r\nhi\r\n")
        assert outside.value.recipients[0].code == 550

        # Bytes that are not mail: 550, for a normal sender and for the null sender alike.
        noise = random.Random(9).randbytes(3000).replace(b"\r", b"").replace(b"\n", b"")
        noise = b"\r\n".join(noise[i:i + 70] for i in range(0, len(noise), 70))
        for sender in (CUSTOMER, ""):
            with pytest.raises(aiosmtplib.SMTPDataError) as not_mail:
                await mail.raw(noise, sender=sender)
            assert not_mail.value.code == 550, (sender, not_mail.value)
        with pytest.raises(aiosmtplib.SMTPDataError) as empty:
            await mail.raw(b"\r\n")
        assert empty.value.code == 550

        assert await email_conversations(gateway) == []
        # And the gateway still works: a good mail is answered.
        await mail.send("How do I track my parcel?")
        assert "track" in body(await mail.reply()).lower()
        assert len(await email_conversations(gateway)) == 1
    finally:
        await gateway.stop()


# -- what the agent reads ------------------------------------------------------------------------

def raw_mail(sender: str, subject: str, content: bytes, *, content_type: str = "text/plain; charset=utf-8",
             encoding: str = "8bit", message_id: str | None = None, extra: str = "") -> bytes:
    """A mail as a client writes it, byte for byte (``subject`` already RFC 2047 encoded)."""
    head = (f"From: {sender}\r\nTo: Acme Support <{SUPPORT}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {message_id or make_msgid(domain='customer.example')}\r\n"
            f"Date: Fri, 01 Mar 2024 09:00:00 +0800\r\nMIME-Version: 1.0\r\n{extra}"
            f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n")
    return head.encode("utf-8") + content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


HTML_ONLY = """<html><head><style>p { color: red }</style><script>alert("x")</script></head>
<body><p>Hello,</p><p>my <b>invoice</b> INV-77 is wrong.</p>
<div class="gmail_quote"><div>On Mon, 1 Mar 2024 at 09:12, Acme Support &lt;support@acme.example&gt; wrote:<br></div>
<blockquote class="gmail_quote" style="margin:0 0 0 .8ex">Your invoice is attached.</blockquote></div></body></html>"""

OUTLOOK_REPLY = """Please cancel the order instead.

Thanks,
Jane

________________________________
From: Acme Support <support@acme.example>
Sent: Friday, March 1, 2024 9:12 AM
To: Smith, Jane <jane@contoso.example>
Subject: RE: Where is my parcel? [#K7M3QX]

Your parcel left our warehouse yesterday.
"""

QQ_REPLY = """好的，那请帮我退款。

------------------ 原始邮件 ------------------
发件人: "Acme Support"<support@acme.example>;
发送时间: 2024年3月1日(星期五) 上午9:12
收件人: "张三"<12345678@qq.com>;
主题: Re: 订单 1042

您的包裹昨天已发出。
"""

GMAIL_ZH_REPLY = """还是没有收到。

在 2024年3月1日 周五 09:12，Acme Support <support@acme.example> 写道：
> 您的包裹昨天已发出。
"""


async def test_agents_read_html_every_charset_encoded_subjects_and_only_the_new_text(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    gateway = await start(tmp_path, email_config(sqlite_url, sink.port))
    try:
        mail = Mailer(gateway, sink)
        sent = {
            "renee@example.fr": raw_mail("Renée <renee@example.fr>", "=?utf-8?Q?Facture_erron=C3=A9e?=",
                                         HTML_ONLY.encode(), content_type="text/html; charset=utf-8"),
            # Labelled GB2312, written in GBK (喆 is GBK only), as Chinese clients do.
            "wangzhe@example.cn": raw_mail("=?gb2312?B?zfWGtA==?= <wangzhe@example.cn>",
                                           "=?GBK?B?" + base64.b64encode("退货 喆".encode("gbk")).decode() + "?=",
                                           "请问怎么退货？王喆".encode("gbk"), content_type="text/plain; charset=gb2312"),
            "ming@example.tw": raw_mail("ming@example.tw", "=?big5?B?sGizZrDdw0Q=?=",
                                        "請問退貨要怎麼辦理？".encode("big5"), content_type="text/plain; charset=big5"),
            "jose@example.es": raw_mail("jose@example.es", "=?iso-8859-1?Q?Caf=E9?=",
                                        "“Café” costs 5 €".encode("cp1252"), content_type="text/plain; charset=windows-1252"),
            "jane@contoso.example": raw_mail('"Smith, Jane" <jane@contoso.example>', "RE: Where is my parcel?",
                                             OUTLOOK_REPLY.encode()),
            "12345678@qq.com": raw_mail("=?utf-8?B?5byg5LiJ?= <12345678@qq.com>", "=?utf-8?B?5Zue5aSN77ya6K6i5Y2V?=",
                                        QQ_REPLY.encode("gb18030"), content_type="text/plain; charset=GB18030"),
            "li@gmail.example": raw_mail("li@gmail.example", "Re: parcel", GMAIL_ZH_REPLY.encode()),
        }
        for sender, raw in sent.items():
            await mail.raw(raw, sender=sender)
        messages = await customer_messages(gateway)
        seen = {sender: (events[0]["text"], events[0]["data"]["subject"]) for sender, events in messages.items()}
        assert seen == {
            "renee@example.fr": ("Hello,\n\nmy invoice INV-77 is wrong.", "Facture erronée"),
            "wangzhe@example.cn": ("请问怎么退货？王喆", "退货 喆"),
            "ming@example.tw": ("請問退貨要怎麼辦理？", "退貨問題"),
            "jose@example.es": ("“Café” costs 5 €", "Café"),
            "jane@contoso.example": ("Please cancel the order instead.\n\nThanks,\nJane", "RE: Where is my parcel?"),
            "12345678@qq.com": ("好的，那请帮我退款。", "回复：订单"),
            "li@gmail.example": ("还是没有收到。", "Re: parcel"),
        }, seen
        # The whole mail stays for the agent, history included.
        original = messages["12345678@qq.com"][0]["data"]["original"]
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
            async with http.get(f"{gateway.http}/api/attachments/{original['id']}") as response:
                assert response.status == 200
                assert (await response.read()).endswith(sent["12345678@qq.com"])
    finally:
        await gateway.stop()


async def test_a_customer_whose_mailer_writes_odd_message_ids_gets_threaded_replies(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    gateway = await start(tmp_path, email_config(sqlite_url, sink.port))
    try:
        mail = Mailer(gateway, sink)
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        # RFC 5322 wants id-left "@" id-right; some mailers write neither.
        first = await mail.send("agent please", message_id="<20240301091200.4711>")
        await mail.reply()  # the handoff note
        offer = (await alice.next("offer"))["conversation"]
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Hello from Alice")
        await alice.next("ack", id="a1")
        ours = await mail.reply()
        assert body(ours).strip() == "Hello from Alice"
        assert ours["In-Reply-To"] == first
        # The customer's answer finds the conversation by our Message-ID.
        await mail.send("thanks", subject="Re: " + ours["Subject"], in_reply_to=ours["Message-ID"],
                        message_id="<no-at-sign-either>")
        message = await alice.next("message", conversation_id=offer["id"])
        assert message["text"] == "thanks"
    finally:
        await gateway.stop()


# -- the bot's interval and the loop guard -------------------------------------------------------

async def test_the_bot_mails_a_thread_once_per_interval_and_never_answers_robots_or_ourselves(
        tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    config = email_config(sqlite_url, sink.port, channel={"bot_interval": 300, "also_own": ["bounces@acme.example"]})
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
        # Two mails in one thread, quickly: the bot answers the first and hands the second to a
        # person (its handoff, its last word, is mailed), so it mails at most once per mail.
        first = await mail.send("How do I track my parcel?")
        second = await mail.send("And how long does shipping take?", in_reply_to=first)
        replies = {r["In-Reply-To"]: r for r in [await mail.reply(), await mail.reply()]}
        answer = replies[first]
        assert answer["Auto-Submitted"] == "auto-replied" and "Track page" in body(answer)
        assert replies[second]["Auto-Submitted"] == "auto-replied"
        conversations = await email_conversations(gateway)
        assert len(conversations) == 1
        events = await conversation_events(gateway, conversations[0]["id"])
        said = [(e["author"], e["data"].get("handoff")) for e in events if e["kind"] == "message"]
        assert said == [("customer", None), ("bot", None), ("customer", None), ("bot", "bot_interval")], said

        # A robot answering our answer: noted on the conversation, never answered.
        await mail.send("I am out of office.", subject="Automatic reply: " + answer["Subject"],
                        in_reply_to=answer["Message-ID"], headers={"Auto-Submitted": "auto-replied"})
        await mail.send("Away.", subject="Away", sender="robot@customer.example", headers={"X-Autoreply": "yes"})
        # Our own mail coming back, from the address or an alias of ours, in any case.
        await mail.send("How do I track my parcel?", sender="Support@ACME.example")
        await mail.send("How do I track my parcel?", sender="bounces@acme.example")

        async def noted() -> bool:
            events = await conversation_events(gateway, conversations[0]["id"])
            return any(e["kind"] == "notice" for e in events)
        await wait_until(noted)
        assert [c["id"] for c in await email_conversations(gateway)] == [conversations[0]["id"]]
        with pytest.raises(AssertionError):
            await sink.wait_for(3, timeout=1.5)

        # One mail that needs two answers (a file refused, the question answered): both go out.
        await mail.send("How do I track my parcel?", sender="ana@customer.example",
                        attachments=[("scan.tiff", b"x" * 60_000)])
        replies = [await mail.reply(), await mail.reply()]
        assert sorted('"scan.tiff"' in body(r) for r in replies) == [False, True]
        assert any("track" in body(r).lower() for r in replies)
    finally:
        await gateway.stop()


# -- attachment names ----------------------------------------------------------------------------

def attachment_part(disposition: str, data: bytes) -> str:
    return ("Content-Type: application/octet-stream\r\n" + disposition + "\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(data).decode() + "\r\n")


async def test_attachment_names_arrive_safe_to_save(tmp_path: Path, sqlite_url: str, sink: MailSink) -> None:
    gateway = await start(tmp_path, email_config(sqlite_url, sink.port))
    try:
        mail = Mailer(gateway, sink)
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        names = [
            'Content-Disposition: attachment; filename="../../../etc/passwd"',
            "Content-Disposition: attachment; filename*=utf-8''report%0D%0AX-Injected%3A%20yes.txt",
            "Content-Disposition: attachment; filename*=utf-8''%E5%8F%91%E7%A5%A8%202024.pdf",
            'Content-Disposition: attachment; filename="=?gb2312?B?' + base64.b64encode("合同.docx".encode("gb2312")).decode() + '?="',
            'Content-Disposition: attachment; filename="C:\\\\Users\\\\mei\\\\scan.png"',
            'Content-Disposition: attachment; filename=".."',
        ]
        parts = "".join(f"--b\r\n{attachment_part(name, bytes([i]) * 10)}" for i, name in enumerate(names))
        content = ("--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nagent, files attached\r\n"
                   + parts + "--b--").encode()
        await mail.raw(raw_mail(CUSTOMER, "Files", content, content_type='multipart/mixed; boundary="b"',
                                encoding="7bit"))
        offer = (await alice.next("offer"))["conversation"]
        first = next(e for e in offer["transcript"] if e["author"] == "customer")
        got = [a["name"] for a in first["attachments"]]
        assert got == ["passwd", "report X-Injected: yes.txt", "发票 2024.pdf", "合同.docx", "scan.png",
                       "attachment"], got
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.next("assigned")
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ALICE_TOKEN}"}) as http:
            for attachment in first["attachments"]:
                async with http.get(f"{gateway.http}/api/attachments/{attachment['id']}") as response:
                    assert response.status == 200
                    disposition = response.headers["Content-Disposition"]
                    assert "\r" not in disposition and "\n" not in disposition and "/" not in disposition
            # Alice's own upload named like a path: the customer's mail names the file alone.
            async with http.post(f"{gateway.http}/api/attachments",
                                 params={"conversation_id": offer["id"], "name": "..\\..\\label\r\nBcc: x@y.png"},
                                 data=b"\x89PNG", headers={"Content-Type": "image/png"}) as response:
                assert response.status == 201, await response.text()
                uploaded = await response.json()
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="label attached",
                         attachments=[uploaded["id"]])
        await alice.next("ack", id="a1")
        sent = [await mail.reply() for _ in range(2)]
        with_file = next(m for m in sent if "label attached" in body(m))
        assert "bcc" not in {k.lower() for k in with_file.keys()}
        assert [f.get_filename() for f in with_file.iter_attachments()] == ["labelBcc: x@y.png"]
    finally:
        await gateway.stop()


# -- the outbox: a relay that is down, restarts, two processes -----------------------------------

async def test_a_relay_down_from_the_start_ends_in_delivery_failed_for_the_agent(
        tmp_path: Path, sqlite_url: str) -> None:
    nowhere = free_port()   # nothing listens there
    gateway = await start(tmp_path, email_config(sqlite_url, nowhere))
    try:
        mail = Mailer(gateway, MailSink())
        alice = await Agent.connect(gateway, ALICE_TOKEN)
        await alice.next("ready")
        await mail.send("agent please")
        offer = (await alice.next("offer"))["conversation"]
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Hello?")
        ack = await alice.next("ack", id="a1")
        failed = await alice.next("delivery_failed", conversation_id=offer["id"], message_seq=ack["seq"])
        assert failed["bounce"] is False and "3 attempts" in failed["reason"], failed
        tries = [r for r in gateway.logs if r.get("msg") == "outbox: attempt failed; retrying"
                 and r.get("seq") == ack["seq"]]
        assert len(tries) == 2   # attempts: 3 in all
        # On reconnect it is replayed, like every conversation event.
        await alice.close()
        again = await Agent.connect(gateway, ALICE_TOKEN)
        replayed = await again.next("delivery_failed", conversation_id=offer["id"], message_seq=ack["seq"])
        assert replayed["seq"] == failed["seq"]
    finally:
        await gateway.stop()


class SilentRelay:
    """Takes connections and never says a word: an attempt stays under way until it times out."""

    def __init__(self) -> None:
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, port: int) -> None:
        async def greet_never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._writers.append(writer)
        self._server = await asyncio.start_server(greet_never, "127.0.0.1", port)

    async def stop(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


def outbox_rows(database: Path) -> list[tuple[str, int, str | None, str | None]]:
    """(status, attempts, claimed_until, last_error) of every outbox item, read beside the gateway."""
    with sqlite3.connect(database) as db:
        return db.execute("SELECT status, attempts, claimed_until, last_error FROM outbox ORDER BY created_at").fetchall()


def outbox_refs(database: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT status, sent_ref FROM outbox ORDER BY created_at").fetchall()


async def test_a_pending_reply_is_sent_once_after_a_restart_by_sigterm_or_sigkill(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    relay_port = free_port()
    config = email_config(f"sqlite:///{database}", relay_port,
                          channel={"retry": {"attempts": 50, "backoff": 2, "backoff_max": 2}})
    config["channels"][1]["smtp"]["timeout"] = 20
    sink = MailSink()

    # SIGTERM while an attempt is under way (the relay took the connection and says nothing).
    silent = SilentRelay()
    await silent.start(relay_port)
    gateway = await start(tmp_path, config)
    mail = Mailer(gateway, sink)
    first = await mail.send("How do I track my parcel?")
    await wait_until(lambda: _true(silent.connections >= 1))
    assert await gateway.stop(signal.SIGTERM) == 0
    await silent.stop()
    await sink.start(relay_port)
    try:
        gateway = await start(tmp_path, config)
        mail = Mailer(gateway, sink)
        answer = await mail.reply(timeout=20)
        assert answer["In-Reply-To"] == first

        # SIGKILL while the reply waits for its next try (the relay is down).
        await sink.stop()
        second = await mail.send("How long does shipping take?")
        await wait_until(lambda: _true(any(r[0] == "pending" and r[1] >= 1 and r[2] is None and r[3]
                                           for r in outbox_rows(database))))
        await gateway.stop(signal.SIGKILL)
        await sink.start(relay_port)
        gateway = await start(tmp_path, config)
        mail = Mailer(gateway, sink)
        mail.seen = 1
        answer = await mail.reply(timeout=20)
        assert answer["In-Reply-To"] == second
        with pytest.raises(AssertionError):
            await sink.wait_for(3, timeout=3)   # each sent once, no more
        sent_ids = [parse_message(raw).message_id for _, raw in sink.messages]
        assert sorted(sent_ids) == sorted(ref for status, ref in outbox_refs(database) if status == "sent")
    finally:
        await gateway.stop()
        await sink.stop()


async def _true(value: bool) -> bool:
    return value


async def test_two_processes_on_one_database_send_every_reply_exactly_once(tmp_path: Path, pg_url: str) -> None:
    relay_port = free_port()   # down at first: every item waits, and both processes try them
    config = email_config(pg_url, relay_port, channel={"retry": {"attempts": 100, "backoff": 0.2, "backoff_max": 0.3}})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    gateways = [await start(tmp_path / "a", config), await start(tmp_path / "b", config)]
    sink = MailSink()
    try:
        mailers = [Mailer(gateway, sink) for gateway in gateways]
        alice = await Agent.connect(gateways[0], ALICE_TOKEN)
        await alice.next("ready")
        asked = await asyncio.gather(*(mailers[i % 2].send("How do I track my parcel?", sender=f"c{i}@customer.example")
                                       for i in range(8)))
        await mailers[0].send("agent please", sender="mei@customer.example")
        offer = (await alice.next("offer"))["conversation"]
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="Alice here")
        await alice.next("ack", id="a1")

        def retried(gateway: GatewayProcess) -> bool:
            return any(r.get("msg") == "outbox: attempt failed; retrying" for r in gateway.logs)
        await wait_until(lambda: _true(all(retried(g) for g in gateways)))
        await sink.start(relay_port)
        expected = len(asked) + 2           # the bot's answers, the handoff note, Alice's reply
        mails = [parse_message(raw) for _, raw in await sink.wait_for(expected, timeout=30)]
        with pytest.raises(AssertionError):
            await sink.wait_for(expected + 1, timeout=2)
        assert len({m.message_id for m in mails}) == expected
        answered = sorted(m.in_reply_to[0] for m in mails if m.in_reply_to and m.sender is not None
                          and m.to[0].address.startswith("c"))
        assert answered == sorted(i.strip("<>") for i in asked)
        assert sum("Alice here" in m.text for m in mails) == 1
        # Both processes tried the items while the relay was down; together they sent each once.
        sends = [sum(r.get("msg") == "outbox: sent" for r in g.logs) for g in gateways]
        assert sum(sends) == expected, sends
    finally:
        for gateway in gateways:
            await gateway.stop()
        await sink.stop()


# -- listener AUTH -------------------------------------------------------------------------------

async def test_with_listener_auth_only_a_logged_in_mta_may_hand_over_mail(
        tmp_path: Path, sqlite_url: str, sink: MailSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTACTGATE_TEST_MTA_PASSWORD", "s3cret-pässword")
    config = email_config(sqlite_url, sink.port, channel={"listen": {
        "host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"],
        "auth": {"username": "postfix", "password": "${CONTACTGATE_TEST_MTA_PASSWORD}"}}})
    gateway = await start(tmp_path, config)
    try:
        mail = Mailer(gateway, sink)
        message = raw_mail(CUSTOMER, "Parcel", b"How do I track my parcel?")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mail.port, timeout=10) as smtp:
            await smtp.ehlo()
            assert smtp.supports_extension("auth")
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
                await smtp.sendmail(CUSTOMER, [SUPPORT], message)
            assert refused.value.code == 530
            with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
                await smtp.login("postfix", "guess")
            assert wrong.value.code == 535
        talk = await SmtpTalk.open(mail.port)
        assert (await talk.say(b"EHLO mta.example")).startswith("250")
        assert (await talk.say(b"RCPT TO:<support@acme.example>"))[0] in "45"
        assert (await talk.say(b"DATA"))[0] in "45"
        await talk.close()
        assert await email_conversations(gateway) == []
        for mechanism in ("PLAIN", "LOGIN"):
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mail.port, timeout=10) as smtp:
                await smtp.ehlo()
                if mechanism == "PLAIN":
                    await smtp.auth_plain("postfix", "s3cret-pässword")
                else:
                    await smtp.auth_login("postfix", "s3cret-pässword")
                await smtp.sendmail(CUSTOMER, [SUPPORT], raw_mail(CUSTOMER, f"Parcel {mechanism}",
                                                                  b"How do I track my parcel?"))
        assert len(await email_conversations(gateway)) == 2
        assert not any("s3cret" in line for line in gateway.log_text().splitlines())
    finally:
        await gateway.stop()


# -- a channel that cannot start --------------------------------------------------------------------

@pytest.mark.parametrize("problem", ["port taken", "certificate missing"])
async def test_a_listener_that_cannot_start_stops_the_gateway_with_one_clear_line(
        tmp_path: Path, sqlite_url: str, problem: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen: dict[str, Any] = {"host": "127.0.0.1", "port": taken.getsockname()[1]}
        if problem == "certificate missing":
            listen = {"host": "127.0.0.1", "port": 0,
                      "starttls": {"cert_file": str(tmp_path / "nope.pem"), "key_file": str(tmp_path / "nope.key")}}
        gateway = GatewayProcess.write_config(tmp_path, email_config(sqlite_url, free_port(), channel={"listen": listen}))
        result = await serve_until_exit(gateway.config_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if '"level": "error"' in line]
    assert len(errors) == 1 and '"cannot start"' in errors[0] and "email channel 'email'" in errors[0], errors
    assert ("cannot listen for SMTP" if problem == "port taken" else "nope.pem") in errors[0]
    assert "Traceback" not in result.stderr

"""The email channel's SMTP ends, against real servers and clients: our listener
(``adapters/email/smtp_in.py``) with smtplib and aiosmtplib as the sending MTA; the relay client
(``smtp_out.py``) against an aiosmtpd sink (``tests/support_mail.py``) that can refuse, hang up,
speak TLS and ask for a login; and the replies we compose (``compose.py``), parsed back."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import smtplib
import socket
import ssl
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import AsyncIterator, Callable

import aiosmtplib
import pytest
from pydantic import ValidationError

from adapters.email import classify, parse_message
from adapters.email.compose import (MAX_REFERENCES, OutgoingAttachment, compose_reply, new_message_id,
                                    text_to_html)
from adapters.email.smtp_in import Envelope, ListenerError, ListenerSettings, MailRefused, SmtpListener
from adapters.email.smtp_out import PermanentFailure, Relay, RelaySettings, TemporaryFailure
from gateway.store import StoreUnavailable

from tests.support_mail import MailSink, self_signed_cert, server_tls_context

CUSTOMER = "jane@customer.example"
SUPPORT = "support@acme.example"
WHEN = datetime(2024, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))


def mail(subject: str = "Where is my order?", body: str = "Hello, order 1042 has not arrived.",
         message_id: str = "m1@customer.example", sender: str = CUSTOMER) -> bytes:
    return (f"From: Jane <{sender}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{message_id}>\r\nDate: Fri, 01 Mar 2024 09:00:00 +0000\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


class Mailbox:
    """The ``deliver`` callback: keeps what it is given, or raises what it is told to."""

    def __init__(self) -> None:
        self.mails: list[tuple[bytes, Envelope]] = []
        self.failures: list[BaseException] = []
        self.calls = 0
        self.entered = asyncio.Event()
        self.release: asyncio.Event | None = None     # set: deliver waits for it
        self.finished = asyncio.Event()

    async def deliver(self, raw: bytes, envelope: Envelope) -> None:
        self.calls += 1
        self.entered.set()
        if self.release is not None:
            await self.release.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.mails.append((raw, envelope))
        self.finished.set()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@asynccontextmanager
async def listening(mailbox: Mailbox, **settings: object) -> AsyncIterator[SmtpListener]:
    listener = SmtpListener(ListenerSettings(port=0, hostname="mx.acme.example", **settings),
                            mailbox.deliver, name="email")
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()


@asynccontextmanager
async def sink(**options: object) -> AsyncIterator[MailSink]:
    server = MailSink(**options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def relay(port: int, **settings: object) -> Relay:
    return Relay(RelaySettings(host="127.0.0.1", port=port, **{"security": "none", **settings}))


def smtplib_send(port: int, raw: bytes, *, rcpt: tuple[str, ...] = (SUPPORT,), sender: str = CUSTOMER,
                 login: tuple[str, str] | None = None) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        if login:
            client.login(*login)
        return client.sendmail(sender, list(rcpt), raw)


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the listener: stored, then 250 -----------------------------------------------------------

async def test_smtplib_mail_is_delivered_with_its_envelope_and_a_return_path() -> None:
    mailbox = Mailbox()
    async with listening(mailbox) as listener:
        raw = mail()
        refused = await asyncio.to_thread(smtplib_send, listener.port, raw)
    assert refused == {}
    [(stored, envelope)] = mailbox.mails
    assert stored == b"Return-Path: <" + CUSTOMER.encode() + b">\r\n" + raw
    assert envelope.mail_from == CUSTOMER and envelope.rcpt_tos == (SUPPORT,)
    assert envelope.peer.startswith("127.0.0.1:")
    assert parse_message(stored).subject == "Where is my order?"


async def test_250_comes_only_after_deliver_returned() -> None:
    mailbox = Mailbox()
    mailbox.release = asyncio.Event()
    async with listening(mailbox) as listener:
        sending = asyncio.create_task(aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT],
                                                      hostname="127.0.0.1", port=listener.port))
        await asyncio.wait_for(mailbox.entered.wait(), 30)
        done, _ = await asyncio.wait({sending}, timeout=0.3)
        assert not done, "the client was answered while deliver was still storing"
        mailbox.release.set()
        _, reply = await asyncio.wait_for(sending, 30)
    assert reply == "OK: stored"
    assert len(mailbox.mails) == 1


async def test_a_bounce_with_the_null_sender_reads_as_one() -> None:
    mailbox = Mailbox()
    bounce = (b"From: Mail Delivery System <mailer@mx.customer.example>\r\nTo: support@acme.example\r\n"
              b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b1@mx.customer.example>\r\n"
              b"\r\nThis is the mail system. Your message could not be delivered.\r\n")
    async with listening(mailbox) as listener:
        await asyncio.to_thread(smtplib_send, listener.port, bounce, sender="")
    [(stored, envelope)] = mailbox.mails
    assert envelope.mail_from == ""
    assert stored.startswith(b"Return-Path: <>\r\n")
    assert classify(parse_message(stored), [SUPPORT]).kind == "bounce"


async def test_store_unavailable_answers_451_and_the_retry_is_stored() -> None:
    mailbox = Mailbox()
    mailbox.failures.append(StoreUnavailable("connection refused"))
    async with listening(mailbox) as listener:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(smtplib_send, listener.port, mail())
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.3.0")
        assert mailbox.mails == []
        await asyncio.to_thread(smtplib_send, listener.port, mail())   # the MTA's retry
    assert mailbox.calls == 2 and len(mailbox.mails) == 1


async def test_an_unexpected_error_answers_451_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    mailbox = Mailbox()
    mailbox.failures.append(RuntimeError("secret internals"))
    async with listening(mailbox) as listener:
        with caplog.at_level(logging.ERROR, logger="contactgate.email.smtp"):
            with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                await aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT],
                                      hostname="127.0.0.1", port=listener.port)
    assert refused.value.code == 451
    assert "secret internals" not in refused.value.message
    [record] = [r for r in caplog.records if r.name == "contactgate.email.smtp"]
    assert record.exc_info is not None and "secret internals" in str(record.exc_info[1])
    assert mailbox.mails == []


async def test_mail_refused_answers_its_permanent_code() -> None:
    mailbox = Mailbox()
    mailbox.failures.append(MailRefused(550, "5.7.1 we do not take mail from that sender"))
    async with listening(mailbox) as listener:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(smtplib_send, listener.port, mail())
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error == b"5.7.1 we do not take mail from that sender"


def test_mail_refused_is_permanent_only() -> None:
    with pytest.raises(ValueError):
        MailRefused(451, "try later")
    assert MailRefused(554, "5.6.0 bad\r\nmessage").reply == "554 5.6.0 bad message"


# --- the listener: limits and bad clients ----------------------------------------------------

async def test_too_much_mail_data_is_refused_with_552_and_not_delivered() -> None:
    mailbox = Mailbox()
    big = mail(body="x" * 900 + "\r\n" + ("y" * 900 + "\r\n") * 10)

    def send_without_size() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo()
            client.mail(CUSTOMER)           # no SIZE= parameter: the limit is met during DATA
            client.rcpt(SUPPORT)
            too_big = client.data(big)
            client.mail(CUSTOMER)           # the session goes on: a small mail still gets in
            client.rcpt(SUPPORT)
            return too_big, client.data(mail())

    async with listening(mailbox, max_message_bytes=4096) as listener:
        too_big, small = await asyncio.to_thread(send_without_size)
        # A client that declares the size is refused before it sends the data.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            await asyncio.to_thread(smtplib_send, listener.port, big)
    assert too_big == (552, b"Error: Too much mail data")
    assert small[0] == 250
    assert declared.value.smtp_code == 552
    assert mailbox.calls == 1 and mailbox.mails[0][0].endswith(mail())


async def test_auth_is_required_refused_and_accepted() -> None:
    mailbox = Mailbox()

    def attempts() -> dict[str, object]:
        seen: dict[str, object] = {}
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo()
            seen["mechanisms"] = client.esmtp_features.get("auth", "").strip()
            seen["mail_before_auth"] = client.mail(CUSTOMER)
            client.rset()
            try:
                client.login("mta", "wrong")
            except smtplib.SMTPAuthenticationError as exc:
                seen["wrong"] = exc.smtp_code
            client.user, client.password = "mta", "s3cret"
            seen["login"] = client.auth("LOGIN", client.auth_login)
            client.sendmail(CUSTOMER, [SUPPORT], mail())
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo()
            client.user, client.password = "mta", "s3cret"
            seen["plain"] = client.auth("PLAIN", client.auth_plain)
        return seen

    async with listening(mailbox, auth={"username": "mta", "password": "s3cret"}) as listener:
        seen = await asyncio.to_thread(attempts)
        # aiosmtplib too, the way an MTA with a login would send.
        await aiosmtplib.send(mail(message_id="m2@customer.example"), sender=CUSTOMER,
                              recipients=[SUPPORT], hostname="127.0.0.1", port=listener.port,
                              username="mta", password="s3cret", start_tls=False)
    assert seen["mechanisms"] == "LOGIN PLAIN"
    assert seen["mail_before_auth"] == (530, b"5.7.0 Authentication required")
    assert seen["wrong"] == 535
    assert seen["login"][0] == 235 and seen["plain"][0] == 235   # type: ignore[index]
    assert len(mailbox.mails) == 2


async def test_starttls_is_required_before_auth_and_mail(certs: tuple[Path, Path],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cert, key = certs
    mailbox = Mailbox()
    settings = dict(starttls={"cert_file": cert, "key_file": key}, require_starttls=True,
                    auth={"username": "mta", "password": "s3cret"})

    def before_tls() -> tuple[object, object]:
        with smtplib.SMTP("127.0.0.1", listener.port, timeout=30) as client:
            client.ehlo()
            return sorted(client.esmtp_features), client.mail(CUSTOMER)

    caplog.set_level(logging.INFO)
    async with listening(mailbox, **settings) as listener:
        features, refused = await asyncio.to_thread(before_tls)
        with pytest.raises(ssl.SSLError, match="(?i)certificate"):   # the client does not trust it
            await aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT], hostname="localhost",
                                  port=listener.port, start_tls=True)
        await aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT], hostname="localhost",
                              port=listener.port, start_tls=True, cert_bundle=str(cert),
                              username="mta", password="s3cret")
    assert "starttls" in features and "auth" not in features   # no AUTH offered in clear
    assert refused == (530, b"Must issue a STARTTLS command first")
    [(stored, _)] = mailbox.mails
    assert stored.endswith(mail())
    ours = [r for r in caplog.records if r.name == "contactgate.email.smtp" and r.levelno >= logging.INFO]
    failed = [r for r in ours if r.getMessage() == "STARTTLS handshake failed"]
    assert len(failed) == 1 and failed[0].exc_info is None      # a client's problem: one line
    assert not [r for r in caplog.records if "login_data is deprecated" in r.getMessage()]


async def test_a_bad_certificate_stops_start_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    listener = SmtpListener(ListenerSettings(port=0, starttls={"cert_file": tmp_path / "cert.pem",
                                                               "key_file": tmp_path / "key.pem"}),
                            Mailbox().deliver, name="support")
    with pytest.raises(ListenerError, match="'support'.*certificate"):
        await listener.start()


async def test_recipients_outside_accept_recipients_get_550() -> None:
    mailbox = Mailbox()
    accept = ["Support@Acme.example", "@help.acme.example"]
    async with listening(mailbox, accept_recipients=accept) as listener:
        refused = await asyncio.to_thread(
            smtplib_send, listener.port, mail(),
            rcpt=("someone@elsewhere.example", "SUPPORT@acme.example", "desk@help.acme.example"))
        with pytest.raises(smtplib.SMTPRecipientsRefused) as none_taken:
            await asyncio.to_thread(smtplib_send, listener.port, mail(), rcpt=("x@acme.example.evil",))
    assert refused == {"someone@elsewhere.example":
                       (550, b"5.7.1 <someone@elsewhere.example>: recipient not accepted here")}
    [(_, envelope)] = mailbox.mails
    assert envelope.rcpt_tos == ("SUPPORT@acme.example", "desk@help.acme.example")
    assert none_taken.value.recipients["x@acme.example.evil"][0] == 550


async def test_recipients_beyond_max_recipients_get_452() -> None:
    mailbox = Mailbox()
    async with listening(mailbox, max_recipients=2) as listener:
        refused = await asyncio.to_thread(smtplib_send, listener.port, mail(),
                                          rcpt=("a@acme.example", "b@acme.example", "c@acme.example"))
    assert refused == {"c@acme.example": (452, b"4.5.3 Too many recipients")}
    assert mailbox.mails[0][1].rcpt_tos == ("a@acme.example", "b@acme.example")


async def converse(port: int, lines: list[bytes]) -> list[bytes]:
    """Send raw lines, one reply read after each (a multi-line reply whole)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await asyncio.wait_for(reader.readline(), 30)]
    try:
        for line in lines:
            writer.write(line + b"\r\n")
            reply = b""
            while True:
                part = await asyncio.wait_for(reader.readline(), 30)
                reply += part
                if not part or part[3:4] != b"-":
                    break
            replies.append(reply)
    finally:
        writer.close()
    return replies


async def test_garbage_and_overlong_lines_are_answered_and_deliver_nothing() -> None:
    mailbox = Mailbox()
    async with listening(mailbox) as listener:
        replies = await converse(listener.port, [
            b"\xff\xfe\x00garbage", b"HELO", b"EHLO " + b"x" * 2000, b"MAIL FROM:<jane@customer.example>",
            b"EHLO client.example", b"MAIL FROM:<not an address", b"RCPT TO:<support@acme.example>",
            b"MAIL FROM:<jane@customer.example>", b"RCPT TO:<support@acme.example>", b"DATA",
            b"Subject: long line\r\n\r\n" + b"z" * 5000 + b"\r\n.",
            b"BOGUS1", b"BOGUS2", b"BOGUS3", b"BOGUS4", b"BOGUS5"])
        codes = [reply[:3] for reply in replies]
        # Still serving: a proper mail after all that gets in.
        await asyncio.to_thread(smtplib_send, listener.port, mail())
    assert codes == [b"220", b"500", b"501", b"500", b"503", b"250", b"553", b"503", b"250", b"250",
                     b"354", b"500", b"500", b"500", b"500", b"500", b"502"]
    assert b"Line too long" in replies[11]
    assert mailbox.calls == 1 and mailbox.mails[0][0].endswith(mail())


async def test_a_client_that_hangs_up_mid_data_delivers_nothing() -> None:
    mailbox = Mailbox()
    async with listening(mailbox) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for line in (b"EHLO client.example", b"MAIL FROM:<jane@customer.example>",
                     b"RCPT TO:<support@acme.example>", b"DATA", mail()[:60]):
            writer.write(line + b"\r\n")
        while not (await asyncio.wait_for(reader.readline(), 30)).startswith(b"354"):
            pass
        writer.transport.abort()
        await asyncio.to_thread(smtplib_send, listener.port, mail(message_id="m2@customer.example"))
    assert mailbox.calls == 1
    assert parse_message(mailbox.mails[0][0]).message_id == "m2@customer.example"


async def test_a_delivery_under_way_finishes_when_the_client_hangs_up() -> None:
    mailbox = Mailbox()
    mailbox.release = asyncio.Event()
    async with listening(mailbox) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        for line in (b"EHLO client.example", b"MAIL FROM:<jane@customer.example>",
                     b"RCPT TO:<support@acme.example>", b"DATA", mail() + b".",):
            writer.write(line + b"\r\n")
        await asyncio.wait_for(mailbox.entered.wait(), 30)
        writer.transport.abort()
        await eventually(lambda: listener.open_sessions == 0)     # the listener saw the hang-up
        mailbox.release.set()
        await asyncio.wait_for(mailbox.finished.wait(), 30)
    assert len(mailbox.mails) == 1


async def test_smtputf8_mail_arrives_byte_for_byte() -> None:
    mailbox = Mailbox()
    raw = ("From: 王喆 <王喆@例子.中国>\r\nTo: support@acme.example\r\nSubject: 订单还没有收到\r\n"
           "Message-ID: <u1@例子.中国>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "您好，订单 1042 还没有收到。\r\n").encode("utf-8")
    async with listening(mailbox) as listener:
        await aiosmtplib.send(raw, sender="王喆@例子.中国", recipients=[SUPPORT], hostname="127.0.0.1",
                              port=listener.port, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    [(stored, envelope)] = mailbox.mails
    assert envelope.mail_from == "王喆@例子.中国"
    assert stored == "Return-Path: <王喆@例子.中国>\r\n".encode() + raw
    parsed = parse_message(stored)
    assert parsed.subject == "订单还没有收到" and parsed.text == "您好，订单 1042 还没有收到。"


# --- the listener: lifecycle and settings -----------------------------------------------------

async def test_stop_lets_a_delivery_finish_then_hangs_up_idle_clients() -> None:
    mailbox = Mailbox()
    mailbox.release = asyncio.Event()
    listener = SmtpListener(ListenerSettings(port=0), mailbox.deliver, name="email")
    await listener.start()
    await listener.start()                                   # idempotent
    port = listener.port
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await asyncio.wait_for(idle_reader.readline(), 30)).startswith(b"220")
    sending = asyncio.create_task(aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT],
                                                  hostname="127.0.0.1", port=port))
    await asyncio.wait_for(mailbox.entered.wait(), 30)
    stopping = asyncio.create_task(listener.stop(timeout=30))
    mailbox.release.set()
    _, reply = await asyncio.wait_for(sending, 30)
    await asyncio.wait_for(stopping, 30)
    assert reply == "OK: stored"
    assert (await asyncio.wait_for(idle_reader.readline(), 30)).startswith(b"421")
    idle_writer.close()
    await listener.stop()                                    # idempotent
    with pytest.raises(RuntimeError):
        listener.port
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_delivery_past_the_stop_timeout_is_cancelled_and_not_acknowledged() -> None:
    mailbox = Mailbox()
    mailbox.release = asyncio.Event()                        # never set: the store hangs
    listener = SmtpListener(ListenerSettings(port=0), mailbox.deliver, name="email")
    await listener.start()
    sending = asyncio.create_task(aiosmtplib.send(mail(), sender=CUSTOMER, recipients=[SUPPORT],
                                                  hostname="127.0.0.1", port=listener.port))
    await asyncio.wait_for(mailbox.entered.wait(), 30)
    await listener.stop(timeout=0.1)
    with pytest.raises(aiosmtplib.SMTPException):            # no 250: the MTA will retry
        await asyncio.wait_for(sending, 30)
    assert mailbox.mails == []


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listener = SmtpListener(ListenerSettings(port=taken.getsockname()[1]), Mailbox().deliver,
                                name="support")
        with pytest.raises(ListenerError, match="'support'.*cannot listen"):
            await listener.start()


@pytest.mark.parametrize("settings, problem", [
    ({"prot": 25}, "prot"),
    ({"require_starttls": True}, "require_starttls needs"),
    ({"accept_recipients": ["not an address"]}, "neither an address"),
    ({"accept_recipients": ["a@b@acme.example"]}, "neither an address"),
    ({"auth": {"username": "mta"}}, "password"),
    ({"max_message_bytes": 10}, "max_message_bytes"),
])
def test_listener_settings_are_checked(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ListenerSettings(**settings)


def test_listener_secrets_stay_out_of_reprs() -> None:
    settings = ListenerSettings(auth={"username": "mta", "password": "s3cret"})
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


# --- the relay ---------------------------------------------------------------------------------

def reply_mail(**overrides: object) -> EmailMessage:
    arguments: dict[str, object] = dict(
        from_name="Acme Support", from_address=SUPPORT, to_name="Jane Doe", to_address=CUSTOMER,
        original_subject="Where is my order?", token="K7M3QX",
        message_id="cg.1@acme.example", date=WHEN, text="Hello Jane,\n\nIt ships today.",
        in_reply_to="m1@customer.example", references=["m1@customer.example"])
    arguments.update(overrides)
    return compose_reply(**arguments)  # type: ignore[arg-type]


async def test_the_relay_delivers_exactly_the_bytes() -> None:
    message = reply_mail(automatic=True)
    async with sink() as server:
        sent = await relay(server.port).send(message, sender=SUPPORT, recipients=[CUSTOMER])
        [(envelope, raw)] = await server.wait_for(1)
    assert sent.reply == "OK: queued as sink-1" and sent.refused == {}
    assert raw == message.as_bytes()
    assert envelope.mail_from == SUPPORT and envelope.rcpt_tos == (CUSTOMER,)
    parsed = parse_message(raw)
    assert parsed.message_id == "cg.1@acme.example"
    assert parsed.in_reply_to == ("m1@customer.example",)
    assert parsed.header("auto-submitted") == "auto-replied"


async def test_451_twice_is_temporary_and_the_third_try_sends_once() -> None:
    message = reply_mail()
    async with sink() as server:
        server.refuse_next(2, "451 4.3.0 try again later")
        for _ in range(2):
            with pytest.raises(TemporaryFailure, match="451 4.3.0 try again later") as failure:
                await relay(server.port).send(message, sender=SUPPORT, recipients=[CUSTOMER])
            assert failure.value.code == 451
        await relay(server.port).send(message.as_bytes(), sender=SUPPORT, recipients=[CUSTOMER])
        await server.wait_for(1)
    assert server.attempts == 3 and len(server.messages) == 1


@pytest.mark.parametrize("step, reply, words", [
    ("rcpt", "550 5.1.1 mailbox unavailable", f"{CUSTOMER}: 550 5.1.1 mailbox unavailable"),
    ("data", "552 5.3.4 message too big", "refused the message: 552 5.3.4 message too big"),
    ("mail", "553 5.7.1 sender not allowed", "refused the sender"),
    ("data", "554 5.7.0 spam", "554 5.7.0 spam"),
])
async def test_5xx_is_permanent_and_names_the_reply(step: str, reply: str, words: str) -> None:
    async with sink() as server:
        server.refuse_next(1, reply, at=step)  # type: ignore[arg-type]
        with pytest.raises(PermanentFailure) as failure:
            await relay(server.port).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
    assert words in str(failure.value)
    assert failure.value.code == int(reply[:3])
    assert server.messages == []


async def test_a_4xx_recipient_refusal_is_temporary() -> None:
    async with sink() as server:
        server.refuse_next(1, "450 4.2.1 mailbox busy", at="rcpt")
        with pytest.raises(TemporaryFailure, match="450 4.2.1 mailbox busy"):
            await relay(server.port).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])


async def test_one_refused_recipient_of_two_is_reported_not_raised() -> None:
    async with sink() as server:
        server.refuse_next(1, "550 5.1.1 no such user", at="rcpt")
        sent = await relay(server.port).send(reply_mail(), sender=SUPPORT,
                                             recipients=["gone@customer.example", CUSTOMER])
        [(envelope, _)] = await server.wait_for(1)
    assert sent.refused == {"gone@customer.example": "550 5.1.1 no such user"}
    assert envelope.rcpt_tos == (CUSTOMER,)


async def test_connection_refused_and_hang_ups_are_temporary() -> None:
    with pytest.raises(TemporaryFailure, match="127.0.0.1"):
        await relay(free_port()).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
    async with sink() as server:
        server.hang_up_next(1, at="data")
        with pytest.raises(TemporaryFailure):
            await relay(server.port).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
    assert server.messages == []


async def test_a_relay_that_never_greets_times_out_as_temporary() -> None:
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(lambda reader, writer: accepted.append(writer), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        with pytest.raises(TemporaryFailure, match="(?i)timed out|timeout"):
            await relay(port, timeout=0.5).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
    finally:
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()


async def test_starttls_and_login(certs: tuple[Path, Path]) -> None:
    cert, key = certs
    async with sink(tls_context=server_tls_context(cert, key), login=("acme", "pw")) as server:
        secure = dict(host="localhost", port=server.port, security="starttls", ca_file=cert,
                      username="acme", password="pw")
        await Relay(RelaySettings(**secure)).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
        await server.wait_for(1)
        with pytest.raises(PermanentFailure, match="refused our login: 535"):
            await Relay(RelaySettings(**{**secure, "password": "wrong"})).send(
                reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
        # Our self-signed certificate is no CA the system knows: a TLS problem, tried again later.
        with pytest.raises(TemporaryFailure, match="(?i)certificate"):
            await Relay(RelaySettings(**{**secure, "ca_file": None})).send(
                reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
        await Relay(RelaySettings(**{**secure, "ca_file": None, "validate_certs": False})).send(
            reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
        await server.wait_for(2)


async def test_implicit_tls(certs: tuple[Path, Path]) -> None:
    cert, key = certs
    async with sink(tls_context=server_tls_context(cert, key), implicit_tls=True) as server:
        await Relay(RelaySettings(host="localhost", port=server.port, security="tls", ca_file=cert)
                    ).send(reply_mail(), sender=SUPPORT, recipients=[CUSTOMER])
        await server.wait_for(1)


async def test_starttls_the_relay_does_not_offer_is_temporary() -> None:
    async with sink() as server:
        with pytest.raises(TemporaryFailure, match="(?i)starttls"):
            await relay(server.port, security="starttls").send(reply_mail(), sender=SUPPORT,
                                                               recipients=[CUSTOMER])
    assert server.messages == []


async def test_the_null_sender_for_mail_no_bounce_should_answer() -> None:
    async with sink() as server:
        await relay(server.port).send(reply_mail(automatic=True), sender="", recipients=[CUSTOMER])
        [(envelope, _)] = await server.wait_for(1)
    assert envelope.mail_from == "<>"


async def test_an_address_that_cannot_go_on_the_wire_is_permanent() -> None:
    async with sink() as server:
        with pytest.raises(PermanentFailure):
            await relay(server.port).send(reply_mail(), sender=SUPPORT,
                                          recipients=["jane@customer.example\r\nRCPT TO:<x@evil.example>"])
    assert server.messages == []


def test_relay_settings() -> None:
    assert RelaySettings(host="smtp.acme.example").effective_port == 587
    assert RelaySettings(host="smtp.acme.example", security="tls").effective_port == 465
    assert RelaySettings(host="localhost", security="none").effective_port == 25
    with pytest.raises(ValidationError, match="username and password go together"):
        RelaySettings(host="smtp.acme.example", username="acme")
    with pytest.raises(ValidationError):
        RelaySettings(host="smtp.acme.example", security="ssl")
    assert "pw" not in repr(RelaySettings(host="h", username="u", password="pw"))


async def test_a_relayed_reply_through_our_own_listener_parses_back() -> None:
    """Both ends of ours: what the relay client sends, the listener stores unchanged."""
    mailbox = Mailbox()
    message = reply_mail(attachments=[OutgoingAttachment("invoice.pdf", "application/pdf", b"%PDF-1.4")])
    async with listening(mailbox) as listener:
        await relay(listener.port).send(message, sender=SUPPORT, recipients=[CUSTOMER])
    [(stored, envelope)] = mailbox.mails
    assert stored == f"Return-Path: <{SUPPORT}>\r\n".encode() + message.as_bytes()
    assert parse_message(stored).attachments[0].data == b"%PDF-1.4"


# --- composing replies -------------------------------------------------------------------------

def test_a_composed_reply_parses_back() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 40
    message = reply_mail(text="Hello Jane,\n\nIt ships today.\nTracking: ZX123",
                         references=["root@customer.example", "cg.0@acme.example", "m1@customer.example"],
                         attachments=[OutgoingAttachment("invoice 1042.pdf", "application/pdf", pdf),
                                      OutgoingAttachment("notes.txt", "text/plain", "第一行\n".encode())])
    raw = message.as_bytes()
    parsed = parse_message(raw)
    assert parsed.subject == "Re: Where is my order? [#K7M3QX]"
    assert parsed.message_id == "cg.1@acme.example"
    assert parsed.in_reply_to == ("m1@customer.example",)
    assert parsed.references == ("root@customer.example", "cg.0@acme.example", "m1@customer.example")
    assert parsed.sender is not None and (parsed.sender.name, parsed.sender.address) == ("Acme Support", SUPPORT)
    assert [(a.name, a.address) for a in parsed.to] == [("Jane Doe", CUSTOMER)]
    assert parsed.date == WHEN
    assert parsed.body_type == "text/plain"
    assert parsed.text == "Hello Jane,\n\nIt ships today.\nTracking: ZX123"
    assert [(a.filename, a.content_type, a.data, a.sha256) for a in parsed.attachments] == [
        ("invoice 1042.pdf", "application/pdf", pdf, hashlib.sha256(pdf).hexdigest()),
        ("notes.txt", "text/plain", "第一行\n".encode(), hashlib.sha256("第一行\n".encode()).hexdigest())]
    assert message.get_content_type() == "multipart/mixed"
    assert message.get_body(("html",)) is not None
    assert max(raw) < 128, "the mail must be 7-bit clean"
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_without_attachments_it_is_multipart_alternative() -> None:
    message = reply_mail()
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_the_html_part_escapes_and_keeps_paragraphs_without_making_links() -> None:
    page = text_to_html("Hi <Jane> & co,\n\nsee https://acme.example/track?a=1&b=2\nthanks\n\n\n")
    assert "<p>Hi &lt;Jane&gt; &amp; co,</p>" in page
    assert "<p>see https://acme.example/track?a=1&amp;b=2<br>\nthanks</p>" in page
    assert "<a " not in page and page.count("<p>") == 2


def test_chinese_names_and_subjects_are_encoded_and_decode_back() -> None:
    message = reply_mail(from_name="艾克美客服", to_name='王喆 "Wang", Jr.', to_address="wz@例子.中国",
                         original_subject="回复: 订单 1042 还没有收到 [#K7M3QX]")
    raw = message.as_bytes()
    assert max(raw) < 128
    parsed = parse_message(raw)
    assert parsed.subject == "Re: 订单 1042 还没有收到 [#K7M3QX]"
    assert parsed.sender is not None and parsed.sender.name == "艾克美客服"
    assert [(a.name, a.address) for a in parsed.to] == [('王喆 "Wang", Jr.', "wz@xn--fsqu00a.xn--fiqs8s")]


def test_cr_and_lf_in_names_and_subjects_cannot_add_headers() -> None:
    message = reply_mail(original_subject="Order\r\nBcc: thief@evil.example\r\n\r\nbody",
                         to_name="Jane\r\nBcc: thief@evil.example", from_name="Acme\nX-Injected: yes",
                         attachments=[OutgoingAttachment("a.txt\r\nX-Injected: yes", "text/plain\r\nX: y", b"x")])
    parsed = parse_message(message.as_bytes())
    names = {name for name, _ in parsed.headers}
    assert "bcc" not in names and "x-injected" not in names
    assert parsed.subject == "Re: Order Bcc: thief@evil.example body [#K7M3QX]"
    assert [a.address for a in parsed.to] == [CUSTOMER]
    assert parsed.attachments[0].filename == "a.txt X-Injected: yes"
    assert parsed.attachments[0].content_type == "application/octet-stream"
    assert "\n" not in parsed.subject


@pytest.mark.parametrize("field, value", [
    ("to_address", "jane@customer.example\r\nBcc: thief@evil.example"),
    ("to_address", "jane@customer.example, thief@evil.example"),
    ("to_address", "no-at-sign"),
    ("to_address", "王喆@例子.中国"),
    ("from_address", "support@"),
    ("message_id", "not an id"),
    ("in_reply_to", "<a@b>\r\nBcc: x@y"),
])
def test_values_that_cannot_be_sent_are_refused_by_name(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        reply_mail(**{field: value})


def test_a_naive_date_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        reply_mail(date=datetime(2024, 3, 1, 9, 30))


def test_automatic_replies_say_so_and_the_guard_agrees() -> None:
    automatic = parse_message(reply_mail(automatic=True).as_bytes())
    assert automatic.header("auto-submitted") == "auto-replied"
    assert automatic.header("x-auto-response-suppress") == "All"
    assert classify(automatic).kind == "auto_reply"
    assert classify(automatic, [SUPPORT]).kind == "own"
    by_agent = parse_message(reply_mail().as_bytes())
    assert by_agent.header("auto-submitted") is None
    assert classify(by_agent).kind == "person"


def test_long_threads_keep_the_root_and_the_newest_references() -> None:
    thread = [f"t{i}@customer.example" for i in range(30)]
    parsed = parse_message(reply_mail(references=thread, in_reply_to="t29@customer.example").as_bytes())
    assert len(parsed.references) == MAX_REFERENCES
    assert parsed.references[0] == "t0@customer.example"
    assert parsed.references[1:] == tuple(thread[-(MAX_REFERENCES - 1):])


def test_references_end_with_the_mail_answered_and_never_name_ours() -> None:
    parsed = parse_message(reply_mail(references=["<a@x>", "cg.1@acme.example", "a@x"],
                                      in_reply_to="<b@x>").as_bytes())
    assert parsed.references == ("a@x", "b@x")
    assert parsed.in_reply_to == ("b@x",)
    first = parse_message(reply_mail(references=[], in_reply_to=None).as_bytes())
    assert first.in_reply_to == () and first.references == ()


def test_new_message_ids_are_unique_and_in_our_domain() -> None:
    ids = {new_message_id("Acme.example") for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("cg.") and i.endswith("@acme.example") and "<" not in i for i in ids)
    assert new_message_id("例子.中国").endswith("@xn--fsqu00a.xn--fiqs8s")
    for bad in ("", "acme example", "acme.example>", "a@b"):
        with pytest.raises(ValueError):
            new_message_id(bad)
    own = new_message_id("acme.example")
    assert parse_message(reply_mail(message_id=own).as_bytes()).message_id == own
    assert parse_message(reply_mail(message_id=f"<{own}>").as_bytes()).message_id == own


def test_attachment_names_lose_their_directories() -> None:
    message = reply_mail(attachments=[OutgoingAttachment("../../etc/passwd", "text/plain", b"x"),
                                      OutgoingAttachment("C:\\Users\\jane\\发票.pdf", "application/pdf", b"y"),
                                      OutgoingAttachment("..", "application/pdf", b"z")])
    names = [a.filename for a in parse_message(message.as_bytes()).attachments]
    assert names == ["passwd", "发票.pdf", "attachment"]



async def test_envelope_addresses_that_would_break_the_return_path_are_refused() -> None:
    mailbox = Mailbox()
    async with listening(mailbox) as listener:
        replies = await converse(listener.port, [
            b"EHLO client.example", b"MAIL FROM:<jane\r@customer.example>",
            b"MAIL FROM:<jane@customer.example>", b"RCPT TO:<support\x00@acme.example>",
            b"AUTH PLAIN AG10YQBzM2NyZXQ="])
    assert b"AUTH" not in replies[1]           # no login configured: none offered
    assert [r[:3] for r in replies[2:]] == [b"553", b"250", b"553", b"535"]
    assert mailbox.calls == 0


def test_the_customers_ids_are_echoed_as_written_even_without_an_at_sign() -> None:
    reply = reply_mail(in_reply_to="<20240301091200.4711>", references=["<root@x.example>", "odd-id"])
    assert reply["In-Reply-To"] == "<20240301091200.4711>"
    assert reply["References"] == "<root@x.example> <odd-id> <20240301091200.4711>"
    with pytest.raises(ValueError, match="message_id"):
        reply_mail(message_id="<no-at-sign>")   # ours always has one

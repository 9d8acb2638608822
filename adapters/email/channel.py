"""The email channel: mail in by our SMTP listener and/or IMAP mailboxes, replies out through
the core's durable outbox and an SMTP relay.

Mail in (``arrived``): parsed (``parse``), sorted (``guard``): a person's mail becomes an
``Inbound`` that continues its thread (In-Reply-To/References against every Message-ID we sent
or received, then the subject's ``[#TOKEN]`` for the same sender) or opens a new conversation;
a bounce of our reply is a ``delivery_failed`` on its conversation; an auto-reply or list mail
is only noted on the conversation it refers to; our own mail is dropped. It returns only once
what must be stored is stored, so the listener says 250 (or 451) and IMAP sets \\Seen only then.

Mail out (``deliver``, called by the outbox for the agent's and the bot's messages): "Re:
<subject> [#TOKEN]", In-Reply-To the customer's last mail, References the thread, a Message-ID
derived from the outbox item (the same on every retry), attachments; the bot's mail is marked
``Auto-Submitted: auto-replied`` and answers at most one of the thread's mails per
``bot_interval`` (but for its replies to the customer's answers to its questions): the bot hands
another mail inside it to a person (``Inbound.bot_interval``), and other automatic mail inside it
is skipped.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import datetime, timezone
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adapters.base import (REPLYING, GatewayPort, IncomingFile, Inbound, PermanentFailure, RetrySettings, Sent, Skipped,
                           TemporaryFailure, Thread)
from gateway.logs import about
from gateway.model import Author, Conversation, Event, EventKind, OutboxItem

from .compose import OutgoingAttachment, compose_reply, numbered_choices
from .guard import classify
from .imap import ImapMailbox, ImapSettings
from .parse import MailRejected, ParsedMail, parse_message
from .smtp_in import Envelope, ListenerSettings, MailRefused, SmtpListener
from .smtp_out import PermanentFailure as RelayRefused, Relay, RelaySettings, TemporaryFailure as RelayLater
from .threading import chain, find_token, lookup_ids, new_token

log = logging.getLogger("contactgate.email")

_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
TOKEN_PREFIX = "#"      # a ref "#K7M3QX" is a conversation's subject token
DIGEST_PREFIX = "sha256:"  # a ref naming a mail without Message-ID by its bytes (not a header value)
TOKEN_TRIES = 8


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The channel's address: From of our replies; mail from it (or from also_own) is ignored.
    address: str
    display_name: str | None = Field(default="Customer Service", max_length=200)
    also_own: list[str] = []
    # Where mail comes in: our own SMTP listener, an IMAP mailbox, or both.
    listen: ListenerSettings | None = None
    imap: ImapSettings | None = None
    # Where replies go out.
    smtp: RelaySettings
    retry: RetrySettings = RetrySettings()
    # Seconds: the bot answers at most one of a conversation's mails by mail in this time.
    bot_interval: float = Field(default=300.0, ge=0)
    # Mail with List-Id / List-Unsubscribe: "ignore" (recorded at most) or "accept" as a person's.
    lists: Literal["ignore", "accept"] = "ignore"

    @field_validator("address")
    @classmethod
    def _one_address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError(f"{value!r} is not a mail address (like support@acme.example)")
        return value

    @field_validator("also_own")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _ADDRESS.match(entry):
                raise ValueError(f"{entry!r} is not a mail address (like bounces@acme.example)")
        return value

    @model_validator(mode="after")
    def _some_way_in(self) -> "Settings":
        if self.listen is None and self.imap is None:
            raise ValueError("give listen (our SMTP listener), imap (a mailbox to read), or both")
        return self

    @property
    def own_addresses(self) -> set[str]:
        return {self.address.lower(), *(a.lower() for a in self.also_own)}

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1].lower()


def create(name: str, settings: Settings, gateway: GatewayPort) -> "EmailChannel":
    return EmailChannel(name, settings, gateway)


class EmailChannel:
    def __init__(self, name: str, settings: Settings, gateway: GatewayPort) -> None:
        self.name = name
        self.settings = settings
        self.gateway = gateway
        self.relay = Relay(settings.smtp)
        self.listener = SmtpListener(settings.listen, self._from_listener, name=name) if settings.listen else None
        self.mailbox = ImapMailbox(settings.imap, self.arrived, name=name) if settings.imap else None
        self._last_automatic: dict[str, Event] = {}  # per conversation: the customer mail the bot last answered

    def routes(self) -> list[web.RouteDef]:
        return []

    async def start(self) -> None:
        policy = self.settings.retry.policy(lease=max(300.0, self.settings.smtp.timeout * 4))
        await self.gateway.use_outbox(self.name, self.deliver, policy)
        if self.listener is not None:
            await self.listener.start()
            log.info("email: SMTP listener up", extra={"channel": self.name, "host": self.settings.listen.host,
                                                       "port": self.listener.port})
        if self.mailbox is not None:
            await self.mailbox.start()

    async def stop(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self.mailbox is not None:
            await self.mailbox.stop()
        await self.gateway.stop_outbox(self.name)

    async def send(self, conversation: Conversation, event: Event) -> None:
        """Nothing to do live: the outbox delivers what the customer must get."""

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        """Positions and typing are for live sessions; mail has none."""

    # mail in --------------------------------------------------------------------------------------
    async def _from_listener(self, raw: bytes, envelope: Envelope) -> None:
        try:
            await self.arrived(raw)
        except MailRejected as exc:
            raise MailRefused(550, f"5.6.0 not a mail message: {exc}") from None

    async def arrived(self, raw: bytes) -> None:
        """One raw message, from the listener or a mailbox. Returns once it is stored (or
        deliberately dropped); raises StoreUnavailable when it could not be (try again)."""
        mail = parse_message(raw)
        verdict = classify(mail, self.settings.own_addresses, lists_are_noise=self.settings.lists == "ignore")
        sender = mail.sender.address if mail.sender else None
        if verdict.kind == "own":
            log.info("email: our own mail came back; ignored", extra={"channel": self.name, "message_id": mail.message_id})
            return
        if verdict.kind == "bounce":
            event = (await self.gateway.delivery_failed(self.name, verdict.refers_to, _bounce_reason(mail))
                     if verdict.refers_to else None)
            log.info("email: bounce", extra={"channel": self.name, "refers_to": verdict.refers_to,
                                             "recorded": event is not None, "reason": verdict.reason})
            return
        if verdict.kind != "person":
            refs = [r for r in (verdict.refers_to, *lookup_ids(mail)) if r]
            event = await self.gateway.record_notice(
                self.name, refs, verdict.kind, text=mail.subject or None,
                data={"from": sender, "subject": mail.subject, "why": verdict.reason})
            log.info("email: not a person's mail; no answer", extra={
                "channel": self.name, "kind": verdict.kind, "reason": verdict.reason, "recorded": event is not None})
            return
        if sender is None:
            raise MailRejected("the message has no sender address")
        receipt = await self.gateway.receive(self._inbound(mail, raw, sender))
        with about(receipt.event.conversation_id):
            log.info("email: stored" if receipt.created else "email: delivered again; stored once", extra={
                "channel": self.name, "message_id": mail.message_id, "seq": receipt.event.seq})

    def _inbound(self, mail: ParsedMail, raw: bytes, sender: str) -> Inbound:
        text = mail.text.strip() or mail.full_text.strip() or mail.subject.strip() or "(no text)"
        token = find_token(mail.subject)
        # Without a Message-ID the bytes name the message: an MTA's retry or an IMAP re-fetch
        # hands over the same ones.
        client_id = mail.message_id or DIGEST_PREFIX + hashlib.sha256(raw).hexdigest()
        return Inbound(
            channel=self.name, address=sender, text=text, client_id=client_id,
            name=mail.sender.name if mail.sender else None, profile={"email": sender},
            files=tuple(IncomingFile(a.filename or "attachment", a.content_type, a.data) for a in mail.attachments),
            original=IncomingFile("message.eml", "message/rfc822", raw),
            thread=Thread(refs=lookup_ids(mail), token=TOKEN_PREFIX + token if token else None),
            details={"subject": mail.subject, "from": sender, "references": chain(mail)},
            bot_interval=self.settings.bot_interval)

    # mail out (the outbox calls this) ----------------------------------------------------------------
    async def deliver(self, conversation: Conversation, event: Event, item: OutboxItem) -> Sent | Skipped:
        automatic = event.author is Author.BOT
        subject, answered, mail, wrote_from = await self._answering(conversation.id, event.seq)
        # Inside the interval too: the bot's reply to a customer who answered its question (a
        # pick, "did this help?"), not an autoresponder's round; and its handoff, after which it
        # says nothing more (so neither can loop). The bot itself hands off a mail it may not
        # answer (Inbound.bot_interval), by the same clock: this skips only other automatic mail.
        exempt = event.data.get(REPLYING) or event.data.get("handoff")
        if automatic and not exempt and self._too_soon(conversation.id, mail):
            return Skipped("bot_interval")
        customer = await self.gateway.get_customer(conversation.customer_id)
        # The address the customer wrote from; else (a conversation the gateway started, such as
        # a verification code) the profile's. Not the profile's first: after a merge it may be
        # another address of the same person (docs/customers.md).
        to_address = wrote_from or customer.attributes.get("email")
        if not isinstance(to_address, str) or "@" not in to_address:
            raise PermanentFailure("the customer has no email address")
        refs = await self.gateway.conversation_refs(conversation.id, self.name)
        token = next((r.ref[1:] for r in refs if r.ref.startswith(TOKEN_PREFIX)), None) or \
            await self._new_token(conversation.id)
        # The customer's chain first (a follow-up of a closed conversation continues the old
        # thread), then every Message-ID of this conversation; compose_reply trims it.
        thread = [*(mail.data.get("references") or [] if mail else []),
                  *(r.ref for r in refs if not r.ref.startswith((TOKEN_PREFIX, DIGEST_PREFIX)))]
        message_id = f"cg.{item.id}@{self.settings.domain}"
        files = []
        for summary in event.data.get("attachments", []):
            attachment, data = await self.gateway.get_attachment(summary["id"])
            files.append(OutgoingAttachment(attachment.name, attachment.content_type, data))
        try:
            message = compose_reply(
                from_name=self.settings.display_name, from_address=self.settings.address,
                to_name=customer.name, to_address=to_address, original_subject=subject, token=token,
                message_id=message_id, date=datetime.now(timezone.utc),
                text=numbered_choices(event.text or "", event.data.get("choices") or (), event.data.get("numbered_hint")),
                in_reply_to=answered, references=thread, attachments=files, automatic=automatic)
        except ValueError as exc:   # a value that cannot go into a mail: no retry will change it
            raise PermanentFailure(f"cannot write this mail: {exc}") from exc
        try:
            await self.relay.send(message, sender=self.settings.address, recipients=[to_address])
        except RelayLater as exc:
            raise TemporaryFailure(str(exc)) from exc
        except RelayRefused as exc:
            raise PermanentFailure(str(exc)) from exc
        if automatic and mail is not None:
            self._last_automatic[conversation.id] = mail
        return Sent(ref=message_id)

    def _too_soon(self, conversation_id: str, mail: Event | None) -> bool:
        """The bot mailed this conversation in answer to another mail of the customer's that
        came less than the interval before ``mail``. Its messages answering one mail (a note about
        a refused file and the answer) all go out: a loop needs a new mail each round, and that is
        what the interval counts. The times are the mails' as stored, which the bot's own check
        (``take_turn``) reads too, so an answer it gave is never skipped here."""
        last = self._last_automatic.get(conversation_id)
        return (mail is not None and last is not None and last.seq != mail.seq
                and (mail.at - last.at).total_seconds() < self.settings.bot_interval)

    async def _new_token(self, conversation_id: str) -> str:
        for _ in range(TOKEN_TRIES):
            token = new_token()
            if await self.gateway.add_ref(self.name, TOKEN_PREFIX + token, conversation_id):
                return token
        raise TemporaryFailure("no free conversation token; try again")

    async def _answering(self, conversation_id: str, before: int) -> tuple[str, str | None, Event | None, str | None]:
        """(subject, Message-ID, the event, From address) of the customer's last mail before event ``before``."""
        subject, answered, mail, sender = "", None, None, None
        for event in await self.gateway.events_after(conversation_id, 0, before):
            if event.author is Author.CUSTOMER and event.kind is EventKind.MESSAGE:
                subject, mail = event.data.get("subject") or subject, event
                sender = event.data.get("from") or sender
                if event.client_id and not event.client_id.startswith(DIGEST_PREFIX):
                    answered = event.client_id
        return subject, answered, mail, sender


def _bounce_reason(mail: ParsedMail) -> str:
    report = mail.report
    if report is not None and (report.status or report.recipient):
        return " ".join(p for p in ("bounced:", report.status, report.recipient) if p)
    return "bounced: " + (mail.subject or "delivery failure")

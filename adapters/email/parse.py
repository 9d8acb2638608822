"""One raw message (RFC 5322 bytes, as an SMTP DATA or an IMAP FETCH hands it over) becomes one
:class:`ParsedMail`: ids, addresses, subject and date decoded; the body as text with quoted
history and signature split off; every attachment and inline image with its size and hash; and
what a delivery report says about the message it bounces.

The promise: pure (no sockets, store or clock) and total. Whatever bytes arrive, the result is a
``ParsedMail`` — broken MIME, wrong charset labels and bad bytes give text with U+FFFD and a note
in ``defects`` — or, for input that is not mail at all, :class:`MailRejected`. Nothing else is
ever raised.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Iterator

from adapters.base import Inbound

from .decode import decode_bytes, decode_header, html_to_text, tidy
from .quotes import split_reply

__all__ = ["Address", "Attachment", "DeliveryReport", "MailRejected", "ParsedMail", "parse_message"]


class MailRejected(ValueError):
    """The bytes are not a mail message at all (no header a message has). Malformed mail is not
    rejected: it parses, with what could be read."""


@dataclass(frozen=True, slots=True)
class Address:
    address: str            # lower-cased: the customer's identity on the email channel
    name: str | None        # the display name, decoded


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None    # decoded (RFC 2231 and RFC 2047); None when the sender gave none
    content_type: str       # e.g. "image/png", lower case
    size: int               # bytes after the transfer encoding is undone
    sha256: str             # hex
    data: bytes
    inline: bool            # shown in the body (Content-Disposition: inline, or a cid: image)
    content_id: str | None  # without angle brackets, for cid: references in the HTML


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What a ``multipart/report`` (RFC 3464 delivery status, RFC 3798 receipts) says."""

    report_type: str                 # "delivery-status", "disposition-notification", ...
    original_message_id: str | None  # the id of the message it reports on
    action: str | None               # "failed", "delayed", "delivered", ... (first recipient)
    status: str | None               # "5.1.1"
    recipient: str | None            # the final recipient, without "rfc822;"


@dataclass(frozen=True, slots=True)
class ParsedMail:
    message_id: str | None             # without angle brackets; None when absent or unusable
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]        # oldest first, as written
    sender: Address | None             # From (the first address when there are several)
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    subject: str
    date: datetime | None              # aware; UTC when the header said -0000 or nothing
    text: str                          # what is new in this message: quotes and signature cut
    full_text: str                     # the whole body as text
    body_type: str                     # "text/plain", "text/html" or "" (no body)
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]  # every top-level header, names lower case, decoded
    report: DeliveryReport | None
    defects: tuple[str, ...]           # what was wrong with the message, for the log

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), decoded, or None."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def oversized(self, limit: int) -> tuple[Attachment, ...]:
        """The attachments larger than ``limit`` bytes (refusing them is the adapter's call)."""
        return tuple(a for a in self.attachments if a.size > limit)

    def inbound(self, channel: str) -> Inbound:
        """The gateway's ``Inbound`` for this mail: the sender's address identifies the customer,
        the new text is the message, the Message-ID makes a redelivery a no-op."""
        if self.sender is None:
            raise MailRejected("the message has no sender address")
        return Inbound(channel=channel, address=self.sender.address, text=self.text,
                       client_id=self.message_id, name=self.sender.name,
                       profile={"email": self.sender.address})


# Headers that every message, even a minimal one, carries at least one of. Not the trace
# headers (Return-Path, Received, Delivered-To): servers add them in transit, our listener puts
# Return-Path on top of whatever it got, so they say nothing about the bytes being a message.
_MAIL_HEADERS = frozenset({"from", "sender", "message-id", "date", "subject", "to",
                           "mime-version", "content-type", "reply-to"})
_HEADER_NAME = re.compile(r"[!-9;-~]+")      # RFC 5322 ftext: printable ASCII but ':'
_MAX_ID = 998                               # RFC 5322's line limit bounds a sensible id


def parse_message(raw: bytes) -> ParsedMail:
    """Parse one raw message. Raises :class:`MailRejected` only for input that is not mail."""
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MailRejected(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw.strip():
        raise MailRejected("empty message")
    message = BytesParser(policy=policy.default).parsebytes(raw)
    headers = tuple((name.lower(), decode_header(value)) for name, value in message.raw_items()
                    if _HEADER_NAME.fullmatch(name))
    if not any(name in _MAIL_HEADERS for name, _ in headers):
        raise MailRejected("no mail headers (From, Date, Message-ID, ...) before the body")
    defects = [type(d).__name__ for d in message.defects]

    def first(name: str) -> str | None:
        return next((value for key, value in message.raw_items() if key.lower() == name), None)

    body, body_type, attachments, report = _walk(message, defects)
    full_text = tidy(body)
    senders = _addresses(first("from"))
    return ParsedMail(
        message_id=next(iter(_ids(first("message-id"))), None),
        in_reply_to=_ids(first("in-reply-to")),
        references=_ids(first("references")),
        sender=senders[0] if senders else None,
        to=_addresses(first("to")), cc=_addresses(first("cc")),
        reply_to=_addresses(first("reply-to")),
        subject=decode_header(first("subject")),
        date=_date(first("date")),
        text=split_reply(full_text),
        full_text=full_text,
        body_type=body_type,
        attachments=tuple(attachments),
        headers=headers,
        report=report,
        defects=tuple(dict.fromkeys(defects)),
    )


_ID = re.compile(r"<([^<>\s]+)>")


def _ids(raw: str | None) -> tuple[str, ...]:
    """Message ids in a Message-ID, In-Reply-To or References header, brackets stripped. Ids
    without brackets (some mailers) are taken word by word; comments and junk are ignored."""
    if not raw:
        return ()
    text = decode_header(raw)
    found = _ID.findall(text) or [w.strip(",;") for w in text.split() if "@" in w]
    ids = (i for i in found if 0 < len(i) <= _MAX_ID and i.isprintable() and i.isascii())
    return tuple(dict.fromkeys(ids))


def _addresses(raw: str | None) -> tuple[Address, ...]:
    """Split on the raw value, where encoded words hide any comma a display name holds, then
    decode each name."""
    if not raw:
        return ()
    unfolded = re.sub(r"\r?\n[ \t]*", " ", raw)
    result = []
    for name, address in getaddresses([unfolded]):
        address = decode_header(address).strip("<> ").lower()
        if "@" not in address and address not in ("mailer-daemon", "postmaster"):
            continue
        result.append(Address(address=address, name=decode_header(name).strip("\"' ") or None))
    return tuple(result)


def _date(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        when = parsedate_to_datetime(decode_header(raw))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# --- the MIME tree -----------------------------------------------------------------------------

_REPORT_PARTS = frozenset({"message/delivery-status", "message/global-delivery-status",
                           "text/rfc822-headers", "message/rfc822", "message/global",
                           "message/disposition-notification"})


def _leaves(part: Message, in_report: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every leaf part in order, with whether it sits in a multipart/report. Unlike
    ``Message.walk`` it does not descend into attached messages: a forwarded mail's body is an
    attachment of this one, not its body."""
    if part.get_content_maintype() == "multipart" and isinstance(part.get_payload(), list):
        report = in_report or part.get_content_subtype() == "report"
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _leaves(child, report)
    else:
        yield part, in_report


def _walk(message: EmailMessage, defects: list[str]
          ) -> tuple[str, str, list[Attachment], DeliveryReport | None]:
    body_part = _body_part(message, defects)
    attachments: list[Attachment] = []
    report_parts: list[Message] = []
    for part, in_report in _leaves(message):
        if part is body_part:
            continue
        try:
            content_type = part.get_content_type()
            if in_report and content_type in _REPORT_PARTS:
                report_parts.append(part)
            elif part.is_attachment() or part.get_content_maintype() not in ("text", "multipart"):
                attachments.append(_attachment(part, content_type))
            # else: the other side of a multipart/alternative, or inline text beside the body
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            defects.append(f"part skipped: {type(exc).__name__}")
    body, body_type = "", ""
    if body_part is not None:
        body_type = body_part.get_content_type()
        text = decode_bytes(_payload(body_part), body_part.get_param("charset"))
        body = html_to_text(text) if body_type == "text/html" else text
    report = _report(message, report_parts) if message.get_content_type() == "multipart/report" else None
    return body, body_type, attachments, report


def _body_part(message: EmailMessage, defects: list[str]) -> Message | None:
    """text/plain before text/html in an alternative; never a part sent as an attachment."""
    try:
        part = message.get_body(preferencelist=("plain", "html"))
    except Exception as exc:  # noqa: BLE001 - a broken tree still has attachments to list
        defects.append(f"no body: {type(exc).__name__}")
        return None
    if part is None or part.get_content_type() not in ("text/plain", "text/html"):
        return None
    return part


def _payload(part: Message) -> bytes:
    """The part's bytes with the transfer encoding undone; broken base64 gives what it can."""
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    if isinstance(payload, list):           # an attached message: its bytes as sent
        return b"".join(p.as_bytes() for p in payload if isinstance(p, Message))
    return str(payload or "").encode("utf-8", errors="surrogateescape")


def _attachment(part: Message, content_type: str) -> Attachment:
    data = _payload(part)
    filename = None
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001 - an unreadable parameter is a missing name, not a lost file
        pass
    if filename is not None:
        # policy.default decodes RFC 2231 and encoded words, but with the label's strict codec:
        # surrogates or words left over mean it could not; decode those our way.
        filename = decode_header(filename) or None
    content_id = next(iter(_ids(part.get("Content-ID", ""))), None) if part.get("Content-ID") else None
    disposition = (part.get_content_disposition() or "").lower()
    return Attachment(filename=filename, content_type=content_type, size=len(data),
                      sha256=hashlib.sha256(data).hexdigest(), data=data,
                      inline=disposition == "inline" or (disposition == "" and content_id is not None),
                      content_id=content_id)


def _report(message: Message, parts: list[Message]) -> DeliveryReport:
    report_type = str(message.get_param("report-type") or "").lower()
    action = status = recipient = original = None
    for part in parts:
        kind = part.get_content_type()
        if kind in ("message/delivery-status", "message/global-delivery-status",
                    "message/disposition-notification"):
            fields = _status_fields(part)
            action = action or fields.get("action")
            status = status or fields.get("status")
            recipient = recipient or fields.get("final-recipient", "").split(";")[-1].strip() or None
            # Some MTAs (Exchange, Postfix with milters) name the original id in the status itself.
            original = original or next(iter(_ids(fields.get("original-message-id")
                                                  or fields.get("x-original-message-id"))), None)
        elif kind in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original = original or next(iter(_ids(inner[0].get("Message-ID", ""))), None)
        elif kind == "text/rfc822-headers":
            headers = BytesParser(policy=policy.default).parsebytes(_payload(part), headersonly=True)
            original = original or next(iter(_ids(headers.get("Message-ID", ""))), None)
    return DeliveryReport(report_type=report_type, original_message_id=original,
                          action=action.lower() if action else None, status=status,
                          recipient=recipient.lower() if recipient else None)


def _status_fields(part: Message) -> dict[str, str]:
    """The fields of a delivery-status part: the per-message block, then the first recipient's.
    The stdlib parses it into header blocks; a mislabelled one arrives as text."""
    fields: dict[str, str] = {}
    payload = part.get_payload()
    blocks = payload if isinstance(payload, list) else []
    if not blocks:
        text = decode_bytes(_payload(part), None)
        blocks = [BytesParser(policy=policy.default).parsebytes(chunk.encode("utf-8"), headersonly=True)
                  for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n"))]
    for block in blocks:
        if isinstance(block, Message):
            for name, value in block.raw_items():
                fields.setdefault(name.lower(), decode_header(value))
    return fields

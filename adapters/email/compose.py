"""The mail we send: one agent's (or the bot's) reply in a conversation, as an
:class:`~email.message.EmailMessage` ready for the relay.

The promise: pure (no sockets, store or clock; the date and the Message-ID are passed in) and
safe. The reply threads in the customer's mail client (In-Reply-To, References, the
"Re: … [#TOKEN]" subject); it is 7-bit clean (headers in RFC 2047 encoded words, bodies in
quoted-printable or base64 as the standard library picks), so any relay carries it; and no text
a customer or an agent wrote can add a header: CR, LF and other control characters in a name or
subject become spaces. A value that cannot be sent as asked (an address that is not one
address) raises ``ValueError`` naming it, before anything is built.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Sequence

from .threading import MAX_REFERENCES, reply_subject, trim_references

__all__ = ["MAX_REFERENCES", "OutgoingAttachment", "compose_reply", "new_message_id", "numbered_choices"]

# 7-bit: the library then encodes every non-ASCII body in quoted-printable or base64, so the
# mail needs no 8BITMIME from the relay; CRLF line ends as SMTP sends them.
POLICY = policy.SMTP.clone(cte_type="7bit")

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_MSGID = re.compile(r"<?([^<>\s@]+@[^<>\s@]+)>?")
# An id of the customer's we echo in In-Reply-To and References: what their mailer wrote, as
# ``parse`` keeps it (printable ASCII, no space or brackets), "@" or not: some mailers write
# "<20240301091200.4711>", and their client threads our reply only if we name it as written.
_THEIR_ID = re.compile(r"<?([!-;=?-~]+)>?")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
_CONTENT_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


@dataclass(frozen=True, slots=True)
class OutgoingAttachment:
    filename: str
    content_type: str       # "image/png"; anything that is not type/subtype is sent as octets
    data: bytes


def numbered_choices(text: str, choices: Sequence[object], hint: str | None) -> str:
    """A bot message's ``choices`` (self-service's "did you mean", "did this help?") numbered
    under its text, for a mail client that has no buttons: the customer replies "2"."""
    labels = [str(c.get("text") if isinstance(c, dict) else c) for c in choices]
    labels = [label for label in labels if label.strip()]
    if not labels:
        return text
    lines = [f"{n}. {label}" for n, label in enumerate(labels, 1)]
    return "\n".join([text, "", *lines, *(["", hint] if hint else [])])


def new_message_id(domain: str) -> str:
    """A fresh Message-ID for a mail we send from ``domain``, without angle brackets (the form
    ``ParsedMail`` keeps ids in, so a reply's In-Reply-To matches what we stored)."""
    return f"cg.{secrets.token_hex(16)}@{_ascii_domain(domain)}"


def compose_reply(*, from_name: str | None, from_address: str, to_name: str | None, to_address: str,
                  original_subject: str, token: str, message_id: str, date: datetime,
                  text: str, in_reply_to: str | None = None, references: Sequence[str] = (),
                  attachments: Sequence[OutgoingAttachment] = (), automatic: bool = False
                  ) -> EmailMessage:
    """One reply in a conversation.

    ``from_name``/``from_address`` are the channel's ("Acme Support <support@acme.example>");
    ``to_*`` the customer's. ``message_id`` comes from :func:`new_message_id` and is kept by the
    caller for threading (with or without angle brackets). ``in_reply_to`` is the id of the
    mail answered; ``references`` the thread's ids, oldest first (``in_reply_to`` is added last
    when missing). ``date`` must be aware. ``automatic`` marks a mail no person wrote (bot
    answers, receipts): ``Auto-Submitted: auto-replied`` (RFC 3834) and Outlook's
    ``X-Auto-Response-Suppress: All``, so other robots do not answer it.
    """
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    sender = _address(from_name, from_address, "from_address")
    recipient = _address(to_name, to_address, "to_address")
    own_id = _message_id(message_id, "message_id")
    answered = _message_id(in_reply_to, "in_reply_to", _THEIR_ID) if in_reply_to else None
    thread = _references([_message_id(i, "references", _THEIR_ID) for i in references], answered, own_id)

    message = EmailMessage(policy=POLICY)
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = _one_line(reply_subject(_one_line(original_subject), token))
    message["Date"] = format_datetime(date)
    message["Message-ID"] = f"<{own_id}>"
    if answered:
        message["In-Reply-To"] = f"<{answered}>"
    if thread:
        message["References"] = " ".join(f"<{i}>" for i in thread)
    if automatic:
        message["Auto-Submitted"] = "auto-replied"
        message["X-Auto-Response-Suppress"] = "All"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(text_to_html(text), subtype="html", charset="utf-8")
    for attachment in attachments:
        maintype, subtype = _content_type(attachment.content_type).split("/", 1)
        message.add_attachment(attachment.data, maintype=maintype, subtype=subtype,
                               filename=_filename(attachment.filename))
    return message


def text_to_html(text: str) -> str:
    """The plain text as a simple HTML page: escaped, blank lines as paragraphs, line breaks
    kept. No links are made: a URL the customer sees is exactly the text the agent wrote."""
    paragraphs = [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip("\n")) if p.strip()]
    body = "\n".join("<p>" + html.escape(p).replace("\n", "<br>\n") + "</p>" for p in paragraphs)
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>'
            f'<body dir="auto">\n{body}\n</body></html>\n')


def _one_line(value: str) -> str:
    """A header value without the characters that would end the header (or hide text)."""
    return " ".join(_CONTROL.sub(" ", value or "").split())


def _address(name: str | None, address: str, what: str) -> Address:
    address = (address or "").strip()
    if _CONTROL.search(address) or address.count("@") != 1:
        raise ValueError(f"{what}: {address!r} is not one mail address")
    local, domain = address.rsplit("@", 1)
    try:
        local.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"{what}: {address!r} has a non-ASCII local part (needs SMTPUTF8)") from None
    try:
        parsed = Address(display_name=_one_line(name or ""), addr_spec=f"{local}@{_ascii_domain(domain)}")
    except Exception as exc:  # the stdlib raises ValueError or a HeaderDefect for a bad addr-spec
        raise ValueError(f"{what}: {address!r} is not a valid mail address ({exc})") from None
    return parsed


def _ascii_domain(domain: str) -> str:
    """The domain as it goes on the wire: internationalised names in IDNA (xn--)."""
    domain = (domain or "").strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{domain!r} is not a domain name") from None
    if not _DOMAIN.fullmatch(ascii_domain):
        raise ValueError(f"{domain!r} is not a domain name")
    return ascii_domain.lower()


def _message_id(value: str, what: str, form: re.Pattern[str] = _MSGID) -> str:
    match = form.fullmatch((value or "").strip())
    if match is None or _CONTROL.search(value):
        raise ValueError(f"{what}: {value!r} is not a Message-ID")
    return match.group(1)


def _references(ids: list[str], answered: str | None, own: str) -> list[str]:
    return trim_references([i for i in [*ids, *([answered] if answered else [])] if i != own])


def _content_type(value: str) -> str:
    value = (value or "").split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE.fullmatch(value) else "application/octet-stream"


def _filename(value: str) -> str:
    """The name alone: no directories (a client may save it as named) and no control characters."""
    name = _one_line(value).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "attachment"

"""Which mail a person wrote, and which a machine did: auto-replies, bounces, list mail and our
own messages coming back must never open a conversation or be answered, or two robots answer
each other forever (RFC 3834).

The promise: :func:`classify` is pure and total — a :class:`~adapters.email.parse.ParsedMail` in,
a :class:`Verdict` out — and errs towards "not a person" only on a signal a mailer sets on
purpose; an ordinary customer's mail is a ``person``. Bounces and auto-replies name the message
of ours they answer (``refers_to``) so the adapter can mark that delivery failed or note the
absence on the right conversation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Literal

from .parse import ParsedMail

__all__ = ["Kind", "Verdict", "classify"]

Kind = Literal["person", "auto_reply", "bounce", "list", "own"]


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: Kind
    refers_to: str | None   # the Message-ID of ours a bounce or auto-reply is about
    reason: str             # which signal decided, for the log

    @property
    def is_person(self) -> bool:
        return self.kind == "person"


# Local parts that only machines send from (RFC 5321 postmaster, sendmail's MAILER-DAEMON).
_DAEMONS = frozenset({"mailer-daemon", "postmaster", "mail-daemon", "mailerdaemon"})
_BOUNCE_SUBJECT = re.compile(
    r"^(?:undeliverable|undelivered mail|delivery status notification|mail delivery failed|"
    r"returned mail|failure notice|delivery failure|退信|系统退信|未能送达)", re.IGNORECASE)
_ORIGINAL_ID = re.compile(r"^\s*Message-ID:\s*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)


def classify(mail: ParsedMail, own_addresses: Collection[str] = (), *,
             lists_are_noise: bool = True) -> Verdict:
    """The kind of ``mail``. ``own_addresses`` are the channel's own addresses (any case): mail
    from them is our own coming back. ``lists_are_noise=False`` lets mail with ``List-Id`` or
    ``List-Unsubscribe`` through as a person's (a customer writing from a list is rare, a
    newsletter landing in the support queue is not; the channel decides)."""
    own = {address.lower() for address in own_addresses}
    sender = mail.sender.address if mail.sender else ""
    local = sender.split("@", 1)[0]
    return_path = mail.header("return-path")

    if sender and sender in own:
        return Verdict("own", None, f"sent from our own address {sender}")
    report = mail.report
    if report is not None and report.report_type in ("delivery-status", "global-delivery-status"):
        return Verdict("bounce", report.original_message_id or _quoted_id(mail),
                       f"delivery status report ({report.action or 'no action'} {report.status or ''})".rstrip())
    if local in _DAEMONS:
        return Verdict("bounce", _quoted_id(mail), f"sent by {sender}")
    if return_path is not None and return_path.strip() in ("<>", ""):
        # The null return path: a bounce, or an auto-reply that must not be bounced (RFC 3834).
        if _auto_submitted(mail) or mail.header("x-autoreply") or mail.header("x-autorespond"):
            return Verdict("auto_reply", _answered(mail), "auto-reply with the null return path")
        if _BOUNCE_SUBJECT.match(mail.subject):
            return Verdict("bounce", _quoted_id(mail), "null return path and a bounce subject")
        return Verdict("auto_reply", _answered(mail), "null return path (Return-Path: <>)")
    if (value := _auto_submitted(mail)) is not None:
        return Verdict("auto_reply", _answered(mail), f"Auto-Submitted: {value}")
    for name in ("x-autoreply", "x-autorespond", "x-autoresponse"):
        if mail.header(name):
            return Verdict("auto_reply", _answered(mail), f"{name} header")
    if (mail.header("x-auto-response-suppress") or "").lower() in ("all", "oof") and \
            mail.subject.lower().startswith(("automatic reply", "out of office", "自动回复")):
        return Verdict("auto_reply", _answered(mail), "Outlook automatic reply")
    # List headers first: a newsletter says "Precedence: bulk" too, and "list" is what it is.
    if lists_are_noise and (mail.header("list-id") or mail.header("list-unsubscribe")):
        return Verdict("list", None, "List-Id or List-Unsubscribe header")
    precedence = (mail.header("precedence") or "").strip().lower()
    if precedence == "list" and lists_are_noise:
        return Verdict("list", None, "Precedence: list")
    if precedence in ("bulk", "junk"):
        # RFC 3834 2: never answer these, whether a list lets its mail through or not.
        return Verdict("auto_reply", _answered(mail), f"Precedence: {precedence}")
    return Verdict("person", None, "no machine signal")


def _auto_submitted(mail: ParsedMail) -> str | None:
    """The Auto-Submitted value when it is anything but "no" (RFC 3834 5.1)."""
    value = mail.header("auto-submitted")
    if value is None:
        return None
    keyword = value.split(";", 1)[0].strip().lower()
    return None if keyword in ("no", "") else keyword


def _answered(mail: ParsedMail) -> str | None:
    """An auto-reply answers the message in its In-Reply-To (or the newest reference)."""
    if mail.in_reply_to:
        return mail.in_reply_to[0]
    return mail.references[-1] if mail.references else None


def _quoted_id(mail: ParsedMail) -> str | None:
    """A bounce without a report part (qmail, some hosted mailers) quotes the original's headers
    in its text; the Message-ID line there names it."""
    match = _ORIGINAL_ID.search(mail.full_text)
    if match is not None and match.group(1) != mail.message_id:
        return match.group(1)
    return _answered(mail)

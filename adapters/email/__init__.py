"""The email channel (issue #9), growing in increments. This one is its pure core: parsing a raw
message (``parse``), cutting quoted history (``quotes``), telling people from machines
(``guard``) and the conversation token in subjects (``threading``). No sockets, no store, no
clock: the SMTP listener, IMAP poller and outbox that use them come next, so this package is not
yet a channel type in ``adapters/registry.py``."""

from .guard import Verdict, classify
from .parse import Address, Attachment, DeliveryReport, MailRejected, ParsedMail, parse_message
from .quotes import split_reply
from .threading import base_subject, find_token, lookup_ids, new_token, reply_subject

__all__ = ["Address", "Attachment", "DeliveryReport", "MailRejected", "ParsedMail", "Verdict",
           "base_subject", "classify", "find_token", "lookup_ids", "new_token", "parse_message",
           "reply_subject", "split_reply"]

"""Which conversation a mail belongs to, the pure part: the conversation token we put in the
subject of every mail we send (``[#K7M3QX]``), the Message-IDs to look up in the order that
finds the right conversation first, and the subject of our replies.

Tokens survive what mail clients do to subjects: reply and forward prefixes in many languages
stacked in front ("Re: AW: 回复: …"), case changes and extra spaces. They are only a hint: the
adapter trusts a token together with the sender's address, never alone.
"""

from __future__ import annotations

import re
import secrets
from typing import Callable, Sequence

from .parse import ParsedMail

__all__ = ["ALPHABET", "MAX_REFERENCES", "TOKEN_LENGTH", "base_subject", "chain", "find_token", "lookup_ids", "new_token", "trim_references",
           "reply_subject"]

# Upper-case letters and digits without the pairs a customer reading a token aloud, or an OCR'd
# printout, confuses: 0/O, 1/I/L, 2/Z, 5/S, 8/B. 25 ** 6 is about 244 million tokens.
ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
TOKEN_LENGTH = 6

_TOKEN = re.compile(r"\[\s*#\s*([" + ALPHABET + ALPHABET.lower() + r"]{6})\s*\]")
# Reply and forward prefixes: English, German (AW, WG), Nordic (SV, VS), Dutch (Antw), French
# (TR), Spanish (RV), Chinese (回复, 答复, 转发, 回覆, 轉寄), with ASCII or full-width colons and
# Outlook's counters ("Re[2]:", "RE (2):").
_PREFIX = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|sv|vs|antw|tr|rv|回复|答复|转发|回覆|轉寄|轉發)\s*(?:\[\d+\]|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE)


def new_token(choice: Callable[[str], str] = secrets.choice) -> str:
    """A fresh conversation token. ``choice`` draws one character; tests pass a seeded one."""
    return "".join(choice(ALPHABET) for _ in range(TOKEN_LENGTH))


def find_token(subject: str) -> str | None:
    """The conversation token in ``subject`` (the last one, upper case), or None."""
    found = _TOKEN.findall(subject or "")
    return found[-1].upper() if found else None


def base_subject(subject: str) -> str:
    """``subject`` without its stacked reply and forward prefixes and without tokens."""
    text = _TOKEN.sub(" ", subject or "")
    while True:
        stripped = _PREFIX.sub("", text, count=1)
        if stripped == text:
            break
        text = stripped
    return " ".join(text.split())


def reply_subject(original: str, token: str) -> str:
    """The subject of our reply: "Re: <original without stacked prefixes> [#token]"."""
    base = base_subject(original)
    return f"Re: {base} [#{token}]" if base else f"Re: [#{token}]"


def lookup_ids(mail: ParsedMail) -> tuple[str, ...]:
    """The Message-IDs to look a conversation up by, best first: In-Reply-To (the message
    answered), then References newest first. The mail's own id is left out."""
    return _ordered([*mail.in_reply_to, *reversed(mail.references)], mail.message_id)


# RFC 5322 3.6.4 lets References grow with the thread; long threads are trimmed the way RFC 5537
# 3.4.4 describes for netnews: keep the first id (the thread's root) and the newest ones.
MAX_REFERENCES = 10


def trim_references(ids: Sequence[str]) -> list[str]:
    """``ids`` (oldest first) without repeats, at most MAX_REFERENCES: the root and the newest."""
    thread = list(dict.fromkeys(ids))
    return [thread[0], *thread[-(MAX_REFERENCES - 1):]] if len(thread) > MAX_REFERENCES else thread


def chain(mail: ParsedMail) -> list[str]:
    """The thread a mail continues, oldest first, trimmed: its References, else its In-Reply-To
    (RFC 5322 3.6.4: a reply's References are the parent's References and the parent's id)."""
    return trim_references([i for i in (mail.references or mail.in_reply_to) if i != mail.message_id])


def _ordered(ids: Sequence[str], own: str | None) -> tuple[str, ...]:
    return tuple(i for i in dict.fromkeys(ids) if i != own)

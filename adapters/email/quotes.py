"""What is new in a reply: the text above the quoted history and the signature, so an agent reads
the customer's words, not the whole thread again.

Where a reply's history starts is found two ways, and the earliest wins:

- ``mail-parser-reply``'s header patterns ("On … wrote:", "From: … Sent: …" blocks and their
  German, French, Spanish, Japanese, … forms), maintained upstream for many languages;
- our rules for the clients our customers use, which it misses: QQ Mail and Foxmail
  (``------------------ 原始邮件 ------------------``, ``发件人：`` blocks with full-width colons),
  NetEase 163/126 and Apple Mail in Chinese (``在 … 写道：``), Gmail in Chinese (``… 于 … 写道：``),
  Android and Huawei (``-------- 原始邮件 --------``), Outlook's underscore rule, the ``-- ``
  signature separator and "Sent from my iPhone" / "发自我的iPhone" lines.

Lines quoted with ``>`` are dropped wherever they are (an answer written between quoted lines
stays). The library's own signature rule is not used: it treats any line that starts with
"Thanks," or "Best," as a signature and drops everything after it, including the customer's
words.

Pure: text in, text out; nothing here raises.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailMessage
from mailparser_reply.constants import MAIL_LANGUAGES

__all__ = ["split_reply"]

# Every language the library knows ("david" is a test fixture of the library, not a language).
_LANGUAGES = [language for language in MAIL_LANGUAGES if len(language) == 2]
_LIBRARY_HEADER = EmailMessage(text="", languages=list(_LANGUAGES)).HEADER_REGEX
# The library's combined pattern costs microseconds per character (a 400 kB body: ~2 s), ours
# are line rules. New text sits at the top of a reply, so the library reads only the start; our
# rules still read the whole body.
_LIBRARY_SCAN = 20_000

_COLON = r"\s*[:：]"
# A separator line that starts the history by itself.
_SEPARATOR = re.compile(
    r"^[-—_=\s]{2,}\s*(?:原始邮件|原邮件|回复的原邮件|转发邮件|原始郵件|Original Message|Original|"
    r"Forwarded message|Ursprüngliche Nachricht|Message d'origine|Mensaje original)\s*[-—_=\s]{2,}$",
    re.IGNORECASE)
# The first line of a From/Sent/To/Subject block, and the lines that may follow it.
_FROM_LINE = re.compile(r"^\**\s*(?:From|发件人|寄件者|寄件人|Von|De|Da)\s*\**" + _COLON, re.IGNORECASE)
_BLOCK_LINE = re.compile(
    r"^\**\s*(?:Sent|Date|To|Cc|Subject|发送时间|发件时间|时间|日期|收件人|抄送|主题|主旨|傳送時間|"
    r"Gesendet|An|Betreff|Envoyé|Objet|Enviado|Asunto)\s*\**" + _COLON, re.IGNORECASE)
# An attribution ending in "wrote:" (it may be wrapped over up to three lines).
_WROTE_END = re.compile(r"(?:wrote|写道|寫道|a écrit|schrieb|escribió|ha scritto|schreef)" + _COLON + r"\s*$",
                        re.IGNORECASE)
_WROTE_START = re.compile(r"^(?:On|在|Le|Am|El|Il|Op)\s", re.IGNORECASE)
_RULE = re.compile(r"^[_\-—=]{8,}$")
_SIGNATURE = re.compile(r"^--\s?$")
_SENT_FROM = re.compile(
    r"^(?:Sent from my\b.*|Sent from (?:Mail|Outlook|Yahoo Mail)\b.*|Get Outlook for\b.*|"
    r"发自我的\s*\S.*|从我的\s*\S.*发送|发自\s*(?:网易|QQ|139)\S*邮箱.*|获取\s*Outlook\s*for\b.*|"
    r"寄自我的\s*\S.*)$", re.IGNORECASE)


def split_reply(text: str) -> str:
    """The new text of a reply whose whole body is ``text`` (already tidied: ``\\n`` line ends).
    Leading and trailing blank lines are dropped; an empty result means nothing new."""
    lines = text.split("\n")
    cut = min(_library_cut(lines), _our_cut(lines))
    kept = [line for line in lines[:cut] if not line.lstrip().startswith(">")]
    while kept and (not kept[-1].strip() or _RULE.match(kept[-1].strip())):
        kept.pop()
    while kept and not kept[0].strip():
        kept.pop(0)
    return "\n".join(kept)


def _library_cut(lines: list[str]) -> int:
    """The line where the library sees the first reply header. It matches on stripped lines
    (as it would after its own normalising), so the offsets map back line for line."""
    stripped = "\n".join(line.strip() for line in lines)[:_LIBRARY_SCAN]
    match = _LIBRARY_HEADER.search(stripped)
    if match is None:
        return len(lines)
    start = match.start()
    while start < len(stripped) and stripped[start] == "\n":
        start += 1
    return stripped.count("\n", 0, start)


def _our_cut(lines: list[str]) -> int:
    stripped = [line.strip() for line in lines]
    for index, line in enumerate(stripped):
        if not line:
            continue
        if _SEPARATOR.match(line) or _SIGNATURE.match(lines[index]) or _SENT_FROM.match(line):
            return index
        if _FROM_LINE.match(line) and _block_follows(stripped, index):
            return index
        if _RULE.match(line) and any(_FROM_LINE.match(s) for s in _next_lines(stripped, index, 2)):
            return index
        if _WROTE_END.search(line):
            # Wrapped attributions: "On Fri, … Support <" / "support@example.com> wrote:".
            for back in (2, 1):
                if index - back >= 0 and _WROTE_START.match(stripped[index - back]):
                    return index - back
            return index
    return len(lines)


def _next_lines(stripped: list[str], index: int, count: int) -> list[str]:
    return [s for s in stripped[index + 1:index + 1 + count * 2] if s][:count]


def _block_follows(stripped: list[str], index: int) -> bool:
    """A From line starts quoted history only with another header line right under it: a
    customer who writes "From: my phone" has not quoted anything."""
    return any(_BLOCK_LINE.match(s) for s in _next_lines(stripped, index, 2))

"""Bytes and markup from mail turned into text, always: every charset label a mailer writes,
encoded words (RFC 2047) in headers, and HTML bodies made readable.

The promise: nothing here raises on what a mailer sent. An unknown or wrong charset label, bad
bytes or broken markup give text with U+FFFD where bytes could not be read, never an exception and
never a lone surrogate (the store's text rule would have to replace it anyway).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import re

from inscriptis import get_text
from inscriptis.model.config import ParserConfig

# Labels real mail carries that mean a larger charset than they say. GB2312 mail is written by
# GBK/GB18030 encoders (characters such as 镕 or 喆 are outside GB2312), so the strict codec
# would replace perfectly good characters; GB18030 is a superset of both. The same holds for
# Big5 (HKSCS and Microsoft's CP950 extensions), KS C 5601 (CP949) and Latin-1 (mailers write
# Windows-1252 "smart quotes" and the euro sign into it, the way browsers read it, WHATWG).
_WIDER: dict[str, str] = {
    "gb2312": "gb18030", "gbk": "gb18030", "cp936": "gb18030", "euc-cn": "gb18030",
    "x-gbk": "gb18030", "gb_2312-80": "gb18030", "csgb2312": "gb18030", "chinese": "gb18030",
    "big5": "big5hkscs", "x-big5": "big5hkscs", "cn-big5": "big5hkscs", "csbig5": "big5hkscs",
    "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "ks_c_5601": "cp949",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "iso_8859-1": "cp1252",
    "utf8": "utf-8", "unicode-1-1-utf-8": "utf-8",
}


def codec_for(label: str | None) -> str | None:
    """The Python codec to read text labelled ``label`` with, or None when nobody knows it."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    name = name.split("*", 1)[0]            # RFC 2231 language suffix: utf-8*en
    name = _WIDER.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):        # ValueError: a label with a NUL in it
        return None


def decode_bytes(data: bytes, label: str | None) -> str:
    """``data`` as text. Pure ASCII is ASCII; bytes that are valid UTF-8 are UTF-8 whatever the
    label says (legacy text is practically never valid multi-byte UTF-8 by chance, while mail
    labelled Latin-1 or GB2312 that is really UTF-8 is common); else the labelled charset. Text
    labelled UTF-8 or ASCII that is neither, or with no usable label, is most often GBK from a
    Chinese mailer (our customers'), so GB18030 is tried before giving up. Bad bytes become
    U+FFFD."""
    if data.isascii():
        return data.decode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = codec_for(label)
    if codec in (None, "utf-8", "ascii"):
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace")
    return data.decode(codec, errors="replace")


def _unsurrogate(raw: str) -> str:
    """Headers come from the parser with 8-bit bytes as surrogate escapes: read them as text."""
    if raw.isascii():
        return raw
    try:
        data = raw.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:               # a real lone surrogate; cannot come from bytes
        return raw.encode("utf-8", errors="replace").decode("utf-8")
    return decode_bytes(data, None)


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
# RFC 2047 6.2: white space between two adjacent encoded words is not shown.
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")


def _word(match: re.Match[str]) -> str:
    label, kind, payload = match.group(1), match.group(2).upper(), match.group(3)
    try:
        if kind == "B":
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=False)
        else:
            data = re.sub(r"=([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)),
                          payload.replace("_", " ")).encode("latin-1", errors="replace")
    except (binascii.Error, ValueError):
        return match.group(0)                # not an encoded word after all: show it as written
    # Here the label is all there is (no UTF-8 guess): encoded words declare what they hold.
    codec = codec_for(label) or "utf-8"
    return data.decode(codec, errors="replace")


def decode_header(raw: str | None) -> str:
    """A header's raw value as text: unfolded, encoded words (any charset) decoded, raw 8-bit
    bytes read as UTF-8 when they are, control characters dropped."""
    if not raw:
        return ""
    text = _unsurrogate(raw)
    text = re.sub(r"\r?\n[ \t]*", " ", text)
    text = _BETWEEN_WORDS.sub("", text)
    text = _ENCODED_WORD.sub(_word, text)
    return _CONTROL.sub("", text).strip()


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_BLANK_RUN = re.compile(r"\n{3,}")

# inscriptis, not html2text: it writes plain text laid out the way the mail looked (tables,
# lists, indentation), where html2text writes Markdown ("**", "[link](url)") an agent would read
# as noise; and inscriptis is Apache-2.0 like contactgate, html2text is GPL-3.0.
_HTML_CONFIG = ParserConfig(display_links=False, display_images=False)
_TAG = re.compile(r"<[^>]*>")


def html_to_text(markup: str) -> str:
    """The text a reader sees in an HTML body, with lines and paragraphs kept."""
    markup = _CONTROL.sub("", markup)
    if not markup.strip():
        return ""
    try:
        text = get_text(markup, _HTML_CONFIG)
    except (ValueError, TypeError, AttributeError):
        # lxml refuses some broken documents outright; tags stripped beat no text at all.
        text = html.unescape(_TAG.sub(" ", markup))
    return tidy(text)


def tidy(text: str) -> str:
    """Unix line ends, no trailing spaces, at most one blank line in a row, no control
    characters (tab and newline stay), no blank lines at either end."""
    # U+FEFF: Apple Mail writes a byte-order mark into quoted lines; no reader wants it.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ").replace("\ufeff", "")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return _BLANK_RUN.sub("\n\n", text).strip("\n")

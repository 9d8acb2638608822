"""What an outgoing event becomes on Telegram: its parts, in the order they are sent. Pure.

- The text, cut into messages of at most 4096 UTF-16 units (Telegram's limit), at a line break
  or a space where one is near;
- each attachment as a photo (a JPEG, PNG or WebP up to 10 MB) or a document;
- ``choices`` in the event's data (self-service's "did you mean", a "did this help") as an
  inline keyboard on the last part, one button a row. A choice is a string or
  ``{"text": ..., "value": ...}``; the value comes back as the callback data (at most 64 bytes,
  else the choice's number ``#<n>``), the text as the customer's message.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

MAX_TEXT = 4096        # UTF-16 code units of one message
MAX_CALLBACK_DATA = 64  # bytes
PHOTO_TYPES = ("image/jpeg", "image/png", "image/webp")
MAX_PHOTO = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Part:
    kind: Literal["text", "photo", "document"]
    text: str | None = None                  # the message, or a file's caption (None: none)
    attachment: dict[str, Any] | None = None  # the event's summary of the file
    buttons: tuple[tuple[str, str], ...] = ()  # (text, callback data), one a row


def render(text: str | None, data: dict[str, Any]) -> list[Part]:
    parts: list[Part] = [Part("text", chunk) for chunk in split_text(text or "")]
    for summary in data.get("attachments") or ():
        photo = summary.get("content_type") in PHOTO_TYPES and (summary.get("size") or 0) <= MAX_PHOTO
        parts.append(Part("photo" if photo else "document", attachment=summary))
    buttons = choice_buttons(data.get("choices") or ())
    if buttons:
        if not parts:
            parts.append(Part("text", "Please choose:"))
        parts[-1] = replace(parts[-1], buttons=buttons)
    return parts


def choice_buttons(choices: Sequence[Any]) -> tuple[tuple[str, str], ...]:
    buttons = []
    for number, choice in enumerate(choices, 1):
        if isinstance(choice, dict):
            label, value = str(choice.get("text") or ""), str(choice.get("value") or choice.get("text") or "")
        else:
            label = value = str(choice)
        if not label:
            continue
        if len(value.encode()) > MAX_CALLBACK_DATA:
            value = f"#{number}"
        buttons.append((label[:200], value))
    return tuple(buttons)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """``text`` in pieces of at most ``limit`` UTF-16 units; none when it is blank."""
    text = text.strip()
    pieces = []
    while text:
        if _units(text) <= limit:
            pieces.append(text)
            break
        cut, units = 0, 0
        for index, char in enumerate(text):
            units += 2 if ord(char) > 0xFFFF else 1
            if units > limit:
                cut = index
                break
        window = text[:cut]
        at = max(window.rfind("\n"), window.rfind(" "))
        if at < cut // 2:   # no break near the end: cut the word
            at = cut
        pieces.append(text[:at].rstrip())
        text = text[at:].lstrip()
    return [p for p in pieces if p]

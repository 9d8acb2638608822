"""Attachments: the files that come with a customer's message or go out with an agent's reply.

The bytes are stored where every gateway process reaches them: the database by default (the
store's ``put_attachment`` / ``get_attachment``). :class:`AttachmentStorage` is the seam an
object store would implement. Events carry only a summary of each file (id, name, content type,
size, SHA-256); ``GET /api/attachments/{id}`` serves the bytes to the conversation's agents and
to admins (gateway/api.py), ``GET /webchat/attachments/{id}`` to the web chat customer.

What is kept is decided here, pure: every file over ``max_bytes`` is refused, then files in
order until the message's total would pass ``max_message_bytes``. A refused file is not stored;
the customer is told which, and the rest of the message is stored as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from aiohttp import web
from aiohttp.helpers import content_disposition_header
from pydantic import Field, model_validator

from adapters.base import IncomingFile
from routing.config import Strict

from .model import Attachment

MAX_FILES = 20          # files kept per message at most; more are refused
MAX_NAME = 255          # characters of a file name kept


class AttachmentsConfig(Strict):
    # Bytes one file may have; a larger one is refused (not stored) and the customer told.
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    # Bytes all files of one message may have together; files past it are refused.
    max_message_bytes: int = Field(default=25 * 1024 * 1024, ge=1)

    @model_validator(mode="after")
    def _totals(self) -> "AttachmentsConfig":
        if self.max_message_bytes < self.max_bytes:
            raise ValueError("max_message_bytes must be at least max_bytes")
        return self


class AttachmentStorage(Protocol):
    """Where attachment bytes live. Both stores implement it (bytes in the database)."""

    async def put_attachment(self, conversation_id: str, *, name: str, content_type: str,
                             data: bytes) -> Attachment: ...

    async def get_attachment(self, attachment_id: str) -> tuple[Attachment, bytes]: ...


@dataclass(frozen=True, slots=True)
class Refused:
    name: str
    size: int
    reason: str  # "too_large", "message_too_large", "too_many"


def screen(files: Sequence[IncomingFile], config: AttachmentsConfig) -> tuple[list[IncomingFile], list[Refused]]:
    """(kept, refused), in the order given."""
    kept: list[IncomingFile] = []
    refused: list[Refused] = []
    total = 0
    for file in files:
        size = len(file.data) if file.size is None else file.size
        if size > config.max_bytes or file.size is not None:  # not fetched: it was too large
            refused.append(Refused(file.name, size, "too_large"))
        elif total + size > config.max_message_bytes:
            refused.append(Refused(file.name, size, "message_too_large"))
        elif len(kept) >= MAX_FILES:
            refused.append(Refused(file.name, size, "too_many"))
        else:
            kept.append(file)
            total += size
    return kept, refused


def clean_name(name: str | None, fallback: str = "attachment") -> str:
    """A file name as shown and sent: no path, no control characters, at most MAX_NAME; "." and
    ".." (a directory to whoever saves the file by its name) become ``fallback``."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()[:MAX_NAME]
    return name if name not in ("", ".", "..") else fallback


_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def clean_type(content_type: str | None) -> str:
    """A content type as stored and served: ``type/subtype`` in lower case, else
    application/octet-stream (never a value that could carry header parameters)."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    return value if _CONTENT_TYPE.match(value) else "application/octet-stream"


def refusal_note(refused: Sequence[Refused], config: AttachmentsConfig) -> str:
    """What the customer is told about the files that were not accepted."""
    lines = []
    for r in refused:
        if r.reason == "too_large":
            why = f"files up to {human_size(config.max_bytes)} are accepted"
        elif r.reason == "message_too_large":
            why = f"the files of one message may have {human_size(config.max_message_bytes)} in all"
        else:
            why = f"at most {MAX_FILES} files are accepted per message"
        lines.append(f'"{r.name}" ({human_size(r.size)}): {why}')
    head = "We could not accept this file:" if len(lines) == 1 else "We could not accept these files:"
    return "\n".join([head, *("- " + line for line in lines),
                      "The rest of your message reached us. Please send the file smaller or in parts."])


def human_size(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("KB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}".replace(".0 ", " ")
    return f"{size} bytes"


def attachment_response(attachment: Attachment, data: bytes) -> web.Response:
    """The file as a download: its own type, never rendered as a page of ours (nosniff, a
    sandboxing CSP), its name as given."""
    return web.Response(body=data, content_type=attachment.content_type, headers={
        "Content-Disposition": content_disposition_header("attachment", filename=attachment.name),
        "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox",
        "ETag": f'"{attachment.sha256}"', "Cache-Control": "private, max-age=3600"})

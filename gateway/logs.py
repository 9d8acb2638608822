"""Structured logs: one JSON object per line, with the conversation (and agent) in context.

Code that works on a conversation sets ``conversation_id`` with :func:`about`; every log line
written inside carries it, so ``grep <conversation id>`` tells a conversation's whole story.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

conversation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("conversation_id", default=None)
agent_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class about:
    """``with about(conversation_id, agent_id):`` puts them on every log line written inside.

    A class, not a generator context manager: it is entered around every frame and message.
    """

    __slots__ = ("_conversation", "_agent", "_tokens")

    def __init__(self, conversation: str | None = None, agent: str | None = None) -> None:
        self._conversation = conversation
        self._agent = agent

    def __enter__(self) -> None:
        self._tokens = (
            None if self._conversation is None else conversation_id.set(self._conversation),
            None if self._agent is None else agent_id.set(self._agent),
        )

    def __exit__(self, *exc_info: object) -> None:
        conversation_token, agent_token = self._tokens
        if agent_token is not None:
            agent_id.reset(agent_token)
        if conversation_token is not None:
            conversation_id.reset(conversation_token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "conversation_id", None) is None:
            record.conversation_id = conversation_id.get()
        if getattr(record, "agent_id", None) is None:
            record.agent_id = agent_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and v is not None)
        return f"{base} {extra}" if extra else base


def setup_logging(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: a line per SMTP command

"""Structured logs: one JSON object per line, with the conversation (and agent) in context.

Code that works on a conversation sets ``conversation_id`` with :func:`about`; every log line
written inside carries it, so ``grep <conversation id>`` tells a conversation's whole story.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from datetime import datetime, timezone
from typing import Iterator

conversation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("conversation_id", default=None)
agent_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("agent_id", default=None)

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


@contextlib.contextmanager
def about(conversation: str | None = None, agent: str | None = None) -> Iterator[None]:
    tokens = []
    if conversation is not None:
        tokens.append((conversation_id, conversation_id.set(conversation)))
    if agent is not None:
        tokens.append((agent_id, agent_id.set(agent)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


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

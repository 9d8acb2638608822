"""How both websocket endpoints answer a frame whose handling failed: one error frame, the
socket stays open, and the documented code tells the client what to do next.

- a refused frame or a request that does not fit the conversation: its own code;
- :class:`~gateway.store.StoreUnavailable` (and only that): ``unavailable``, nothing was stored
  or changed, resend the same frame (a message with the same id) later;
- anything else is a bug: ``internal``, with one log line (never a dropped socket).
"""

from __future__ import annotations

import logging

from .pipeline import ConversationError
from .store import StoreUnavailable
from .websocket import FrameError, FrameRejected

log = logging.getLogger("contactgate.errors")

UNAVAILABLE = FrameError("unavailable", "storage is unavailable; nothing was stored or changed, retry with the same id")


def frame_failure(exc: Exception) -> FrameError:
    """The error frame answering the frame whose handling raised ``exc``."""
    if isinstance(exc, FrameRejected):
        return exc.error
    if isinstance(exc, ConversationError):
        return FrameError(exc.code, str(exc))
    if isinstance(exc, StoreUnavailable):
        # Expected while the database is away: one line, no traceback.
        log.error("store unavailable", extra={"error": str(exc)})
        return UNAVAILABLE
    log.error("frame failed", exc_info=exc, extra={"error": f"{type(exc).__name__}: {exc}"})
    return FrameError("internal", "the gateway failed to handle this frame; retry it (a message with the same id) or report the problem")

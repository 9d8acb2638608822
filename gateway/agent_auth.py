"""An agent's ``auth`` frame, checked whole before the desk changes anything.

A frame that fails here is answered with a ``bad_auth`` error and the socket is closed with 4401;
nothing was registered, replaced or replayed. What passes can be used as is: every seq in
``resume`` fits the stores' 64-bit columns, every id is a plain bounded string, and there are
few enough of them that the replay stays bounded (docs/protocol.md, "Authenticate").
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from .store.text import bad_identifier
from .websocket import FrameRejected

MAX_SEQ = 2**63 - 1            # seqs are signed 64-bit integers in both stores
MAX_RESUME = 1000              # conversations one auth may resume
MAX_CONVERSATION_ID = 128      # characters of a conversation id in ``resume``

Status = Literal["available", "away"]


def agent_for_token(agents: Iterable[Any], token: Any) -> str | None:
    """The id of the agent (``agents:`` config) owning ``token``. Every agent's token is
    compared, in constant time, so neither the answer's timing nor its position in the list
    leaks which one matched."""
    if not isinstance(token, str):
        return None
    given = token.encode()
    found = None
    for agent in agents:
        if hmac.compare_digest(given, agent.token.get_secret_value().encode()):
            found = agent.id
    return found


def is_admin_token(admin_token: Any, given: Any) -> bool:
    """Whether ``given`` is ``server.admin_token`` (a SecretStr; None or empty: the admin API is
    off, nothing matches), compared in constant time. The admin API's bearer and the board's
    ``auth`` frame both ask here."""
    if admin_token is None or not admin_token.get_secret_value() or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode(), admin_token.get_secret_value().encode())


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What a valid ``auth`` frame asks for (the token is checked apart, in constant time)."""

    status: Status
    resume: dict[str, int]  # conversation id -> last seq seen


def auth_request(frame: dict[str, Any]) -> AuthRequest:
    """The ``status`` and ``resume`` of an ``auth`` frame. Raises FrameRejected("bad_auth")."""
    status = frame.get("status", "available")
    if status not in ("available", "away"):
        raise FrameRejected("bad_auth", '"status" must be "available" or "away"')
    resume = frame.get("resume")
    if resume is None:
        return AuthRequest(status, {})
    if not isinstance(resume, dict):
        raise FrameRejected("bad_auth", '"resume" must be an object mapping conversation ids to the last seq seen')
    if len(resume) > MAX_RESUME:
        raise FrameRejected("bad_auth", f'"resume" may name at most {MAX_RESUME} conversations, got {len(resume)}')
    for conversation_id, seq in resume.items():
        if not conversation_id or len(conversation_id) > MAX_CONVERSATION_ID or bad_identifier(conversation_id):
            raise FrameRejected("bad_auth", '"resume" keys must be conversation ids: non-empty strings of at most '
                                f"{MAX_CONVERSATION_ID} characters without control characters")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise FrameRejected("bad_auth", f'"resume" values must be the last seq seen, an integer from 0 to {MAX_SEQ}; '
                                f"not so for conversation {conversation_id!r}")
    return AuthRequest(status, resume)

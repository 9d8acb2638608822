"""One-time codes that prove a claimed address: mailed to it, typed back in the web chat.

Kept hashed (SHA-256 of a per-code salt and the code) and compared in constant time; a code
expires after ``CODE_TTL`` seconds and after ``CODE_TRIES`` wrong guesses. Held by the gateway
process the visitor's socket is on (the visitor types it on that socket): a restart forgets
pending codes, and the visitor asks for a new one."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Callable, Literal

CODE_TTL = 600.0   # seconds a code is good for
CODE_TRIES = 5     # wrong codes before it is spent
CODE_DIGITS = 6
CODE_SENDS = 3     # codes one conversation may ask for: each is a mail to someone else's address, maybe

Outcome = Literal["verified", "wrong", "expired", "no_code"]


@dataclass(slots=True)
class _Pending:
    kind: str
    address: str
    salt: bytes
    digest: bytes
    expires: float
    tries: int = 0


def _digest(salt: bytes, code: str) -> bytes:
    return hashlib.sha256(salt + code.strip().encode()).digest()


@dataclass
class VerificationCodes:
    """Pending codes by conversation (one at a time: a new one replaces the old)."""

    clock: Callable[[], float]
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _sent: dict[str, int] = field(default_factory=dict)

    def may_send(self, conversation_id: str) -> bool:
        return self._sent.get(conversation_id, 0) < CODE_SENDS

    def new(self, conversation_id: str, kind: str, address: str) -> str:
        self._sent[conversation_id] = self._sent.get(conversation_id, 0) + 1
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_bytes(16)
        self._pending[conversation_id] = _Pending(kind, address, salt, _digest(salt, code),
                                                  self.clock() + CODE_TTL)
        return code

    def check(self, conversation_id: str, code: str) -> tuple[Outcome, tuple[str, str] | None]:
        """(outcome, (kind, address) when verified). A spent or expired code is forgotten."""
        pending = self._pending.get(conversation_id)
        if pending is None:
            return "no_code", None
        if self.clock() > pending.expires:
            del self._pending[conversation_id]
            return "expired", None
        if hmac.compare_digest(pending.digest, _digest(pending.salt, code)):
            del self._pending[conversation_id]
            return "verified", (pending.kind, pending.address)
        pending.tries += 1
        if pending.tries >= CODE_TRIES:
            del self._pending[conversation_id]
            return "expired", None
        return "wrong", None

    def tries_left(self, conversation_id: str) -> int:
        pending = self._pending.get(conversation_id)
        return 0 if pending is None else CODE_TRIES - pending.tries

"""One-time codes that prove a claimed address: mailed to it, typed back in the web chat.

Kept in the store (migration 8, gateway/store/codes.py), so a code mailed before a restart, or by
another gateway process on the same database, is checked all the same. Only a salted hash is
kept (SHA-256 of a per-code salt and the code), compared in constant time; a code expires after
``CODE_TTL`` seconds and after ``CODE_TRIES`` wrong guesses. Every guess first takes one of the
code's tries in the store, atomically, and only then is compared: however many guesses arrive
at once, from however many processes, at most ``CODE_TRIES`` are judged, and a right one is
accepted once."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Literal

from ..model import utcnow
from ..store.codes import CodeTables

CODE_TTL = 600.0   # seconds a code is good for
CODE_TRIES = 5     # wrong codes before it is spent
CODE_DIGITS = 6
CODE_SENDS = 3     # codes one conversation may ask for: each is a mail to someone else's address, maybe

Outcome = Literal["verified", "wrong", "expired", "no_code"]


def _digest(salt: bytes, code: str) -> bytes:
    return hashlib.sha256(salt + code.strip().encode()).digest()


@dataclass(frozen=True, slots=True)
class Checked:
    outcome: Outcome
    proved: tuple[str, str] | None  # (kind, address) when verified
    tries_left: int


@dataclass
class VerificationCodes:
    """Pending codes by conversation (one at a time: a new one spends the old)."""

    store: CodeTables
    clock: Callable[[], datetime] = utcnow

    async def new(self, conversation_id: str, kind: str, address: str) -> str | None:
        """A new code (to mail), or None when the conversation had CODE_SENDS codes already.
        NotFound for an unknown conversation."""
        now = self.clock()
        await self.store.prune_codes(now)
        code = f"{secrets.randbelow(10 ** CODE_DIGITS):0{CODE_DIGITS}d}"
        salt = secrets.token_bytes(16)
        added = await self.store.add_code(conversation_id, kind=kind, address=address, salt=salt,
                                          digest=_digest(salt, code), expires_at=now + timedelta(seconds=CODE_TTL),
                                          tries=CODE_TRIES, max_sends=CODE_SENDS, now=now)
        return None if added is None else code

    async def check(self, conversation_id: str, code: str) -> Checked:
        now = self.clock()
        pending = await self.store.take_code_try(conversation_id, now)
        if pending is None:
            latest = await self.store.latest_code(conversation_id)
            live = latest is not None and latest.used_at is None and latest.tries_left > 0
            return Checked("expired" if live else "no_code", None, 0)
        if hmac.compare_digest(pending.digest, _digest(pending.salt, code)):
            if await self.store.use_code(pending.id, now):
                return Checked("verified", (pending.kind, pending.address), pending.tries_left)
            return Checked("no_code", None, 0)  # a right guess beside it came first
        if pending.tries_left <= 0:
            return Checked("expired", None, 0)  # that was the last try
        return Checked("wrong", None, pending.tries_left)

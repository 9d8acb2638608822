"""Signed identity for web chat: the embedding site vouches for its logged-in user.

The site computes ``user_hash = hex(HMAC-SHA256(identity_secret, user_id + "|" + email))`` on
its server (an absent field is the empty string) and passes the three values to the widget;
the gateway recomputes it with the channel's ``identity_secret`` and compares in constant time.
Both values are covered, so a visitor who edits the page cannot pair their own user id with
someone else's email."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignedIdentity:
    user_id: str | None
    email: str | None


def signature(secret: str, user_id: str | None, email: str | None) -> str:
    message = f"{user_id or ''}|{email or ''}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def check(secret: str | None, user_id: str | None, email: str | None, user_hash: str) -> bool:
    """True when ``user_hash`` signs (user_id, email) with ``secret``; False without a secret."""
    if not secret or not (user_id or email):
        return False
    return hmac.compare_digest(signature(secret, user_id, email).encode(), user_hash.strip().lower().encode())

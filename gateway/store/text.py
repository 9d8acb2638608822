"""The one rule for text a store cannot hold, the same on both engines and every entry point.

PostgreSQL refuses U+0000 in ``text`` and in ``jsonb`` strings and keys, and asyncpg refuses to
encode lone surrogates (U+D800-U+DFFF); SQLite takes both (Python's sqlite3 only balks at the
surrogates). So that every engine stores the same value and no channel can make an append fail:

- **Free text** (message text, names, attribute keys and values, event data, identity channels
  and addresses) is *normalised*: each such character becomes U+FFFD (the replacement
  character). :func:`storable` and :func:`storable_json` do it; the stores call them below every
  entry point (web chat, agent desk, admin API and any channel to come).
- **Identifiers** a client chooses and expects echoed back (message ids, customer ids, resume
  keys) cannot be normalised without breaking that echo, so :func:`bad_identifier` lets the
  entry points refuse them with their own error code. Below them, a lookup by an id that
  :func:`cannot_hold` finds nothing (``NotFound``) and writing one raises ``ValueError``, on
  both engines.
- A non-finite number (NaN, Infinity) has no JSON spelling PostgreSQL's ``jsonb`` takes: the
  stores encode JSON with :func:`dumps`, which refuses it (``ValueError``) on both engines.
"""

from __future__ import annotations

import json
import re
from typing import Any

REPLACEMENT = "\ufffd"

# U+0000 and the surrogate code points: what no engine can hold as text.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# Refused in identifiers: the above plus every other control character (C0, DEL, C1).
_NOT_AN_IDENTIFIER = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` with U+0000 and lone surrogates replaced by U+FFFD (usually ``text`` itself)."""
    if text.isascii():  # the common case: only NUL can be wrong, and `in` is cheap
        return text.replace("\x00", REPLACEMENT) if "\x00" in text else text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """A JSON-like value with :func:`storable` applied to every string, keys included."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: storable_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [storable_json(v) for v in value]
    return value


def cannot_hold(value: str) -> bool:
    """True when ``value`` holds U+0000 or a lone surrogate: no engine can store it as it is."""
    return _UNSTORABLE.search(value) is not None


def bad_identifier(identifier: str) -> bool:
    """True when an identifier holds a control character or a lone surrogate: refuse it."""
    return _NOT_AN_IDENTIFIER.search(identifier) is not None


def identifier(value: str, what: str) -> str:
    """``value`` unchanged, or ``ValueError`` when no engine can store it."""
    if cannot_hold(value):
        raise ValueError(f"{what} {value!r} holds U+0000 or a lone surrogate")
    return value


def dumps(value: Any) -> str:
    """JSON text both engines store alike: NaN and Infinity raise ``ValueError``."""
    return json.dumps(value, allow_nan=False)

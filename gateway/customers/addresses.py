"""Identity addresses in one spelling per kind, so the same person is found on every channel:
an email address lowercased, a phone number in E.164 (``+`` and 8 to 15 digits)."""

from __future__ import annotations

import re

_PHONE_NOISE = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class BadAddress(ValueError):
    """An address that is not one of its kind (the message says what was expected)."""


def normalise(kind: str, address: str) -> str:
    """The address of ``kind`` as identities store it; BadAddress when it is not one."""
    address = address.strip()
    if kind == "email":
        address = address.lower()
        if not _EMAIL.match(address):
            raise BadAddress(f"{address!r} is not an email address (like mei@example.com)")
        return address
    if kind == "phone":
        digits = _PHONE_NOISE.sub("", address)
        if digits.startswith("00"):
            digits = "+" + digits[2:]
        if not _E164.match(digits):
            raise BadAddress(f"{address!r} is not a phone number in international form (like +4930123456)")
        return digits
    if not address:
        raise BadAddress(f"an empty {kind} address")
    return address

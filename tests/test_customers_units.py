"""The pure parts of gateway/customers/: address spelling, the signed identity (the one-time
codes, kept in the store, are in test_codes_store.py)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from gateway.customers import BadAddress, normalise
from gateway.customers.signed import check, signature


@pytest.mark.parametrize(("kind", "given", "stored"), [
    ("email", " Mei@Example.COM ", "mei@example.com"),
    ("phone", "+49 (30) 123-456", "+4930123456"),
    ("phone", "0049 30 123456", "+4930123456"),
    ("phone", "+86 138 0000 0000", "+8613800000000"),
    ("telegram", " 5553001 ", "5553001"),
])
def test_one_spelling_per_kind(kind: str, given: str, stored: str) -> None:
    assert normalise(kind, given) == stored


@pytest.mark.parametrize(("kind", "given"), [("email", "mei"), ("email", "a@b"), ("phone", "030 123456"),
                                             ("phone", "+0123456789"), ("phone", "+12"), ("telegram", "  ")])
def test_what_is_not_an_address_of_its_kind(kind: str, given: str) -> None:
    with pytest.raises(BadAddress):
        normalise(kind, given)


def test_the_signed_identity_covers_user_id_and_email() -> None:
    secret = "s3cret"
    # What the site computes on its server (docs/customers.md), spelled out with the stdlib.
    expected = hmac.new(b"s3cret", b"u-42|mei@example.com", hashlib.sha256).hexdigest()
    assert signature(secret, "u-42", "mei@example.com") == expected
    assert check(secret, "u-42", "mei@example.com", expected)
    assert check(secret, "u-42", "mei@example.com", expected.upper())
    assert not check(secret, "u-42", "bo@example.com", expected)      # someone else's email
    assert not check(secret, "u-43", "mei@example.com", expected)     # someone else's id
    assert not check("other", "u-42", "mei@example.com", expected)
    assert not check(None, "u-42", "mei@example.com", expected)       # no secret: nothing is verified
    assert check(secret, "u-42", None, signature(secret, "u-42", None))
    assert not check(secret, None, None, signature(secret, None, None))


def test_sticky_routing_follows_a_merged_customer() -> None:
    from datetime import datetime, timedelta, timezone

    from gateway.dispatcher import Dispatcher
    from routing.config import AgentConfig, QueueConfig

    d = Dispatcher([AgentConfig(id="ann", name="Ann", token="ann-token-1", capacity=1, queues=["general"]),
                    AgentConfig(id="bo", name="Bo", token="bo-token-11", capacity=1, queues=["general"])],
                   [QueueConfig(name="general")], "general")
    now = datetime(2026, 12, 2, tzinfo=timezone.utc)
    d.last_agent["visitor"] = ("bo", now)
    d.last_agent["crm-mei"] = ("ann", now - timedelta(days=1))
    d.customers_merged("visitor", "crm-mei")
    assert d.preferred_agent("crm-mei", now, 7 * 24 * 3600) == "bo"  # the later of the two, on any channel
    d.customers_merged("nobody", "crm-lin")
    assert d.preferred_agent("crm-lin", now, 7 * 24 * 3600) is None

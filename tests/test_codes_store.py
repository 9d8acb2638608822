"""Verification codes kept in the store (gateway/customers/codes.py over gateway/store/codes.py),
on both engines: single use, expiry on an injected clock, tries, the codes a conversation may
ask for, pruning; concurrent guesses on PostgreSQL from two stores (two gateway processes)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from gateway.customers import VerificationCodes
from gateway.customers.codes import CODE_SENDS, CODE_TRIES, CODE_TTL
from gateway.model import Author, ConversationState, EventKind, StateChange
from gateway.store import NotFound, Store, open_store


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def conversation(store: Store) -> str:
    customer = await store.create_customer(name="Mei", attributes={"email": "mei@example.com"})
    return (await store.create_conversation(customer.id, "webchat")).id


def other_than(code: str, n: int = 0) -> str:
    """A wrong code: ``n`` picks another one."""
    return [c for c in (f"{d}" * 6 for d in range(10)) if c != code][n]


async def test_a_code_is_used_once_kept_hashed_and_spent_by_wrong_guesses(store: Store) -> None:
    clock = Clock()
    codes = VerificationCodes(store, clock)
    cid = await conversation(store)
    code = await codes.new(cid, "email", "mei@example.com")
    assert code is not None and len(code) == 6 and code.isdigit()
    row = await store.latest_code(cid)
    assert row is not None and code.encode() not in row.digest + row.salt and code not in repr(row)
    assert row.expires_at == clock.now + timedelta(seconds=CODE_TTL) and row.tries_left == CODE_TRIES
    wrong = await codes.check(cid, other_than(code))
    assert (wrong.outcome, wrong.proved, wrong.tries_left) == ("wrong", None, CODE_TRIES - 1)
    right = await codes.check(cid, f" {code} ")
    assert (right.outcome, right.proved) == ("verified", ("email", "mei@example.com"))
    assert (await codes.check(cid, code)).outcome == "no_code"  # used up
    assert (await codes.check("no-such-conversation", code)).outcome == "no_code"

    # Wrong guesses spend the code, and the last try says so.
    cid = await conversation(store)
    code = await codes.new(cid, "email", "mei@example.com")
    assert code is not None
    for left in range(CODE_TRIES - 1, 0, -1):
        checked = await codes.check(cid, other_than(code, left))
        assert (checked.outcome, checked.tries_left) == ("wrong", left)
    assert (await codes.check(cid, other_than(code))).outcome == "expired"  # the last try spends it
    assert (await codes.check(cid, code)).outcome == "no_code"  # even the right one, afterwards


async def test_codes_expire_on_the_clock_are_replaced_counted_and_pruned(store: Store) -> None:
    clock = Clock()
    codes = VerificationCodes(store, clock)
    cid = await conversation(store)
    first = await codes.new(cid, "email", "mei@example.com")
    clock.advance(CODE_TTL - 1)
    second = await codes.new(cid, "email", "mei@example.com")
    assert first is not None and second is not None
    if first != second:
        assert (await codes.check(cid, first)).outcome == "wrong"  # the old one is spent
    clock.advance(CODE_TTL + 1)
    checked = await codes.check(cid, second)
    assert (checked.outcome, checked.proved, checked.tries_left) == ("expired", None, 0)

    # A conversation asks for a few codes only, and pruning keeps that count while it is open.
    cid, other = await conversation(store), await conversation(store)
    for _ in range(CODE_SENDS):
        assert await codes.new(cid, "email", "mei@example.com") is not None
    assert await codes.new(cid, "email", "mei@example.com") is None
    assert await codes.new(other, "email", "mei@example.com") is not None
    clock.advance(CODE_TTL + 1)
    assert await store.prune_codes(clock.now) == 0  # open conversations: their rows count their codes
    assert await codes.new(cid, "email", "mei@example.com") is None
    await store.append_event(cid, author=Author.SYSTEM, kind=EventKind.CLOSED,
                             change=StateChange(ConversationState.CLOSED))
    assert await store.prune_codes(clock.now) == CODE_SENDS  # expired and closed: gone
    assert await store.latest_code(cid) is None and await store.latest_code(other) is not None
    with pytest.raises(NotFound):
        await codes.new("no-such-conversation", "email", "mei@example.com")


async def test_a_code_survives_reopening_the_store(store: Store) -> None:
    clock = Clock()
    cid = await conversation(store)
    code = await VerificationCodes(store, clock).new(cid, "email", "mei@example.com")
    assert code is not None
    await store.close()
    reopened = await open_store(store.url)
    try:
        checked = await VerificationCodes(reopened, clock).check(cid, code)
        assert (checked.outcome, checked.proved) == ("verified", ("email", "mei@example.com"))
    finally:
        await reopened.close()
    await store.open()  # the fixture closes it


async def test_concurrent_guesses_on_postgres_from_two_processes(pg_url: str) -> None:
    one, two = await open_store(pg_url), await open_store(pg_url)
    try:
        clock = Clock()
        codes = [VerificationCodes(one, clock), VerificationCodes(two, clock)]
        # Many wrong guesses at once: only CODE_TRIES are judged, the last of them says "expired".
        cid = await conversation(one)
        code = await codes[0].new(cid, "email", "mei@example.com")
        assert code is not None
        outcomes = await asyncio.gather(*[codes[n % 2].check(cid, other_than(code)) for n in range(4 * CODE_TRIES)])
        assert sorted(c.outcome for c in outcomes).count("wrong") == CODE_TRIES - 1
        assert [c.outcome for c in outcomes].count("expired") == 1
        assert [c.outcome for c in outcomes].count("no_code") == 3 * CODE_TRIES
        assert sorted(c.tries_left for c in outcomes if c.outcome == "wrong") == list(range(1, CODE_TRIES))
        # The right code typed at once on both: accepted once.
        cid = await conversation(one)
        code = await codes[1].new(cid, "email", "mei@example.com")
        assert code is not None
        outcomes = await asyncio.gather(*[codes[n % 2].check(cid, code) for n in range(8)])
        assert [c.outcome for c in outcomes].count("verified") == 1
        assert {c.outcome for c in outcomes} == {"verified", "no_code"}
        # Two asking for a code at once still count to CODE_SENDS.
        cid = await conversation(one)
        made = await asyncio.gather(*[codes[n % 2].new(cid, "email", "mei@example.com") for n in range(2 * CODE_SENDS)])
        assert sum(code is not None for code in made) == CODE_SENDS
    finally:
        await one.close()
        await two.close()

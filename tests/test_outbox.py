"""The outbox worker on both stores: what each outcome of a channel's delivery does to the item,
retries with backoff until the attempts are spent, and a process that died mid-attempt.

The channel's ``Deliver`` is a plain coroutine here: the worker's contract is with that seam,
and the email tests drive the real one against a real SMTP server."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.base import Deferred, OutboxPolicy, PermanentFailure, Sent, Skipped, TemporaryFailure
from gateway.model import Author, Conversation, Event, EventKind, OutboxItem, OutboxStatus, utcnow
from gateway.outbox import OutboxWorker, backoff
from gateway.store import Store

FAST = OutboxPolicy(attempts=3, backoff=10.0, backoff_max=20.0, lease=60.0)


class Clock:
    """The worker's clock. It starts a little ahead: the store stamps new items with the real
    time, due at once."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Channel:
    """Answers each attempt with the next scripted outcome (an exception is raised)."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, int, int]] = []

    async def __call__(self, conversation: Conversation, event: Event, item: OutboxItem) -> Sent | Skipped:
        self.calls.append((conversation.id, event.seq, item.attempts))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


async def reply(store: Store) -> Event:
    customer = await store.create_customer(name="Ada")
    conversation = await store.create_conversation(customer.id, "email")
    event, _ = await store.append_event(conversation.id, author=Author.AGENT, kind=EventKind.MESSAGE,
                                        text="hello", outbox="email")
    return event


def worker(store: Store, channel: Channel, clock: Clock, failed: list[Any], sent: list[Any]) -> OutboxWorker:
    async def on_failed(*args: Any) -> None:
        failed.append(args)

    async def on_sent(*args: Any) -> None:
        sent.append(args)

    return OutboxWorker("email", store, channel, FAST, on_failed=on_failed, on_sent=on_sent, clock=clock)


async def status(store: Store, event: Event) -> OutboxItem:
    (item,) = await store.outbox_items(event.conversation_id)
    return item


async def test_temporary_failures_are_retried_with_backoff_then_sent_once(store: Store) -> None:
    clock, failed, sent = Clock(), [], []
    channel = Channel(TemporaryFailure("451 later"), TemporaryFailure("451 later"), Sent("mid-1"))
    outbox = worker(store, channel, clock, failed, sent)
    event = await reply(store)
    assert await outbox.run_once() == 1
    item = await status(store, event)
    assert item.status is OutboxStatus.PENDING and item.last_error == "451 later"
    assert await outbox.run_once() == 0          # not due before its backoff
    clock.advance(11)
    assert await outbox.run_once() == 1
    clock.advance(9)
    assert await outbox.run_once() == 0          # the second wait is doubled (20 s, ±10 %)
    clock.advance(13)
    assert await outbox.run_once() == 1
    item = await status(store, event)
    assert (item.status, item.sent_ref, item.attempts) == (OutboxStatus.SENT, "mid-1", 3)
    assert sent == [("email", "mid-1", event.conversation_id, event.seq)] and failed == []
    assert [attempts for _, _, attempts in channel.calls] == [1, 2, 3]
    clock.advance(3600)
    assert await outbox.run_once() == 0          # never again


async def test_the_last_failed_attempt_fails_the_item_and_tells(store: Store) -> None:
    clock, failed, sent = Clock(), [], []
    outbox = worker(store, Channel(*[TemporaryFailure("timeout")] * 3), clock, failed, sent)
    event = await reply(store)
    for _ in range(3):
        await outbox.run_once()
        clock.advance(30)
    item = await status(store, event)
    assert item.status is OutboxStatus.FAILED and "gave up after 3 attempts: timeout" in (item.last_error or "")
    assert failed == [(event.conversation_id, event.seq, item.last_error, 3)]


async def test_permanent_failure_and_a_bug_in_the_channel(store: Store) -> None:
    clock, failed, sent = Clock(), [], []
    outbox = worker(store, Channel(PermanentFailure("550 no such user"), RuntimeError("bug"), Skipped("bot_interval")),
                    clock, failed, sent)
    refused, buggy = await reply(store), await reply(store)
    await outbox.run_once()
    assert (await status(store, refused)).status is OutboxStatus.FAILED
    assert failed[0][:3] == (refused.conversation_id, refused.seq, "550 no such user")
    # The bug counts as a temporary failure: tried again, here skipped by the channel's rule.
    assert (await status(store, buggy)).last_error == "RuntimeError: bug"
    clock.advance(30)
    await outbox.run_once()
    item = await status(store, buggy)
    assert (item.status, item.last_error) == (OutboxStatus.SKIPPED, "bot_interval")
    assert sent == []


async def test_an_attempt_cut_short_by_a_dead_process_is_tried_again_after_its_lease(store: Store) -> None:
    clock = Clock()
    event = await reply(store)
    (claimed,) = await store.claim_outbox("email", now=clock(), lease=FAST.lease)  # and the process died
    failed: list[Any] = []
    sent: list[Any] = []
    channel = Channel(Sent("mid-2"))
    outbox = worker(store, channel, clock, failed, sent)
    assert await outbox.run_once() == 0
    clock.advance(FAST.lease + 1)
    assert await outbox.run_once() == 1
    item = await status(store, event)
    assert (item.id, item.status, item.attempts) == (claimed.id, OutboxStatus.SENT, 2)


async def test_the_worker_wakes_when_told_and_stops_cleanly(store: Store) -> None:
    failed: list[Any] = []
    sent: list[Any] = []
    done = asyncio.Event()

    async def deliver(conversation: Conversation, event: Event, item: OutboxItem) -> Sent:
        done.set()
        return Sent(None)

    outbox = OutboxWorker("email", store, deliver, FAST, on_failed=lambda *a: asyncio.sleep(0),
                          on_sent=lambda *a: asyncio.sleep(0), poll=3600)
    outbox.start()
    await asyncio.sleep(0.05)  # the first look found nothing; the next poll is an hour away
    await reply(store)
    outbox.wake()
    await asyncio.wait_for(done.wait(), 10)
    await outbox.stop()
    await outbox.stop()
    assert (failed, sent) == ([], [])


@pytest.mark.parametrize("attempts, low, high", [(1, 9, 11), (2, 18, 22), (5, 18, 22)])
def test_backoff_doubles_up_to_the_cap(attempts: int, low: float, high: float) -> None:
    assert all(low <= backoff(FAST, attempts) <= high for _ in range(50))


async def test_a_conversations_messages_go_out_in_order(store: Store) -> None:
    """The second message waits while the first waits for its retry; other conversations don't."""
    clock, failed, sent = Clock(), [], []
    first = await reply(store)
    second, _ = await store.append_event(first.conversation_id, author=Author.AGENT, kind=EventKind.MESSAGE,
                                         text="and another thing", outbox="email")
    elsewhere = await reply(store)
    channel = Channel(TemporaryFailure("451 later"), Sent("mid-e"), Sent("mid-1"), Sent("mid-2"))
    outbox = worker(store, channel, clock, failed, sent)
    assert await outbox.run_once() == 2  # the first of each conversation
    assert [(c, s) for c, s, _ in channel.calls] == [(first.conversation_id, 1), (elsewhere.conversation_id, 1)]
    assert await outbox.run_once() == 0  # the second waits behind the first's retry
    clock.advance(11)
    await outbox.run_once()
    await outbox.run_once()
    assert [s for c, s, _ in channel.calls if c == first.conversation_id] == [1, 1, second.seq]


async def test_deferred_is_not_an_attempt_and_retry_after_is_honoured(store: Store) -> None:
    clock, failed, sent = Clock(), [], []
    channel = Channel(*[Deferred(1.0)] * 5, TemporaryFailure("429", retry_after=42), Sent("mid-3"))
    outbox = worker(store, channel, clock, failed, sent)
    event = await reply(store)
    for _ in range(5):
        assert await outbox.run_once() == 1
        assert await outbox.run_once() == 0  # deferred for a second
        clock.advance(1.0)
    item = await status(store, event)
    assert (item.status, item.attempts) == (OutboxStatus.PENDING, 0)  # five deferrals, no try spent
    await outbox.run_once()                  # the 429: its own wait, not the policy's 10 s
    clock.advance(41)
    assert await outbox.run_once() == 0
    clock.advance(2)
    assert await outbox.run_once() == 1
    item = await status(store, event)
    assert (item.status, item.attempts, outbox.deferred) == (OutboxStatus.SENT, 2, 5)


async def test_stop_right_after_a_wake_ends_the_worker(store: Store) -> None:
    """A message stored during shutdown wakes the worker as it is stopped: the stop must win
    (Python 3.11's wait_for would swallow the cancel and the gateway would hang on SIGTERM)."""
    for _ in range(3):
        outbox = OutboxWorker("email", store, Channel(), FAST, on_failed=lambda *a: asyncio.sleep(0),
                              on_sent=lambda *a: asyncio.sleep(0), poll=3600)
        outbox.start()
        await asyncio.sleep(0.05)  # it looked, found nothing, and waits
        outbox.wake()
        await asyncio.wait_for(outbox.stop(), 5)


async def test_a_worker_stopped_mid_attempt_hands_the_item_back_due_at_once(store: Store) -> None:
    clock = Clock()
    event = await reply(store)
    trying = asyncio.Event()

    async def slow_relay(conversation: Conversation, event: Event, item: OutboxItem) -> Sent:
        trying.set()
        await asyncio.Event().wait()   # the relay never answers
        raise AssertionError("not reached")

    outbox = OutboxWorker("email", store, slow_relay, FAST, on_failed=lambda *a: asyncio.sleep(0),
                          on_sent=lambda *a: asyncio.sleep(0), clock=clock, poll=3600)
    outbox.start()
    await asyncio.wait_for(trying.wait(), 10)
    await outbox.stop(grace=0.1)  # the relay hangs past the grace
    item = await status(store, event)
    assert (item.status, item.attempts, item.next_attempt_at <= clock()) == (OutboxStatus.PENDING, 1, True)
    # The next process claims it now, not after the lease.
    channel = Channel(Sent("mid-3"))
    assert await worker(store, channel, clock, [], []).run_once() == 1
    assert (await status(store, event)).status is OutboxStatus.SENT


async def test_a_stop_lets_the_try_under_way_finish(store: Store) -> None:
    """Cancelling a send the relay may already have taken would send it twice: the stop waits."""
    event = await reply(store)
    trying = asyncio.Event()

    async def relay(conversation: Conversation, event: Event, item: OutboxItem) -> Sent:
        trying.set()
        await asyncio.sleep(0.3)
        return Sent("mid-4")

    outbox = OutboxWorker("email", store, relay, FAST, on_failed=lambda *a: asyncio.sleep(0),
                          on_sent=lambda *a: asyncio.sleep(0), poll=3600)
    outbox.start()
    await asyncio.wait_for(trying.wait(), 10)
    await outbox.stop()
    assert (await status(store, event)).status is OutboxStatus.SENT

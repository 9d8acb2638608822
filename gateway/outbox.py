"""The durable outbox: how the agent's and the bot's messages reach channels without live
sessions (email; messaging apps next), delivered or failed for good, never dropped silently.

The pipeline writes an outbox item in the same transaction as the event it delivers
(``Store.append_event(outbox=channel)``), so a stored message always has its delivery. One
:class:`OutboxWorker` per channel and process claims due items (a claim is a lease in the
store, so two processes never try the same item at once; only the earliest pending item of a
conversation is due, so its messages go out in order), loads the event and hands it to the
channel's ``Deliver``:

- ``Sent``: the item is done; the provider's id names the conversation from now on (replies
  and bounces find it by that id);
- ``Skipped``: done, not sent (the channel's own rule, e.g. the bot interval);
- ``Deferred``: not tried (the channel's flood limit); due again after its seconds, its tries
  not counted;
- ``TemporaryFailure``: tried again after the provider's ``retry_after``, else after a backoff
  that doubles up to ``backoff_max``, until the policy's ``attempts`` are spent;
- ``PermanentFailure``, or the last attempt failing: the item fails and the conversation
  records ``delivery_failed`` for that message, which its agent sees.

A worker being stopped finishes the try under way (for up to ``STOP_GRACE`` seconds) and
hands back what it claimed but did not try; one cut short after that hands its item back too,
due at once. A process that dies
while trying one leaves its claim to expire (``lease``); the item is then tried again, by
whichever process claims it, with the same item id: a channel that derives the provider's id
from it (the email Message-ID) sends the same message again, which the receiving side can
recognise. That is the one case where a message may go out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from adapters.base import Deferred, Deliver, OutboxPolicy, PermanentFailure, Sent, Skipped, TemporaryFailure

from .logs import about
from .model import Conversation, Event, OutboxItem, OutboxStatus, utcnow
from .store import NotFound, Store, StoreUnavailable

log = logging.getLogger("contactgate.outbox")

POLL = 2.0           # seconds between looks for due items when nobody wakes the worker
STORE_RETRY = 5.0    # seconds to wait after the store failed
BATCH = 20
STOP_GRACE = 5.0     # seconds a stop waits for the try under way

# (conversation id, seq of the failed message, reason, attempts) -> the delivery_failed event
OnFailed = Callable[[str, int, str, int], Awaitable[object]]
# (channel, provider ref, conversation id, seq): remember what a sent message is called
OnSent = Callable[[str, str, str, int], Awaitable[object]]


def backoff(policy: OutboxPolicy, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` tries, with ±10 % jitter so many items
    failing together do not retry together."""
    base = min(policy.backoff * 2 ** max(attempts - 1, 0), policy.backoff_max)
    return base * random.uniform(0.9, 1.1)


class OutboxWorker:
    def __init__(self, channel: str, store: Store, deliver: Deliver, policy: OutboxPolicy, *,
                 on_failed: OnFailed, on_sent: OnSent, clock: Callable[[], datetime] = utcnow,
                 poll: float = POLL) -> None:
        self.channel = channel
        self.store = store
        self.deliver = deliver
        self.policy = policy
        self._on_failed = on_failed
        self._on_sent = on_sent
        self._clock = clock
        self._poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.sent = self.failed = self.retried = self.skipped = self.deferred = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox:{self.channel}")

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Let the try under way finish (for up to ``grace`` seconds: cancelling a send the
        relay may already have taken would send it twice), take no new item, then end."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(grace):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        """An item was just written: look now instead of at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            # Cleared before the look, so a wake (or stop) during it is not lost.
            self._wake.clear()
            try:
                worked = await self.run_once()
            except StoreUnavailable as exc:
                log.error("outbox: store unavailable; trying again", extra={"channel": self.channel,
                                                                          "error": str(exc)})
                await asyncio.sleep(STORE_RETRY)
                continue
            except Exception:
                log.exception("outbox: unexpected failure; trying again", extra={"channel": self.channel})
                await asyncio.sleep(STORE_RETRY)
                continue
            if worked:
                continue  # there may be more due right away
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the event fires, and stop() would then wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()

    async def run_once(self) -> int:
        """Claim the due items and try each once. Returns how many were claimed."""
        items = await self.store.claim_outbox(self.channel, now=self._clock(), lease=self.policy.lease,
                                              limit=BATCH)
        for number, item in enumerate(items):
            if self._stopping:  # claimed but not tried: back to the outbox, due at once
                for left in items[number:]:
                    await self._release(left, attempted=False)
                break
            with about(item.conversation_id):
                await self._try(item)
        return len(items)

    async def _try(self, item: OutboxItem) -> None:
        try:
            conversation = await self.store.get_conversation(item.conversation_id)
            events = await self.store.events_after(item.conversation_id, item.seq - 1, 1)
        except NotFound:
            await self.store.finish_outbox(item.id, OutboxStatus.FAILED, error="conversation not found")
            return
        if not events or events[0].seq != item.seq:
            await self.store.finish_outbox(item.id, OutboxStatus.FAILED, error=f"event {item.seq} not found")
            return
        event = events[0]
        try:
            outcome = await self.deliver(conversation, event, item)
        except asyncio.CancelledError:
            # Stopped mid-try (a restart, a deploy): hand the item back, due now, instead of
            # leaving it to its lease. The relay may already have taken it; then the next try
            # sends the same mail again, as after a process that died.
            await asyncio.shield(self._release(item))
            raise
        except TemporaryFailure as exc:
            await self._temporary(item, str(exc) or type(exc).__name__, exc.retry_after)
        except PermanentFailure as exc:
            await self._failed(item, str(exc) or type(exc).__name__)
        except StoreUnavailable:
            raise
        except Exception as exc:  # a bug in the channel: counts as a temporary failure, logged whole
            log.exception("outbox: delivery raised", extra={"channel": self.channel, "seq": item.seq})
            await self._temporary(item, f"{type(exc).__name__}: {exc}")
        else:
            await self._done(item, conversation, event, outcome)

    async def _release(self, item: OutboxItem, attempted: bool = True) -> None:
        try:
            await self.store.retry_outbox(item.id, error=item.last_error or "interrupted: the gateway stopped",
                                          next_attempt_at=self._clock(), attempted=attempted)
        except Exception as exc:  # noqa: BLE001 - stopping anyway: the lease still frees it, later
            log.warning("outbox: could not hand back an item while stopping; it waits for its lease",
                        extra={"channel": self.channel, "seq": item.seq, "error": repr(exc)})

    async def _done(self, item: OutboxItem, conversation: Conversation, event: Event,
                    outcome: Sent | Skipped | Deferred) -> None:
        if isinstance(outcome, Deferred):
            self.deferred += 1
            await self.store.retry_outbox(item.id, error=item.last_error or "deferred by the channel's flood limit",
                                          next_attempt_at=self._clock() + timedelta(seconds=max(outcome.seconds, 0)),
                                          attempted=False)
            return
        if isinstance(outcome, Skipped):
            self.skipped += 1
            log.info("outbox: skipped", extra={"channel": self.channel, "seq": item.seq, "reason": outcome.reason})
            await self.store.finish_outbox(item.id, OutboxStatus.SKIPPED, error=outcome.reason)
            return
        self.sent += 1
        log.info("outbox: sent", extra={"channel": self.channel, "seq": item.seq, "attempts": item.attempts,
                                        "ref": outcome.ref})
        if outcome.ref:
            await self._on_sent(self.channel, outcome.ref, conversation.id, event.seq)
        await self.store.finish_outbox(item.id, OutboxStatus.SENT, sent_ref=outcome.ref)

    async def _temporary(self, item: OutboxItem, error: str, retry_after: float | None = None) -> None:
        if item.attempts >= self.policy.attempts:
            await self._failed(item, f"gave up after {item.attempts} attempts: {error}")
            return
        delay = backoff(self.policy, item.attempts) if retry_after is None else max(retry_after, 0.0)
        self.retried += 1
        log.warning("outbox: attempt failed; retrying", extra={
            "channel": self.channel, "seq": item.seq, "attempts": item.attempts, "retry_in": round(delay, 1),
            "error": error})
        await self.store.retry_outbox(item.id, error=error, next_attempt_at=self._clock() + timedelta(seconds=delay))

    async def _failed(self, item: OutboxItem, error: str) -> None:
        self.failed += 1
        log.error("outbox: delivery failed", extra={"channel": self.channel, "seq": item.seq,
                                                    "attempts": item.attempts, "error": error})
        await self.store.finish_outbox(item.id, OutboxStatus.FAILED, error=error)
        await self._on_failed(item.conversation_id, item.seq, error, item.attempts)

"""The bot's memory and its watchdog across a restart, in process on a real store with a fake
clock: pending choices are picked after a restart, and a conversation that made no progress for
``stalled_after`` is handed off, the timer set again by ``recover``."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.config import parse_config
from gateway.model import ConversationState, EventKind
from gateway.pipeline import Pipeline
from gateway.selfservice import SelfService
from gateway.store import Store, open_store

FAQ = Path(__file__).resolve().parent.parent / "faq" / "shipping_kb.yaml"
CONFIG = f"""
channels: [{{type: webchat}}]
selfservice:
  faq: {FAQ}
  min_score: 0.9
  choices_min_score: 0.3
  max_unanswered: 5
  policy: {{stalled_after: 300}}
queues: [{{name: general}}]
routing: {{default_queue: general}}
agents: [{{id: a1, name: A1, token: token-a1-xxxx, queues: [general]}}]
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 2, 9, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


def pipeline_on(store: Store, clock: Clock) -> Pipeline:
    config = parse_config(CONFIG, env={})
    return Pipeline(config, store, SelfService.from_config(config.selfservice), clock=clock)


async def test_choices_survive_a_restart_and_a_stalled_conversation_is_handed_off(store: Store) -> None:
    clock = Clock()
    first = pipeline_on(store, clock)
    customer = await first.identify("webchat", "web-1")
    picking, _ = await first.current_conversation(customer, "webchat")
    await first.customer_message(picking.id, "parcel broken", "m1")
    other = await first.identify("webchat", "web-2")
    stalling, _ = await first.current_conversation(other, "webchat")
    await first.customer_message(stalling.id, "where is my parcel hmm", "m1")  # a miss: no progress
    assert first.scheduler.pending(("bot_stalled", stalling.id))

    # A restart: a new pipeline on the same database, its memory rebuilt from the events.
    await store.close()
    store = await open_store(store.url)
    try:
        second = pipeline_on(store, clock)
        await second.recover()
        assert second.scheduler.pending(("bot_stalled", stalling.id))
        await second.customer_message(picking.id, "1", "m2")
        answer = (await store.events_after(picking.id, 0))[-1]
        assert answer.data["faq"] == "damaged-parcel" and answer.data["picked"] is True
        assert not second.scheduler.pending(("bot_stalled", picking.id))  # an answer is progress

        clock.now += timedelta(seconds=299)
        assert await second.scheduler.run_due() == 0
        clock.now += timedelta(seconds=2)
        await second.scheduler.run_due()
        events = await store.events_after(stalling.id, 0)
        assert events[-2].data["handoff"] == "stalled" and events[-1].kind is EventKind.QUEUED
        # Its guesses for the last question, as every handoff has them (the agent's offer shows them).
        assert [g["faq_id"] for g in events[-2].data["guesses"]][:1] == ["track-parcel"], events[-2].data
        assert (await store.get_conversation(stalling.id)).state is ConversationState.QUEUED
        assert (await store.get_conversation(picking.id)).state is ConversationState.BOT
    finally:
        await store.close()

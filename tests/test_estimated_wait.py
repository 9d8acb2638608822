"""The estimated wait a customer is told: nothing while free seats outnumber the conversations
ahead, then rounds of the recent average handle time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from gateway.config import parse_config
from gateway.pipeline import Pipeline
from gateway.selfservice import SelfService
from gateway.store import open_store

CONFIG = """
channels: [{type: webchat}]
queues: [{name: general}]
routing: {default_queue: general}
agents:
  - {id: a1, name: A1, token: token-a1-xxxx, capacity: 2, queues: [general]}
  - {id: a2, name: A2, token: token-a2-xxxx, capacity: 1, queues: [general]}
"""


async def test_estimated_wait_counts_free_seats_then_handle_time() -> None:
    config = parse_config(CONFIG, env={})
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    store = await open_store("sqlite://:memory:")
    try:
        pipeline = Pipeline(config, store, SelfService(config.selfservice, None), clock=lambda: now)
        assert pipeline.wait_news.estimated_wait("general", 1, now) > 0  # nobody online: a round of the default
        await pipeline.agent_connected("a1", "available")
        await pipeline.agent_connected("a2", "available")
        # Three free seats: the first three in line are answered at once.
        assert [pipeline.wait_news.estimated_wait("general", p, now) for p in (1, 2, 3)] == [0, 0, 0]
        # Beyond them, rounds of the average handle time (none yet: the 180 s default) over 2 agents.
        assert pipeline.wait_news.estimated_wait("general", 4, now) == 180
        assert pipeline.wait_news.estimated_wait("general", 6, now) == 360
        pipeline.stats.handled("general", 60.0, now - timedelta(seconds=5))
        assert pipeline.wait_news.estimated_wait("general", 4, now) == 60
        await pipeline.set_presence("a2", "away")
        assert pipeline.wait_news.estimated_wait("general", 3, now) == 60  # 2 free seats left, one agent
    finally:
        await store.close()

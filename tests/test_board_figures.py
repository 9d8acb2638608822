"""The board's figures and history in process (gateway/board/): the snapshot from the pipeline's
live state (colours, about to breach, agents' load and time in state), the per-minute samples
in a real store on an injected clock, and the ``board:`` config section's errors."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator

import pytest
import pytest_asyncio

from gateway.board.feed import BoardFeed
from gateway.board.figures import StatusClock, board_snapshot, shape
from gateway.board.history import QueueHistory
from gateway.config import ConfigError, parse_config
from gateway.pipeline import Pipeline
from gateway.reports import queue_report
from gateway.selfservice import SelfService
from gateway.store import open_store
from routing import WaitingEntry

T0 = datetime(2026, 12, 1, 9, 0, 10, tzinfo=timezone.utc)

CONFIG = """
channels: [{type: webchat}, {type: webchat, name: chat2, path: /chat2/ws}]
queues:
  - {name: general, service_level: {answer_within: 20, percent: 80}}
  - {name: vip_desk, service_level: {answer_within: 10, percent: 90}}
routing: {default_queue: general}
agents:
  - {id: alice, name: Alice, token: alice-token-1, capacity: 3, queues: [general, vip_desk]}
  - {id: bob, name: Bob, token: bob-token-12, capacity: {webchat: 2, chat2: 4}, queues: [general]}
board: {horizon: 120, breach_share: 0.5}
"""


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest_asyncio.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    config = parse_config(CONFIG, "test.yaml", env={})
    store = await open_store(f"sqlite:///{tmp_path / 'board.db'}")
    yield Pipeline(config, store, SelfService.from_config(config.selfservice), clock=Clock())
    await store.close()


def wait(pipeline: Pipeline, cid: str, queue: str, seconds: float) -> None:
    pipeline.dispatcher.enqueue(WaitingEntry(cid, queue, 0, pipeline.clock() - timedelta(seconds=seconds)))


async def test_the_snapshot_colours_queues_and_lists_who_is_about_to_breach(pipeline: Pipeline) -> None:
    clock = StatusClock(T0)
    now = pipeline.clock()
    for _ in range(9):
        pipeline.stats.answered("general", 5, now - timedelta(seconds=60))
    pipeline.stats.answered("general", 30, now - timedelta(seconds=30))   # 9 of 10 within 20 s: 90 %
    wait(pipeline, "c-old", "general", 12)      # past half of 20 s; nobody answers it in time
    wait(pipeline, "c-new", "general", 2)
    wait(pipeline, "c-vip", "vip_desk", 11)     # past its 10 s target
    snapshot = board_snapshot(pipeline, now, clock)
    general, vip = snapshot["queues"]
    # The rows of /api/queues, plus the board's fields.
    assert [{k: v for k, v in q.items() if k not in ("counted", "colour", "forecast")} for q in snapshot["queues"]] \
        == queue_report(pipeline, now)
    assert (general["service_level"], general["counted"], general["colour"]) == (90.0, 10, "amber")
    # 10 answers in the last 15 minutes: 2 every 3 minutes; c-old is answered in 90 s (late).
    assert general["forecast"] == {"lowest_service_level": pytest.approx(9 / 12 * 100, abs=0.01), "horizon": 120.0,
                                   "answers_per_minute": pytest.approx(10 / 15, abs=0.001)}
    assert (vip["service_level"], vip["colour"]) == (None, "amber")
    assert [(b["conversation_id"], b["past_target"]) for b in snapshot["breaching"]] == [("c-old", False), ("c-vip", True)]
    assert snapshot["breaching"][0]["waited"] == 12.0
    assert snapshot["settings"] == {"horizon": 120.0, "breach_share": 0.5, "tick": 5.0, "history_hours": 8.0}

    alice, bob = snapshot["agents"]
    assert alice["capacity"] == 3 and [c["capacity"] for c in alice["channels"]] == [None, None]
    assert bob["capacity"] is None and bob["channels"] == [{"channel": "chat2", "conversations": 0, "capacity": 4},
                                                          {"channel": "webchat", "conversations": 0, "capacity": 2}]
    assert (alice["status"], alice["since"], alice["in_state"]) == ("offline", T0.isoformat(), 0.0)


async def test_time_in_state_restarts_when_the_status_changes(pipeline: Pipeline) -> None:
    clock = StatusClock(T0)
    agents = pipeline.dispatcher.agents
    clock.observe(agents.values(), T0)
    pipeline.clock.advance(30)
    agents["alice"].connected, agents["alice"].status = True, "available"
    first = board_snapshot(pipeline, pipeline.clock(), clock)
    assert [(a["status"], a["in_state"]) for a in first["agents"]] == [("available", 0.0), ("offline", 30.0)]
    pipeline.clock.advance(5)
    agents["alice"].assigned["c1"] = "webchat"
    second = board_snapshot(pipeline, pipeline.clock(), clock)
    assert (second["agents"][0]["status"], second["agents"][0]["in_state"]) == ("busy", 0.0)
    assert second["agents"][0]["channels"][1] == {"channel": "webchat", "conversations": 1, "capacity": None}
    pipeline.clock.advance(7)
    third = board_snapshot(pipeline, pipeline.clock(), clock)
    assert third["agents"][0]["in_state"] == 7.0
    # Only the clock moved: the same shape, so only the slow tick would push it.
    assert shape(third) == shape(second) and shape(second) != shape(first)


async def test_one_sample_a_minute_kept_for_the_hours_configured(pipeline: Pipeline) -> None:
    history = QueueHistory(pipeline)
    assert history.due(pipeline.clock())
    wait(pipeline, "c1", "general", 3)
    taken = await history.sample(pipeline.clock())
    assert [(s.queue, s.minute, s.waiting) for s in taken] == [("general", T0.replace(second=0), 1),
                                                                ("vip_desk", T0.replace(second=0), 0)]
    pipeline.clock.advance(45)   # 09:00:55: still the same minute
    assert not history.due(pipeline.clock())
    pipeline.clock.advance(10)   # 09:01:05
    assert history.due(pipeline.clock())
    await history.sample(pipeline.clock())
    recent = await history.recent(pipeline.clock())
    minute = int(T0.replace(second=0).timestamp())
    assert recent == {"general": [[minute, None, 1], [minute + 60, None, 1]],
                      "vip_desk": [[minute, None, 0], [minute + 60, None, 0]]}
    # Eight hours on (17:01:05), the next sample prunes 09:00; 09:01 is still within the 8 hours.
    pipeline.clock.advance(8 * 3600)
    await history.sample(pipeline.clock())
    assert [p[0] for p in (await history.recent(pipeline.clock()))["general"]] == [minute + 60, minute + 8 * 3600 + 60]


def test_the_board_section_is_checked_with_its_key_and_line() -> None:
    base = "channels: [{type: webchat}]\nqueues: [{name: general}]\nrouting: {default_queue: general}\n"
    with pytest.raises(ConfigError) as bad:
        parse_config(base + "board:\n  horizon: 0\n", "test.yaml", env={})
    assert "test.yaml:5: board.horizon" in str(bad.value)
    with pytest.raises(ConfigError) as typo:
        parse_config(base + "board:\n  breach_shar: 0.5\n", "test.yaml", env={})
    assert "board.breach_shar" in str(typo.value) and "unknown key" in str(typo.value)


class Recorder:
    """Stands where a board's FrameSender is: what the feed sends it."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def send(self, frame: dict) -> None:
        self.frames.append(frame)

    def types(self) -> list[str]:
        taken, self.frames = [f["type"] for f in self.frames], []
        return taken


async def test_the_feed_pushes_on_change_on_the_tick_and_a_sample_each_minute(pipeline: Pipeline) -> None:
    feed = BoardFeed(pipeline)
    board = Recorder()
    feed.boards.add(board)  # type: ignore[arg-type]
    await feed.check(0.0)
    assert board.types() == ["sample", "figures"]      # the start's sample, then the board
    await feed.check(1.0)
    assert board.types() == []                          # nothing changed, the tick (5 s) not due
    wait(pipeline, "c1", "general", 1)
    await feed.check(2.0)
    assert board.types() == ["figures"]                 # a customer waits: pushed at once
    pipeline.clock.advance(3)
    await feed.check(6.0)
    assert board.types() == []                          # only the wait grew
    await feed.check(7.0)
    assert board.types() == ["figures"]                 # the tick: 5 s since the last push
    pipeline.clock.advance(60)
    await feed.check(8.0)
    # A new minute, and c1 has waited past half its target meanwhile: about to breach, pushed.
    frames = list(board.frames)
    assert board.types() == ["sample", "figures"]
    assert frames[0]["queues"]["general"][2] == 1 and frames[1]["breaching"][0]["conversation_id"] == "c1"
    assert feed.history.last_minute == pipeline.clock().replace(second=0, microsecond=0)

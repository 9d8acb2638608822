"""Property-based tests of the whole routing loop, in process, on a real SQLite store.

Random sequences of arrivals, accepts, declines, offer timeouts, disconnects, transfers,
closes and customers whose socket drops and comes back, with a fake clock driving every timer.
After each step the promises must hold: one offer at a time per conversation, no agent over
capacity, every open conversation in exactly one place (and the store agreeing), nobody left
waiting while an eligible agent is free, and no conversation waiting for a customer who is gone
without a timer that ends it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from adapters.base import SessionPolicy
from gateway.config import parse_config
from gateway.model import ConversationState as S
from gateway.pipeline import ConversationError, Pipeline
from gateway.selfservice import SelfService
from gateway.store import open_store
from routing.assignment import serves

CONFIG = """
channels: [{type: webchat}]
selfservice: {max_unanswered: 1, greeting: null}
tiers:
  default: standard
  rules: [{tier: vip, when: {email_domain: vip.example}}]
queues:
  - {name: vip_desk, priority: {vip: 10}, offer_timeout: 5, when_abandoned: {action: leave_message, queue: general}}
  - {name: general, priority: {vip: 10}, offer_timeout: 5, aging: {every: 10, boost: 1}}
  - {name: billing, skills: {billing: 2}, offer_timeout: 5}
routing:
  rules:
    - when: {tier: vip}
      steps: [{queue: vip_desk, timeout: 20}, {queues: [vip_desk, general], priority_boost: 5}]
  default_queue: general
desk: {missed_offers_before_away: 2, disconnect_grace: 15}
agents:
  - {id: a1, name: A1, token: token-a1-xxxx, capacity: 2, queues: [vip_desk, general]}
  - {id: a2, name: A2, token: token-a2-xxxx, capacity: 1, queues: [general, billing], skills: {billing: 3}}
  - {id: a3, name: A3, token: token-a3-xxxx, capacity: {webchat: 1}, queues: [general, billing], skills: {billing: 1}}
"""
AGENTS = ["a1", "a2", "a3"]

ops = st.one_of(
    st.tuples(st.just("arrive"), st.booleans(), st.booleans()),  # (vip, the socket drops right after)
    st.tuples(st.just("accept"), st.sampled_from(AGENTS)),
    st.tuples(st.just("decline"), st.sampled_from(AGENTS)),
    st.tuples(st.just("tick"), st.sampled_from([1, 3, 6, 16, 25])),
    st.tuples(st.just("disconnect"), st.sampled_from(AGENTS)),
    st.tuples(st.just("connect"), st.sampled_from(AGENTS)),
    st.tuples(st.just("away"), st.sampled_from(AGENTS)),
    st.tuples(st.just("transfer"), st.sampled_from(AGENTS), st.sampled_from(["general", "billing", "a1", "a2", "a3"])),
    st.tuples(st.just("close"), st.sampled_from(AGENTS)),
    st.tuples(st.just("leave"), st.integers(0, 20)),
    st.tuples(st.just("gone"), st.integers(0, 20)),   # the customer's last socket closed
    st.tuples(st.just("back"), st.integers(0, 20)),   # ... and a socket joined again
)
POLICY = SessionPolicy(abandon_after=8, idle_close_after=30)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now


async def run(sequence: list[tuple[Any, ...]]) -> None:
    config = parse_config(CONFIG, env={})
    store = await open_store("sqlite://:memory:")
    clock = Clock()
    pipeline = Pipeline(config, store, SelfService(config.selfservice, None), clock=clock)
    conversations: list[str] = []
    try:
        await pipeline.track_sessions("webchat", POLICY)
        for agent in AGENTS:
            await pipeline.agent_connected(agent, "available")
        for step in sequence:
            await apply(pipeline, store, clock, conversations, step)
            await check(pipeline, store, conversations, step)
    finally:
        await store.close()


async def apply(pipeline: Pipeline, store: Any, clock: Clock, conversations: list[str], step: tuple[Any, ...]) -> None:
    kind = step[0]
    dispatcher = pipeline.dispatcher
    try:
        if kind == "arrive":
            customer = await pipeline.identify("webchat", f"web-{len(conversations)}",
                                               profile={"email": "x@vip.example" if step[1] else "x@plain.example"})
            conversation, _ = await pipeline.current_conversation(customer, "webchat")
            conversations.append(conversation.id)
            await pipeline.customer_presence(conversation.id, True)
            await pipeline.customer_message(conversation.id, "an agent please", "m1")
            if step[2]:
                await pipeline.customer_presence(conversation.id, False)
        elif kind in ("accept", "decline"):
            offered = [cid for cid, aid in dispatcher.offers.items() if aid == step[1]]
            if offered:
                await (pipeline.accept if kind == "accept" else pipeline.decline)(step[1], offered[0])
        elif kind == "tick":
            clock.now += timedelta(seconds=step[1])
            await pipeline.scheduler.run_due()
            await pipeline.dispatch()
        elif kind == "disconnect":
            if dispatcher.agents[step[1]].connected:
                await pipeline.agent_disconnected(step[1])
        elif kind == "connect":
            await pipeline.agent_connected(step[1], "available")
        elif kind == "away":
            await pipeline.set_presence(step[1], "away")
        elif kind == "transfer":
            assigned = sorted(dispatcher.agents[step[1]].assigned)
            if assigned:
                target = step[2]
                if target in AGENTS:
                    await pipeline.transfer(step[1], assigned[0], to_agent=target, note="over to you")
                else:
                    await pipeline.transfer(step[1], assigned[0], to_queue=target, note="needs billing")
        elif kind == "close":
            assigned = sorted(dispatcher.agents[step[1]].assigned)
            if assigned:
                await pipeline.agent_close(step[1], assigned[0], "resolved")
        elif kind == "leave":
            if conversations:
                await pipeline.customer_leaves(conversations[step[1] % len(conversations)])
        elif kind in ("gone", "back"):
            if conversations:
                await pipeline.customer_presence(conversations[step[1] % len(conversations)], kind == "back")
    except ConversationError as exc:
        # Refusals are fine (transfer to an unavailable agent, to oneself, ...): state must hold.
        assert exc.code in {"agent_unavailable", "unknown_agent", "no_offer", "not_assigned"}, exc


async def check(pipeline: Pipeline, store: Any, conversations: list[str], step: tuple[Any, ...]) -> None:
    dispatcher = pipeline.dispatcher
    now = pipeline.clock()
    where: dict[str, list[str]] = {}
    for agent in dispatcher.agents.values():
        view = agent.view(now)
        for channel in set(agent.assigned.values()) | set(agent.offers.values()):
            assert view.capacity_for(channel) >= view.load.get(channel, 0), f"{agent.id} over capacity after {step}"
        for cid in agent.assigned:
            where.setdefault(cid, []).append(f"assigned:{agent.id}")
        for cid in agent.offers:
            where.setdefault(cid, []).append(f"offered:{agent.id}")
            assert dispatcher.offers.get(cid) == agent.id, f"offer bookkeeping split for {cid} after {step}"
    for cid, places in where.items():
        assert len(places) == 1, f"{cid} is in several places {places} after {step}"
    for cid in conversations:
        conversation = await store.get_conversation(cid)
        state = conversation.state
        if state is S.QUEUED:
            assert cid in dispatcher.waiting and cid not in dispatcher.offers and cid not in where, (cid, state, step)
        elif state is S.OFFERED:
            assert where.get(cid) == [f"offered:{conversation.agent_id}"] and cid in dispatcher.waiting, (cid, where.get(cid), step)
        elif state is S.ASSIGNED:
            assert where.get(cid) == [f"assigned:{conversation.agent_id}"] and cid not in dispatcher.waiting, (cid, step)
        elif state is S.CLOSED:
            assert cid not in where and cid not in dispatcher.waiting, (cid, step)
        events = await store.events_after(cid, 0)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        # Nobody waits forever for a customer who left: a timer ends it (a left message excepted).
        gone = pipeline.customer_connected(conversation) is False
        ends = (state is S.BOT or (state in (S.QUEUED, S.OFFERED) and not pipeline.presence.is_left_message(cid)))
        assert pipeline.scheduler.pending(("absent", cid)) == (gone and ends), (cid, state, gone, step)
    # Liveness: nobody waits un-offered while an eligible agent has room.
    views = [agent.view(now) for agent in dispatcher.agents.values()]
    for cid, entry in dispatcher.waiting.items():
        if cid in dispatcher.offers:
            continue
        # Excluded agents (declined or missed it) count too: they get it when nobody else can.
        eligible = [v.id for v in views if serves(v, entry, dispatcher.queues, honour_exclusion=False) is not None]
        assert not eligible, f"{cid} waits while {eligible} could take it, after {step}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_routing_keeps_its_promises(sequence: list[tuple[Any, ...]]) -> None:
    asyncio.run(run(sequence))

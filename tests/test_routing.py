"""The pure routing core (routing/) and the in-memory Dispatcher: unit and property tests."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.dispatcher import Dispatcher, Route
from routing import (
    AgentConfig,
    AgentView,
    AttributeTest,
    Condition,
    Contact,
    Offer,
    QueueConfig,
    RoutingConfig,
    TiersConfig,
    WaitingEntry,
    choose_queue,
    pick_agent,
    plan_offers,
    position_in_queue,
    positions,
    queue_order,
    resolve_tier,
)
from routing.config import Step

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def when(**kw: object) -> Condition:
    return Condition.model_validate(kw)


# -- conditions ----------------------------------------------------------------------------------

def test_empty_condition_always_holds() -> None:
    assert Contact(channel="webchat").satisfies(Condition())


def test_channel_condition() -> None:
    cond = when(channel=["email", "telegram"])
    assert Contact(channel="email").satisfies(cond)
    assert Contact(channel="telegram").satisfies(cond)
    assert not Contact(channel="webchat").satisfies(cond)
    assert Contact(channel="webchat").satisfies(when(channel="webchat"))  # a single value


def test_tier_condition() -> None:
    cond = when(tier="vip")
    assert Contact(channel="webchat", tier="vip").satisfies(cond)
    assert not Contact(channel="webchat", tier="standard").satisfies(cond)
    assert not Contact(channel="webchat", tier=None).satisfies(cond)


@pytest.mark.parametrize("email, expected", [
    ("ann@bigshipper.example", True),
    ("ann@BigShipper.Example", True),          # domains are case-insensitive
    ("ann@eu.bigshipper.example", True),       # subdomain
    ("ann@a.b.bigshipper.example", True),
    ("ann@notbigshipper.example", False),      # a suffix, but not a subdomain
    ("ann@bigshipper.example.evil", False),
    ("bigshipper.example", False),             # no @ at all
    ("", False),
    (None, False),
])
def test_email_domain_condition(email: str | None, expected: bool) -> None:
    cond = when(email_domain=["@BigShipper.example", "vip.example"])
    assert Contact(channel="email", email=email).satisfies(cond) is expected


def test_email_domain_uses_the_last_at() -> None:
    cond = when(email_domain="vip.example")
    assert Contact(channel="email", email='"odd@other.example"@vip.example').satisfies(cond)


@pytest.mark.parametrize("phone, expected", [
    ("+44 20 7946 0000", True),
    ("+442079460000", True),
    ("+4930123", True),
    ("+1 555 0100", False),
    ("", False),
    (None, False),
])
def test_phone_prefix_condition(phone: str | None, expected: bool) -> None:
    cond = when(phone_prefix=["+44", "+49"])
    assert Contact(channel="ivr", phone=phone).satisfies(cond) is expected


@pytest.mark.parametrize("test, attributes, expected", [
    ("lifetime_value >= 10000", {"lifetime_value": 10000}, True),
    ("lifetime_value >= 10000", {"lifetime_value": 9999.5}, False),
    ("lifetime_value >= 10000", {"lifetime_value": "12000"}, True),   # number sent as a string
    ("lifetime_value >= 10000", {"lifetime_value": " 12000 "}, True),
    ("lifetime_value >= 10000", {"lifetime_value": "lots"}, False),
    ("lifetime_value >= 10000", {"lifetime_value": None}, False),
    ("lifetime_value >= 10000", {}, False),                            # missing -> False
    ("lifetime_value > 5", {"lifetime_value": 5}, False),
    ("lifetime_value < 5", {"lifetime_value": "4"}, True),
    ("lifetime_value <= 5", {"lifetime_value": 5.0}, True),
    ("orders == 3", {"orders": "3"}, True),
    ("orders != 3", {"orders": 4}, True),
    ("orders != 3", {}, False),                                         # missing is not "different"
    ("plan == gold", {"plan": "gold"}, True),
    ("plan == 'gold'", {"plan": "gold"}, True),
    ("plan == \"gold plus\"", {"plan": "gold plus"}, True),
    ("plan != gold", {"plan": "silver"}, True),
    ("plan == gold", {"plan": 3}, False),
    ("plan > gold", {"plan": 3}, False),                                # incomparable types -> False
    ("verified == true", {"verified": True}, True),
    ("verified == true", {"verified": False}, False),
    ("verified == False", {"verified": False}, True),
    ("crm.segment == enterprise", {"crm": {"segment": "enterprise"}}, True),
    ("crm.segment == enterprise", {"crm": {"segment": "smb"}}, False),
    ("crm.segment == enterprise", {"crm": {}}, False),
    ("crm.segment == enterprise", {"crm": "enterprise"}, False),        # not a mapping
    ("crm.score.value >= 7", {"crm": {"score": {"value": "8"}}}, True),
])
def test_attribute_condition(test: str, attributes: dict, expected: bool) -> None:
    assert Contact(channel="webchat", attributes=attributes).satisfies(when(attribute=test)) is expected


def test_attribute_parse() -> None:
    parsed = AttributeTest.model_validate("  crm.lifetime_value>=1e4 ")
    assert (parsed.name, parsed.op, parsed.value) == ("crm.lifetime_value", ">=", 10000.0)
    assert AttributeTest.model_validate("a == 'x'").value == "x"
    assert AttributeTest.model_validate("a == TRUE").value is True


@pytest.mark.parametrize("bad", ["lifetime_value >>= 3", "lifetime_value", "a =< 3", "a ==", "== 3", "a >= =3"])
def test_attribute_parse_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        AttributeTest.model_validate(bad)


def test_all_keys_must_hold() -> None:
    cond = when(channel="email", tier="vip", email_domain="vip.example", attribute=["orders >= 2", "region == eu"])
    good = Contact(channel="email", tier="vip", email="a@vip.example", attributes={"orders": 3, "region": "eu"})
    assert good.satisfies(cond)
    assert not replace(good, channel="webchat").satisfies(cond)
    assert not replace(good, tier="standard").satisfies(cond)
    assert not replace(good, email="a@other.example").satisfies(cond)
    assert not replace(good, attributes={"orders": 1, "region": "eu"}).satisfies(cond)
    assert not replace(good, attributes={"orders": 3, "region": "us"}).satisfies(cond)
    assert not replace(good, attributes={"orders": 3}).satisfies(cond)


# -- tiers -----------------------------------------------------------------------------------------

TIERS = TiersConfig.model_validate({
    "default": "standard",
    "rules": [
        {"tier": "vip", "when": {"email_domain": "vip.example"}},
        {"tier": "gold", "when": {"attribute": "lifetime_value >= 1000"}},
        {"tier": "silver", "when": {"attribute": "lifetime_value >= 100"}},
    ],
})


def test_profile_tier_wins() -> None:
    contact = Contact(channel="email", email="a@vip.example")
    assert resolve_tier(TIERS, "bronze", contact) == ("bronze", "profile")


def test_first_matching_tier_rule() -> None:
    both = Contact(channel="email", email="a@vip.example", attributes={"lifetime_value": 5000})
    assert resolve_tier(TIERS, None, both) == ("vip", "tiers.rules[0]")
    gold = Contact(channel="email", email="a@x.example", attributes={"lifetime_value": "5000"})
    assert resolve_tier(TIERS, None, gold) == ("gold", "tiers.rules[1]")
    silver = Contact(channel="email", attributes={"lifetime_value": 500})
    assert resolve_tier(TIERS, "", silver) == ("silver", "tiers.rules[2]")  # empty profile tier


def test_default_tier() -> None:
    assert resolve_tier(TIERS, None, Contact(channel="webchat")) == ("standard", "tiers.default")
    assert resolve_tier(TiersConfig(), None, Contact(channel="webchat")) == ("standard", "tiers.default")


# -- rules -> queue ---------------------------------------------------------------------------------

ROUTING = RoutingConfig.model_validate({
    "rules": [
        {"name": "vip-first", "when": {"tier": "vip"}, "queue": "vip_desk"},
        {"when": {"channel": "ivr", "phone_prefix": "+49"}, "queue": "german_phone"},
        {"when": {"channel": "ivr"}, "steps": [{"queues": ["phone"], "timeout": 60},
                                               {"queues": ["phone", "general"], "priority_boost": 5}]},
        {"name": "also-vip", "when": {"tier": "vip"}, "queue": "never"},
    ],
    "default_queue": "general",
})


def test_first_matching_routing_rule_by_name() -> None:
    decision = choose_queue(ROUTING, Contact(channel="ivr", tier="vip", phone="+49 30"))
    assert (decision.queue, decision.rule) == ("vip_desk", "vip-first")
    assert [s.queues for s in decision.steps] == [["vip_desk"]]


def test_unnamed_rule_is_named_by_index() -> None:
    decision = choose_queue(ROUTING, Contact(channel="ivr", tier="standard", phone="+49 30"))
    assert (decision.queue, decision.rule) == ("german_phone", "routing.rules[1]")
    decision = choose_queue(ROUTING, Contact(channel="ivr", tier="standard", phone="+33 1"))
    assert (decision.queue, decision.rule) == ("phone", "routing.rules[2]")
    assert [s.queues for s in decision.steps] == [["phone"], ["phone", "general"]]


def test_default_queue() -> None:
    decision = choose_queue(ROUTING, Contact(channel="webchat", tier="standard"))
    assert (decision.queue, decision.rule) == ("general", "routing.default_queue")
    assert len(decision.steps) == 1
    empty = RoutingConfig(default_queue="only")
    assert choose_queue(empty, Contact(channel="webchat")).queue == "only"


def test_rule_without_condition_matches_everything() -> None:
    routing = RoutingConfig.model_validate({"rules": [{"queue": "all"}], "default_queue": "general"})
    assert choose_queue(routing, Contact(channel="webchat")).queue == "all"


# -- queue order ------------------------------------------------------------------------------------

def entry(cid: str, queue: str = "general", priority: int = 0, t: float = 0, **kw: object) -> WaitingEntry:
    return WaitingEntry(cid, queue, priority, at(t), **kw)  # type: ignore[arg-type]


def test_queue_order_priority_then_wait_then_id() -> None:
    entries = [
        entry("c-late-low", priority=0, t=1),
        entry("c-early-low", priority=0, t=0),
        entry("c-late-high", priority=10, t=5),
        entry("c-b", priority=5, t=2),
        entry("c-a", priority=5, t=2),   # same priority and time as c-b: id breaks the tie
    ]
    expected = ["c-late-high", "c-a", "c-b", "c-early-low", "c-late-low"]
    assert [e.conversation_id for e in queue_order(entries)] == expected
    assert [e.conversation_id for e in queue_order(reversed(entries))] == expected


def test_queue_order_returned_conversation_goes_first() -> None:
    entries = [entry("high", priority=10, t=0), entry("back", priority=0, t=9, head=True)]
    assert [e.conversation_id for e in queue_order(entries)] == ["back", "high"]


def test_queue_order_aging_lets_long_waiters_overtake() -> None:
    queues = {"general": QueueConfig(name="general", aging={"every": 60, "boost": 1, "max_boost": 20})}
    old_low = entry("old-low", priority=0, t=0)
    new_high = entry("new-high", priority=3, t=590)
    assert [e.conversation_id for e in queue_order([old_low, new_high], queues, at(600))] == ["old-low", "new-high"]
    assert [e.conversation_id for e in queue_order([old_low, new_high], queues, at(120))] == ["new-high", "old-low"]
    assert [e.conversation_id for e in queue_order([old_low, new_high])] == ["new-high", "old-low"]  # no clock


def test_position_in_queue_counts_only_its_own_queue() -> None:
    entries = [
        entry("g1", "general", 0, 0),
        entry("v1", "vip", 10, 1),
        entry("g2", "general", 10, 2),   # higher priority jumps ahead in general
        entry("g3", "general", 0, 3),
        entry("v2", "vip", 10, 4),
    ]
    expected = {"g2": 1, "g1": 2, "g3": 3, "v1": 1, "v2": 2}
    assert {e.conversation_id: position_in_queue(entries, e.conversation_id) for e in entries} == expected
    assert positions(entries) == expected
    assert position_in_queue(entries, "unknown") is None
    assert position_in_queue([], "g1") is None


# -- assignment -------------------------------------------------------------------------------------

def agent(aid: str, *, available: bool = True, capacity: int | dict[str, int] = 2,
          load: int | dict[str, int] = 0, queues: tuple[str, ...] = ("general",), idle: float = 0,
          skills: dict[str, int] | None = None) -> AgentView:
    loads = load if isinstance(load, dict) else ({"webchat": load} if load else {})
    return AgentView(aid, available, capacity, loads, frozenset(queues), at(idle), skills or {})


def picked(waiting: WaitingEntry, agents: list[AgentView], queues: Mapping[str, QueueConfig] | None = None,
           **kw: object) -> str | None:
    result = pick_agent(waiting, agents, queues or {}, **kw)  # type: ignore[arg-type]
    return result[0].id if result else None


def test_pick_agent_longest_idle() -> None:
    agents = [agent("a", idle=30), agent("b", idle=10), agent("c", idle=20)]
    assert picked(entry("c1"), agents) == "b"


def test_pick_agent_skips_unavailable_full_and_other_queues() -> None:
    agents = [
        agent("away", available=False, idle=0),
        agent("full", capacity=2, load=2, idle=1),
        agent("overfull", capacity=1, load=3, idle=2),
        agent("billing", queues=("billing",), idle=3),
        agent("ok", idle=99),
    ]
    assert picked(entry("c1"), agents) == "ok"
    assert picked(entry("c1", "vip"), agents) is None
    assert picked(entry("c1"), agents[:4]) is None
    assert picked(entry("c1"), []) is None


def test_pick_agent_returns_the_queue_it_takes_it_through() -> None:
    agents = [agent("a", queues=("overflow",))]
    result = pick_agent(entry("c1", "general", queues=("general", "overflow")), agents, {})
    assert result is not None and result[1] == "overflow"


def test_pick_agent_tie_breaks_by_load_then_id() -> None:
    assert picked(entry("c"), [agent("a", load=1, capacity=3), agent("b", load=0, capacity=3)]) == "b"
    assert picked(entry("c"), [agent("b"), agent("a")]) == "a"


def test_pick_agent_puts_just_offered_behind() -> None:
    agents = [agent("a", idle=0, capacity=5), agent("b", idle=50, capacity=5)]
    assert picked(entry("c"), agents, just_offered={"a": 1}) == "b"
    assert picked(entry("c"), agents, just_offered={"a": 1, "b": 1}) == "a"
    assert picked(entry("c"), agents, just_offered={"a": 2, "b": 1}) == "b"


def test_pick_agent_respects_skills_exclusions_and_reservations() -> None:
    queues = {"general": QueueConfig(name="general", skills={"spanish": 2})}
    agents = [agent("a", idle=0, skills={"spanish": 1}), agent("b", idle=5, skills={"spanish": 3}), agent("c", idle=9)]
    assert picked(entry("x"), agents, queues) == "b"
    # b declined or missed it: someone else able to take it gets it...
    also = [*agents, agent("d", idle=7, skills={"spanish": 2})]
    assert picked(entry("x", excluded=frozenset({"b"})), also, queues) == "d"
    # ... and when nobody else can, b is asked again rather than the customer forgotten.
    assert picked(entry("x", excluded=frozenset({"b"})), agents, queues) == "b"
    assert picked(entry("x", reserved_for="c"), agents, queues) == "c"   # a transfer to one agent
    assert picked(entry("x", reserved_for="c"), agents[:2], queues) is None


def test_pick_agent_per_channel_capacity() -> None:
    a = agent("a", capacity={"webchat": 1, "email": 5}, load={"webchat": 1})
    assert picked(entry("x", channel="webchat"), [a]) is None
    assert picked(entry("x", channel="email"), [a]) == "a"
    assert picked(entry("x", channel="telegram"), [a]) is None          # no capacity, no default
    d = agent("d", capacity={"default": 2}, load={"telegram": 1})
    assert picked(entry("x", channel="telegram"), [d]) == "d"


def test_pick_agent_strategies() -> None:
    def queues(strategy: str) -> dict[str, QueueConfig]:
        return {"general": QueueConfig(name="general", strategy=strategy)}  # type: ignore[arg-type]

    agents = [agent("a", idle=0, capacity=4, load=2), agent("b", idle=5, capacity=4, load=1), agent("c", idle=9, capacity=4)]
    assert picked(entry("x"), agents, queues("longest_idle")) == "a"
    assert picked(entry("x"), agents, queues("least_occupied")) == "c"
    assert picked(entry("x"), agents, queues("round_robin"), last_offered={"general": "a"}) == "b"
    assert picked(entry("x"), agents, queues("round_robin"), last_offered={"general": "c"}) == "a"
    assert picked(entry("x", preferred_agent="c"), agents, queues("sticky")) == "c"
    assert picked(entry("x", preferred_agent="gone"), agents, queues("sticky")) == "a"


def plan(waiting: list[WaitingEntry], agents: list[AgentView], queues: Mapping[str, QueueConfig] | None = None,
         **kw: object) -> list[Offer]:
    return plan_offers(waiting, agents, queues or {}, at(1000), **kw)  # type: ignore[arg-type]


def test_plan_offers_respects_capacity_within_one_pass() -> None:
    agents = [agent("a", capacity=2, load=1, idle=0), agent("b", capacity=1, idle=5)]
    waiting = [entry(f"c{i}", t=i) for i in range(5)]
    assert plan(waiting, agents) == [Offer("c0", "general", "a"), Offer("c1", "general", "b")]


def test_plan_offers_respects_per_channel_capacity_within_one_pass() -> None:
    agents = [agent("a", capacity={"webchat": 1, "email": 2})]
    waiting = [entry(f"w{i}", t=i, channel="webchat") for i in range(3)] + \
              [entry(f"e{i}", t=i, channel="email") for i in range(3)]
    assert sorted(o.conversation_id for o in plan(waiting, agents)) == ["e0", "e1", "w0"]


def test_plan_offers_skips_already_offered() -> None:
    agents = [agent("a", capacity=3)]
    waiting = [entry("c0", t=0), entry("c1", t=1), entry("c2", t=2)]
    offers = plan(waiting, agents, offered=frozenset({"c0"}))
    assert [o.conversation_id for o in offers] == ["c1", "c2"]


def test_plan_offers_spreads_to_longest_idle_first() -> None:
    agents = [agent("late", capacity=3, idle=20), agent("early", capacity=3, idle=0), agent("mid", capacity=3, idle=10)]
    offers = plan([entry(f"c{i}", t=i) for i in range(4)], agents)
    assert [o.agent_id for o in offers] == ["early", "mid", "late", "early"]


def test_plan_offers_round_robin_continues_across_one_pass() -> None:
    queues = {"general": QueueConfig(name="general", strategy="round_robin")}
    agents = [agent("a", capacity=3), agent("b", capacity=3), agent("c", capacity=3)]
    offers = plan([entry(f"c{i}", t=i) for i in range(4)], agents, queues, last_offered={"general": "b"})
    assert [o.agent_id for o in offers] == ["c", "a", "b", "c"]


def test_plan_offers_best_first_across_queues() -> None:
    # One seat that serves both queues: the higher-priority conversation gets it, whatever the queue.
    agents = [agent("a", capacity=1, queues=("general", "vip"))]
    waiting = [entry("g", "general", 0, 0), entry("v", "vip", 10, 5)]
    assert plan(waiting, agents) == [Offer("v", "vip", "a")]


def test_plan_offers_queue_without_agents_does_not_block_others() -> None:
    agents = [agent("a", capacity=1, queues=("general",))]
    waiting = [entry("x", "nobody", 100, 0), entry("g", "general", 0, 5)]
    assert plan(waiting, agents) == [Offer("g", "general", "a")]


def test_plan_offers_transfer_to_an_agent_of_another_queue() -> None:
    # pipeline.transfer(to_agent=...) keeps the conversation's queue; the receiver need not serve it.
    specialist = agent("z", queues=("billing",))
    waiting = [entry("c1", "general", reserved_for="z")]
    assert plan(waiting, [specialist]) == [Offer("c1", "general", "z")]
    assert plan(waiting, [specialist, agent("a", queues=("general",))]) == [Offer("c1", "general", "z")]


def test_plan_offers_nothing_to_do() -> None:
    assert plan([], [agent("a")]) == []
    assert plan([entry("c")], []) == []
    assert plan([entry("c")], [agent("a", available=False)]) == []


# -- plan_offers properties -------------------------------------------------------------------------

QUEUE_NAMES = ["general", "vip", "billing", "orphan"]   # "orphan": no agent serves it
CHANNELS = ["webchat", "email", "telegram"]
AGENT_POOL = list("abcdefgh")


@st.composite
def queue_configs(draw: st.DrawFn) -> dict[str, QueueConfig]:
    out = {}
    for name in QUEUE_NAMES:
        if draw(st.booleans()):
            out[name] = QueueConfig(
                name=name,
                strategy=draw(st.sampled_from(["longest_idle", "least_occupied", "round_robin", "sticky"])),
                skills=draw(st.dictionaries(st.sampled_from(["es", "de"]), st.integers(1, 3), max_size=1)),
                aging={"every": 60, "boost": draw(st.integers(0, 2)), "max_boost": 5},
            )
    return out


@st.composite
def agent_views(draw: st.DrawFn) -> list[AgentView]:
    out = []
    for aid in draw(st.lists(st.sampled_from(AGENT_POOL), unique=True, max_size=6)):
        capacity: int | dict[str, int]
        if draw(st.booleans()):
            capacity = draw(st.integers(1, 4))
        else:
            capacity = draw(st.dictionaries(st.sampled_from([*CHANNELS, "default"]), st.integers(0, 3), min_size=1))
        # Load may already be over capacity (capacity lowered by a config reload).
        load = draw(st.dictionaries(st.sampled_from(CHANNELS), st.integers(0, 3), max_size=3))
        out.append(AgentView(
            id=aid,
            available=draw(st.booleans()),
            capacity=capacity,
            load=load,
            queues=frozenset(draw(st.sets(st.sampled_from(QUEUE_NAMES[:3]), max_size=3))),
            idle_since=at(draw(st.integers(0, 5))),     # few values: plenty of ties
            skills=draw(st.dictionaries(st.sampled_from(["es", "de"]), st.integers(1, 3), max_size=2)),
        ))
    return out


@st.composite
def waiting_entries(draw: st.DrawFn) -> list[WaitingEntry]:
    maybe_agent = st.one_of(st.none(), st.sampled_from(AGENT_POOL))
    out = []
    for i in draw(st.lists(st.integers(0, 40), unique=True, max_size=15)):
        home = draw(st.sampled_from(QUEUE_NAMES))
        out.append(WaitingEntry(
            f"c{i}", home, draw(st.integers(0, 3)), at(draw(st.integers(0, 600))),
            queues=draw(st.one_of(st.just(()), st.lists(st.sampled_from(QUEUE_NAMES), min_size=1, max_size=3,
                                                         unique=True).map(lambda qs, h=home: (h, *[q for q in qs if q != h])))),
            channel=draw(st.sampled_from(CHANNELS)),
            excluded=frozenset(draw(st.sets(st.sampled_from(AGENT_POOL), max_size=2))),
            preferred_agent=draw(maybe_agent),
            head=draw(st.integers(0, 5)) == 0,
            reserved_for=draw(maybe_agent) if draw(st.integers(0, 3)) == 0 else None,   # a transfer
        ))
    return out


def free_on(agent: AgentView, channel: str, extra: Counter[str]) -> int:
    """Free seats for ``channel`` once ``extra`` (channel -> offers) is added to the agent's load."""
    load = Counter(agent.load) + extra
    if isinstance(agent.capacity, int):
        return agent.capacity - sum(load.values())
    return agent.capacity.get(channel, agent.capacity.get("default", 0)) - load[channel]


def may_take(agent: AgentView, e: WaitingEntry, queue: str, queues: Mapping[str, QueueConfig]) -> bool:
    """Written from the docs, independent of routing.assignment.serves. Exclusion (a decline or
    a missed offer) is checked by the caller: it only holds while someone else can take it."""
    if not agent.available:
        return False
    if e.reserved_for is not None:
        return agent.id == e.reserved_for and queue == e.queue
    config = queues.get(queue)
    needed = config.skills if config else {}
    return (queue in (e.queues or (e.queue,)) and queue in agent.queues
            and all(agent.skills.get(s, 0) >= level for s, level in needed.items()))


@settings(max_examples=250, deadline=None)
@given(queues=queue_configs(), agents=agent_views(), waiting=waiting_entries(), data=st.data())
def test_plan_offers_properties(queues: dict[str, QueueConfig], agents: list[AgentView],
                                waiting: list[WaitingEntry], data: st.DataObject) -> None:
    ids = [e.conversation_id for e in waiting]
    offered = frozenset(data.draw(st.sets(st.sampled_from(ids)) if ids else st.just(set())))
    last_offered = data.draw(st.dictionaries(st.sampled_from(QUEUE_NAMES), st.sampled_from(AGENT_POOL)))
    offers = plan_offers(waiting, agents, queues, at(1000), offered=offered, last_offered=last_offered)
    by_agent = {a.id: a for a in agents}
    by_conversation = {e.conversation_id: e for e in waiting}

    # Each conversation at most once, and never one that already has an offer.
    per_conversation = Counter(o.conversation_id for o in offers)
    assert all(n == 1 for n in per_conversation.values())
    assert not offered & set(per_conversation)

    def could_take(a: AgentView, e: WaitingEntry, made: dict[str, Counter[str]]) -> bool:
        targets = dict.fromkeys((*e.targets, e.queue))
        return free_on(a, e.channel, made[a.id]) > 0 and any(may_take(a, e, q, queues) for q in targets)

    # Only to agents who may take it, through a queue they may take it through.
    given_to: dict[str, Counter[str]] = {a.id: Counter() for a in agents}
    for offer in offers:
        a, e = by_agent[offer.agent_id], by_conversation[offer.conversation_id]
        assert may_take(a, e, offer.queue, queues), (offer, a, e)
        # ... with a free seat on its channel, counting the offers made before it in this plan.
        assert free_on(a, e.channel, given_to[a.id]) > 0, (offer, a, given_to[a.id])
        # ... and not to one who declined or missed it while someone else could take it.
        if a.id in e.excluded:
            assert not any(could_take(b, e, given_to) for b in agents if b.id not in e.excluded), (offer, e)
        given_to[a.id][e.channel] += 1

    # Never above capacity: every channel of every agent, and nothing for one already over.
    for a in agents:
        for channel in CHANNELS:
            if given_to[a.id][channel]:
                assert free_on(a, channel, given_to[a.id]) >= 0

    # Maximal: a conversation left without an offer had nobody left who could take it.
    for e in waiting:
        if e.conversation_id in offered or e.conversation_id in per_conversation:
            continue
        for a in agents:
            assert not could_take(a, e, given_to), (e, a, given_to[a.id])


@settings(max_examples=150, deadline=None)
@given(agents=agent_views(), waiting=waiting_entries())
def test_plan_offers_serves_each_simple_queue_in_order(agents: list[AgentView], waiting: list[WaitingEntry]) -> None:
    """Entries that differ only in their place in line: the offers go to the head of the line."""
    simple = [replace(e, queues=(), channel="webchat", excluded=frozenset(), reserved_for=None, preferred_agent=None)
              for e in waiting]
    offers = plan_offers(simple, agents, {}, at(1000))
    got = {o.conversation_id for o in offers}
    for queue in QUEUE_NAMES:
        line = [e.conversation_id in got for e in queue_order(simple) if e.queue == queue]
        assert line == sorted(line, reverse=True), (queue, line)
    shuffled = plan_offers(list(reversed(simple)), agents, {}, at(1000))
    assert sorted(shuffled, key=lambda o: o.conversation_id) == sorted(offers, key=lambda o: o.conversation_id)


# -- Dispatcher: a state machine of what the pipeline does to it --------------------------------------

CONVERSATIONS = [f"conv{i}" for i in range(8)]
AGENT_IDS = ["ann", "ben", "cat"]
DISPATCH_QUEUES = [QueueConfig(name="general"), QueueConfig(name="vip", strategy="round_robin")]


class DispatcherMachine(RuleBasedStateMachine):
    """Drives the Dispatcher the way gateway.pipeline does, including stale plans (the pipeline
    awaits the store between planning and offering, so a planned offer may no longer be possible
    and is checked with can_offer first)."""

    @initialize(
        capacities=st.lists(st.one_of(st.integers(1, 3),
                                      st.fixed_dictionaries({"webchat": st.integers(0, 2), "email": st.integers(1, 2)})),
                            min_size=3, max_size=3),
        queue_sets=st.lists(st.sets(st.sampled_from(["general", "vip"]), min_size=1), min_size=3, max_size=3),
        online=st.lists(st.booleans(), min_size=3, max_size=3),
    )
    def setup(self, capacities: list[int | dict[str, int]], queue_sets: list[set[str]], online: list[bool]) -> None:
        self.dispatcher = Dispatcher([
            AgentConfig(id=aid, name=aid.title(), token=f"token-of-{aid}", capacity=cap, queues=sorted(qs))
            for aid, cap, qs in zip(AGENT_IDS, capacities, queue_sets)
        ], DISPATCH_QUEUES, "general")
        self.now = T0
        for aid, available in zip(AGENT_IDS, online):
            if available:
                self.dispatcher.set_connected(aid, True)
                self.dispatcher.set_presence(aid, "available", self.now)
        self.stale: list[Offer] = []
        # The model: what each conversation is as far as routing knows.
        self.waiting: set[str] = set()
        self.assigned: dict[str, str] = {}

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def withdraw(self, cid: str, exclude: bool = False) -> str | None:
        """As pipeline.withdraw_offer: a transfer to one agent who did not take it goes to the queue."""
        agent_id = self.dispatcher.withdraw_offer(cid, self.tick(), exclude=exclude)
        entry = self.dispatcher.waiting.get(cid)
        if agent_id is not None and entry is not None and entry.reserved_for == agent_id:
            self.dispatcher.waiting[cid] = replace(entry, reserved_for=None)
        return agent_id

    def withdraw_all(self, ended: list[str], agent_id: str) -> None:
        for cid in ended:
            assert self.withdraw(cid) == agent_id

    # -- operations -----------------------------------------------------------------------------
    @rule(cid=st.sampled_from(CONVERSATIONS), queue=st.sampled_from(["general", "vip"]),
          priority=st.integers(0, 2), channel=st.sampled_from(["webchat", "email"]))
    def enqueue(self, cid: str, queue: str, priority: int, channel: str) -> None:
        if cid in self.assigned or cid in self.waiting:
            return  # the pipeline routes a conversation once, from the bot state
        route_steps = (Step(queues=[queue]), Step(queues=["general", "vip"], priority_boost=3))
        self.dispatcher.enqueue(WaitingEntry(cid, queue, priority, self.tick(), queues=(queue,), channel=channel),
                                Route("test", route_steps, 0, priority))
        self.waiting.add(cid)
        assert self.dispatcher.position(cid, self.now) is not None

    @rule()
    def dispatch(self) -> None:
        """A fresh plan applied at once: every offer in it must be possible, and then nothing
        is left to offer (the plan was maximal)."""
        now = self.tick()
        d = self.dispatcher
        offers = d.plan(now)
        # The dispatcher's incrementally kept index plans as one built afresh from its entries.
        views = [agent.view(now) for agent in d.agents.values()]
        assert offers == plan_offers(list(d.waiting.values()), views, d.queues, now,
                                     offered=frozenset(d.offers), last_offered=d.last_offered)
        for offer in offers:
            assert d.can_offer(offer, now), offer
            d.offered(offer, now)
        assert d.plan(now) == []
        for cid, e in d.waiting.items():
            if cid not in d.offers:
                for agent in d.agents.values():
                    view = agent.view(now)
                    assert not (free_on(view, e.channel, Counter()) > 0 and
                                any(may_take(view, e, q, d.queues) for q in dict.fromkeys((*e.targets, e.queue)))), \
                        (e, view)

    @rule()
    def plan_for_later(self) -> None:
        self.stale.extend(self.dispatcher.plan(self.tick()))

    @precondition(lambda self: self.stale)
    @rule(index=st.integers(0, 100))
    def offer_stale(self, index: int) -> None:
        offer = self.stale.pop(index % len(self.stale))
        if self.dispatcher.can_offer(offer, self.tick()):
            self.dispatcher.offered(offer, self.now)

    @precondition(lambda self: self.dispatcher.offers)
    @rule(index=st.integers(0, 100))
    def accept(self, index: int) -> None:
        cid = sorted(self.dispatcher.offers)[index % len(self.dispatcher.offers)]
        agent_id = self.dispatcher.offer_of(cid)
        assert agent_id is not None
        entry = self.dispatcher.accepted(cid, agent_id)
        assert entry is not None and entry.conversation_id == cid
        self.waiting.discard(cid)
        self.assigned[cid] = agent_id

    @precondition(lambda self: self.dispatcher.offers)
    @rule(index=st.integers(0, 100), exclude=st.booleans())
    def decline_or_time_out(self, index: int, exclude: bool) -> None:
        cid = sorted(self.dispatcher.offers)[index % len(self.dispatcher.offers)]
        expected = self.dispatcher.offer_of(cid)
        assert self.withdraw(cid, exclude=exclude) == expected
        assert self.dispatcher.is_waiting(cid)
        if exclude:
            assert expected in self.dispatcher.waiting[cid].excluded

    @precondition(lambda self: self.assigned)
    @rule(index=st.integers(0, 100), to_agent=st.one_of(st.none(), st.sampled_from(AGENT_IDS)),
          queue=st.sampled_from(["general", "vip"]))
    def transfer(self, index: int, to_agent: str | None, queue: str) -> None:
        """As pipeline.transfer: back to a queue, or to one agent (who need not serve the queue)."""
        cid = sorted(self.assigned)[index % len(self.assigned)]
        from_agent = self.dispatcher.agents[self.assigned[cid]]
        if to_agent == from_agent.id or (to_agent and not self.dispatcher.agents[to_agent].can_take(self.now)):
            return
        channel = from_agent.assigned[cid]
        now = self.tick()
        self.dispatcher.forget(cid, now)
        self.dispatcher.enqueue(
            WaitingEntry(cid, queue, 0, now, channel=channel, head=True, reserved_for=to_agent),
            Route("transfer", (Step(queues=[queue]),), 0, 0))
        del self.assigned[cid]
        self.waiting.add(cid)

    @rule(cid=st.sampled_from(CONVERSATIONS))
    def withdraw_nothing(self, cid: str) -> None:
        if self.dispatcher.offer_of(cid) is None:
            assert self.dispatcher.withdraw_offer(cid, self.tick()) is None

    @rule(cid=st.sampled_from(CONVERSATIONS))
    def advance_step(self, cid: str) -> None:
        self.dispatcher.advance_step(cid)

    @rule(cid=st.sampled_from(CONVERSATIONS))
    def forget(self, cid: str) -> None:
        self.dispatcher.forget(cid, self.tick())
        self.waiting.discard(cid)
        self.assigned.pop(cid, None)
        assert self.dispatcher.offer_of(cid) is None
        assert not self.dispatcher.is_waiting(cid)

    @rule(agent_id=st.sampled_from(AGENT_IDS), status=st.sampled_from(["available", "away", "offline"]))
    def set_presence(self, agent_id: str, status: str) -> None:
        ended = self.dispatcher.set_presence(agent_id, status, self.tick())  # type: ignore[arg-type]
        if status == "available" and self.dispatcher.agents[agent_id].connected:
            assert ended == []   # still there: its offers stand
        else:
            assert sorted(ended) == sorted(self.dispatcher.offers_for(agent_id))
        self.withdraw_all(ended, agent_id)

    @rule(agent_id=st.sampled_from(AGENT_IDS), connected=st.booleans())
    def set_connected(self, agent_id: str, connected: bool) -> None:
        self.withdraw_all(self.dispatcher.set_connected(agent_id, connected), agent_id)

    @rule(agent_id=st.sampled_from(AGENT_IDS), seconds=st.sampled_from([0, 1, 5]))
    def wrap_up(self, agent_id: str, seconds: int) -> None:
        self.dispatcher.start_wrap_up(agent_id, self.now, seconds)

    # -- invariants -----------------------------------------------------------------------------
    @invariant()
    def never_above_capacity(self) -> None:
        for agent in self.dispatcher.agents.values():
            capacity = agent.config.capacity
            channels = Counter([*agent.assigned.values(), *agent.offers.values()])
            if isinstance(capacity, int):
                assert agent.load <= capacity, (agent.id, agent.assigned, agent.offers)
            else:
                for channel, n in channels.items():
                    assert n <= agent.config.capacity_for(channel), (agent.id, channel, agent.assigned, agent.offers)

    @invariant()
    def one_offer_per_conversation(self) -> None:
        holders = Counter(cid for agent in self.dispatcher.agents.values() for cid in agent.offers)
        assert all(n == 1 for n in holders.values()), holders
        assert set(holders) == set(self.dispatcher.offers)
        for cid, agent_id in self.dispatcher.offers.items():
            assert cid in self.dispatcher.agents[agent_id].offers

    @invariant()
    def offers_only_to_present_agents(self) -> None:
        for agent in self.dispatcher.agents.values():
            if agent.status != "available" or not agent.connected:
                assert not agent.offers, agent

    @invariant()
    def waiting_conversations_wait_or_are_offered_once(self) -> None:
        assert set(self.dispatcher.waiting) == self.waiting
        positions = self.dispatcher.positions(self.now)
        for cid in self.waiting:
            assert self.dispatcher.is_waiting(cid) != (cid in self.dispatcher.offers)
            assert cid in positions
        assert set(self.dispatcher.offers) <= self.waiting

    @invariant()
    def assignments_match(self) -> None:
        count = Counter(cid for agent in self.dispatcher.agents.values() for cid in agent.assigned)
        assert all(n == 1 for n in count.values())
        actual = {cid: agent.id for agent in self.dispatcher.agents.values() for cid in agent.assigned}
        assert actual == self.assigned
        assert not set(actual) & set(self.dispatcher.waiting)


DispatcherMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestDispatcher = DispatcherMachine.TestCase


def test_dispatcher_walkthrough() -> None:
    d = Dispatcher([AgentConfig(id="ann", name="Ann", token="ann-token-1", capacity=1, queues=["general"])],
                   [QueueConfig(name="general")], "general")
    assert d.plan(at(0)) == []
    d.enqueue(entry("c1", t=1))
    d.enqueue(entry("c2", t=2))
    assert (d.position("c1", at(2)), d.position("c2", at(2))) == (1, 2)
    assert d.plan(at(3)) == []                       # ann is offline
    d.set_connected("ann", True)
    assert d.plan(at(3)) == []                       # connected, but not available yet
    d.set_presence("ann", "available", at(4))
    offers = d.plan(at(5))
    assert offers == [Offer("c1", "general", "ann")]
    d.offered(offers[0], at(5))
    assert d.plan(at(6)) == []                       # capacity 1 is used by the offer
    assert d.set_presence("ann", "away", at(7)) == ["c1"]
    assert d.withdraw_offer("c1", at(7)) == "ann"
    assert d.is_waiting("c1") and d.position("c1", at(7)) == 1
    d.set_presence("ann", "available", at(8))
    d.offered(d.plan(at(9))[0], at(9))
    d.accepted("c1", "ann")
    assert not d.is_waiting("c1") and d.position("c1", at(9)) is None
    assert d.agents["ann"].load == 1
    assert d.plan(at(10)) == []
    d.forget("c1", at(11))
    assert d.agents["ann"].load == 0 and d.agents["ann"].idle_since == at(11)
    d.start_wrap_up("ann", at(11), 30)
    assert d.plan(at(12)) == []                      # wrapping up
    assert d.plan(at(41)) == [Offer("c2", "general", "ann")]
    d.offered(Offer("c2", "general", "ann"), at(41))
    assert d.withdraw_offer("c2", at(42), exclude=True) == "ann"
    assert d.waiting["c2"].excluded == {"ann"}
    assert d.plan(at(43)) == [Offer("c2", "general", "ann")]   # declined, but nobody else can take it


def test_dispatcher_transfer_to_an_agent_of_another_queue() -> None:
    """pipeline.transfer(to_agent=...) re-enqueues in the conversation's queue, reserved for the
    receiver, who need not serve that queue; it must be offered even when nobody serving the
    queue has room."""
    d = Dispatcher([AgentConfig(id="ann", name="Ann", token="ann-token-1", capacity=1, queues=["general"]),
                    AgentConfig(id="ben", name="Ben", token="ben-token-1", capacity=1, queues=["billing"])],
                   [QueueConfig(name="general"), QueueConfig(name="billing")], "general")
    for aid in ("ann", "ben"):
        d.set_connected(aid, True)
        d.set_presence(aid, "available", at(0))
    d.enqueue(entry("c1", t=1))
    [offer] = d.plan(at(2))
    d.offered(offer, at(2))
    d.accepted("c1", "ann")
    d.forget("c1", at(3))                        # ann transfers c1 to ben ...
    d.enqueue(entry("c1", t=3, head=True, reserved_for="ben"))
    d.set_presence("ann", "away", at(4))         # ... and takes a break
    assert d.plan(at(5)) == [Offer("c1", "general", "ben")]


@pytest.mark.parametrize("leaves", ["away", "offline", "disconnected"])
def test_a_transfer_reserved_for_an_agent_who_leaves_goes_back_to_its_queue(leaves: str) -> None:
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    agents = [AgentConfig(id=i, name=i, token=f"token-{i}-xxxx", queues=["general"]) for i in ("a", "b")]
    dispatcher = Dispatcher(agents, [QueueConfig(name="general")], "general")
    for agent in ("a", "b"):
        dispatcher.set_connected(agent, True)
        dispatcher.set_presence(agent, "available", now)
    dispatcher.enqueue(WaitingEntry("c1", "general", 0, now, reserved_for="a", head=True),
                       Route("transfer", (Step(queues=["general"]),), 0, 0))
    if leaves == "disconnected":
        dispatcher.set_connected("a", False)
    else:
        dispatcher.set_presence("a", leaves, now)  # type: ignore[arg-type]
    assert dispatcher.waiting["c1"].reserved_for is None
    assert [(o.conversation_id, o.agent_id) for o in dispatcher.plan(now)] == [("c1", "b")]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sets(st.sampled_from("abc")), st.sampled_from([0, 5, 10]),
                          st.integers(0, 300), st.booleans()), max_size=40))
def test_position_of_one_equals_its_place_in_the_full_order(rows: list) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    queues = [QueueConfig.model_validate({"name": n, "aging": {"every": 10, "boost": 1}}) for n in "abc"]
    dispatcher = Dispatcher([], queues, "a")
    for i, (home, extra, priority, age, head) in enumerate(rows):
        targets = (home, *sorted(extra - {home}))
        dispatcher.enqueue(WaitingEntry(f"c{i}", home, priority, now - timedelta(seconds=age), queues=targets, head=head))
    everyone = dispatcher.positions(now)
    assert {cid: dispatcher.position(cid, now) for cid in everyone} == everyone

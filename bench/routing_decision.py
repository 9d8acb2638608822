"""Micro-benchmark of one routing decision (issue 3): 1,000 routing rules, 200 agents,
10,000 waiting conversations. Pure routing core, no server.

Two decisions are timed, each many times:

- arrival: a new contact -> tier -> the first matching of 1,000 rules (the match is near the
  end, the worst realistic case) -> its steps;
- agent freed: one agent gets a slot back -> ``plan_offers`` over 10,000 waiting conversations
  and 200 agents (199 of them full) -> the offer to make.

The baseline, measured in the same run, is a bare Python loop of the same length doing nothing
but comparing (the ceiling of any pure-Python decision here). Run:
``.venv/bin/python -m bench.routing_decision``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from routing import AgentView, Contact, WaitingEntry, choose_queue, plan_offers, resolve_tier
from routing.config import QueueConfig, RoutingConfig, TiersConfig
from routing.queues import WaitingIndex


def build(rules: int, agents: int, waiting: int, seed: int = 7):
    rng = random.Random(seed)
    queues = {f"q{i}": QueueConfig.model_validate({
        "name": f"q{i}", "priority": {"vip": 10, "standard": 0},
        "skills": {"english": 1} if i % 2 else {},
        "aging": {"every": 30, "boost": 1, "max_boost": 10}}) for i in range(20)}
    routing = RoutingConfig.model_validate({
        "rules": [{"name": f"r{i}", "when": {"channel": "webchat", "attribute": [f"segment == 's{i}'"],
                                              "tier": ["vip", "standard"]}, "queue": f"q{i % 20}"}
                  for i in range(rules)],
        "default_queue": "q0"})
    tiers = TiersConfig.model_validate({"default": "standard",
                                        "rules": [{"tier": "vip", "when": {"email_domain": ["vip.example"]}}]})
    now = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
    views = [AgentView(f"a{i:03d}", True, 3, {"webchat": 3}, frozenset(rng.sample(sorted(queues), 4)),
                       now - timedelta(seconds=rng.randint(0, 3600)), {"english": 3}) for i in range(agents)]
    # One agent has room again: the decision is who gets it.
    views[agents // 2] = AgentView(views[agents // 2].id, True, 3, {"webchat": 2}, views[agents // 2].queues,
                                   views[agents // 2].idle_since, {"english": 3})
    index = WaitingIndex(WaitingEntry(f"c{i:05d}", f"q{i % 20}", rng.choice([0, 0, 0, 10]),
                                      now - timedelta(seconds=rng.randint(0, 1800)), channel="webchat")
                         for i in range(waiting))
    contact = Contact(channel="webchat", email="mei@example.com", attributes={"segment": f"s{rules - 3}"})
    return queues, routing, tiers, views, index, contact, now


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_us": round(pick(0.5), 1), "p99_us": round(pick(0.99), 1), "mean_us": round(statistics.fmean(ordered), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    queues, routing, tiers, views, index, contact, now = build(args.rules, args.agents, args.waiting)

    def arrival() -> object:
        tier, _ = resolve_tier(tiers, None, contact)
        return choose_queue(routing, Contact(channel=contact.channel, tier=tier, email=contact.email,
                                             attributes=contact.attributes))

    def agent_freed() -> object:
        return plan_offers(index, views, queues, now)

    offers = agent_freed()
    assert len(offers) == 1 and offers[0].agent_id == views[args.agents // 2].id, offers
    assert arrival().rule == f"r{args.rules - 3}"

    def bare_loop() -> object:  # the same number of iterations as the rule scan, doing nothing
        hit = None
        for i in range(args.rules):
            if i == args.rules - 3:
                hit = i
        return hit

    results = {
        "setup": {"rules": args.rules, "agents": args.agents, "waiting": args.waiting, "repeat": args.repeat},
        "arrival": summary(timed(arrival, args.repeat)),
        "agent_freed": summary(timed(agent_freed, args.repeat)),
        "baseline_bare_loop": summary(timed(bare_loop, args.repeat)),
    }
    results["arrival_vs_baseline_p50"] = round(results["arrival"]["p50_us"] / max(results["baseline_bare_loop"]["p50_us"], 0.1), 1)
    results["target"] = "p99 under 1000 us per decision"
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"routing decision with {args.rules} rules, {args.agents} agents, {args.waiting} waiting ({args.repeat} runs each)")
        for name in ("arrival", "agent_freed", "baseline_bare_loop"):
            r = results[name]
            print(f"  {name:20s} p50 {r['p50_us']:8.1f} us   p99 {r['p99_us']:8.1f} us")
        print(f"  arrival / bare loop (p50): {results['arrival_vs_baseline_p50']}x; target: {results['target']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

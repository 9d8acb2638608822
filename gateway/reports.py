"""Figures about queues and agents, computed on demand from the pipeline's live state: the
JSON of ``GET /api/queues`` and the Prometheus metrics of ``GET /metrics`` read the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .limits import ENDPOINTS, LIMIT_NAMES, Limits
from .pipeline import Pipeline


def queue_report(pipeline: Pipeline, now: datetime) -> list[dict[str, Any]]:
    dispatcher = pipeline.dispatcher
    waiting_by_queue: dict[str, list[float]] = {}
    for entry in dispatcher.waiting.values():
        waiting_by_queue.setdefault(entry.queue, []).append((now - entry.enqueued_at).total_seconds())
    offered: dict[str, int] = {}
    for cid in dispatcher.offers:
        if cid in dispatcher.waiting:
            queue_name = dispatcher.waiting[cid].queue
            offered[queue_name] = offered.get(queue_name, 0) + 1
    report = []
    for name, queue in dispatcher.queues.items():
        waits = waiting_by_queue.get(name, [])
        level = pipeline.stats.snapshot(name, now, queue.service_level.answer_within, queue.service_level.percent)
        agents = [a for a in dispatcher.agents.values() if name in a.config.queues]
        report.append({
            "queue": name,
            "waiting": len(waits),
            "offered": offered.get(name, 0),
            "longest_wait": round(max(waits), 3) if waits else 0.0,
            "answered": level.answered,
            "abandoned": level.abandoned,
            "answered_within_target": level.answered_within_target,
            "service_level": None if level.service_level is None else round(level.service_level, 2),
            "service_level_target": {"percent": queue.service_level.percent,
                                     "answer_within": queue.service_level.answer_within,
                                     "window": queue.service_level.window},
            "average_wait": _round(level.average_wait),
            "average_handle": _round(level.average_handle),
            "agents": {status: sum(1 for a in agents if agent_status(a) == status)
                       for status in ("available", "busy", "away", "offline")},
            # Answers to the satisfaction question since this process started (gateway/desk/satisfaction.py).
            "satisfaction": pipeline.satisfaction.figures(name),
        })
    return report


def agent_report(pipeline: Pipeline, now: datetime) -> list[dict[str, Any]]:
    return [{"id": a.id, "name": a.name, "status": a.status, "connected": a.connected,
             "assigned": sorted(a.assigned), "offers": sorted(a.offers),
             "wrap_up_until": a.wrap_up_until.isoformat() if a.wrap_up_until and a.wrap_up_until > now else None}
            for a in pipeline.dispatcher.agents.values()]


def agent_status(agent: Any) -> str:
    """What a supervisor sees of an agent: available (free to take more), busy (connected and
    available, with conversations or offers), away, or offline (also while disconnected)."""
    if agent.status == "available" and agent.connected:
        return "busy" if agent.load else "available"
    return "offline" if agent.status == "offline" or not agent.connected else agent.status


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class GatewayCollector(Collector):
    """Prometheus collector over the live state (no counters kept twice)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        now = self.pipeline.clock()
        report = queue_report(self.pipeline, now)
        families = {
            "waiting": GaugeMetricFamily("contactgate_queue_waiting", "Conversations waiting in the queue", labels=["queue"]),
            "longest_wait": GaugeMetricFamily("contactgate_queue_longest_wait_seconds", "Longest current wait", labels=["queue"]),
            "answered": GaugeMetricFamily("contactgate_queue_answered", "Conversations answered in the service-level window", labels=["queue"]),
            "abandoned": GaugeMetricFamily("contactgate_queue_abandoned", "Conversations abandoned in the service-level window", labels=["queue"]),
            "service_level": GaugeMetricFamily("contactgate_queue_service_level_percent", "Percent answered within the target (window)", labels=["queue"]),
            "average_handle": GaugeMetricFamily("contactgate_queue_average_handle_seconds", "Average handle time (window)", labels=["queue"]),
        }
        rated = GaugeMetricFamily("contactgate_queue_satisfaction_answers",
                                  "Answers to the satisfaction question since the start", labels=["queue"])
        rating = GaugeMetricFamily("contactgate_queue_satisfaction_average",
                                   "Average satisfaction score (1-5) since the start", labels=["queue"])
        agents = GaugeMetricFamily("contactgate_queue_agents", "Agents serving the queue by status", labels=["queue", "status"])
        for row in report:
            for key, family in families.items():
                if row[key] is not None:
                    family.add_metric([row["queue"]], row[key])
            for status, count in row["agents"].items():
                agents.add_metric([row["queue"], status], count)
            rated.add_metric([row["queue"]], row["satisfaction"]["answers"])
            if row["satisfaction"]["average"] is not None:
                rating.add_metric([row["queue"]], row["satisfaction"]["average"])
        yield from families.values()
        yield from (agents, rated, rating)
        deliveries = CounterMetricFamily("contactgate_outbox_deliveries",
                                         "Outbound messages by outcome in this process since its start (sent, skipped, deferred, "
                                         "retried, failed)", labels=["channel", "outcome"])
        for channel, worker in self.pipeline.outboxes.items():
            for outcome in ("sent", "skipped", "deferred", "retried", "failed"):
                deliveries.add_metric([channel, outcome], getattr(worker, outcome))
        yield deliveries


class LimitsCollector(Collector):
    """Refusals by the ``limits:`` config and failed authentications, since the start."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        refused = CounterMetricFamily("contactgate_rate_limited", "Frames or connections refused by a rate limit",
                                      labels=["limit"])
        for name in LIMIT_NAMES:
            refused.add_metric([name], self.limits.refused[name])
        failures = CounterMetricFamily("contactgate_auth_failures", "Wrong agent or admin tokens", labels=["endpoint"])
        lockouts = CounterMetricFamily("contactgate_auth_lockouts", "Addresses locked out after failed authentications",
                                       labels=["endpoint"])
        locked = GaugeMetricFamily("contactgate_auth_locked_out_addresses", "Addresses locked out now",
                                   labels=["endpoint"])
        for endpoint in ENDPOINTS:
            failures.add_metric([endpoint], self.limits.auth_failures[endpoint])
            lockouts.add_metric([endpoint], self.limits.lockouts[endpoint])
            locked.add_metric([endpoint], self.limits.locked_out(endpoint))
        yield from (refused, failures, lockouts, locked)

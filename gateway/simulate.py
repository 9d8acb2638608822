"""``contactgate simulate``: which rule and which steps would take a contact, and why.

Runs the same pure decisions the gateway runs (self-service, tier, rule, business hours), with
no server and no store, so an administrator can try a rule before reloading it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from routing import Contact, choose_queue, resolve_tier
from routing.hours import is_open, next_open, open_now
from routing.rules import step_timeout

from .config import GatewayConfig
from .faq import detect_lang
from .selfservice import Answer, Choices, Handoff, SelfService


def simulate(config: GatewayConfig, selfservice: SelfService, *, channel: str, text: str, tier: str | None = None,
             email: str | None = None, phone: str | None = None, attributes: dict[str, Any] | None = None,
             at: datetime | None = None) -> dict[str, Any]:
    now = at or datetime.now(timezone.utc)
    reply = selfservice.reply(text, 0) if text else None
    topics = frozenset([reply.faq_id]) if isinstance(reply, Answer) else frozenset()
    contact = Contact(channel=channel, email=email, phone=phone, attributes=attributes or {},
                      language=(attributes or {}).get("language") or (detect_lang(text) if text.strip() else None),
                      text=text, topics=topics,
                      open_hours=open_now(config.hours, now))
    resolved, why = resolve_tier(config.tiers, tier, contact)
    contact = Contact(**{**{f: getattr(contact, f) for f in contact.__dataclass_fields__}, "tier": resolved})
    decision = choose_queue(config.routing, contact)
    queues = {q.name: q for q in config.queues}
    home = queues[decision.queue]
    result: dict[str, Any] = {
        "at": now.isoformat(),
        "language": contact.language,
        "self_service": _reply(reply),
        "tier": {"tier": resolved, "from": "--tier (profile)" if tier else why},
        "rule": decision.rule,
        "steps": [],
        "priority": home.priority.get(resolved, 0),
    }
    elapsed = 0.0
    for index, step in enumerate(decision.steps):
        timeout = step_timeout(step, home.max_wait)  # as the gateway: the home queue's max wait
        result["steps"].append({"step": index, "from_second": elapsed, "queues": step.queues,
                                "priority_boost": step.priority_boost,
                                "for_seconds": timeout if index + 1 < len(decision.steps) else None, "say": step.say})
        elapsed += timeout or 0
    if home.hours:
        hours = config.hours[home.hours]
        opened = is_open(hours, now)
        result["hours"] = {"name": home.hours, "open": opened}
        if not opened:
            upcoming = next_open(hours, now)
            result["hours"]["opens"] = upcoming.isoformat() if upcoming else None
            result["hours"]["outside_hours"] = home.outside_hours.model_dump()
    return result


def _reply(reply: object) -> dict[str, Any] | None:
    if reply is None:
        return None
    if isinstance(reply, Answer):
        return {"answer": reply.faq_id, "score": round(reply.score, 3)}
    if isinstance(reply, Handoff):
        return {"handoff": reply.reason}
    if isinstance(reply, Choices):
        return {"did_you_mean": [{"faq_id": o.faq_id, "score": round(o.score, 3)} for o in reply.options]}
    return {"unanswered": True}


def render(result: dict[str, Any]) -> str:
    lines = [f"at {result['at']}"]
    ss = result["self_service"]
    if ss is not None:
        if "answer" in ss:
            lines.append(f"self-service: answers with FAQ {ss['answer']!r} (score {ss['score']}); routing applies once the customer asks for a person")
        elif "handoff" in ss:
            lines.append("self-service: hands off to an agent (handoff phrase)")
        elif "did_you_mean" in ss:
            offered = ", ".join(f"{o['faq_id']!r} ({o['score']})" for o in ss["did_you_mean"])
            lines.append(f"self-service: did you mean {offered}? (a miss: after max_unanswered misses it hands off)")
        else:
            lines.append("self-service: no answer; after max_unanswered misses it hands off")
    lines.append(f"tier: {result['tier']['tier']} (from {result['tier']['from']})")
    lines.append(f"rule: {result['rule']}  priority in home queue: {result['priority']}")
    for step in result["steps"]:
        span = f"from {step['from_second']:g}s" + (f" for {step['for_seconds']:g}s" if step["for_seconds"] else " until answered")
        extra = f", priority +{step['priority_boost']}" if step["priority_boost"] else ""
        lines.append(f"  step {step['step']}: {', '.join(step['queues'])} {span}{extra}")
    if "hours" in result:
        hours = result["hours"]
        state = "open" if hours["open"] else f"closed (opens {hours.get('opens')}); outside hours: {hours['outside_hours']['action']}"
        lines.append(f"business hours {hours['name']}: {state}")
    return "\n".join(lines)


def as_json(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2)

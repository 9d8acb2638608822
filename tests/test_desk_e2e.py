"""End to end: the agent desk and the routing engine (issue 3), through a real gateway process,
customer web chat sockets and agent sockets.

One gateway serves the whole module. Each scenario has its own queue (picked by a routing rule on
a keyword the customer types, e.g. ``<q_decline>``) and its own agents, so scenarios never see
each other's conversations. Timers are short (offer timeout, grace, wrap-up, routing step); the
tests assert outcomes and their order, never durations.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio

from tests.support import Agent, Client, Customer, GatewayProcess, gateway_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAME = 8.0            # generous upper bound for a frame that must come (a loaded CI box)
OFFER_TIMEOUT = 0.7    # queues where offers are meant to time out
LONG_OFFER = 30.0      # queues where they are not
GRACE = 1.0            # desk.disconnect_grace
WRAP_UP = 1.5          # q_close wrap-up
STEP = 1.0             # first routing step of the "widen" rule
SAY = "Thanks for waiting: we have widened the search for an agent."
LEAVE_TEXT = "We are closed today. Leave a message and we will answer it."
CALLBACK_TEXT = "We are closed today. We will call you back."
DISPOSITIONS = ["resolved", "follow_up", "spam"]


def token(agent_id: str) -> str:
    return f"{agent_id}-desk-token"


def display_name(agent_id: str) -> str:
    return agent_id.replace("_", " ").title()  # "dr_a" -> "Dr A"


def desk_config(store_url: str) -> dict[str, Any]:
    today = datetime.now(timezone.utc).date()
    # Every day open all day, but yesterday, today and tomorrow (UTC) are holidays: closed now,
    # even if the run crosses midnight.
    closed = {"timezone": "UTC", "weekly": {day: "00:00-24:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
              "holidays": [str(today + timedelta(days=d)) for d in (-1, 0, 1)]}

    def queue(name: str, **settings: Any) -> dict[str, Any]:
        return {"name": name, "offer_timeout": LONG_OFFER, **settings}

    queues = [
        queue("general"),
        queue("q_timeout", offer_timeout=OFFER_TIMEOUT),
        queue("q_decline"),
        queue("q_away", offer_timeout=OFFER_TIMEOUT),
        queue("q_solo", offer_timeout=OFFER_TIMEOUT),
        queue("q_streak", offer_timeout=OFFER_TIMEOUT),
        queue("q_drop"),
        queue("q_transfer"),
        queue("q_billing", skills={"billing": 2}),
        queue("q_close", wrap_up=WRAP_UP),
        queue("q_step_a"),
        queue("q_step_b"),
        queue("q_after_hours", hours="closed",
              outside_hours={"action": "leave_message", "text": LEAVE_TEXT, "queue": "q_inbox"}),
        queue("q_inbox"),
        queue("q_callback", hours="closed", outside_hours={"action": "callback", "text": CALLBACK_TEXT}),
        queue("q_mandarin", skills={"mandarin": 3}),
        queue("q_prio", priority={"vip": 10, "standard": 0}),
        queue("q_pos"),
    ]
    rules: list[dict[str, Any]] = [
        {"name": "widen", "when": {"keywords": ["<q_step>"]},
         "steps": [{"queue": "q_step_a", "timeout": STEP},
                   {"queues": ["q_step_a", "q_step_b"], "say": SAY}]},
    ]
    rules += [{"name": f"to-{q['name']}", "when": {"keywords": [f"<{q['name']}>"]}, "queue": q["name"]}
              for q in queues if q["name"] != "general"]

    def agent(agent_id: str, queues: list[str], capacity: Any = 1, **extra: Any) -> dict[str, Any]:
        return {"id": agent_id, "name": display_name(agent_id), "token": token(agent_id),
                "capacity": capacity, "queues": queues, **extra}

    agents = [
        agent("to_a", ["q_timeout"]), agent("to_b", ["q_timeout"]),
        agent("de_a", ["q_decline"]), agent("de_b", ["q_decline"]),
        agent("aw", ["q_away"]), agent("so", ["q_solo"]), agent("sk", ["q_streak"]),
        agent("dr_a", ["q_drop"]), agent("dr_b", ["q_drop"]),
        agent("tr_a", ["q_transfer"]), agent("tr_b", ["q_transfer"]), agent("tr_off", ["q_transfer"]),
        agent("tr_c", ["q_billing"], skills={"billing": 3}), agent("tr_d", ["q_billing"], skills={"billing": 1}),
        agent("cl", ["q_close"]),
        agent("st_b", ["q_step_b"]),
        agent("hx", ["q_after_hours"]), agent("hr", ["q_inbox"]),
        agent("mz_low", ["q_mandarin"], skills={"mandarin": 2}),
        agent("mz_five", ["q_mandarin"], capacity={"webchat": 1}, skills={"mandarin": 5, "english": 4}),
        agent("pr", ["q_prio"]),
    ]
    return gateway_config(
        store_url,
        queues=queues,
        hours={"closed": closed},
        routing={"rules": rules, "default_queue": "general"},
        desk={"missed_offers_before_away": 2, "disconnect_grace": GRACE, "dispositions": DISPOSITIONS,
              "require_disposition": True},
        agents=agents,
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("desk")
    process = await GatewayProcess.write_config(directory, desk_config(f"sqlite:///{directory / 'gateway.db'}")).start()
    yield process
    await process.stop()


# clients ---------------------------------------------------------------------------------------

class Desk:
    """Opens customers and agents on the shared gateway and closes them after the test."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.clients: list[Client] = []

    async def agent(self, agent_id: str, **auth: Any) -> Agent:
        agent = await Agent.connect(self.gateway, token(agent_id), **auth)
        self.clients.append(agent)
        ready = await agent.expect("ready", timeout=FRAME)
        assert ready["agent"] == {"id": agent_id, "name": display_name(agent_id)}
        agent.ready = ready  # type: ignore[attr-defined]
        return agent

    async def customer(self, queue: str, **hello: Any) -> Customer:
        """A customer who asked for an agent; the frame after the bot's handoff text is next."""
        customer = await Customer.connect(self.gateway, **hello)
        self.clients.append(customer)
        customer.positions = []  # type: ignore[attr-defined]
        await cust(customer, "message", author="bot")  # greeting
        await customer.send(type="message", id="handoff", text=f"I need an agent please <{queue}>")
        await cust(customer, "ack", id="handoff")
        await cust(customer, "message", author="bot")  # "Let me find you an agent"
        return customer

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.close()


@pytest_asyncio.fixture(loop_scope="module")
async def desk(gateway: GatewayProcess) -> AsyncIterator[Desk]:
    opened = Desk(gateway)
    yield opened
    await opened.close()


async def cust(customer: Customer, type_: str, timeout: float = FRAME, **fields: Any) -> dict[str, Any]:
    """The customer's next frame that is not a transient ``position`` update (kept aside)."""
    while True:
        frame = await customer.recv(timeout)
        if frame["type"] != "position":
            break
        customer.positions.append(frame)  # type: ignore[attr-defined]
    assert frame["type"] == type_, f"expected {type_!r} frame, got {frame}"
    for key, value in fields.items():
        assert frame.get(key) == value, f"expected {key}={value!r} in {frame}"
    if "seq" in frame:
        assert frame["seq"] > customer.last_seq, f"seq went back: after {customer.last_seq} got {frame}"
        customer.last_seq = frame["seq"]
    return frame


async def cust_quiet(customer: Customer, within: float) -> None:
    """Nothing but ``position`` updates reaches the customer for ``within`` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while (left := end - loop.time()) > 0:
        try:
            frame = await customer.recv(left)
        except asyncio.TimeoutError:
            return
        assert frame["type"] == "position", f"unexpected frame {frame}"
        customer.positions.append(frame)  # type: ignore[attr-defined]


async def error(agent: Agent, code: str) -> dict[str, Any]:
    frame = await agent.expect("error", timeout=FRAME)
    assert frame["code"] == code, f"expected error {code!r}, got {frame}"
    return frame


async def take(agent: Agent, customer: Customer) -> dict[str, Any]:
    """The agent gets the customer's offer and accepts it; both see the assignment."""
    offer = await agent.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id, f"offer for another conversation: {offer}"
    await agent.send(type="accept", conversation_id=customer.conversation_id)
    assigned = await agent.expect("assigned", timeout=FRAME, conversation_id=customer.conversation_id)
    await cust(customer, "assigned")
    return assigned


def log_records(gateway: GatewayProcess, msg: str, conversation_id: str | None) -> list[dict[str, Any]]:
    return [r for r in gateway.logs if r.get("msg") == msg and r.get("conversation_id") == conversation_id]


# 1, 2: offers that are not taken --------------------------------------------------------------------

async def test_unanswered_offer_is_withdrawn_and_goes_to_the_next_agent(desk: Desk) -> None:
    to_a = await desk.agent("to_a")
    customer = await desk.customer("q_timeout")
    queued = await cust(customer, "queued", reason="handoff", position=1)
    assert "estimated_wait" in queued
    offer = await to_a.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    assert offer["conversation"]["timeout"] == OFFER_TIMEOUT
    to_b = await desk.agent("to_b")

    # Nobody answers: A loses the offer, the customer is still waiting, B gets it.
    await to_a.expect("offer_withdrawn", timeout=FRAME, conversation_id=customer.conversation_id,
                      reason="offer_timeout")
    await cust(customer, "queued", reason="offer_timeout", position=1)
    second = await to_b.expect("offer", timeout=FRAME)
    assert second["conversation"]["id"] == customer.conversation_id
    assert second["conversation"]["seq"] > offer["conversation"]["seq"]
    await to_b.send(type="accept", conversation_id=customer.conversation_id)
    await to_b.expect("assigned", timeout=FRAME, conversation_id=customer.conversation_id)
    await cust(customer, "assigned", agent={"name": "To B"})
    # A is not offered it again, and a late accept from A is refused.
    await to_a.send(type="accept", conversation_id=customer.conversation_id)
    await error(to_a, "no_offer")
    await to_a.expect_nothing(0.3)


async def test_decline_goes_to_the_next_agent_at_once(desk: Desk) -> None:
    de_a = await desk.agent("de_a")
    customer = await desk.customer("q_decline")
    await cust(customer, "queued", reason="handoff")
    offer = await de_a.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    assert offer["conversation"]["timeout"] == LONG_OFFER
    de_b = await desk.agent("de_b")

    await de_a.send(type="decline", conversation_id=customer.conversation_id)
    await de_a.expect("offer_withdrawn", timeout=FRAME, conversation_id=customer.conversation_id, reason="declined")
    await cust(customer, "queued", reason="declined")
    # The offer timeout is 30 s: an offer to B well before that came from the decline.
    second = await de_b.expect("offer", timeout=FRAME)
    assert second["conversation"]["id"] == customer.conversation_id
    # Declining again (nothing offered any more) is an error; A is not offered it again.
    await de_a.send(type="decline", conversation_id=customer.conversation_id)
    await error(de_a, "no_offer")
    await de_a.expect_nothing(0.3)


# 3: missed offers in a row set the agent away ------------------------------------------------------

async def test_agent_missing_offers_in_a_row_is_set_away_until_available(desk: Desk) -> None:
    first = await desk.customer("q_away")
    await cust(first, "queued")
    second = await desk.customer("q_away")
    await cust(second, "queued")
    aw = await desk.agent("aw")

    for _ in range(2):  # desk.missed_offers_before_away
        offer = await aw.expect("offer", timeout=FRAME)
        cid = offer["conversation"]["id"]
        assert cid in (first.conversation_id, second.conversation_id)
        await aw.expect("offer_withdrawn", timeout=FRAME, conversation_id=cid, reason="offer_timeout")
    presence = await aw.expect("presence", timeout=FRAME, status="away")
    assert "missed" in (presence.get("reason") or ""), f"the agent is not told why: {presence}"

    # Away: a new conversation is not offered.
    third = await desk.customer("q_away")
    await cust(third, "queued")
    await aw.expect_nothing(OFFER_TIMEOUT + 0.5)

    # Back: the echo, and offers again.
    await aw.send(type="presence", status="available")
    got = [await aw.recv(FRAME), await aw.recv(FRAME)]
    assert sorted(f["type"] for f in got) == ["offer", "presence"], got
    assert next(f for f in got if f["type"] == "presence")["status"] == "available"
    cid = next(f for f in got if f["type"] == "offer")["conversation"]["id"]
    waiting = {c.conversation_id: c for c in (first, second, third)}
    assert cid in waiting
    await aw.send(type="accept", conversation_id=cid)
    await aw.expect("assigned", timeout=FRAME, conversation_id=cid)
    # Its customer heard about each missed offer (queued again) before the assignment.
    customer = waiting[cid]
    while True:
        frame = await customer.recv(FRAME)
        if frame["type"] in ("position", "queued"):
            assert frame["type"] == "position" or frame["reason"] == "offer_timeout", frame
            continue
        break
    assert frame["type"] == "assigned" and frame["agent"] == {"name": "Aw"}, frame


async def test_missed_offer_is_offered_again_when_no_other_agent_can_take_it(desk: Desk) -> None:
    so = await desk.agent("so")  # the only agent of q_solo
    customer = await desk.customer("q_solo")
    await cust(customer, "queued")
    offer = await so.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    await so.expect("offer_withdrawn", timeout=FRAME, conversation_id=customer.conversation_id, reason="offer_timeout")
    await cust(customer, "queued", reason="offer_timeout")
    # One miss (below missed_offers_before_away): the agent stays available, idle, and is the
    # only one who can answer. The customer must not wait forever.
    try:
        again = await so.expect("offer", timeout=4 * OFFER_TIMEOUT + 1)
    except asyncio.TimeoutError:
        raise AssertionError(
            "BUG: a conversation whose offer timed out is never offered again to the only agent who can "
            "take it, although that agent is available and idle: the customer waits forever") from None
    assert again["conversation"]["id"] == customer.conversation_id
    await so.send(type="accept", conversation_id=customer.conversation_id)
    await so.expect("assigned", timeout=FRAME)
    await cust(customer, "assigned", agent={"name": "So"})


async def test_a_decline_breaks_a_run_of_missed_offers(desk: Desk) -> None:
    customers = [await desk.customer("q_streak") for _ in range(3)]
    for customer in customers:
        await cust(customer, "queued")
    sk = await desk.agent("sk")
    # Missed, declined, missed: never two missed *in a row*.
    for action, reason in (("ignore", "offer_timeout"), ("decline", "declined"), ("ignore", "offer_timeout")):
        cid = (await sk.expect("offer", timeout=FRAME))["conversation"]["id"]
        if action == "decline":
            await sk.send(type="decline", conversation_id=cid)
        await sk.expect("offer_withdrawn", timeout=FRAME, conversation_id=cid, reason=reason)
    newcomer = await desk.customer("q_streak")
    await cust(newcomer, "queued")
    frame = await sk.recv(FRAME)
    assert frame["type"] == "offer", (
        f"BUG: agent set away after missed, declined, missed offers; a decline shows the agent is "
        f"at the desk and must end the run of missed offers: {frame}")
    await sk.send(type="accept", conversation_id=frame["conversation"]["id"])
    await sk.expect("assigned", timeout=FRAME)


# 4: a dropped agent socket ---------------------------------------------------------------------

async def test_agent_drop_within_grace_resumes_past_grace_returns_to_head_of_queue(desk: Desk) -> None:
    dr_a = await desk.agent("dr_a")
    customer = await desk.customer("q_drop")
    await cust(customer, "queued")
    seen = (await take(dr_a, customer))["seq"]
    cid = customer.conversation_id

    # A short drop: the customer writes meanwhile; a reconnect within the grace resumes.
    await dr_a.close()
    await customer.send(type="message", id="c1", text="are you still there?")
    await cust(customer, "ack", id="c1")
    dr_a = await desk.agent("dr_a", resume={cid: seen})
    assert dr_a.ready["conversations"] == [cid]  # type: ignore[attr-defined]
    replayed = await dr_a.expect("message", timeout=FRAME, conversation_id=cid, author="customer")
    assert replayed["text"] == "are you still there?" and replayed["seq"] == seen + 1
    await dr_a.send(type="message", conversation_id=cid, id="a1", text="yes, still here")
    await dr_a.expect("ack", timeout=FRAME, id="a1")
    await cust(customer, "message", author="agent", text="yes, still here")
    # The grace passes with the agent back: the conversation stays where it is.
    await cust_quiet(customer, GRACE + 0.7)

    # Someone else starts waiting in the same queue (Dr A is at capacity, Dr B is offline).
    waiting = await desk.customer("q_drop")
    await cust(waiting, "queued", position=1)

    # A long drop: past the grace the conversation goes back, first in line, and the customer is told.
    await dr_a.close()
    back = await cust(customer, "queued", reason="agent_offline")
    assert back["position"] == 1, f"a returned conversation goes to the head of its queue: {back}"
    note = await cust(customer, "message", author="system")
    assert note["text"]
    dr_b = await desk.agent("dr_b")
    offer = await dr_b.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == cid, (
        "the conversation returned from an offline agent must be offered before those already waiting")
    await dr_b.expect_nothing(0.3)
    await dr_b.send(type="accept", conversation_id=cid)
    await dr_b.expect("assigned", timeout=FRAME)
    await cust(customer, "assigned", agent={"name": "Dr B"})

    # Dr A back after the grace: nothing assigned any more, and the one still waiting is offered.
    dr_a = await desk.agent("dr_a")
    assert dr_a.ready["conversations"] == []  # type: ignore[attr-defined]
    offer = await dr_a.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == waiting.conversation_id


# 5: transfer ------------------------------------------------------------------------------------

async def test_transfer_to_agent_and_to_queue_with_note(desk: Desk) -> None:
    tr_a = await desk.agent("tr_a")
    customer = await desk.customer("q_transfer")
    await cust(customer, "queued")
    await take(tr_a, customer)
    cid = customer.conversation_id
    await tr_a.send(type="message", conversation_id=cid, id="m1", text="Let me look at your refund.")
    await tr_a.expect("ack", timeout=FRAME, id="m1")
    await cust(customer, "message", author="agent")

    # Refused transfers: unknown queue or agent, oneself, an agent who cannot take it.
    tr_b = await desk.agent("tr_b", status="away")
    for frame, code in [({"to_queue": "no_such_queue"}, "unknown_queue"),
                        ({"to_agent": "ghost"}, "unknown_agent"),
                        ({"to_agent": "tr_a"}, "unknown_agent"),
                        ({"to_agent": "tr_off"}, "agent_unavailable"),   # never connected
                        ({"to_agent": "tr_b"}, "agent_unavailable"),     # connected but away
                        ({"to_agent": "tr_b", "to_queue": "q_transfer"}, "bad_transfer")]:
        await tr_a.send(type="transfer", conversation_id=cid, note="n", **frame)
        await error(tr_a, code)
    await cust_quiet(customer, 0.2)

    # To an agent, with a note.
    await tr_b.send(type="presence", status="available")
    await tr_b.expect("presence", timeout=FRAME, status="available")
    await tr_a.send(type="transfer", conversation_id=cid, to_agent="tr_b", note="Wants a refund for order 42")
    transferred = await tr_a.expect("transferred", timeout=FRAME, conversation_id=cid)
    assert transferred["to_agent"] == "tr_b"
    await cust(customer, "queued", reason="transfer")
    offer = (await tr_b.expect("offer", timeout=FRAME))["conversation"]
    assert offer["id"] == cid
    assert offer["note"] == "Wants a refund for order 42"
    assert offer["transferred_from"] == {"id": "tr_a", "name": "Tr A"}
    texts = [(e["author"], e["text"]) for e in offer["transcript"]]
    assert ("agent", "Let me look at your refund.") in texts
    assert ("customer", "I need an agent please <q_transfer>") in texts
    await tr_b.send(type="accept", conversation_id=cid)
    await tr_b.expect("assigned", timeout=FRAME, conversation_id=cid)
    await cust(customer, "assigned", agent={"name": "Tr B"})
    # The customer now talks to B only.
    await customer.send(type="message", id="c2", text="thanks")
    await cust(customer, "ack", id="c2")
    assert (await tr_b.expect("message", timeout=FRAME, conversation_id=cid))["text"] == "thanks"
    await tr_a.expect_nothing(0.3)
    await tr_a.send(type="message", conversation_id=cid, id="m2", text="still me?")
    await error(tr_a, "not_assigned")

    # To a queue: only the agent with the queue's skill level is offered it.
    tr_d = await desk.agent("tr_d")   # serves q_billing, billing 1 < 2
    tr_c = await desk.agent("tr_c")   # billing 3
    await tr_b.send(type="transfer", conversation_id=cid, to_queue="q_billing", note="billing question")
    transferred = await tr_b.expect("transferred", timeout=FRAME, conversation_id=cid)
    assert transferred["to_queue"] == "q_billing"
    await cust(customer, "queued", reason="transfer")
    offer = (await tr_c.expect("offer", timeout=FRAME))["conversation"]
    assert offer["id"] == cid and offer["queue"] == "q_billing"
    assert offer["note"] == "billing question" and offer["transferred_from"] == {"id": "tr_b", "name": "Tr B"}
    await tr_c.send(type="accept", conversation_id=cid)
    await tr_c.expect("assigned", timeout=FRAME)
    await cust(customer, "assigned", agent={"name": "Tr C"})
    await tr_d.expect_nothing(0.3)


# 6: close, dispositions, wrap-up -------------------------------------------------------------------

async def test_close_with_disposition_then_wrap_up_before_the_next_offer(desk: Desk) -> None:
    gateway = desk.gateway
    cl = await desk.agent("cl")
    first = await desk.customer("q_close")
    await cust(first, "queued")
    await take(cl, first)
    second = await desk.customer("q_close")
    await cust(second, "queued", position=1)
    await cl.expect_nothing(0.2)  # capacity 1

    await cl.send(type="close", conversation_id=first.conversation_id, disposition="no_such_code")
    await error(cl, "bad_disposition")
    await cl.send(type="close", conversation_id=first.conversation_id, disposition=5)  # not a code: not "none"
    await error(cl, "bad_disposition")
    # A refused close makes no proposal either: the error frame is the only answer.
    await cl.send(type="close", conversation_id=first.conversation_id, disposition=["resolved"],
                  propose={"faq_id": "close-probe", "question": "q?", "answer": "a."})
    await error(cl, "bad_disposition")
    await cl.send(type="close", conversation_id=first.conversation_id)
    await error(cl, "disposition_required")
    await cust_quiet(first, 0.1)

    await cl.send(type="close", conversation_id=first.conversation_id, disposition="resolved")
    await cl.expect("closed", timeout=FRAME, conversation_id=first.conversation_id, closed_by="cl")
    wrap_up = await cl.expect("wrap_up", timeout=FRAME)
    until = datetime.fromisoformat(wrap_up["until"])
    await cust(first, "closed")

    # No offer during wrap-up; the waiting conversation right after it.
    await cl.expect_nothing(0.4)
    offer = await cl.expect("offer", timeout=FRAME)
    assert datetime.now(timezone.utc) >= until - timedelta(milliseconds=50), (
        f"offered during wrap-up (until {until.isoformat()})")
    assert offer["conversation"]["id"] == second.conversation_id
    closed = log_records(gateway, "closed", first.conversation_id)
    assert closed and closed[-1].get("disposition") == "resolved", closed


# 7: routing steps ----------------------------------------------------------------------------------

async def test_routing_step_widens_to_a_second_queue(desk: Desk) -> None:
    st_b = await desk.agent("st_b")  # serves q_step_b only
    customer = await desk.customer("q_step")
    await cust(customer, "queued", reason="handoff")
    widened = await cust(customer, "queued", reason="step")
    await cust(customer, "message", author="bot", text=SAY)
    offer = await st_b.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    assert offer["conversation"]["queue"] == "q_step_b"
    assert offer["conversation"]["seq"] > widened["seq"], "offered to a q_step_b agent before the step widened"


# 8: business hours -------------------------------------------------------------------------------

async def test_outside_hours_leave_message_waits_in_the_message_queue(desk: Desk) -> None:
    hx = await desk.agent("hx")  # serves the closed queue itself
    hr = await desk.agent("hr")  # serves the message queue
    customer = await desk.customer("q_after_hours")
    await cust(customer, "message", author="bot", text=LEAVE_TEXT)
    await cust(customer, "queued")
    offer = await hr.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    assert offer["conversation"]["queue"] == "q_inbox"
    await hx.expect_nothing(0.3)


async def test_outside_hours_callback_closes_the_conversation(desk: Desk) -> None:
    customer = await desk.customer("q_callback")
    await cust(customer, "message", author="bot", text=CALLBACK_TEXT)
    await cust(customer, "closed")
    closed = log_records(desk.gateway, "closed", customer.conversation_id)
    assert closed and closed[-1].get("disposition") == "callback_requested", closed


# 9: skills and per-channel capacity -------------------------------------------------------------------

async def test_skills_and_per_channel_capacity(desk: Desk) -> None:
    mz_low = await desk.agent("mz_low")    # mandarin 2: below the queue's 3
    mz_five = await desk.agent("mz_five")  # mandarin 5, capacity {webchat: 1}
    first = await desk.customer("q_mandarin")
    await cust(first, "queued")
    await take(mz_five, first)

    second = await desk.customer("q_mandarin")
    await cust(second, "queued", position=1)
    await mz_five.expect_nothing(0.4)      # its one webchat slot is taken
    await mz_five.send(type="close", conversation_id=first.conversation_id, disposition="resolved")
    await mz_five.expect("closed", timeout=FRAME, conversation_id=first.conversation_id)
    offer = await mz_five.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == second.conversation_id
    await mz_low.expect_nothing(0.2)


# 10: priority ---------------------------------------------------------------------------------------

async def test_vip_arriving_later_is_offered_first(desk: Desk) -> None:
    standard = await desk.customer("q_prio", name="Sam", email="sam@example.com")
    await cust(standard, "queued", position=1)
    vip = await desk.customer("q_prio", name="Vera", email="vera@vip.example")
    await cust(vip, "queued", position=1)  # ahead of Sam
    pr = await desk.agent("pr")
    offer = await pr.expect("offer", timeout=FRAME)
    assert offer["conversation"]["id"] == vip.conversation_id
    assert offer["conversation"]["customer"]["tier"] == "vip"
    await pr.expect_nothing(0.2)


# 11: position updates --------------------------------------------------------------------------------

async def test_position_updates_when_the_one_ahead_leaves(desk: Desk) -> None:
    first = await desk.customer("q_pos")
    await cust(first, "queued", position=1)
    second = await desk.customer("q_pos")
    await cust(second, "queued", position=2)
    await first.send(type="close")
    await cust(first, "closed")

    loop = asyncio.get_running_loop()
    end = loop.time() + FRAME
    while True:
        frame = await second.recv(max(0.1, end - loop.time()))
        assert frame["type"] == "position", f"unexpected frame {frame}"
        assert "estimated_wait" in frame and "seq" not in frame
        if frame["position"] == 1:
            break
        assert frame["position"] == 2, frame


# last: nothing broke inside the gateway -------------------------------------------------------------

async def test_no_errors_logged(gateway: GatewayProcess) -> None:
    problems = [r for r in gateway.logs if r.get("level") in ("error", "critical") or "exc" in r]
    assert not problems, "\n".join(str(p) for p in problems)

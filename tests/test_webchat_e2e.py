"""End to end: a real gateway process, a customer on web chat and agents on the agent
websocket, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any, AsyncIterator

import pytest_asyncio

from gateway.model import Author, ConversationState, EventKind
from gateway.store import open_store
from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[GatewayProcess]:
    process = await GatewayProcess.write_config(tmp_path, gateway_config(store_url)).start()
    yield process
    await process.stop()


async def to_agent(customer: Customer, agent: Agent, text: str = "I want to talk to an agent") -> dict[str, Any]:
    """Ask for a human; returns the agent's offer."""
    await customer.say(text, f"handoff-{customer.last_seq}")
    await customer.event("message", author="bot")
    await customer.event("queued", position=1)
    return await agent.expect("offer")


async def test_faq_handoff_queue_offer_chat_reconnect_close(gateway: GatewayProcess, store_url: str) -> None:
    customer = await Customer.connect(gateway, name="Mei", email="mei@example.com")
    greeting = await customer.event("message", author="bot")
    assert "agent" in greeting["text"]

    # Self-service answers from the FAQ.
    await customer.say("How do I track my parcel?", "c1")
    answer = await customer.event("message", author="bot")
    assert "tracking number" in answer["text"]

    # The agent comes online; the customer asks for a human and waits in the queue.
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    ready = await alice.expect("ready")
    assert ready["agent"] == {"id": "alice", "name": "Alice"}
    offer = await to_agent(customer, alice)
    conversation = offer["conversation"]
    assert conversation["id"] == customer.conversation_id
    assert conversation["channel"] == "webchat" and conversation["queue"] == "general"
    assert conversation["customer"]["name"] == "Mei" and conversation["customer"]["tier"] == "standard"
    texts = [(e["author"], e["text"]) for e in conversation["transcript"]]
    assert texts[1] == ("customer", "How do I track my parcel?")
    assert [e["seq"] for e in conversation["transcript"]] == [1, 2, 3, 4, 5]

    await alice.send(type="accept", conversation_id=customer.conversation_id)
    assigned = await alice.expect("assigned", conversation_id=customer.conversation_id)
    await customer.event("assigned", agent={"name": "Alice"})
    assert assigned["seq"] == customer.last_seq

    # Both ways.
    await customer.say("My parcel 123 is late", "c2")
    got = await alice.expect("message", conversation_id=customer.conversation_id, author="customer")
    assert got["text"] == "My parcel 123 is late" and got["seq"] == customer.last_seq
    await alice.send(type="message", conversation_id=customer.conversation_id, id="a1", text="Let me check.")
    ack = await alice.expect("ack", id="a1")
    reply = await customer.event("message", author="agent", text="Let me check.")
    assert ack["seq"] == reply["seq"]

    # The customer drops; the agent writes twice; the customer resumes and gets exactly those.
    await customer.close()
    await alice.expect("customer_presence", conversation_id=customer.conversation_id, connected=False)
    seen = customer.last_seq
    for n in (2, 3):
        await alice.send(type="message", conversation_id=customer.conversation_id, id=f"a{n}", text=f"update {n}")
        await alice.expect("ack", id=f"a{n}")
    back = Customer(await __import__("websockets").connect(gateway.url("/webchat/ws")))
    back.last_seq = seen
    welcome = await back.hello(token=customer.token, last_seq=seen)
    assert welcome["conversation_id"] == customer.conversation_id
    await alice.expect("customer_presence", conversation_id=customer.conversation_id, connected=True)
    assert (await back.event("message", author="agent"))["text"] == "update 2"
    assert (await back.event("message", author="agent"))["text"] == "update 3"
    await back.expect_nothing()

    # The agent closes: both sides are told.
    await alice.send(type="close", conversation_id=customer.conversation_id)
    closed = await alice.expect("closed", conversation_id=customer.conversation_id)
    await back.event("closed")
    assert closed["seq"] == back.last_seq
    await alice.expect_nothing(0.2)
    await back.close()
    await alice.close()
    assert await gateway.stop() == 0

    # Everything is in the store, gapless.
    store = await open_store(store_url)
    try:
        stored = await store.get_conversation(customer.conversation_id)
        assert stored.state is ConversationState.CLOSED and stored.agent_id == "alice"
        events = await store.events_after(stored.id, 0)
        assert [e.seq for e in events] == list(range(1, back.last_seq + 1))
        assert [e.kind for e in events].count(EventKind.OFFERED) == 1
        messages = [(e.author, e.text) for e in events if e.kind is EventKind.MESSAGE]
        assert (Author.AGENT, "update 3") in messages and (Author.CUSTOMER, "My parcel 123 is late") in messages
    finally:
        await store.close()
    conversation_lines = [r for r in gateway.logs if r.get("conversation_id") == customer.conversation_id]
    assert {"queued", "offered", "assigned", "closed"} <= {r["msg"] for r in conversation_lines}


async def test_resent_message_is_acked_again_and_stored_once(gateway: GatewayProcess, store_url: str) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.event("message", author="bot")
    await to_agent(customer, alice)
    await alice.send(type="accept", conversation_id=customer.conversation_id)
    await alice.expect("assigned")
    await customer.event("assigned")

    first = await customer.say("hello there", "same-id")
    await customer.send(type="message", id="same-id", text="hello there")
    again = await customer.expect("ack", id="same-id")
    assert again["seq"] == first["seq"]
    await alice.expect("message", text="hello there")
    await alice.expect_nothing()

    # Agents' resends are deduplicated too.
    await alice.send(type="message", conversation_id=customer.conversation_id, id="x", text="hi")
    a1 = await alice.expect("ack", id="x")
    await alice.send(type="message", conversation_id=customer.conversation_id, id="x", text="hi")
    a2 = await alice.expect("ack", id="x")
    assert a1["seq"] == a2["seq"]
    await customer.event("message", author="agent", text="hi")
    await customer.expect_nothing()
    await gateway.stop()

    store = await open_store(store_url)
    try:
        events = await store.events_after(customer.conversation_id, 0)
        assert [e.text for e in events].count("hello there") == 1
        assert [e.text for e in events].count("hi") == 1
    finally:
        await store.close()


async def test_agent_reconnect_resumes_from_last_seq(gateway: GatewayProcess) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await to_agent(customer, alice)
    await alice.send(type="accept", conversation_id=customer.conversation_id)
    seen = (await alice.expect("assigned"))["seq"]
    await customer.event("assigned")
    await alice.close()

    await customer.say("are you there?", "r1")
    await customer.say("hello?", "r2")

    alice = await Agent.connect(gateway, ALICE_TOKEN, resume={customer.conversation_id: seen})
    ready = await alice.expect("ready")
    assert ready["conversations"] == [customer.conversation_id]
    assert (await alice.expect("message", seq=seen + 1))["text"] == "are you there?"
    assert (await alice.expect("message", seq=seen + 2))["text"] == "hello?"
    await alice.expect_nothing()
    # Still assigned: the conversation goes on.
    await alice.send(type="message", conversation_id=customer.conversation_id, id="back", text="back now")
    await alice.expect("ack", id="back")
    await customer.event("message", author="agent", text="back now")


async def test_vip_goes_to_vip_desk_and_standard_to_general(gateway: GatewayProcess) -> None:
    bob = await Agent.connect(gateway, BOB_TOKEN)
    await bob.expect("ready")
    vip = await Customer.connect(gateway, name="Victor", email="victor@VIP.example")
    await vip.event("message")
    await vip.say("human please", "v1")
    await vip.event("message", author="bot")
    await vip.event("queued", position=1)
    await bob.expect_nothing()  # Bob serves only "general"

    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    offer = await alice.expect("offer")
    assert offer["conversation"]["queue"] == "vip_desk"
    assert offer["conversation"]["customer"]["tier"] == "vip"

    standard = await Customer.connect(gateway, name="Sam")
    await standard.event("message")
    offer = await to_agent(standard, bob)
    assert offer["conversation"]["queue"] == "general"
    assert offer["conversation"]["customer"]["tier"] == "standard"


async def test_unanswered_questions_hand_off(gateway: GatewayProcess) -> None:
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await customer.say("blorf quux zzyzx", "u1")
    await customer.event("message", author="bot")
    await customer.say("frobnicate the wibble", "u2")
    await customer.event("message", author="bot")
    await customer.event("queued", position=1)


async def test_after_close_a_new_hello_starts_a_new_conversation(gateway: GatewayProcess) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.event("message")
    await to_agent(customer, alice)
    await customer.send(type="close")
    await customer.event("closed")
    # The agent it was offered to learns that it ended.
    await alice.expect("closed", conversation_id=customer.conversation_id, closed_by="customer")
    await customer.send(type="message", id="late", text="one more thing")
    error = await customer.expect("error")
    assert error["code"] == "conversation_closed"

    again = await Customer.connect(gateway, token=customer.token, last_seq=customer.last_seq)
    assert again.conversation_id != customer.conversation_id
    await again.expect("message", seq=1, author="bot")


async def test_health_and_readiness(gateway: GatewayProcess) -> None:
    def get(path: str) -> tuple[int, dict[str, Any]]:
        with urllib.request.urlopen(gateway.http + path, timeout=5) as response:
            return response.status, json.loads(response.read())

    assert await asyncio.to_thread(get, "/healthz") == (200, {"status": "alive"})
    assert await asyncio.to_thread(get, "/readyz") == (200, {"status": "ready"})

"""End to end: the ``typing`` frame both ways, customer <-> the agent the conversation is assigned
to (issue 8). Transient: no seq, never stored, so never replayed. A real gateway process, real
customer and agent sockets, SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_asyncio
import websockets

from tests.conftest import fresh_database
from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

FRAME = 8.0  # upper bound for a frame that must come


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=["sqlite", "postgres"])
async def gateway(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  pg_admin_dsn: str) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("typing")
    if request.param == "sqlite":
        process = await GatewayProcess.write_config(
            directory, gateway_config(f"sqlite:///{directory / 'gateway.db'}")).start()
        yield process
        await process.stop()
        return
    async with fresh_database(pg_admin_dsn) as url:
        process = await GatewayProcess.write_config(directory, gateway_config(url)).start()
        yield process
        await process.stop()


async def alice_with_a_customer(gateway: GatewayProcess, name: str) -> tuple[Agent, Customer]:
    """Alice, connected, and a customer whose conversation she has accepted."""
    agent = await Agent.connect(gateway, ALICE_TOKEN)
    await agent.expect("ready")
    customer = await Customer.connect(gateway, name=name)
    await customer.event("message", author="bot")
    await customer.say("I want to talk to an agent", f"{name}-h")
    await customer.event("message", author="bot")
    await customer.event("queued")
    offer = await agent.expect("offer", FRAME)
    assert offer["conversation"]["id"] == customer.conversation_id
    await agent.send(type="accept", conversation_id=customer.conversation_id)
    await agent.expect("assigned", FRAME, conversation_id=customer.conversation_id)
    await customer.event("assigned")
    return agent, customer


async def close(agent: Agent, customer: Customer) -> None:
    await customer.send(type="close")
    await customer.event("closed")
    await agent.expect("closed", FRAME, conversation_id=customer.conversation_id)
    await customer.close()


async def test_typing_both_ways_is_not_stored_and_not_replayed(gateway: GatewayProcess) -> None:
    alice, customer = await alice_with_a_customer(gateway, "Mei")
    cid = customer.conversation_id
    seen = customer.last_seq

    await customer.send(type="typing")
    assert await alice.expect("typing", FRAME) == {"type": "typing", "conversation_id": cid,
                                                   "author": "customer", "active": True}
    await customer.send(type="typing", active=False)
    await alice.expect("typing", FRAME, conversation_id=cid, author="customer", active=False)
    await alice.send(type="typing", conversation_id=cid)
    assert await customer.expect("typing", FRAME) == {"type": "typing", "author": "agent", "active": True}
    await alice.send(type="typing", conversation_id=cid, active=False)
    await customer.expect("typing", FRAME, author="agent", active=False)

    # No seq was used: the next event is the next seq.
    ack = await customer.say("here is my parcel number", "t1")
    assert ack["seq"] == seen + 1
    await alice.expect("message", FRAME, conversation_id=cid, seq=seen + 1)

    # Both sides resume from before the typing: they get the message only.
    again = await Agent.connect(gateway, ALICE_TOKEN, resume={cid: seen})
    await again.expect("ready", FRAME)
    await again.expect("message", FRAME, conversation_id=cid, seq=seen + 1)
    await again.expect_nothing()
    await customer.close()
    back = Customer(await websockets.connect(gateway.url("/webchat/ws")))
    await back.hello(token=customer.token, last_seq=seen)
    await back.expect("message", FRAME, seq=seen + 1, author="customer")
    await back.expect_nothing()
    # The agent heard the customer leave and come back (customer_presence), and nothing else.
    await again.expect("customer_presence", FRAME, conversation_id=cid, connected=False)
    await again.expect("customer_presence", FRAME, conversation_id=cid, connected=True)
    back.last_seq = seen + 1
    await close(again, back)
    await again.close()


async def test_typing_only_in_a_conversation_assigned_to_the_agent(gateway: GatewayProcess) -> None:
    alice, customer = await alice_with_a_customer(gateway, "Pia")
    cid = customer.conversation_id
    bob = await Agent.connect(gateway, BOB_TOKEN)
    await bob.expect("ready")

    await bob.send(type="typing", conversation_id=cid)
    error = await bob.expect("error", FRAME, code="not_assigned")
    assert cid in error["message"]
    await bob.send(type="typing", conversation_id="no-such-conversation")
    await bob.expect("error", FRAME, code="not_assigned")
    await bob.send(type="typing")
    await bob.expect("error", FRAME, code="bad_frame")
    await alice.send(type="typing", conversation_id=cid, active="yes")
    await alice.expect("error", FRAME, code="bad_typing")
    await customer.expect_nothing()  # none of these reached the customer

    # The customer's typing reaches its own agent only.
    await customer.send(type="typing")
    await alice.expect("typing", FRAME, conversation_id=cid)
    await bob.expect_nothing()
    await customer.send(type="typing", active=1)
    await customer.expect("error", FRAME, code="bad_typing")
    await close(alice, customer)
    await bob.close()
    await alice.close()


async def test_typing_before_hello_and_while_waiting(gateway: GatewayProcess) -> None:
    early = Customer(await websockets.connect(gateway.url("/webchat/ws")))
    await early.send(type="typing")
    await early.expect("error", FRAME, code="hello_required")
    await early.close()

    # Waiting in the queue, offered to Alice but not accepted: nobody hears the typing.
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway, name="Ola")
    await customer.event("message", author="bot")
    await customer.send(type="typing")  # talking to the bot: no agent
    await customer.say("I want to talk to an agent", "o-h")
    await customer.event("message", author="bot")
    await customer.event("queued")
    await alice.expect("offer", FRAME)
    await customer.send(type="typing")
    await alice.expect_nothing()
    await customer.send(type="close")
    await customer.event("closed")
    await alice.expect("closed", FRAME, conversation_id=customer.conversation_id, closed_by="customer")
    await customer.close()
    await alice.close()


async def test_a_flood_of_typing_does_not_hold_up_messages(gateway: GatewayProcess) -> None:
    alice, customer = await alice_with_a_customer(gateway, "Flo")
    for _ in range(500):
        await customer.send(type="typing")
    ack = await customer.say("the real question", "f1")
    got: list[dict[str, Any]] = []
    while True:
        frame = await alice.recv(FRAME)
        if frame["type"] == "message":
            break
        got.append(frame)
    assert frame["seq"] == ack["seq"] and frame["text"] == "the real question"
    assert got and all(f["type"] == "typing" for f in got)
    assert len(got) <= 500
    await close(alice, customer)
    await alice.close()

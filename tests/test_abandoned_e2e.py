"""End to end: web chat customers who leave without a word (socket closed) while waiting are
not kept forever. A real gateway process with ``abandon_after`` and ``idle_close_after`` of about
a second, real customer and agent websockets, the admin API for the service-level counts."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest_asyncio

from gateway.model import ConversationState, EventKind
from gateway.store import open_store
from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config

ADMIN_TOKEN = "admin-test-token-0123"
WAIT = 10.0  # bound on a wait for the gateway to reach a state (never a timing assertion)

StartGateway = Callable[..., Awaitable[GatewayProcess]]


def config_for(store_url: str, abandon_after: float = 1, idle_close_after: float = 1, **sections: Any) -> dict[str, Any]:
    sections.setdefault("server", {"host": "127.0.0.1", "port": 0, "max_frame_bytes": 4096, "log_format": "json",
                                   "shutdown_timeout": 5, "admin_token": ADMIN_TOKEN, "reload_poll": 0})
    sections.setdefault("channels", [{"type": "webchat", "abandon_after": abandon_after,
                                      "idle_close_after": idle_close_after}])
    return gateway_config(store_url, **sections)


# Left messages: `general` hands its abandoned waits to `messages`, which only Bob serves.
LEAVE_MESSAGE = {
    "queues": [{"name": "general", "when_abandoned": {"action": "leave_message", "queue": "messages"}},
               {"name": "messages"}],
    "routing": {"default_queue": "general"},
    "agents": [{"id": "alice", "name": "Alice", "token": ALICE_TOKEN, "capacity": 2, "queues": ["general"]},
               {"id": "bob", "name": "Bob", "token": BOB_TOKEN, "capacity": 1, "queues": ["messages"]}],
}


@pytest_asyncio.fixture
async def start(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[GatewayProcess]]]:
    started: list[GatewayProcess] = []

    async def run(config: dict[str, Any]) -> GatewayProcess:
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        process = GatewayProcess.write_config(directory, config)
        started.append(process)
        return await process.start()

    yield run
    for process in started:
        await process.stop()


async def queues(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        async with session.get(gateway.http + "/api/queues",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200, await response.text()
            return {row["queue"]: row for row in (await response.json())["queues"]}


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.1)


async def until_abandoned(gateway: GatewayProcess, queue: str, count: int = 1) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}

    async def counted() -> bool:
        figures.update(await queues(gateway))
        return figures[queue]["abandoned"] >= count

    await until(counted, f"{queue} counts {count} abandoned")
    return figures


async def closing(store_url: str, conversation_id: str) -> dict[str, Any] | None:
    """The data of the conversation's `closed` event, once it is closed (None before)."""
    store = await open_store(store_url)
    try:
        conversation = await store.get_conversation(conversation_id)
        if conversation.state is not ConversationState.CLOSED:
            return None
        events = await store.events_after(conversation_id, 0)
        assert events[-1].kind is EventKind.CLOSED
        return dict(events[-1].data)
    finally:
        await store.close()


async def waiting(customer: Customer, position: int = 1) -> None:
    await customer.event("message", author="bot")  # greeting
    await customer.say("I want to talk to an agent", f"handoff-{customer.last_seq}")
    await customer.event("message", author="bot")
    await customer.event("queued", position=position)


async def test_a_customer_who_leaves_the_queue_is_abandoned(start: StartGateway, store_url: str) -> None:
    gateway = await start(config_for(store_url))
    customer = await Customer.connect(gateway)
    await waiting(customer)
    await customer.close()

    figures = await until_abandoned(gateway, "general")
    assert figures["general"]["waiting"] == 0 and figures["general"]["answered"] == 0
    closed = await closing(store_url, customer.conversation_id or "")
    assert closed is not None and closed["closed_by"] == "system" and closed["disposition"] == "abandoned"
    assert closed["state_before"] == "queued"

    # No agent is offered it later.
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready", conversations=[])
    await alice.expect_nothing(within=0.5)

    # Coming back, the customer reads the end of it; the next hello starts a new conversation.
    back = await Customer.connect(gateway, token=customer.token, last_seq=customer.last_seq)
    assert back.conversation_id == customer.conversation_id
    end = await back.expect("closed")
    await back.close()
    again = await Customer.connect(gateway, token=customer.token, last_seq=end["seq"])
    assert again.conversation_id != customer.conversation_id
    await again.close()


async def test_a_customer_back_in_time_keeps_their_place(start: StartGateway, sqlite_url: str) -> None:
    # Longer than the other tests: the reconnect below must land within it even on a busy machine.
    gateway = await start(config_for(sqlite_url, abandon_after=2))
    first, second = await Customer.connect(gateway), await Customer.connect(gateway)
    await waiting(first, position=1)
    await waiting(second, position=2)
    await first.close()
    back = await Customer.connect(gateway, token=first.token, last_seq=first.last_seq)
    assert back.conversation_id == first.conversation_id
    await asyncio.sleep(2.5)  # past abandon_after: a timer not cancelled would have fired

    figures = await queues(gateway)
    assert figures["general"]["waiting"] == 2 and figures["general"]["abandoned"] == 0
    bob = await Agent.connect(gateway, BOB_TOKEN)  # capacity 1: the first in line only
    await bob.expect("ready")
    offer = (await bob.expect("offer"))["conversation"]
    assert offer["id"] == first.conversation_id
    assert offer["customer_connected"] is True and offer["left_message"] is False
    await bob.send(type="accept", conversation_id=offer["id"])
    await bob.expect("assigned")
    await back.expect("assigned")


async def test_an_abandoned_wait_becomes_a_left_message(start: StartGateway, sqlite_url: str) -> None:
    gateway = await start(config_for(sqlite_url, **LEAVE_MESSAGE))
    customer = await Customer.connect(gateway)
    await waiting(customer)
    await customer.say("My parcel 123 never arrived", "c-left")
    await customer.close()

    figures = await until_abandoned(gateway, "general")
    assert figures["general"]["waiting"] == 0 and figures["messages"]["waiting"] == 1
    await asyncio.sleep(1.5)  # past abandon_after again: a left message is never abandoned
    figures = await queues(gateway)
    assert figures["messages"]["waiting"] == 1 and figures["messages"]["abandoned"] == 0
    assert await closing(sqlite_url, customer.conversation_id or "") is None

    bob = await Agent.connect(gateway, BOB_TOKEN)
    await bob.expect("ready")
    offer = (await bob.expect("offer"))["conversation"]
    assert offer["id"] == customer.conversation_id and offer["queue"] == "messages"
    assert offer["left_message"] is True and offer["customer_connected"] is False
    assert "My parcel 123 never arrived" in [e["text"] for e in offer["transcript"]]
    await bob.send(type="accept", conversation_id=offer["id"])
    await bob.expect("assigned")
    await bob.send(type="message", conversation_id=offer["id"], id="b1", text="We are on it.")
    await bob.expect("ack", id="b1")

    # The customer comes back and reads what happened, then the answer; Bob sees them arrive.
    back = await Customer.connect(gateway, token=customer.token, last_seq=customer.last_seq)
    assert back.conversation_id == customer.conversation_id
    assert (await back.expect("queued"))["reason"] == "left_message"
    assert "kept your messages" in (await back.expect("message", author="bot"))["text"]
    await back.expect("assigned")
    await back.expect("message", author="agent", text="We are on it.")
    await bob.expect("customer_presence", conversation_id=offer["id"], connected=True)


async def test_the_agent_with_the_offer_sees_the_customer_leave(start: StartGateway, sqlite_url: str) -> None:
    gateway = await start(config_for(sqlite_url))
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await waiting(customer)
    offer = (await alice.expect("offer"))["conversation"]
    assert offer["customer_connected"] is True and offer["left_message"] is False

    await customer.close()
    await alice.expect("customer_presence", conversation_id=offer["id"], connected=False)
    # Nobody came back: the wait is abandoned and the offer ends with it.
    closed = await alice.expect("closed", conversation_id=offer["id"])
    assert closed["closed_by"] == "system"
    figures = await queues(gateway)
    assert figures["general"]["abandoned"] == 1 and figures["general"]["offered"] == 0


async def test_after_a_restart_waits_nobody_resumes_are_abandoned(start: StartGateway, store_url: str) -> None:
    config = config_for(store_url)
    gateway = await start(config)
    customer = await Customer.connect(gateway)
    await waiting(customer)
    await gateway.stop()

    gateway = await start(config)
    await until_abandoned(gateway, "general")
    closed = await closing(store_url, customer.conversation_id or "")
    assert closed is not None and closed["disposition"] == "abandoned"
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    await alice.expect_nothing(within=0.5)


async def test_a_bot_chat_nobody_is_at_is_closed(start: StartGateway, sqlite_url: str) -> None:
    gateway = await start(config_for(sqlite_url, idle_close_after=1))
    customer = await Customer.connect(gateway)
    await customer.event("message", author="bot")
    await customer.close()
    found: dict[str, Any] = {}

    async def closed() -> bool:
        found.update(await closing(sqlite_url, customer.conversation_id or "") or {})
        return bool(found)

    await until(closed, "the idle bot chat is closed")
    assert found["closed_by"] == "system" and found["disposition"] == "idle" and found["state_before"] == "bot"
    figures = await queues(gateway)
    assert all(row["abandoned"] == 0 for row in figures.values())  # never waited: not an abandoned wait

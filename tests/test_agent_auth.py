"""End to end: an agent's ``auth`` either puts the new connection fully in place or leaves the
desk exactly as it was (issue 8). A real gateway process, real customer and agent sockets, the
admin API for what the desk shows; SQLite and PostgreSQL.

"Exactly as it was" is checked from outside: the agent's previous socket stays open and keeps
getting the customer's messages and new offers, ``GET /api/agents`` shows the same, and the next
correct ``auth`` works at once (the previous socket is then closed with 4409).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest_asyncio

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, database_away, gateway_config

ADMIN_TOKEN = "auth-test-admin-token"
FRAME = 8.0  # upper bound for a frame that must come


def config(store_url: str) -> dict[str, Any]:
    # Frames large enough for a resume one entry over the limit.
    return gateway_config(store_url, server={
        "host": "127.0.0.1", "port": 0, "max_frame_bytes": 65536, "log_format": "json",
        "shutdown_timeout": 5, "admin_token": ADMIN_TOKEN, "reload_poll": 0})


async def start(tmp_path: Path, store_url: str) -> GatewayProcess:
    return await GatewayProcess.write_config(tmp_path, config(store_url)).start()


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[GatewayProcess]:
    process = await start(tmp_path, store_url)
    yield process
    await process.stop()


async def agents(gateway: GatewayProcess) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(gateway.http + "/api/agents",
                               headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200, await response.text()
            return {row["id"]: row for row in (await response.json())["agents"]}


async def store_down(gateway: GatewayProcess) -> None:
    """Wait (bounded) until the gateway itself finds the store unreachable: its killed sessions
    are noticed as lost, so the next query fails as "unavailable"."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for _ in range(100):
            async with session.get(gateway.http + "/readyz") as response:
                if response.status == 503:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway still finds its store")


async def assigned_to(customer: Customer, agent: Agent, client_id: str) -> str:
    """The customer asks for a human; the agent accepts the offer. Returns the conversation id."""
    await customer.say("I want to talk to an agent", client_id)
    await customer.event("message", author="bot")
    await customer.event("queued")
    offer = await agent.expect("offer", FRAME)
    cid = offer["conversation"]["id"]
    assert cid == customer.conversation_id
    await agent.send(type="accept", conversation_id=cid)
    await agent.expect("assigned", FRAME, conversation_id=cid)
    await customer.event("assigned")
    return cid


async def alice_with_a_conversation(gateway: GatewayProcess) -> tuple[Agent, Customer, str]:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway, name="Mei")
    await customer.event("message", author="bot")  # greeting
    cid = await assigned_to(customer, alice, "h1")
    return alice, customer, cid


async def still_works(gateway: GatewayProcess, alice: Agent, customer: Customer, cid: str, tag: str) -> None:
    """Alice's socket still gets the customer's messages and new offers."""
    await customer.say(f"are you there? {tag}", f"m-{tag}")
    got = await alice.expect("message", FRAME, conversation_id=cid, author="customer")
    assert got["text"] == f"are you there? {tag}" and got["seq"] == customer.last_seq
    other = await Customer.connect(gateway, name=f"Other {tag}")
    await other.event("message", author="bot")
    await other.say("I want to talk to an agent", f"h-{tag}")
    offer = await alice.expect("offer", FRAME)
    assert offer["conversation"]["id"] == other.conversation_id
    await alice.send(type="decline", conversation_id=other.conversation_id)
    await alice.expect("offer_withdrawn", FRAME, conversation_id=other.conversation_id)
    await other.send(type="close")
    await other.close()


async def next_auth_works(gateway: GatewayProcess, previous: Agent, cid: str, **auth: Any) -> Agent:
    again = await Agent.connect(gateway, ALICE_TOKEN, **auth)
    ready = await again.expect("ready", FRAME)
    assert ready["conversations"] == [cid]
    assert (await previous.closed())[0] == 4409
    return again


BAD_RESUMES = [
    {"seq": 2**63},                          # one past the largest 64-bit seq
    {"seq": 2**64},                          # (JSON that parses to a float)
    {"seq": -1}, {"seq": True}, {"seq": 1.5}, {"seq": "3"},
    {"": 1},                                 # empty id
    {"x" * 129: 1},                          # id too long
    {"bad\nid": 1},                          # control character
    {f"c{i}": 1 for i in range(1001)},       # too many entries
    ["c1", 1],                               # not an object
]


async def test_bad_resume_is_refused_before_anything_changes(gateway: GatewayProcess) -> None:
    alice, customer, cid = await alice_with_a_conversation(gateway)
    before = await agents(gateway)
    assert before["alice"]["connected"] and before["alice"]["assigned"] == [cid]

    for resume in BAD_RESUMES:
        if isinstance(resume, dict) and "seq" in resume:
            resume = {cid: resume["seq"]}  # the agent's own conversation: its replay would run
        bad = await Agent.connect(gateway, ALICE_TOKEN, resume=resume)
        error = await bad.expect("error", FRAME, code="bad_auth")
        assert "resume" in error["message"], (resume, error)
        assert await bad.closed() == (4401, "bad auth frame"), resume
        assert await agents(gateway) == before, resume

    await alice.expect_nothing(0.3)  # never replaced
    await still_works(gateway, alice, customer, cid, "after-bad-auth")
    # The next correct auth works at once; the largest seq there is, on an unknown id, is valid.
    again = await next_auth_works(gateway, alice, cid,
                                  resume={cid: customer.last_seq, "no-such-conversation": 2**63 - 1})
    await again.expect_nothing(0.3)  # nothing missed, and no error
    await customer.say("still here", "m2")
    await again.expect("message", FRAME, conversation_id=cid, text="still here")
    await again.close()


async def test_storage_failure_during_resume_leaves_the_desk_as_it_was(
        tmp_path: Path, pg_url: str, pg_admin_dsn: str) -> None:
    gateway = await start(tmp_path, pg_url)
    try:
        alice, customer, cid = await alice_with_a_conversation(gateway)
        before = await agents(gateway)

        async with database_away(pg_url, pg_admin_dsn):
            await store_down(gateway)
            failed = await Agent.connect(gateway, ALICE_TOKEN, resume={cid: 1})
            await failed.expect("ready", FRAME)  # the replay starts, then cannot read the store
            error = await failed.expect("error", FRAME, code="unavailable")
            assert "reconnect" in error["message"]
            assert await failed.closed() == (1013, "storage unavailable; reconnect and resume")
            assert await agents(gateway) == before
            await alice.expect_nothing(0.3)  # the previous socket was not replaced

        await still_works(gateway, alice, customer, cid, "after-outage")
        again = await next_auth_works(gateway, alice, cid)
        assert (await agents(gateway))["alice"]["connected"]
        await again.close()
    finally:
        await gateway.stop()

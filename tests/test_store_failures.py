"""Storage trouble at the gateway's edges, on the real gateway over real sockets:

- text PostgreSQL cannot hold (U+0000) from one customer or agent is stored normalised, and
  never fails the bystanders whose messages share its group commit;
- a PostgreSQL that really goes away gets the documented answers on both websocket endpoints
  and the admin API (``unavailable`` frames, 503), sockets stay open, and the service comes back
  without a traceback in the log.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest_asyncio
import websockets

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, database_away, gateway_config

ADMIN_TOKEN = "admin-test-token-failures"
R = "\ufffd"
BYSTANDERS = 20
ROUNDS = 3  # bursts of messages each bystander sends, at least
BURST = 4


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, pg_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(pg_url)
    config["server"] = {**config["server"], "admin_token": ADMIN_TOKEN}
    # Bystanders ask the bot the same question again and again: it keeps answering them.
    config["selfservice"]["policy"] = {"repeat_hands_off": False, "max_bot_turns": 1000}
    process = await GatewayProcess.write_config(tmp_path, config).start()
    yield process
    await process.stop()


def assert_no_traceback(gateway: GatewayProcess) -> None:
    text = gateway.log_text()
    assert "Traceback" not in text and "Task exception was never retrieved" not in text, text


async def next_of(client: Customer | Agent, type_: str, **fields: Any) -> dict[str, Any]:
    """The next frame of this type, skipping others (bot answers, position updates)."""
    while True:
        frame = await client.recv()
        if frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items()):
            return frame
        assert frame["type"] != "error", frame


async def chat_until(customer: Customer, number: int, done: asyncio.Event) -> int:
    """Send bursts of messages until ``done`` (at least ROUNDS bursts); every one must be acked."""
    sent = 0
    while sent < ROUNDS * BURST or not done.is_set():
        ids = [f"b{number}-{sent + i}" for i in range(BURST)]
        for client_id in ids:
            await customer.send(type="message", id=client_id, text="How long does delivery take?")
        sent += BURST
        acked: set[str] = set()
        while acked != set(ids):
            frame = await customer.recv()
            assert frame["type"] != "error", (number, frame)
            if frame["type"] == "ack":
                acked.add(frame["id"])
    return sent


async def test_nul_from_one_customer_and_agent_is_normalised_and_no_bystander_notices(
        gateway: GatewayProcess) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    bystanders = [await Customer.connect(gateway) for _ in range(BYSTANDERS)]
    for bystander in bystanders:
        await bystander.expect("message")  # the greeting
    done = asyncio.Event()
    chatting = [asyncio.create_task(chat_until(b, i, done)) for i, b in enumerate(bystanders)]
    try:
        # U+0000 in the hello's name and email, in message text, and from the agent.
        nul = await Customer.connect(gateway, name="Me\x00i", email="mei\x00@example.com")
        await nul.expect("message")
        for i in range(6):
            await nul.send(type="message", id=f"n{i}", text=f"where\x00 is my parcel {i}?")
        acked = {(await next_of(nul, "ack"))["id"] for _ in range(6)}
        assert acked == {f"n{i}" for i in range(6)}
        # An id is echoed back, so one with U+0000 is refused rather than normalised.
        await nul.send(type="message", id="bad\x00id", text="hi")
        assert (await next_of(nul, "error"))["code"] == "bad_message"

        await nul.send(type="message", id="h", text="agent please")  # (it may be queued already)
        offer = (await next_of(alice, "offer"))["conversation"]
        assert offer["customer"]["name"] == f"Me{R}i"
        assert offer["transcript"][1]["text"] == f"where{R} is my parcel 0?"
        await alice.send(type="accept", conversation_id=offer["id"])
        await next_of(alice, "assigned")
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="hello\x00 Mei")
        await next_of(alice, "ack", id="a1")
        assert (await next_of(nul, "message", author="agent"))["text"] == f"hello{R} Mei"
    finally:
        done.set()
    sent = await asyncio.wait_for(asyncio.gather(*chatting), 60)
    assert all(n >= ROUNDS * BURST for n in sent)
    for bystander in bystanders:
        await bystander.send(type="message", id="last", text="How much does shipping cost?")
        await next_of(bystander, "ack", id="last")  # still connected and served
    assert_no_traceback(gateway)


async def test_admin_api_normalises_text_and_refuses_bad_ids_and_numbers(gateway: GatewayProcess) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        body = {"name": "Vic\u0000tor", "attributes": {"seg\u0000": "gold\u0000"},
                "identities": [{"channel": "email", "address": "Vic\u0000@x.example"}]}
        async with http.put(f"{gateway.http}/api/customers/crm-1", data=json.dumps(body), headers=headers) as r:
            assert r.status == 201, await r.text()
            answer = await r.json()
            assert {k: answer[k] for k in ("id", "name", "tier", "attributes")} == {
                "id": "crm-1", "name": f"Vic{R}tor", "tier": None, "attributes": {f"seg{R}": f"gold{R}"}}
            assert [(i["channel"], i["address"]) for i in answer["identities"]] == [("email", f"vic{R}@x.example")]
        async with http.put(f"{gateway.http}/api/customers/crm%002", data="{}", headers=headers) as r:
            assert (r.status, (await r.json())["error"]) == (400, "bad_customer_id")
        async with http.get(f"{gateway.http}/api/customers/crm%002", headers=headers) as r:
            assert (r.status, (await r.json())["error"]) == (404, "unknown_customer")
        async with http.put(f"{gateway.http}/api/customers/crm-3", data='{"attributes": {"ltv": NaN}}',
                            headers=headers) as r:
            assert (r.status, (await r.json())["error"]) == (400, "bad_customer")
        async with http.put(f"{gateway.http}/api/customers/crm-3", data='{"name": "\\ud800"}', headers=headers) as r:
            assert (r.status, (await r.json())["error"]) == (400, "bad_customer")  # not JSON text
    assert_no_traceback(gateway)


async def test_postgres_going_away_gets_documented_answers_everywhere(
        gateway: GatewayProcess, pg_url: str, pg_admin_dsn: str) -> None:
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    mei = await Customer.connect(gateway)
    await mei.expect("message")
    await mei.send(type="message", id="h", text="agent please")
    await next_of(mei, "queued")
    offer = (await next_of(alice, "offer"))["conversation"]
    await alice.send(type="accept", conversation_id=offer["id"])
    await next_of(alice, "assigned")
    await next_of(mei, "assigned")

    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    async with database_away(pg_url, pg_admin_dsn):
        await mei.send(type="message", id="m1", text="are you there?")
        assert (await next_of(mei, "error"))["code"] == "unavailable"
        await alice.send(type="message", conversation_id=offer["id"], id="a1", text="yes")
        assert (await next_of(alice, "error"))["code"] == "unavailable"
        newcomer = Customer(await websockets.connect(gateway.url("/webchat/ws")))
        await newcomer.send(type="hello", token=None, last_seq=0)
        assert (await next_of(newcomer, "error"))["code"] == "unavailable"
        async with aiohttp.ClientSession() as http:
            async with http.put(f"{gateway.http}/api/customers/crm-9", data='{"name": "x"}', headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (503, "unavailable")
            async with http.get(f"{gateway.http}/api/customers/crm-9", headers=headers) as r:
                assert (r.status, (await r.json())["error"]) == (503, "unavailable")
            async with http.get(f"{gateway.http}/readyz") as r:
                assert r.status == 503
        # An agent connecting now (with a conversation to catch up on; it replaces the first
        # connection) is told and closed, to reconnect; it is not left half authenticated.
        late = await Agent.connect(gateway, ALICE_TOKEN)
        assert (await next_of(late, "error"))["code"] == "unavailable"
        assert (await late.closed())[0] == 1013

    # Back: the same sockets carry on, and a resend with the same id is stored once.
    await mei.send(type="message", id="m1", text="are you there?")
    await next_of(mei, "ack", id="m1")
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    assert (await next_of(alice, "ready"))["conversations"] == [offer["id"]]
    await alice.send(type="message", conversation_id=offer["id"], id="a1", text="yes")
    await next_of(alice, "ack", id="a1")
    await newcomer.hello()
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{gateway.http}/api/customers/crm-9", data='{"name": "x"}', headers=headers) as r:
            assert r.status == 201
    assert_no_traceback(gateway)

"""End to end: ``GET /api/conversations`` and ``GET /api/conversations/{id}`` against a real
gateway process on each engine, with conversations in different states and queues made by real
customer and agent websockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest_asyncio

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, database_away, gateway_config

ADMIN_TOKEN = "admin-test-token-0123"
FRAME = 10.0


@pytest_asyncio.fixture
async def gateway(tmp_path: Path, store_url: str) -> AsyncIterator[GatewayProcess]:
    config = gateway_config(store_url)
    config["server"].update(admin_token=ADMIN_TOKEN, reload_poll=0)
    process = GatewayProcess.write_config(tmp_path, config)
    await process.start()
    yield process
    await process.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


async def get(http: aiohttp.ClientSession, gateway: GatewayProcess, path: str,
              token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(gateway.http + path, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if response.content_type == "application/json" else text


async def until_event(customer: Customer, type_: str) -> dict[str, Any]:
    while True:
        frame = await customer.recv(FRAME)
        if frame["type"] == type_:
            return frame


async def make_three(gateway: GatewayProcess) -> dict[str, Any]:
    """A VIP conversation worked and closed by Alice (vip_desk), one queued in general with
    nobody to take it, and one still with the bot. Returns their ids and the VIP's customer id."""
    vip = await Customer.connect(gateway, name="Vic", email="vic@vip.example")
    await vip.send(type="message", id="v1", text="I'd like to talk to an agent")
    await until_event(vip, "queued")
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    while (frame := await alice.recv(FRAME))["type"] != "offer":
        pass
    customer_id = frame["conversation"]["customer"]["id"]
    await alice.send(type="accept", conversation_id=vip.conversation_id)
    await until_event(vip, "assigned")
    await alice.send(type="message", conversation_id=vip.conversation_id, id="a1", text="Hi Vic, Alice here.")
    await until_event(vip, "message")
    await alice.send(type="close", conversation_id=vip.conversation_id, disposition="resolved")
    await until_event(vip, "closed")
    await alice.close()  # gone: the next conversation waits in its queue
    await vip.close()

    waiting = await Customer.connect(gateway, name="Wen")
    await waiting.send(type="message", id="w1", text="I'd like to talk to an agent")
    await until_event(waiting, "queued")
    await waiting.close()

    browsing = await Customer.connect(gateway, name="Bea")
    await browsing.close()
    return {"closed": vip.conversation_id, "queued": waiting.conversation_id, "bot": browsing.conversation_id,
            "vip_customer": customer_id}


async def test_list_filters_pages_and_reads_a_transcript(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    made = await make_three(gateway)

    def ids(body: dict[str, Any]) -> list[str]:
        return [c["id"] for c in body["conversations"]]

    status, body = await get(http, gateway, "/api/conversations")
    assert status == 200, body
    assert ids(body) == [made["bot"], made["queued"], made["closed"]]
    assert body["next"] is None
    closed = body["conversations"][2]
    assert closed["state"] == "closed" and closed["queue"] == "vip_desk" and closed["agent_id"] == "alice"
    assert closed["customer_id"] == made["vip_customer"] and closed["channel"] == "webchat"
    assert closed["closed_at"] is not None and closed["created_at"] <= closed["updated_at"]
    assert body["conversations"][0]["state"] == "bot" and body["conversations"][0]["closed_at"] is None

    for query, expected in [("state=queued", ["queued"]), ("state=closed", ["closed"]), ("state=bot", ["bot"]),
                            ("queue=vip_desk", ["closed"]), ("queue=general", ["queued"]),
                            (f"customer={made['vip_customer']}", ["closed"]),
                            ("channel=webchat", ["bot", "queued", "closed"]), ("channel=email", []),
                            ("state=queued&queue=vip_desk", []), ("state=&queue=", ["bot", "queued", "closed"])]:
        status, body = await get(http, gateway, f"/api/conversations?{query}")
        assert status == 200 and ids(body) == [made[k] for k in expected], (query, body)

    # Pages of two: the cursor continues where the first page ended.
    status, first = await get(http, gateway, "/api/conversations?limit=2")
    assert ids(first) == [made["bot"], made["queued"]] and first["next"]
    await Customer.connect(gateway, name="Late")  # newer than the cursor: not on the next page
    status, second = await get(http, gateway, f"/api/conversations?limit=2&cursor={first['next']}")
    assert status == 200 and ids(second) == [made["closed"]] and second["next"] is None

    # The transcript: every event with its kind, author, client id and data, in seq order.
    status, body = await get(http, gateway, f"/api/conversations/{made['closed']}")
    assert status == 200, body
    assert body["conversation"]["id"] == made["closed"] and body["next_after"] is None
    events = body["events"]
    assert [e["seq"] for e in events] == list(range(1, body["conversation"]["last_seq"] + 1))
    kinds = [e["kind"] for e in events]
    for kind in ("message", "queued", "offered", "assigned", "closed"):
        assert kind in kinds, kinds
    mine = next(e for e in events if e["author"] == "customer")
    assert mine["client_id"] == "v1" and mine["text"] == "I'd like to talk to an agent"
    reply = next(e for e in events if e["author"] == "agent" and e["kind"] == "message")
    assert reply["client_id"] == "a1" and reply["text"] == "Hi Vic, Alice here." and reply["at"]
    assert events[-1]["kind"] == "closed" and events[-1]["data"].get("disposition") == "resolved"

    status, page = await get(http, gateway, f"/api/conversations/{made['closed']}?limit=2")
    assert [e["seq"] for e in page["events"]] == [1, 2] and page["next_after"] == 2
    status, rest = await get(http, gateway, f"/api/conversations/{made['closed']}?after=2&limit=500")
    assert [e["seq"] for e in rest["events"]] == [e["seq"] for e in events[2:]] and rest["next_after"] is None


async def test_bad_queries_unknown_ids_and_the_token(gateway: GatewayProcess, http: aiohttp.ClientSession) -> None:
    for query, code in [("limit=0", "bad_limit"), ("limit=501", "bad_limit"), ("limit=ten", "bad_limit"),
                        ("state=open", "bad_state"), ("cursor=not-a-cursor", "bad_cursor"),
                        ("cursor=W10", "bad_cursor"), ("stat=bot", "bad_query")]:
        status, body = await get(http, gateway, f"/api/conversations?{query}")
        assert status == 400 and body["error"] == code and body["message"], (query, body)
    customer = await Customer.connect(gateway, name="Ada")
    for query, code in [("after=-1", "bad_after"), ("limit=0", "bad_limit"), ("limit=501", "bad_limit"),
                        ("from=1", "bad_query")]:
        status, body = await get(http, gateway, f"/api/conversations/{customer.conversation_id}?{query}")
        assert status == 400 and body["error"] == code, (query, body)
    # The KB's proposals refuse a typo the same way, rather than list every status.
    status, body = await get(http, gateway, "/api/kb/proposals?statuss=pending")
    assert status == 400 and body == {"error": "bad_query",
                                      "message": "unknown query parameter 'statuss' (known: status)"}, body
    status, body = await get(http, gateway, "/api/kb/proposals?status=pending")
    assert status == 200 and body == {"proposals": []}
    status, body = await get(http, gateway, "/api/conversations/nobody")
    assert status == 404 and body == {"error": "unknown_conversation", "message": "no conversation 'nobody'"}
    for path in ("/api/conversations", f"/api/conversations/{customer.conversation_id}"):
        status, body = await get(http, gateway, path, token=None)
        assert status == 401 and body["error"] == "unauthorized"
        status, body = await get(http, gateway, path, token="wrong")
        assert status == 401
    # A path or a method the API does not have: its error shape too, not aiohttp's plain text.
    status, body = await get(http, gateway, "/api/no-such-thing")
    assert status == 404 and body == {"error": "not_found", "message": "no such endpoint: GET /api/no-such-thing"}
    async with http.delete(gateway.http + "/api/kb/proposals") as response:
        body = await response.json()
        assert response.status == 405 and body["error"] == "method_not_allowed" and "GET" in response.headers["Allow"]
    async with http.get(gateway.http + "/no-such-page") as response:
        assert response.status == 404  # outside /api/, as aiohttp answers
    await customer.close()


async def test_storage_unavailable_is_503(pg_url: str, pg_admin_dsn: str, tmp_path: Path,
                                          http: aiohttp.ClientSession) -> None:
    config = gateway_config(pg_url)
    config["server"].update(admin_token=ADMIN_TOKEN, reload_poll=0)
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    try:
        customer = await Customer.connect(gateway, name="Ada")
        await customer.close()
        async with database_away(pg_url, pg_admin_dsn):
            # Let the pool's idle connections read their termination first: a request racing
            # that read gets asyncpg's InternalClientError, which the engine does not map (yet).
            await asyncio.sleep(0.5)
            for path in ("/api/conversations", f"/api/conversations/{customer.conversation_id}"):
                status, body = await get(http, gateway, path)
                assert status == 503 and body["error"] == "unavailable", (path, body, gateway.log_text())
        deadline = asyncio.get_running_loop().time() + FRAME
        while (status := (await get(http, gateway, "/api/conversations"))[0]) != 200:
            assert asyncio.get_running_loop().time() < deadline, "the listing did not recover"
            await asyncio.sleep(0.1)
    finally:
        await gateway.stop()

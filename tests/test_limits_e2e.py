"""Rate limits and failed-auth lockouts against the real gateway: a flood gets ``rate_limited``
frames and loses nothing it was told was stored; others are not slowed; wrong tokens lock an
address out; behind a trusted proxy each client has its own buckets; ``/metrics`` counts it all."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest_asyncio
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ALICE_TOKEN, Agent, Customer, GatewayProcess, gateway_config

ADMIN_TOKEN = "admin-test-token-0123"
WAIT = 10.0  # bounds a wait; never asserted as a duration

# Rates so low that nothing refills while a test runs (the counts are exact), unless a test
# needs the refill (then a test waits for retry_after, as a client would).
SLOW = 0.01
StartGateway = Callable[..., Awaitable[GatewayProcess]]


def limits(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "messages_per_connection": {"rate": 100, "burst": 100},
        "messages_per_customer": {"rate": 100, "burst": 100},
        "agent_messages_per_connection": {"rate": 100, "burst": 100},
        "new_conversations_per_address": {"rate": 100, "burst": 100},
        "failed_auth": {"attempts": 100, "window": 60, "lockout": 60, "delay": 0},
    }
    section.update(overrides)
    return section


@contextlib.asynccontextmanager
async def starting(tmp_path: Path, url: str) -> AsyncIterator[StartGateway]:
    """Start gateways with the test config and ``limits`` overridden by keyword; stop them after."""
    started: list[GatewayProcess] = []

    async def run(**limit_overrides: Any) -> GatewayProcess:
        process = GatewayProcess.write_config(tmp_path, config(url, **limit_overrides))
        started.append(process)
        return await process.start()

    try:
        yield run
    finally:
        for process in started:
            await process.stop()


def config(url: str, **limit_overrides: Any) -> dict[str, Any]:
    server = {"host": "127.0.0.1", "port": 0, "max_frame_bytes": 4096, "log_format": "json",
              "shutdown_timeout": 5, "admin_token": ADMIN_TOKEN, "reload_poll": 0}
    return gateway_config(url, server=server, limits=limits(**limit_overrides))


@pytest_asyncio.fixture
async def start(tmp_path: Path, sqlite_url: str) -> AsyncIterator[StartGateway]:
    async with starting(tmp_path, sqlite_url) as run:
        yield run


@pytest_asyncio.fixture
async def start_on_both(tmp_path: Path, store_url: str) -> AsyncIterator[StartGateway]:
    async with starting(tmp_path, store_url) as run:
        yield run


async def replies(customer: Customer, ids: set[str]) -> tuple[dict[str, int], dict[str, float]]:
    """Read until every id in ``ids`` was acked or refused: (acked id -> seq, refused id -> retry_after)."""
    acked: dict[str, int] = {}
    refused: dict[str, float] = {}
    while set(acked) | set(refused) != ids:
        frame = await customer.recv()
        if frame["type"] == "ack":
            assert frame["id"] not in acked, f"acked twice: {frame}"
            acked[frame["id"]] = frame["seq"]
        elif frame["type"] == "error":
            assert frame["code"] == "rate_limited" and frame["retry_after"] > 0, frame
            refused[frame["id"]] = frame["retry_after"]
    return acked, refused


async def transcript(gateway: GatewayProcess, token: str, expected: int) -> list[tuple[str, int]]:
    """(id, seq) of every customer message, replayed from seq 0 on a new socket."""
    replay = await Customer.connect(gateway, token=token, last_seq=0)
    seen: list[tuple[str, int]] = []
    while len(seen) < expected:
        frame = await replay.recv()
        if frame["type"] == "message" and frame["author"] == "customer":
            seen.append((frame["id"], frame["seq"]))
    await replay.expect_nothing(0.5)
    await replay.close()
    return seen


async def test_a_flooding_customer_is_refused_loses_nothing_acked_and_others_chat_on(
        start_on_both: StartGateway) -> None:
    gateway = await start_on_both(messages_per_connection={"rate": 20, "burst": 5})
    flooder = await Customer.connect(gateway)
    other = await Customer.connect(gateway)
    ids = {f"m{i}" for i in range(40)}
    for i in range(40):
        await flooder.send(type="message", id=f"m{i}", text=f"flood {i}")
    # Another customer chatting meanwhile gets every message acked, none refused.
    for i in range(3):
        await other.send(type="message", id=f"o{i}", text=f"hello {i}")
        other_acked, other_refused = await replies(other, {f"o{i}"})
        assert not other_refused
    acked, refused = await replies(flooder, ids)
    assert refused and len(acked) >= 5, (acked, refused)

    # The client resends what was refused, with the same ids, after retry_after.
    while refused:
        await asyncio.sleep(max(refused.values()))
        for client_id in sorted(refused):
            await flooder.send(type="message", id=client_id, text=f"flood {client_id[1:]}")
        more, refused = await replies(flooder, set(refused))
        assert not set(more) & set(acked)
        acked.update(more)
    assert set(acked) == ids

    # Everything acknowledged is stored, exactly once, under the seq of its ack.
    stored = await transcript(gateway, flooder.token or "", 40)
    assert sorted(stored) == sorted(acked.items())
    metrics = await scrape(gateway)
    assert metrics[("contactgate_rate_limited_total", (("limit", "messages_per_connection"),))] > 0


async def test_the_customer_limit_counts_all_sockets_of_one_token(start: StartGateway) -> None:
    gateway = await start(messages_per_customer={"rate": SLOW, "burst": 6})
    tab1 = await Customer.connect(gateway)
    tab2 = await Customer.connect(gateway, token=tab1.token, last_seq=0)
    for i in range(5):
        await tab1.send(type="message", id=f"a{i}", text=f"one {i}")
        await tab2.send(type="message", id=f"b{i}", text=f"two {i}")
    acked1, refused1 = await replies(tab1, {f"a{i}" for i in range(5)})
    acked2, refused2 = await replies(tab2, {f"b{i}" for i in range(5)})
    assert len(acked1) + len(acked2) == 6 and len(refused1) + len(refused2) == 4
    # Another customer has its own allowance.
    other = await Customer.connect(gateway)
    await other.send(type="message", id="x", text="hi")
    assert (await replies(other, {"x"}))[1] == {}
    stored = await transcript(gateway, tab1.token or "", 6)
    assert sorted(i for i, _ in stored) == sorted([*acked1, *acked2])


async def test_agent_messages_per_connection(start: StartGateway) -> None:
    gateway = await start(agent_messages_per_connection={"rate": SLOW, "burst": 3})
    alice = await Agent.connect(gateway, ALICE_TOKEN)
    await alice.expect("ready")
    customer = await Customer.connect(gateway)
    await customer.send(type="message", id="c1", text="I want to talk to an agent")
    offer = await alice.expect("offer")
    cid = offer["conversation"]["id"]
    await alice.send(type="accept", conversation_id=cid)
    await alice.expect("assigned")
    for i in range(5):
        await alice.send(type="message", conversation_id=cid, id=f"a{i}", text=f"reply {i}")
    acked, refused = set(), set()
    while len(acked) + len(refused) < 5:
        frame = await alice.recv()
        if frame["type"] == "ack":
            acked.add(frame["id"])
        elif frame["type"] == "error":
            assert frame["code"] == "rate_limited" and frame["conversation_id"] == cid and frame["retry_after"] > 0
            refused.add(frame["id"])
    assert acked == {"a0", "a1", "a2"} and refused == {"a3", "a4"}


async def hello(gateway: GatewayProcess, forwarded_for: str | None = None) -> dict[str, Any]:
    """A new customer's hello; the welcome, or the error frame and the close that refused it."""
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    customer = Customer(await websockets.connect(gateway.url("/webchat/ws"), additional_headers=headers))
    await customer.send(type="hello", token=None, last_seq=0)
    frame = await customer.recv()
    if frame["type"] == "welcome":
        await customer.close()
        return frame
    code, reason = await customer.closed()
    return {**frame, "close": (code, reason)}


def refused_hello(frame: dict[str, Any]) -> bool:
    if frame["type"] == "welcome":
        return False
    assert frame["code"] == "rate_limited" and frame["retry_after"] > 0, frame
    assert frame["close"] == (4429, "too many new conversations; retry later")
    return True


async def test_new_conversations_per_address(start: StartGateway) -> None:
    gateway = await start(new_conversations_per_address={"rate": SLOW, "burst": 3})
    first = await hello(gateway)
    assert [refused_hello(await hello(gateway)) for _ in range(3)] == [False, False, True]
    # A returning customer is not a new conversation: resuming still works.
    returning = await Customer.connect(gateway, token=first["token"])
    assert returning.conversation_id == first["conversation_id"]
    lines = [r for r in gateway.logs if r.get("msg") == "new conversations rate limited"]
    assert [r["address"] for r in lines] == ["127.0.0.1"]


async def test_a_reload_changes_the_limits_at_once(start: StartGateway, sqlite_url: str) -> None:
    gateway = await start()
    assert not refused_hello(await hello(gateway))
    stricter = config(sqlite_url, new_conversations_per_address={"rate": SLOW, "burst": 1})
    gateway.config_path.write_text(yaml.safe_dump(stricter), encoding="utf-8")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
        async with http.post(gateway.http + "/api/config/reload",
                             headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as response:
            assert response.status == 200 and (await response.json())["restart_needed"] == []
    assert [refused_hello(await hello(gateway)) for _ in range(2)] == [False, True]


async def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(start: StartGateway) -> None:
    gateway = await start(new_conversations_per_address={"rate": SLOW, "burst": 2},
                          trusted_proxies=["127.0.0.0/8"])
    one, two = "198.51.100.1", "10.9.8.7, 198.51.100.2"
    assert [refused_hello(await hello(gateway, one)) for _ in range(3)] == [False, False, True]
    assert [refused_hello(await hello(gateway, two)) for _ in range(3)] == [False, False, True]
    lines = [r for r in gateway.logs if r.get("msg") == "new conversations rate limited"]
    assert [r["address"] for r in lines] == ["198.51.100.1", "198.51.100.2"]
    # A malformed header is not a way to a fresh bucket: it counts as the proxy itself.
    assert [refused_hello(await hello(gateway, "nonsense")) for _ in range(3)] == [False, False, True]


async def test_from_an_untrusted_peer_the_forwarded_header_is_ignored(start: StartGateway) -> None:
    gateway = await start(new_conversations_per_address={"rate": SLOW, "burst": 2},
                          trusted_proxies=["10.0.0.0/8"])
    spoofed = [refused_hello(await hello(gateway, f"198.51.100.{i}")) for i in range(3)]
    assert spoofed == [False, False, True]
    lines = [r for r in gateway.logs if r.get("msg") == "new conversations rate limited"]
    assert [r["address"] for r in lines] == ["127.0.0.1"]


async def agent_closed(gateway: GatewayProcess, token: str) -> tuple[dict[str, Any] | None, tuple[int | None, str]]:
    agent = await Agent.connect(gateway, token)
    frame = None
    try:
        frame = await agent.recv()
    except websockets.ConnectionClosed:
        pass
    if frame is not None and frame["type"] == "ready":
        await agent.close()
        return frame, (None, "")
    return frame, await agent.closed()


async def test_wrong_agent_tokens_lock_the_address_out(start: StartGateway) -> None:
    gateway = await start(failed_auth={"attempts": 3, "window": 60, "lockout": 1.5, "delay": 0.05})
    for _ in range(3):
        assert await agent_closed(gateway, "wrong") == (None, (4401, "invalid token"))
    # Locked out: even the right token is refused, and so is every further try.
    for token in (ALICE_TOKEN, "wrong", "wrong", ALICE_TOKEN):
        frame, close = await agent_closed(gateway, token)
        assert close == (4429, "too many failed authentications; retry later")
        assert frame is not None and frame["code"] == "rate_limited" and 0 < frame["retry_after"] <= 1.5
    failed = [r for r in gateway.logs if r.get("msg") == "agent auth failed"]
    locked = [r for r in gateway.logs if r.get("msg") == "agent auth locked out"]
    assert [r["address"] for r in failed] == ["127.0.0.1"] * 3
    assert [r["address"] for r in locked] == ["127.0.0.1"]
    metrics = await scrape(gateway)
    assert metrics[("contactgate_auth_failures_total", (("endpoint", "agent"),))] == 3
    assert metrics[("contactgate_auth_lockouts_total", (("endpoint", "agent"),))] == 1
    assert metrics[("contactgate_auth_locked_out_addresses", (("endpoint", "agent"),))] == 1
    # When the lockout ends the right token works again.
    await asyncio.sleep(frame["retry_after"])
    ready, _ = await agent_closed(gateway, ALICE_TOKEN)
    assert ready is not None and ready["type"] == "ready"


async def test_wrong_admin_tokens_get_429_once_locked_out(start: StartGateway) -> None:
    gateway = await start(failed_auth={"attempts": 3, "window": 60, "lockout": 30, "delay": 0})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
        async def get(token: str) -> tuple[int, dict[str, Any], str | None]:
            async with http.get(gateway.http + "/api/queues", headers={"Authorization": f"Bearer {token}"}) as response:
                return response.status, await response.json(), response.headers.get("Retry-After")

        assert (await get(ADMIN_TOKEN))[0] == 200
        for _ in range(5):  # no Authorization header: 401, but no token was guessed, so not counted
            async with http.get(gateway.http + "/api/queues") as response:
                assert response.status == 401
        assert (await get(ADMIN_TOKEN))[0] == 200
        for _ in range(3):
            status, body, _ = await get("wrong")
            assert (status, body["error"]) == (401, "unauthorized")
        for token in ("wrong", ADMIN_TOKEN):
            status, body, retry_after = await get(token)
            assert (status, body["error"]) == (429, "rate_limited")
            assert 0 < body["retry_after"] <= 30 and retry_after is not None and 1 <= int(retry_after) <= 30
    failed = [r for r in gateway.logs if r.get("msg") == "admin auth failed"]
    locked = [r for r in gateway.logs if r.get("msg") == "admin auth locked out"]
    assert [r["address"] for r in failed] == ["127.0.0.1"] * 3 and len(locked) == 1
    metrics = await scrape(gateway)
    assert metrics[("contactgate_auth_failures_total", (("endpoint", "admin"),))] == 3
    assert metrics[("contactgate_auth_locked_out_addresses", (("endpoint", "admin"),))] == 1
    assert metrics[("contactgate_auth_locked_out_addresses", (("endpoint", "agent"),))] == 0


async def scrape(gateway: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as http:
        async with http.get(gateway.http + "/metrics") as response:
            text = await response.text()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}

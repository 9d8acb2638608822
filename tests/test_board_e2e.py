"""The supervisor board's feed against a real gateway: /board/ws (admin token in the first frame,
Origin checked before the upgrade, wrong tokens refused), pushes as a customer queues and an
agent answers, GET /api/board with the same figures as GET /api/queues, and the /board page's
files. (A gateway without an admin token: tests/test_board_browser.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import websockets

from tests.support import ALICE_TOKEN, Agent, Client, Customer, GatewayProcess, gateway_config

ADMIN_TOKEN = "board-admin-token-0123"

# One gateway for the module: the tests watch different things (no customer or agent of one is
# seen by the other's checks).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("board")
    config = gateway_config(f"sqlite:///{directory / 'gateway.db'}")
    config["server"]["admin_token"] = ADMIN_TOKEN
    config["board"] = {"tick": 2, "breach_share": 0.5}
    config["queues"][1]["service_level"] = {"answer_within": 2, "percent": 80}
    process = await GatewayProcess.write_config(directory, config).start()
    yield process
    await process.stop()


async def board(gateway: GatewayProcess, token: str = ADMIN_TOKEN, **headers: str) -> Client:
    client = Client(await websockets.connect(gateway.url("/board/ws"), additional_headers=headers or None))
    await client.send(type="auth", token=token)
    return client


async def figures_until(client: Client, check: Any, timeout: float = 20) -> dict[str, Any]:
    """The first ``figures`` frame for which ``check(frame)`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.recv(timeout)
            assert frame["type"] != "error", frame
            if frame["type"] == "figures" and check(frame):
                return frame


def queue(frame: dict[str, Any], name: str) -> dict[str, Any]:
    return next(q for q in frame["queues"] if q["queue"] == name)


async def get_json(gateway: GatewayProcess, path: str) -> dict[str, Any]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        async with http.get(gateway.http + path) as answer:
            assert answer.status == 200, await answer.text()
            return await answer.json()


async def test_the_board_follows_a_customer_from_queue_to_answer(gateway: GatewayProcess) -> None:
    watcher = await board(gateway)
    history = await watcher.expect("history")
    # The gateway samples every queue at start (and each minute), so the charts begin with a point.
    assert set(history["queues"]) == {"vip_desk", "general"} and history["hours"] == 8
    assert all(points and points[-1][1:] == [None, 0] for points in history["queues"].values()), history
    first = await watcher.expect("figures")
    assert queue(first, "general")["waiting"] == 0 and first["breaching"] == []
    assert {a["id"]: a["status"] for a in first["agents"]} == {"alice": "offline", "bob": "offline"}

    # A customer asks for a person: pushed at once (an event), not at the next tick.
    customer = await Customer.connect(gateway, name="Mei")
    await customer.send(type="message", id="c1", text="I'd like to talk to an agent")
    await customer.next("ack", id="c1")
    queued = await figures_until(watcher, lambda f: queue(f, "general")["waiting"] == 1, timeout=3)
    assert queue(queued, "general")["colour"] == "amber"  # nobody answers: it will pass the 2 s target
    # Past half of the 2 s target it is about to breach, with its tier; past 2 s the queue is
    # still amber (no answer counted yet) and the customer is past the target.
    late = await figures_until(watcher, lambda f: f["breaching"] and f["breaching"][0]["past_target"])
    assert late["breaching"][0] | {"waited": None} == {
        "conversation_id": customer.conversation_id, "queue": "general", "tier": "standard", "channel": "webchat",
        "waited": None, "answer_within": 2.0, "past_target": True, "offered_to": None}

    # The same figures as /api/queues (the longest wait grows between the two reads).
    board_json, queues_json = await asyncio.gather(get_json(gateway, "/api/board"), get_json(gateway, "/api/queues"))
    for ours, theirs in zip(board_json["queues"], queues_json["queues"]):
        assert ours["longest_wait"] == pytest.approx(theirs["longest_wait"], abs=0.5)
        assert {k: v for k, v in ours.items() if k in theirs and k != "longest_wait"} == {
            k: v for k, v in theirs.items() if k != "longest_wait"}

    # Alice signs in: available, then busy with the offer; she accepts: answered late, red.
    agent = await Agent.connect(gateway, ALICE_TOKEN)
    await agent.expect("ready")
    offer = await agent.next("offer")
    busy = await figures_until(watcher, lambda f: f["agents"][0]["status"] == "busy")
    assert busy["agents"][0]["channels"] == [{"channel": "webchat", "conversations": 1, "capacity": None}]
    assert busy["agents"][0]["capacity"] == 2 and busy["agents"][0]["conversations"] == 1
    assert busy["breaching"][0]["offered_to"] == "alice"
    await agent.send(type="accept", conversation_id=offer["conversation"]["id"])
    answered = await figures_until(watcher, lambda f: queue(f, "general")["answered"] == 1)
    general = queue(answered, "general")
    assert (general["waiting"], general["service_level"], general["counted"], general["colour"]) == (0, 0.0, 1, "red")
    assert general["agents"] == {"available": 0, "busy": 1, "away": 0, "offline": 1}
    assert answered["breaching"] == []

    # Nothing changes now: the slow tick (2 s here) pushes anyway, with the time in state grown.
    quiet = await figures_until(watcher, lambda f: True, timeout=5)
    assert quiet["agents"][0]["in_state"] > answered["agents"][0]["in_state"]
    history = await get_json(gateway, "/api/board/history")
    assert history["queues"]["general"][0][1:] == [None, 0]
    for client in (watcher, customer, agent):
        await client.close()


async def test_wrong_tokens_and_foreign_pages_are_refused(gateway: GatewayProcess) -> None:
    for token in ("wrong", ADMIN_TOKEN[:-1]):
        refused = await board(gateway, token)
        assert await refused.closed() == (4401, "invalid token")
    first = Client(await websockets.connect(gateway.url("/board/ws")))
    await first.send_raw("{not json")  # only an error frame, as on /agent/ws: the socket stays
    assert (await first.expect("error"))["code"] == "bad_json"
    await first.send(type="hello")
    assert await first.closed() == (4401, "auth required")
    # Another site cannot open the board with the supervisor's browser: 403 before the upgrade.
    with pytest.raises(websockets.InvalidStatus) as refused_origin:
        await board(gateway, Origin="https://evil.example")
    assert refused_origin.value.response.status_code == 403
    own = await board(gateway, Origin=gateway.http)  # the gateway's own page may
    await own.expect("history")
    await own.close()

    await page_checks(gateway)


async def page_checks(gateway: GatewayProcess) -> None:
    """/board under the strict policy, its files (uPlot vendored with its licence) by versioned URLs."""
    async with aiohttp.ClientSession() as http:
        async with http.get(gateway.http + "/board") as page:
            assert page.status == 200
            assert "script-src 'self'" in page.headers["Content-Security-Policy"]
            html = await page.text()
        assert "<script>" not in html and "style=" not in html
        for path in ("web/vendor/uPlot.iife.min.js", "web/vendor/uPlot.min.css", "web/board.js", "web/board.css"):
            assert f'"{path}?v=' in html
            versioned = html.split(f'"{path}?v=')[1].split('"')[0]
            async with http.get(f"{gateway.http}/{path}?v={versioned}") as file:
                assert file.status == 200 and "immutable" in file.headers["Cache-Control"]
        async with http.get(gateway.http + "/web/vendor/uPlot.LICENSE.txt") as licence:
            assert "MIT License" in await licence.text()
        async with http.get(gateway.http + "/web/vendor/nothing.js") as missing:
            assert missing.status == 404

"""End to end: the admin API, the Prometheus endpoint and hot reload, against a real gateway
process (SQLite in a temporary directory), with aiohttp as the HTTP client and real customer and
agent websockets."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ALICE_TOKEN, BOB_TOKEN, Agent, Customer, GatewayProcess, gateway_config

ADMIN_TOKEN = "admin-test-token-0123"
WAIT = 10.0  # seconds a bounded wait for the gateway to reach a state may take


def server(**extra: Any) -> dict[str, Any]:
    """The test server section, with the admin API on and file polling off unless asked."""
    section: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "max_frame_bytes": 4096, "log_format": "json",
                               "shutdown_timeout": 5, "admin_token": ADMIN_TOKEN, "reload_poll": 0}
    section.update(extra)
    return {k: v for k, v in section.items() if v is not None}


def config_for(store_url: str, **sections: Any) -> dict[str, Any]:
    sections.setdefault("server", server())
    return gateway_config(store_url, **sections)


def write(gateway: GatewayProcess, config: dict[str, Any] | str) -> None:
    text = config if isinstance(config, str) else yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    gateway.config_path.write_text(text, encoding="utf-8")


StartGateway = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gateway.db'}"


@pytest_asyncio.fixture
async def start(tmp_path: Path, store_url: str) -> AsyncIterator[StartGateway]:
    """Start a gateway with the test config, sections replaced by keyword."""
    started: list[GatewayProcess] = []

    async def run(**sections: Any) -> GatewayProcess:
        directory = tmp_path / f"gw{len(started)}"
        directory.mkdir()
        process = GatewayProcess.write_config(directory, config_for(store_url, **sections))
        started.append(process)
        return await process.start()

    yield run
    for process in started:
        await process.stop()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


class Admin:
    def __init__(self, session: aiohttp.ClientSession, gateway: GatewayProcess, token: str | None = ADMIN_TOKEN) -> None:
        self.session, self.gateway, self.token = session, gateway, token

    async def call(self, method: str, path: str, *, token: str | None | bool = True, json: Any = None,
                   data: bytes | str | None = None) -> tuple[int, Any]:
        headers = {}
        chosen = self.token if token is True else token
        if chosen:
            headers["Authorization"] = f"Bearer {chosen}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.gateway.http + path, headers=headers, json=json,
                                        data=data) as response:
            body = await response.json() if response.content_type == "application/json" else await response.text()
            return response.status, body

    async def queues(self) -> dict[str, dict[str, Any]]:
        status, body = await self.call("GET", "/api/queues")
        assert status == 200, body
        return {row["queue"]: row for row in body["queues"]}

    async def agents(self) -> dict[str, dict[str, Any]]:
        status, body = await self.call("GET", "/api/agents")
        assert status == 200, body
        return {row["id"]: row for row in body["agents"]}

    async def reload(self) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/api/config/reload")

    async def until(self, predicate: Callable[[dict[str, dict[str, Any]]], bool], what: str) -> dict[str, dict[str, Any]]:
        """Poll /api/queues until ``predicate`` holds (bounded; no timing is asserted)."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            queues = await self.queues()
            if predicate(queues):
                return queues
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gave up waiting for {what}; /api/queues: {queues}")
            await asyncio.sleep(0.1)


async def logged(gateway: GatewayProcess, msg: str, **fields: Any) -> dict[str, Any]:
    """The gateway's log line ``msg`` with ``fields``, waiting for it (bounded)."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while True:
        for record in gateway.logs:
            if record.get("msg") == msg and all(record.get(k) == v for k, v in fields.items()):
                return record
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"no log line {msg!r} with {fields}; log:\n{gateway.log_text()}")
        await asyncio.sleep(0.05)


# customers and agents ------------------------------------------------------------------------------
async def event(customer: Customer, type_: str, **fields: Any) -> dict[str, Any]:
    """The customer's next conversation event, skipping transient position updates."""
    while True:
        frame = await customer.recv()
        if frame["type"] != "position":
            break
    assert frame["type"] == type_, f"expected {type_!r} frame, got {frame}"
    for key, value in fields.items():
        assert frame.get(key) == value, f"expected {key}={value!r} in {frame}"
    if "seq" in frame:
        assert frame["seq"] > customer.last_seq, f"seq went back: after {customer.last_seq} got {frame}"
        customer.last_seq = frame["seq"]
    return frame


async def new_customer(gateway: GatewayProcess, **hello: Any) -> Customer:
    customer = await Customer.connect(gateway, **hello)
    await event(customer, "message", author="bot")  # the greeting
    return customer


async def hand_off(customer: Customer, text: str = "I want to talk to an agent") -> dict[str, Any]:
    """Ask for a person; returns the queued frame."""
    client_id = f"handoff-{customer.last_seq}"
    await customer.send(type="message", id=client_id, text=text)
    await event(customer, "ack", id=client_id)
    await event(customer, "message", author="bot")
    return await event(customer, "queued")


async def online(gateway: GatewayProcess, token: str) -> Agent:
    agent = await Agent.connect(gateway, token)
    await agent.expect("ready")
    return agent


async def accept(agent: Agent, conversation_id: str) -> None:
    await agent.send(type="accept", conversation_id=conversation_id)
    await agent.expect("assigned", conversation_id=conversation_id)


# 1. admin auth --------------------------------------------------------------------------------------
async def test_admin_api_is_off_without_a_token_and_needs_the_right_bearer(
        start: StartGateway, http: aiohttp.ClientSession) -> None:
    # Two gateways (started together: each start loads the FAQ), one without an admin token.
    disabled, gateway = await asyncio.gather(start(server=server(admin_token=None)), start())
    admin = Admin(http, disabled)
    for method, path in (("GET", "/api/queues"), ("GET", "/api/agents"), ("GET", "/api/customers/x"),
                         ("POST", "/api/config/reload")):
        status, body = await admin.call(method, path)
        assert status == 403, (method, path, body)
        assert body["error"] == "admin_disabled" and "admin_token" in body["message"]
    status, body = await admin.call("PUT", "/api/customers/x", json={"name": "X"})
    assert (status, body["error"]) == (403, "admin_disabled")
    # Prometheus is scraped without a token, whether or not the admin API is on.
    status, _ = await admin.call("GET", "/metrics", token=None)
    assert status == 200

    admin = Admin(http, gateway)
    for token in (None, "wrong-token", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], ""):
        status, body = await admin.call("GET", "/api/queues", token=token)
        assert status == 401, (token, body)
        assert body["error"] == "unauthorized"
    # Not a bearer credential, even with the right secret in it.
    async with http.get(gateway.http + "/api/queues", headers={"Authorization": ADMIN_TOKEN}) as response:
        assert response.status == 401
    async with http.get(gateway.http + "/api/queues", headers={"Authorization": f"Basic {ADMIN_TOKEN}"}) as response:
        assert response.status == 401
    status, body = await admin.call("GET", "/api/queues")
    assert status == 200 and {q["queue"] for q in body["queues"]} == {"vip_desk", "general"}
    status, body = await admin.call("GET", "/api/agents")
    assert status == 200 and {a["id"] for a in body["agents"]} == {"alice", "bob"}
    status, _ = await admin.call("GET", "/metrics", token=None)
    assert status == 200


# 2. customer profiles ------------------------------------------------------------------------------
async def test_customer_profile_upsert_read_and_validation(start: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start()
    admin = Admin(http, gateway)

    status, body = await admin.call("PUT", "/api/customers/crm-42", json={
        "name": "Vera", "tier": "vip", "attributes": {"lifetime_value": 25000, "segment": "retail"},
        "identities": [{"channel": "email", "address": "Vera@Example.COM"},
                       {"channel": "telegram", "address": "CaseKept-77"}]})
    assert status == 201, body
    assert body["id"] == "crm-42" and body["name"] == "Vera" and body["tier"] == "vip"
    assert body["attributes"] == {"lifetime_value": 25000, "segment": "retail"}
    identities = {(i["channel"], i["address"]) for i in body["identities"]}
    # Emails are case-insensitive and stored lowercased; other addresses are kept as given.
    assert identities == {("email", "vera@example.com"), ("telegram", "CaseKept-77")}

    status, got = await admin.call("GET", "/api/customers/crm-42")
    assert status == 200 and got == body

    # A partial update keeps what it leaves out; identities are only ever added.
    status, body = await admin.call("PUT", "/api/customers/crm-42", json={
        "name": "Vera Lin", "identities": [{"channel": "phone", "address": "+8613800000000"}]})
    assert status == 200, body
    assert body["name"] == "Vera Lin" and body["tier"] == "vip"
    assert body["attributes"] == {"lifetime_value": 25000, "segment": "retail"}
    assert {(i["channel"], i["address"]) for i in body["identities"]} == identities | {("phone", "+8613800000000")}
    status, body = await admin.call("PUT", "/api/customers/crm-42", json={"tier": "standard"})
    assert status == 200 and body["tier"] == "standard" and body["name"] == "Vera Lin"
    status, body = await admin.call("PUT", "/api/customers/crm-42", json={})
    assert status == 200 and body["tier"] == "standard" and len(body["identities"]) == 3
    status, body = await admin.call("GET", "/api/customers/crm-42")
    assert body["attributes"] == {"lifetime_value": 25000, "segment": "retail"}

    # Bad bodies: 400 with a message that names the field.
    for payload, field in (
        ({"nickname": "V"}, "nickname"),
        ({"tier": 5}, "tier"),
        ({"tier": "gold member"}, "tier"),
        ({"tier": ""}, "tier"),
        ({"name": ["V"]}, "name"),
        ({"attributes": "vip"}, "attributes"),
        ({"identities": {"channel": "email"}}, "identities"),
        ({"identities": [{"channel": "email"}]}, "identities.0.address"),
        ({"identities": [{"channel": "email", "address": "a@b.c", "verified": True}]}, "identities.0.verified"),
        ({"identities": [{"channel": "", "address": "a@b.c"}]}, "identities.0.channel"),
        # A channel the config does not have (and no kind's name): a typo, not an identity.
        ({"identities": [{"channel": "emial", "address": "a@b.c"}]}, "identities.0.channel: no channel 'emial'"),
        # What routing reads as text (a number there made every later handoff fail).
        ({"attributes": {"email": 5}}, "'email' must be a string"),
        ({"attributes": {"phone": 4930123456}}, "'phone' must be a string"),
        ({"attributes": {"language": ["en"]}}, "'language' must be a string"),
    ):
        status, body = await admin.call("PUT", "/api/customers/crm-42", json=payload)
        assert status == 400, (payload, body)
        assert body["error"] == "bad_customer" and field in body["message"], (payload, body)
    for raw in ("{not json", "", "[1, 2]", "null"):
        status, body = await admin.call("PUT", "/api/customers/crm-42", data=raw)
        assert status == 400, (raw, body)
        assert body["error"] == "bad_customer" and body["message"].startswith("body"), (raw, body)
    status, body = await admin.call("PUT", "/api/customers/" + "x" * 129, json={"name": "Too long"})
    assert (status, body["error"]) == (400, "bad_customer_id")
    # A kind is read in lower case, so the address is spelled as that kind's.
    status, body = await admin.call("PUT", "/api/customers/crm-44", json={"identities": [{"kind": "EMAIL", "address": "F@Example.COM"}]})
    assert status == 201, body
    assert [(i["kind"], i["address"]) for i in body["identities"]] == [("email", "f@example.com")]
    # Nothing of the refused bodies stuck.
    status, body = await admin.call("GET", "/api/customers/crm-42")
    assert body["tier"] == "standard" and body["name"] == "Vera Lin" and len(body["identities"]) == 3
    assert body["attributes"] == {"lifetime_value": 25000, "segment": "retail"}

    status, body = await admin.call("GET", "/api/customers/nobody-here")
    assert status == 404 and body["error"] == "unknown_customer" and "nobody-here" in body["message"]


async def test_concurrent_first_puts_of_one_customer_all_succeed(start: StartGateway, http: aiohttp.ClientSession) -> None:
    """A CRM pushing its list with several workers may PUT the same new customer at once: one
    request creates it (201), the others update it (200); none fails with a 500."""
    gateway = await start()
    admin = Admin(http, gateway)
    customers, each = 4, 6
    results = await asyncio.gather(*(admin.call("PUT", f"/api/customers/race-{n % customers}",
                                                json={"name": f"n{n}", "tier": "vip"})
                                     for n in range(customers * each)))
    statuses = [status for status, _ in results]
    errors = [str(r.get("exc", r.get("msg"))).strip().splitlines()[-1] for r in gateway.logs if r.get("level") == "error"]
    assert statuses.count(201) == customers and statuses.count(200) == customers * (each - 1), (
        f"statuses {sorted(statuses)}; server errors: {errors[:2]}")
    for n in range(customers):
        status, body = await admin.call("GET", f"/api/customers/race-{n}")
        assert status == 200 and body["tier"] == "vip"


async def test_profile_tier_pushed_by_the_api_routes_the_next_conversation(
        start: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start()
    admin = Admin(http, gateway)

    # A standard web chat customer lands in `general`, with nobody online to take it.
    customer = await new_customer(gateway, name="Sam")
    await hand_off(customer)
    queues = await admin.queues()
    assert queues["general"]["waiting"] == 1 and queues["vip_desk"]["waiting"] == 0

    bob = await online(gateway, BOB_TOKEN)
    offer = (await bob.expect("offer"))["conversation"]
    assert offer["queue"] == "general" and offer["customer"]["tier"] == "standard"
    customer_id = offer["customer"]["id"]
    await accept(bob, customer.conversation_id)
    await event(customer, "assigned")
    await bob.send(type="close", conversation_id=customer.conversation_id)
    await bob.expect("closed")
    await event(customer, "closed")

    # The CRM marks this customer VIP; the next conversation goes to the VIP desk.
    status, body = await admin.call("PUT", f"/api/customers/{customer_id}", json={"tier": "vip"})
    assert status == 200 and body["tier"] == "vip" and body["name"] == "Sam"
    assert [i["channel"] for i in body["identities"] if i["verified"]] == ["webchat"]
    again = await new_customer(gateway, token=customer.token, last_seq=customer.last_seq)
    assert again.conversation_id != customer.conversation_id
    await hand_off(again)
    alice = await online(gateway, ALICE_TOKEN)
    offer = (await alice.expect("offer"))["conversation"]
    assert offer["queue"] == "vip_desk" and \
        {k: offer["customer"][k] for k in ("id", "name", "tier")} == {"id": customer_id, "name": "Sam", "tier": "vip"}
    await bob.expect_nothing(0.3)


# 3. queue figures --------------------------------------------------------------------------------
async def test_queue_figures_waiting_answered_abandoned_and_agents(
        start: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start(queues=[
        {"name": "vip_desk", "priority": {"vip": 10}, "service_level": {"answer_within": 0.2, "percent": 90}},
        {"name": "general", "priority": {"vip": 10, "standard": 0},
         "service_level": {"answer_within": 60, "percent": 80}},
    ])
    admin = Admin(http, gateway)
    queues = await admin.queues()
    assert queues["general"]["waiting"] == 0 and queues["general"]["service_level"] is None
    assert queues["general"]["service_level_target"] == {"percent": 80, "answer_within": 60, "window": 3600}
    assert queues["general"]["agents"] == {"available": 0, "busy": 0, "away": 0, "offline": 2}

    customer = await new_customer(gateway, name="Ann")
    await hand_off(customer)
    await asyncio.sleep(0.05)
    queues = await admin.queues()
    general = queues["general"]
    assert general["waiting"] == 1 and general["offered"] == 0 and general["longest_wait"] > 0
    assert general["answered"] == 0 and general["abandoned"] == 0
    assert queues["vip_desk"]["waiting"] == 0

    bob = await online(gateway, BOB_TOKEN)
    offer = await bob.expect("offer")
    assert offer["conversation"]["queue"] == "general"
    queues = await admin.queues()
    assert queues["general"]["offered"] == 1
    agents = await admin.agents()
    assert agents["bob"]["offers"] == [customer.conversation_id] and agents["bob"]["status"] == "available"
    await accept(bob, customer.conversation_id)
    await event(customer, "assigned")

    queues = await admin.queues()
    general = queues["general"]
    assert general["waiting"] == 0 and general["longest_wait"] == 0
    assert general["answered"] == 1 and general["answered_within_target"] == 1
    assert general["service_level"] == 100 and general["average_wait"] > 0
    assert general["agents"] == {"available": 0, "busy": 1, "away": 0, "offline": 1}
    agents = await admin.agents()
    assert agents["bob"] == {"id": "bob", "name": "Bob", "status": "available", "connected": True,
                             "assigned": [customer.conversation_id], "offers": [], "wrap_up_until": None}
    assert agents["alice"]["status"] == "offline" and agents["alice"]["connected"] is False

    await bob.send(type="close", conversation_id=customer.conversation_id)
    await bob.expect("closed")
    queues = await admin.queues()
    assert queues["general"]["average_handle"] is not None and queues["general"]["average_handle"] > 0
    assert queues["general"]["agents"] == {"available": 1, "busy": 0, "away": 0, "offline": 1}

    # Presence shows in both reports.
    await bob.send(type="presence", status="away")
    await bob.expect("presence", status="away")
    assert (await admin.agents())["bob"]["status"] == "away"
    assert (await admin.queues())["general"]["agents"] == {"available": 0, "busy": 0, "away": 1, "offline": 1}

    # A VIP waits at the VIP desk (nobody serving it is online) past its 0.2 s target and leaves.
    vip = await new_customer(gateway, name="Vic", email="vic@vip.example")
    await hand_off(vip)
    await admin.until(lambda q: q["vip_desk"]["longest_wait"] > 0.4, "the VIP to wait past the target")
    await vip.send(type="close")
    await event(vip, "closed")
    vip_desk = (await admin.queues())["vip_desk"]
    assert vip_desk["waiting"] == 0 and vip_desk["abandoned"] == 1 and vip_desk["answered"] == 0
    assert vip_desk["service_level"] == 0

    # Leaving well within the target counts as an abandon but does not fail the service level.
    quick = await new_customer(gateway, name="Quinn")
    await hand_off(quick)
    await quick.send(type="close")
    await event(quick, "closed")
    general = (await admin.queues())["general"]
    assert general["abandoned"] == 1 and general["answered"] == 1 and general["service_level"] == 100
    await bob.expect_nothing(0.2)

    alice = await online(gateway, ALICE_TOKEN)
    assert (await admin.agents())["alice"]["connected"] is True
    assert (await admin.queues())["vip_desk"]["agents"]["available"] == 1
    await alice.close()


# 4. Prometheus ---------------------------------------------------------------------------------------
def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_metrics_match_the_queue_report(start: StartGateway, http: aiohttp.ClientSession) -> None:
    gateway = await start()
    admin = Admin(http, gateway)
    answered = await new_customer(gateway)
    await hand_off(answered)
    bob = await online(gateway, BOB_TOKEN)
    await bob.expect("offer")
    await accept(bob, answered.conversation_id)
    waiting = await new_customer(gateway)
    await hand_off(waiting)   # Bob is full (capacity 1): this one waits
    left = await new_customer(gateway, email="v@vip.example")
    await hand_off(left)
    await left.send(type="close")
    await event(left, "closed")

    async with http.get(gateway.http + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    queues = await admin.queues()
    assert 'contactgate_queue_waiting{queue="general"} 1.0' in text
    metrics = metric_values(text)

    def value(name: str, **labels: str) -> float:
        return metrics[(name, tuple(sorted(labels.items())))]

    for name, row in queues.items():
        assert value("contactgate_queue_waiting", queue=name) == row["waiting"]
        assert value("contactgate_queue_answered", queue=name) == row["answered"]
        assert value("contactgate_queue_abandoned", queue=name) == row["abandoned"]
        # Read a moment apart: the wait only grows in between.
        assert 0 <= value("contactgate_queue_longest_wait_seconds", queue=name) <= row["longest_wait"]
        for status, count in row["agents"].items():
            assert value("contactgate_queue_agents", queue=name, status=status) == count
        key = ("contactgate_queue_service_level_percent", (("queue", name),))
        if row["service_level"] is None:
            assert key not in metrics   # no data is not a made-up 0 %
        else:
            assert metrics[key] == row["service_level"]
    assert queues["general"]["waiting"] == 1 and queues["general"]["answered"] == 1
    assert value("contactgate_queue_longest_wait_seconds", queue="general") > 0
    assert queues["vip_desk"]["abandoned"] == 1
    assert value("contactgate_queue_agents", queue="general", status="busy") == 1
    assert value("contactgate_queue_service_level_percent", queue="general") == 100


# 5. hot reload ---------------------------------------------------------------------------------------
def with_overflow(store_url: str) -> dict[str, Any]:
    """The test config plus an `overflow` queue that a first rule sends every web chat to."""
    config = config_for(store_url)
    config["queues"] = config["queues"] + [{"name": "overflow"}]
    config["routing"] = {"rules": [{"name": "all-to-overflow", "when": {"channel": "webchat"}, "queue": "overflow"}]
                         + config["routing"]["rules"], "default_queue": "general"}
    config["agents"][0]["queues"] = ["vip_desk", "general", "overflow"]
    return config


async def test_reload_refuses_a_broken_file_and_applies_a_good_one(
        start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    gateway = await start()
    admin = Admin(http, gateway)
    bob = await online(gateway, BOB_TOKEN)

    # (a) A typo in a key: refused with its line and key; the running rules stay.
    broken = config_for(store_url)
    broken["queues"][1] = {"name": "general", "prioritty": {"standard": 1}}
    text = yaml.safe_dump(broken, sort_keys=False)
    line = text.splitlines().index("  prioritty:") + 1
    write(gateway, text)
    status, body = await admin.reload()
    assert status == 422, body
    assert body["ok"] is False and "running config stays" in body["message"]
    assert any(f":{line}:" in p and "queues[1].prioritty" in p and "unknown key" in p for p in body["problems"]), body
    # Invalid YAML is refused the same way.
    write(gateway, "queues: [\n  - name: general\n    priority: {standard: 1\n")
    status, body = await admin.reload()
    assert status == 422 and body["problems"] and "invalid YAML" in body["problems"][0], body

    first = await new_customer(gateway)
    await hand_off(first)
    offer = (await bob.expect("offer"))["conversation"]
    assert offer["queue"] == "general"
    await accept(bob, first.conversation_id)
    await event(first, "assigned", agent={"name": "Bob"})
    assert set(await admin.queues()) == {"vip_desk", "general"}
    await logged(gateway, "config reload refused; the running config stays", reason="api")

    # (b) A good file with a new first rule: the next handoff follows it.
    write(gateway, with_overflow(store_url))
    status, body = await admin.reload()
    assert status == 200, body
    assert body == {"ok": True, "message": "reloaded", "problems": [], "restart_needed": []}
    assert set(await admin.queues()) == {"vip_desk", "general", "overflow"}
    alice = await online(gateway, ALICE_TOKEN)
    second = await new_customer(gateway)
    await hand_off(second)
    offer = (await alice.expect("offer"))["conversation"]
    assert offer["queue"] == "overflow" and offer["id"] == second.conversation_id
    assert (await admin.queues())["overflow"]["offered"] == 1
    # The conversation answered before the reload is still Bob's.
    await bob.send(type="message", conversation_id=first.conversation_id, id="b1", text="still here")
    await bob.expect("ack", id="b1")
    await event(first, "message", author="agent", text="still here")


async def test_reload_on_file_change(start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    gateway = await start(server=server(reload_poll=0.3))
    admin = Admin(http, gateway)
    new = with_overflow(store_url)
    new["server"] = server(reload_poll=0.3)
    write(gateway, new)
    await admin.until(lambda q: "overflow" in q, "the changed file to be picked up")
    alice = await online(gateway, ALICE_TOKEN)
    customer = await new_customer(gateway)
    await hand_off(customer)
    assert (await alice.expect("offer"))["conversation"]["queue"] == "overflow"
    await logged(gateway, "config reloaded", reason="file changed")

    # A broken edit is refused and logged; the running config stays.
    write(gateway, "routing: {default_queue: nowhere}\n")
    await logged(gateway, "config reload refused; the running config stays", reason="file changed")
    assert "overflow" in await admin.queues()


async def test_reload_on_sighup(start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    gateway = await start()
    admin = Admin(http, gateway)
    write(gateway, with_overflow(store_url))
    await asyncio.sleep(0.3)
    assert "overflow" not in await admin.queues()   # no polling: nothing happens by itself
    assert gateway.proc is not None
    gateway.proc.send_signal(signal.SIGHUP)
    await admin.until(lambda q: "overflow" in q, "SIGHUP to reload the file")
    assert gateway.proc.returncode is None
    await logged(gateway, "config reloaded", reason="SIGHUP")
    # Still serving.
    alice = await online(gateway, ALICE_TOKEN)
    customer = await new_customer(gateway)
    await hand_off(customer)
    assert (await alice.expect("offer"))["conversation"]["queue"] == "overflow"


async def test_reload_removing_a_queue_moves_its_waiting_conversation_to_the_default(
        start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    doomed = config_for(store_url)
    doomed["queues"] = doomed["queues"] + [{"name": "doomed"}]
    doomed["routing"] = {"rules": [{"name": "doom", "when": {"keywords": ["doom"]}, "queue": "doomed"}]
                         + doomed["routing"]["rules"], "default_queue": "general"}
    gateway = await start(queues=doomed["queues"], routing=doomed["routing"])
    admin = Admin(http, gateway)
    bob = await online(gateway, BOB_TOKEN)
    customer = await new_customer(gateway)
    await hand_off(customer, "doom: I want an agent")
    await bob.expect_nothing(0.3)    # nobody serves `doomed`
    queues = await admin.queues()
    assert queues["doomed"]["waiting"] == 1 and queues["general"]["waiting"] == 0

    write(gateway, config_for(store_url))
    status, body = await admin.reload()
    assert status == 200 and body["ok"], body
    moved = await event(customer, "queued", reason="queue_removed")
    assert moved["position"] == 1
    offer = (await bob.expect("offer"))["conversation"]
    assert offer["id"] == customer.conversation_id and offer["queue"] == "general"
    queues = await admin.queues()
    assert "doomed" not in queues and queues["general"]["offered"] == 1
    await accept(bob, customer.conversation_id)
    await event(customer, "assigned", agent={"name": "Bob"})


async def test_reload_reports_sections_that_need_a_restart(
        start: StartGateway, http: aiohttp.ClientSession, store_url: str, tmp_path: Path) -> None:
    gateway = await start()
    admin = Admin(http, gateway)
    original = config_for(store_url)
    changed = config_for(store_url, server=server(log_level="debug"),
                         store={"url": f"sqlite:///{tmp_path / 'elsewhere.db'}"})
    write(gateway, changed)
    status, body = await admin.reload()
    assert status == 200 and body["ok"], body
    assert body["restart_needed"] == ["server", "store"]
    assert "restart" in body["message"] and "server" in body["message"] and "store" in body["message"]
    # The store did not move: a customer pushed now is in the running store.
    status, _ = await admin.call("PUT", "/api/customers/kept", json={"name": "Kept"})
    assert status == 201

    # Nothing was restarted, so reloading the same file again still needs the restart ...
    status, body = await admin.reload()
    assert status == 200 and body["restart_needed"] == ["server", "store"], body
    # ... and going back to what the process runs with needs none.
    write(gateway, original)
    status, body = await admin.reload()
    assert status == 200 and body["restart_needed"] == [], body
    # A routing-only change needs no restart.
    write(gateway, config_for(store_url, desk={"dispositions": ["resolved"]}))
    status, body = await admin.reload()
    assert status == 200 and body["restart_needed"] == [], body


async def test_reloaded_admin_token_waits_for_the_restart_it_reports(
        start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    """gateway/reload.py: `server` changes are reported as needing a restart, so the running
    admin token must keep working until then (and the new one must not work yet)."""
    gateway = await start()
    admin = Admin(http, gateway)
    write(gateway, config_for(store_url, server=server(admin_token="a-brand-new-admin-token")))
    status, body = await admin.reload()
    assert status == 200 and body["restart_needed"] == ["server"], body
    status, body = await admin.call("GET", "/api/queues")
    assert status == 200, f"the running admin token stopped working after a reload that reported a restart: {body}"
    status, _ = await admin.call("GET", "/api/queues", token="a-brand-new-admin-token")
    assert status == 401


async def test_reload_removing_an_agent_with_a_conversation_returns_it_to_the_queue(
        start: StartGateway, http: aiohttp.ClientSession, store_url: str) -> None:
    """An agent taken out of config.yaml must not strand the conversations it holds: once it is
    gone (its socket dropped, grace 0 here) they go back to their queue like any offline agent's."""
    desk = {"disconnect_grace": 0}
    gateway = await start(desk=desk)
    admin = Admin(http, gateway)
    alice = await online(gateway, ALICE_TOKEN)
    customer = await new_customer(gateway)
    await hand_off(customer)
    offer = (await alice.expect("offer"))["conversation"]
    await accept(alice, offer["id"])
    await event(customer, "assigned", agent={"name": "Alice"})

    without_alice = config_for(store_url, desk=desk)
    without_alice["agents"] = [a for a in without_alice["agents"] if a["id"] != "alice"]
    write(gateway, without_alice)
    status, body = await admin.reload()
    assert status == 200 and body["ok"], body
    assert set(await admin.agents()) == {"bob"}
    await alice.close()

    bob = await online(gateway, BOB_TOKEN)
    try:
        offer = (await bob.expect("offer", timeout=5))["conversation"]
    except asyncio.TimeoutError:
        errors = [str(r.get("exc", r.get("msg"))).strip().splitlines()[-1] for r in gateway.logs if r.get("level") == "error"]
        raise AssertionError(f"the removed agent's conversation was never offered again; server errors: {errors}; "
                             f"agents: {await admin.agents()}") from None
    assert offer["id"] == customer.conversation_id and offer["queue"] == "general"
    await event(customer, "queued", reason="agent_offline")


async def test_reload_when_a_faq_file_the_config_names_changes(start: StartGateway, tmp_path: Path) -> None:
    """An admin edits the FAQ, not config.yaml: the poll sees the KB file change and reloads; a
    broken KB is refused and the bot keeps answering from the one it had."""
    kb = tmp_path / "kb.yaml"
    hours = {"id": "hours", "question": "When are you open?", "answer": "Every day 8-22."}
    gifts = {"id": "gift-cards", "question": "Do you sell gift cards?", "answer": "Yes, in every shop."}
    kb.write_text(yaml.safe_dump([hours]), encoding="utf-8")
    gateway = await start(server=server(reload_poll=0.3), selfservice={"faq": str(kb), "min_score": 0.5})

    async def bot_answer(question: str) -> str:
        customer = await new_customer(gateway)
        try:
            await customer.send(type="message", id="q1", text=question)
            await event(customer, "ack", id="q1")
            return (await event(customer, "message", author="bot"))["text"]
        finally:
            await customer.close()

    assert not (await bot_answer("Do you sell gift cards?")).startswith("Yes, in every shop.")
    kb.write_text(yaml.safe_dump([hours, gifts]), encoding="utf-8")
    await logged(gateway, "config reloaded", reason="FAQ file changed")
    assert (await bot_answer("Do you sell gift cards?")).startswith("Yes, in every shop.")

    kb.write_text(yaml.safe_dump([{"id": "gift-cards", "question": "Do you sell gift cards?"}]), encoding="utf-8")  # no answer
    refused = await logged(gateway, "config reload refused; the running config stays", reason="FAQ file changed")
    assert any("answer" in p for p in refused["problems"]), refused
    assert (await bot_answer("Do you sell gift cards?")).startswith("Yes, in every shop.")

"""The CRM tier lookup against a real HTTP server on 127.0.0.1 speaking JSON, as a CRM would."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from gateway.config import ConfigError, parse_config
from gateway.crm import CrmClient
from routing.config import CrmConfig, TiersConfig

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    path: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeCrm:
    """Records every request and answers with ``answer`` (a JSON tier by default)."""

    server: TestServer | None = None
    seen: list[Seen] = field(default_factory=list)
    answer: Handler | None = None
    # Handlers that stall wait on this; teardown opens it so the server can stop promptly.
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.path, request.raw_path, dict(request.query), dict(request.headers)))
        if self.answer is not None:
            return await self.answer(request)
        return web.json_response({"tier": "gold"})

    def url(self, template: str) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}{template}"

    def reply_json(self, body: Any, status: int = 200) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status)
        self.answer = answer

    def stall(self, then: Any = None) -> None:
        """Hold every request until ``gate`` opens, then answer ``then`` (default a gold tier)."""
        async def answer(request: web.Request) -> web.StreamResponse:
            await self.gate.wait()
            return web.json_response({"tier": "gold"} if then is None else then)
        self.answer = answer


@pytest_asyncio.fixture
async def crm() -> AsyncIterator[FakeCrm]:
    fake = FakeCrm()
    app = web.Application()
    app.router.add_get("/{tail:.*}", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1", port=0)
    await fake.server.start_server()
    try:
        yield fake
    finally:
        fake.gate.set()
        await fake.server.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[CrmClient]]]:
    made: list[CrmClient] = []

    async def make(url: str, clock: Callable[[], float] | None = None, max_entries: int = 10_000,
                   **settings: Any) -> CrmClient:
        kwargs: dict[str, Any] = {"max_entries": max_entries}
        if clock is not None:
            kwargs["clock"] = clock
        client = CrmClient(CrmConfig(url=url, **settings), **kwargs)
        await client.start()
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            await client.close()


def who(**overrides: Any) -> dict[str, Any]:
    person: dict[str, Any] = {"customer_id": "cust-1", "email": "ann@example.com", "phone": "+33123456789",
                              "channel": "webchat"}
    person.update(overrides)
    return person


async def test_tier_from_a_nested_field(crm: FakeCrm, clients: Any) -> None:
    crm.reply_json({"customer": {"id": "cust-1", "segment": "platinum"}})
    client = await clients(crm.url("/customers/{customer_id}?channel={channel}"), tier_field="customer.segment")

    assert await client.lookup_tier(**who()) == "platinum"
    assert [(s.path, s.query) for s in crm.seen] == [("/customers/cust-1", {"channel": "webchat"})]
    assert (client.requests, client.misses, client.hits, client.errors) == (1, 1, 0, 0)


async def test_values_are_url_quoted(crm: FakeCrm, clients: Any) -> None:
    client = await clients(crm.url("/by-phone/{phone}?email={email}"))

    assert await client.lookup_tier(**who(email="ann+vip@example.com", phone="+33 1 23/45")) == "gold"
    [seen] = crm.seen
    # '+' in a query would read as a space, '/' in a path as a segment: both must arrive intact.
    assert seen.query == {"email": "ann+vip@example.com"}
    assert "%2B" in seen.raw_path and "ann+vip" not in seen.raw_path
    assert seen.raw_path.startswith("/by-phone/%2B33%201%2023%2F45?")


async def test_a_missing_placeholder_value_skips_the_request(crm: FakeCrm, clients: Any) -> None:
    client = await clients(crm.url("/customers?email={email}"))

    assert await client.lookup_tier(**who(email=None)) is None
    assert await client.lookup_tier(**who(email="")) is None
    assert crm.seen == []
    assert (client.requests, client.skipped) == (0, 2)
    # A value the template does not use may be missing.
    assert await client.lookup_tier(**who(phone=None)) == "gold"


async def test_not_found_is_no_tier(crm: FakeCrm, clients: Any, caplog: pytest.LogCaptureFixture) -> None:
    crm.reply_json({"error": "no such customer"}, status=404)
    client = await clients(crm.url("/customers/{customer_id}"))

    with caplog.at_level(logging.WARNING, logger="contactgate.crm"):
        assert await client.lookup_tier(**who(customer_id="cust-404")) is None
    assert len(crm.seen) == 1
    assert client.errors == 0
    assert [r.name for r in caplog.records] == ["contactgate.crm"]
    assert "cust-404" in caplog.records[0].getMessage()


async def test_server_error_is_logged_once_without_headers(crm: FakeCrm, clients: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    crm.reply_json({"error": "boom"}, status=500)
    client = await clients(crm.url("/customers/{customer_id}"), headers={"Authorization": "Bearer s3cret-token"})

    with caplog.at_level(logging.DEBUG, logger="contactgate.crm"):
        assert await client.lookup_tier(**who(customer_id="cust-500")) is None
    assert client.errors == 1
    [record] = [r for r in caplog.records if r.name == "contactgate.crm"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "cust-500" in message and "500" in message
    assert "s3cret" not in caplog.text


async def test_a_slow_crm_times_out_to_no_tier(crm: FakeCrm, clients: Any) -> None:
    crm.stall()
    client = await clients(crm.url("/customers/{customer_id}"), timeout=0.2)

    # The outer bound only keeps a broken timeout from hanging the run; it is not a speed claim.
    assert await asyncio.wait_for(client.lookup_tier(**who()), 30) is None
    assert len(crm.seen) == 1
    assert client.errors == 1


@pytest.mark.parametrize("body", [b"not json", b"", b"{\"tier\": "])
async def test_an_answer_that_is_not_json_is_no_tier(crm: FakeCrm, clients: Any, body: bytes) -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")
    crm.answer = answer
    client = await clients(crm.url("/customers/{customer_id}"))

    assert await client.lookup_tier(**who()) is None
    assert (len(crm.seen), client.errors) == (1, 1)


@pytest.mark.parametrize("body", [{"tier": 3}, {"tier": None}, {"tier": ["gold"]}, {"tier": {"name": "gold"}},
                                  {"tier": ""}])
async def test_a_tier_that_is_not_a_string_is_no_tier(crm: FakeCrm, clients: Any, body: Any) -> None:
    crm.reply_json(body)
    client = await clients(crm.url("/customers/{customer_id}"))

    assert await client.lookup_tier(**who()) is None
    assert client.errors == 1


@pytest.mark.parametrize("body", [{}, {"customer": "gold"}, {"customer": {}}, ["gold"], "gold"])
async def test_a_missing_tier_field_is_no_tier(crm: FakeCrm, clients: Any, body: Any) -> None:
    crm.reply_json(body)
    client = await clients(crm.url("/customers/{customer_id}"), tier_field="customer.segment")

    assert await client.lookup_tier(**who()) is None
    assert len(crm.seen) == 1


async def test_answers_are_cached_until_the_ttl_passes(crm: FakeCrm, clients: Any) -> None:
    clock = FakeClock()
    client = await clients(crm.url("/customers/{customer_id}"), clock=clock, cache_ttl=60)

    assert await client.lookup_tier(**who()) == "gold"
    crm.reply_json({"tier": "silver"})
    clock.now += 59
    assert await client.lookup_tier(**who()) == "gold"
    assert (len(crm.seen), client.hits) == (1, 1)
    # Another customer is another URL.
    assert await client.lookup_tier(**who(customer_id="cust-2")) == "silver"
    assert len(crm.seen) == 2

    clock.now += 1.5
    assert await client.lookup_tier(**who()) == "silver"
    assert len(crm.seen) == 3


async def test_misses_are_cached_too(crm: FakeCrm, clients: Any) -> None:
    clock = FakeClock()
    crm.reply_json({}, status=404)
    client = await clients(crm.url("/customers/{customer_id}"), clock=clock, cache_ttl=60)

    assert await client.lookup_tier(**who()) is None
    crm.reply_json({"tier": "gold"})
    assert await client.lookup_tier(**who()) is None
    assert len(crm.seen) == 1
    clock.now += 61
    assert await client.lookup_tier(**who()) == "gold"
    assert len(crm.seen) == 2


async def test_a_zero_ttl_caches_nothing(crm: FakeCrm, clients: Any) -> None:
    client = await clients(crm.url("/customers/{customer_id}"), cache_ttl=0)

    assert await client.lookup_tier(**who()) == "gold"
    assert await client.lookup_tier(**who()) == "gold"
    assert len(crm.seen) == 2


async def test_the_cache_forgets_its_oldest_entries_first(crm: FakeCrm, clients: Any) -> None:
    client = await clients(crm.url("/customers/{customer_id}"), max_entries=2)

    for customer in ("a", "b", "c"):
        await client.lookup_tier(**who(customer_id=customer))
    assert len(crm.seen) == 3
    await client.lookup_tier(**who(customer_id="c"))
    await client.lookup_tier(**who(customer_id="b"))
    assert len(crm.seen) == 3
    await client.lookup_tier(**who(customer_id="a"))
    assert [s.path for s in crm.seen][-1] == "/customers/a" and len(crm.seen) == 4


async def test_concurrent_lookups_share_one_request(crm: FakeCrm, clients: Any) -> None:
    crm.stall(then={"tier": "gold"})
    client = await clients(crm.url("/customers/{customer_id}"))

    lookups = [asyncio.create_task(client.lookup_tier(**who())) for _ in range(10)]
    while not crm.seen:
        await asyncio.sleep(0.01)
    crm.gate.set()

    assert await asyncio.gather(*lookups) == ["gold"] * 10
    assert len(crm.seen) == 1
    assert (client.requests, client.misses, client.hits) == (1, 1, 9)


async def test_a_caller_giving_up_does_not_cancel_the_others(crm: FakeCrm, clients: Any) -> None:
    crm.stall()
    client = await clients(crm.url("/customers/{customer_id}"))

    first = asyncio.create_task(client.lookup_tier(**who()))
    second = asyncio.create_task(client.lookup_tier(**who()))
    while not crm.seen:
        await asyncio.sleep(0.01)
    first.cancel()
    crm.gate.set()

    assert await second == "gold"
    assert first.cancelled()
    assert len(crm.seen) == 1


async def test_configured_headers_are_sent(crm: FakeCrm, clients: Any) -> None:
    client = await clients(crm.url("/customers/{customer_id}"),
                           headers={"Authorization": "Bearer s3cret-token", "X-Tenant": "acme"})

    assert await client.lookup_tier(**who()) == "gold"
    [seen] = crm.seen
    assert seen.headers["Authorization"] == "Bearer s3cret-token"
    assert seen.headers["X-Tenant"] == "acme"
    assert "s3cret" not in repr(client.config)


async def test_a_stopped_crm_is_no_tier(crm: FakeCrm, clients: Any) -> None:
    url = crm.url("/customers/{customer_id}")
    assert crm.server is not None
    await crm.server.close()
    client = await clients(url)

    assert await client.lookup_tier(**who()) is None
    assert (client.requests, client.errors) == (1, 1)


async def test_a_refused_connection_is_no_tier(clients: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = await clients(f"http://127.0.0.1:{port}/customers/{{customer_id}}")

    assert await client.lookup_tier(**who()) is None
    assert client.errors == 1


async def test_close_is_idempotent_and_ends_requests_in_flight(crm: FakeCrm) -> None:
    crm.stall()
    client = CrmClient(CrmConfig(url=crm.url("/customers/{customer_id}")))
    await client.start()
    await client.start()
    lookup = asyncio.create_task(client.lookup_tier(**who()))
    while not crm.seen:
        await asyncio.sleep(0.01)

    await client.close()
    await client.close()
    assert await lookup is None


async def test_a_session_factory_is_used(crm: FakeCrm) -> None:
    import aiohttp

    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession(headers={"User-Agent": "contactgate-test"}))
        return made[-1]

    client = CrmClient(CrmConfig(url=crm.url("/customers/{customer_id}")), session_factory=factory)
    await client.start()
    try:
        assert await client.lookup_tier(**who()) == "gold"
    finally:
        await client.close()
    assert len(made) == 1 and made[0].closed
    assert crm.seen[0].headers["User-Agent"] == "contactgate-test"


# --- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["https://crm.example/{nope}", "https://crm.example/{}", "https://crm.example/{email!r}",
                                 "https://crm.example/{email:>20}", "https://crm.example/{email.lower}"])
def test_unknown_placeholders_are_rejected(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        CrmConfig(url=url)
    message = str(info.value)
    assert "unknown placeholder" in message
    assert "{email}, {phone}, {customer_id}, {channel}" in message


@pytest.mark.parametrize("url, why", [
    ("https://crm.example/{email", "literal brace"),
    ("crm.example/{email}", "http:// or https://"),
])
def test_malformed_templates_are_rejected(url: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        CrmConfig(url=url)


@pytest.mark.parametrize("settings", [{"timeout": 0}, {"timeout": -1}, {"cache_ttl": -1}, {"tier_field": ""},
                                      {"tier_field": "a..b"}, {"fallback_tier": "has space"}, {"retries": 3}])
def test_bad_settings_are_rejected(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CrmConfig(url="https://crm.example/{customer_id}", **settings)


def test_defaults_and_placeholders() -> None:
    config = CrmConfig(url="https://crm.example/c/{customer_id}?e={email}&e2={email}&x={{literal}}")
    assert (config.timeout, config.cache_ttl, config.fallback_tier, config.tier_field, config.headers) == \
        (0.5, 300, None, "tier", {})
    assert config.placeholders == {"customer_id", "email"}
    assert TiersConfig().crm is None


CONFIG = """\
channels:
  - type: webchat
queues:
  - name: general
routing:
  default_queue: general
tiers:
  default: standard
  crm:
    url: "https://crm.example/customers?email={email}"
    headers:
      Authorization: "Bearer ${CRM_TOKEN}"
"""


def test_the_crm_section_in_config_yaml() -> None:
    config = parse_config(CONFIG, "t.yaml", env={"CRM_TOKEN": "tok-123"})
    assert config.tiers.crm is not None
    assert config.tiers.crm.headers == {"Authorization": "Bearer tok-123"}

    with pytest.raises(ConfigError) as info:
        parse_config(CONFIG.replace("{email}", "{nope}"), "t.yaml", env={"CRM_TOKEN": "tok-123"})
    assert "t.yaml:10: tiers.crm.url:" in str(info.value)
    assert "unknown placeholder {nope}" in str(info.value)

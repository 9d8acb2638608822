"""One customer across channels, end to end: the real gateway with web chat, email (SMTP in,
replies to a real SMTP sink) and Telegram (webhook, the Bot API stand-in); agents and visitors
on real websockets; the admin API over HTTP. One gateway for the module."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import websockets

from gateway.customers.signed import signature
from support import Agent, Customer, GatewayProcess, gateway_config
from support_mail import MailSink
from support_telegram import PATH, SECRET, post_update
from telegram_api import TOKEN, BotApi, message
from test_email_e2e import Mailer

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-identity-token"
IDENTITY_SECRET = "site-signing-key-for-tests"
AGENTS = {name: f"{name}-identity-token" for name in ("ann", "ben", "cat", "dan")}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sink() -> AsyncIterator[MailSink]:
    mail_sink = MailSink()
    await mail_sink.start()
    yield mail_sink
    await mail_sink.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api() -> AsyncIterator[BotApi]:
    from support import serving

    bot_api = BotApi()
    async with serving(bot_api.app()) as port:
        bot_api.port = port  # type: ignore[attr-defined]
        yield bot_api


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory, sink: MailSink, api: BotApi) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("identity")
    config = gateway_config(f"sqlite:///{directory / 'gateway.db'}")
    config["channels"] = [
        {"type": "webchat", "identity_secret": IDENTITY_SECRET},
        {"type": "email", "name": "mail", "address": "support@acme.example", "display_name": "Acme Support",
         "listen": {"host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"]},
         "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "timeout": 5},
         "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5}, "bot_interval": 0},
        {"type": "telegram", "name": "tg-support", "token": TOKEN, "api_base": f"http://127.0.0.1:{api.port}",  # type: ignore[attr-defined]
         "mode": "webhook", "secret_token": SECRET, "path": PATH, "public_url": "https://support.acme.example" + PATH,
         "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5}},
    ]
    config["server"]["admin_token"] = ADMIN
    config["agents"] = [{"id": name, "name": name.title(), "token": token, "capacity": 3,
                         "queues": ["vip_desk", "general"]} for name, token in AGENTS.items()]
    process = await GatewayProcess.write_config(directory, config).start()
    yield process
    await process.stop()


class Scene:
    """The clients of one test; visitors' conversations are closed after it."""

    def __init__(self, gateway: GatewayProcess, sink: MailSink) -> None:
        self.gateway, self.sink = gateway, sink
        self.visitors: list[Customer] = []
        self.agents: list[Agent] = []
        self.http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"})

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, self.gateway.http + path, json=body) as response:
            return response.status, await response.json()

    async def agent(self, name: str) -> Agent:
        agent = await Agent.connect(self.gateway, AGENTS[name])
        self.agents.append(agent)
        await agent.next("ready")
        return agent

    async def visitor(self, **hello: Any) -> Customer:
        visitor = await Customer.connect(self.gateway, **hello)
        visitor.frames = []  # type: ignore[attr-defined]
        self.visitors.append(visitor)
        return visitor

    async def close(self) -> None:
        for visitor in self.visitors:
            with contextlib.suppress(Exception):
                await visitor.send(type="close")
                await visitor.close()
        for agent in self.agents:
            with contextlib.suppress(Exception):
                await agent.close()
        await self.http.close()


@pytest_asyncio.fixture(loop_scope="module")
async def scene(gateway: GatewayProcess, sink: MailSink) -> AsyncIterator[Scene]:
    opened = Scene(gateway, sink)
    yield opened
    await opened.close()


async def frames_until(visitor: Customer, type_: str) -> dict[str, Any]:
    """The visitor's frames up to one of ``type_``, all kept (to check nothing leaked)."""
    while True:
        frame = await visitor.recv()
        visitor.frames.append(frame)  # type: ignore[attr-defined]
        if frame["type"] == type_:
            return frame
        assert frame["type"] != "error", frame


async def ask_for_agent(visitor: Customer, agent: Agent) -> dict[str, Any]:
    await frames_until(visitor, "message")  # the greeting
    await visitor.send(type="message", id="agent-please", text="I want to talk to an agent")
    await frames_until(visitor, "queued")
    offer = (await agent.next("offer"))["conversation"]
    assert offer["id"] == visitor.conversation_id
    return offer


def signed_hello(user_id: str | None, email: str | None, **extra: Any) -> dict[str, Any]:
    return {"user_id": user_id, "email": email, "user_hash": signature(IDENTITY_SECRET, user_id, email), **extra}


async def telegram_says(gateway: GatewayProcess, api: BotApi, chat_id: int, text: str) -> None:
    update = {"update_id": api.new_update_id(), "message": message(chat_id, text, message_id=api.new_update_id())}
    assert (await post_update(gateway, update))[0] == 200  # 200 once stored


async def test_email_then_telegram_then_signed_web_chat_is_one_customer_with_one_360(
        scene: Scene, api: BotApi) -> None:
    # The CRM knows Mei's address and her Telegram user id.
    status, _ = await scene.admin("PUT", "/api/customers/crm-mei", {
        "name": "Mei Chen", "attributes": {"segment": "gold"},
        "identities": [{"kind": "email", "address": "Mei@Customer.example"}, {"kind": "telegram", "address": "5553001"}]})
    assert status == 201
    await Mailer(scene.gateway, scene.sink).send("Where is my parcel?", sender="mei@customer.example")  # 250: stored
    await telegram_says(scene.gateway, api, 5553001, "Any news on my parcel?")
    ann = await scene.agent("ann")
    visitor = await scene.visitor(name="Mei", **signed_hello("u-42", "mei@customer.example"))
    offer = await ask_for_agent(visitor, ann)

    customer = offer["customer"]
    assert customer["id"] == "crm-mei" and customer["name"] == "Mei Chen" and customer["attributes"]["segment"] == "gold"
    assert customer["tier"] == "standard" and customer["tier_reason"] == "tiers.default"
    verified = {(i["channel"], i["kind"]) for i in customer["identities"] if i["verified"]}
    assert {("mail", "email"), ("tg-support", "telegram"), ("webchat", "email"), ("webchat", "site_user"),
            ("webchat", "webchat")} <= verified
    assert {c["channel"] for c in customer["conversations"]} == {"mail", "tg-support"}  # and this one, on webchat
    firsts = {c["channel"]: c["first_line"] for c in customer["conversations"]}
    assert firsts == {"mail": "Where is my parcel?", "tg-support": "Any news on my parcel?"}
    assert customer["link_suggestions"] == []

    # The full history of one earlier conversation, paged; another customer's is not shown.
    mail_id = next(c["id"] for c in customer["conversations"] if c["channel"] == "mail")
    await ann.send(type="history", conversation_id=visitor.conversation_id, of=mail_id, limit=1)
    page = await ann.next("history")
    assert page["of"] == mail_id and page["channel"] == "mail" and len(page["events"]) == 1
    assert page["events"][0]["text"] == "Where is my parcel?" and page["next_after"] == 1
    await ann.send(type="history", conversation_id=visitor.conversation_id, of="no-such-conversation")
    assert (await ann.next("error"))["code"] == "unknown_conversation"
    # A page of none would say "the end" (next_after null) of a conversation with more: refused.
    for bad in ({"limit": 0}, {"limit": 51}, {"limit": True}, {"after": -1}):
        await ann.send(type="history", conversation_id=visitor.conversation_id, of=mail_id, **bad)
        assert (await ann.next("error"))["code"] == "bad_frame", bad

    status, body = await scene.admin("GET", "/api/customers/crm-mei")
    assert status == 200 and body["merged_into"] is None
    assert {c["channel"] for c in body["conversations"]} == {"mail", "tg-support", "webchat"}


async def test_a_claimed_email_links_nothing_shows_a_suggestion_and_a_mailed_code_links_it(scene: Scene) -> None:
    status, _ = await scene.admin("PUT", "/api/customers/crm-lin", {
        "name": "Lin Wei", "tier": "vip", "identities": [{"kind": "email", "address": "lin@customer.example"}]})
    assert status == 201
    ben = await scene.agent("ben")
    visitor = await scene.visitor(name="L", email="Lin@Customer.example")
    offer = await ask_for_agent(visitor, ben)
    customer = offer["customer"]
    assert customer["id"] != "crm-lin" and customer["tier"] == "standard"  # no link, no VIP by a typed email
    assert [(i["kind"], i["address"], i["verified"]) for i in customer["identities"] if not i["verified"]] == [
        ("email", "lin@customer.example", False)]
    [suggestion] = customer["link_suggestions"]
    assert suggestion == {"customer_id": "crm-lin", "name": "Lin Wei", "kind": "email",
                          "address": "lin@customer.example", "conversations": 0, "tier": "vip"}
    await ben.send(type="accept", conversation_id=visitor.conversation_id)
    await ben.next("assigned")

    # The visitor proves the address: a code by mail (through the email channel), typed back.
    mails_before = len(scene.sink.messages)
    await visitor.send(type="verify_email")
    sent = await frames_until(visitor, "verification_sent")
    assert sent["expires_in"] > 0
    [(envelope, raw)] = (await scene.sink.wait_for(mails_before + 1))[mails_before:]
    mail = BytesParser(policy=policy.default).parsebytes(raw)
    assert mail["To"].addresses[0].addr_spec == "lin@customer.example"
    code = re.search(r"\b(\d{6})\b", mail.get_body(("plain",)).get_content()).group(1)  # type: ignore[union-attr]
    await visitor.send(type="verify", code="000000" if code != "000000" else "111111")
    failed = await frames_until(visitor, "verify_failed")
    assert failed["reason"] == "wrong" and failed["tries_left"] >= 1
    await visitor.send(type="verify", code=code)
    assert await frames_until(visitor, "verified") == {"type": "verified", "kind": "email"}
    merged = await ben.next("customer_merged", conversation_id=visitor.conversation_id)
    assert merged["customer"]["id"] == "crm-lin"
    assert (merged["customer"]["tier"], merged["customer"]["tier_reason"]) == ("vip", "profile")  # its tier now
    held = [c["id"] for c in merged["customer"]["conversations"] + merged["customer"]["open_conversations"]]
    assert visitor.conversation_id not in held  # as in the offer: the history without this one
    assert merged["merge"]["into"] == "crm-lin" and merged["merge"]["by"] == "code"
    # Nothing the visitor was sent names the other customer.
    seen = json.dumps(visitor.frames)  # type: ignore[attr-defined]
    assert "crm-lin" not in seen and "Lin Wei" not in seen and "vip" not in seen

    # The conversation goes on: the agent's reply still reaches the visitor.
    await ben.send(type="message", conversation_id=visitor.conversation_id, id="r1", text="Welcome back, Lin")
    assert (await frames_until(visitor, "message"))["text"] == "Welcome back, Lin"


async def test_the_tier_and_its_reason_read_the_verified_identities_and_stay_with_the_routed_conversation(
        scene: Scene) -> None:
    """docs/customers.md: tier rules read an email the customer lacks as an attribute from its
    verified identities, in the admin API's effective_tier as in routing; an offer and the
    customer frame keep the tier the conversation was routed with, and why."""
    status, body = await scene.admin("PUT", "/api/customers/crm-dom", {
        "identities": [{"kind": "email", "address": "boss@vip.example"}]})
    assert status == 201 and (body["effective_tier"], body["tier_reason"]) == ("vip", "tiers.rules[0]")
    dora = await scene.agent("dan")
    visitor = await scene.visitor(name="Dom")
    await frames_until(visitor, "message")  # the greeting: the visitor's customer exists now
    status, listed = await scene.admin("GET", "/api/conversations?channel=webchat&limit=500")
    visitor_id = next(c["customer_id"] for c in listed["conversations"] if c["id"] == visitor.conversation_id)
    status, merged = await scene.admin("POST", f"/api/customers/{visitor_id}/merge", {"from": "crm-dom"})
    assert status == 200 and (merged["customer"]["effective_tier"], merged["customer"]["tier_reason"]) == (
        "vip", "tiers.rules[0]")
    await visitor.send(type="message", id="agent-please", text="I want to talk to an agent")
    offer = (await dora.next("offer"))["conversation"]
    assert offer["id"] == visitor.conversation_id, offer
    assert offer["queue"] == "vip_desk"
    assert (offer["customer"]["tier"], offer["customer"]["tier_reason"]) == ("vip", "tiers.rules[0]")
    # The profile changes; the conversation keeps the tier it was routed with, and its reason.
    await scene.admin("PUT", f"/api/customers/{visitor_id}", {"tier": "standard"})
    await dora.send(type="customer", conversation_id=visitor.conversation_id)
    shown = (await dora.next("customer", conversation_id=visitor.conversation_id))["customer"]
    assert (shown["tier"], shown["tier_reason"]) == ("vip", "tiers.rules[0]")
    status, now = await scene.admin("GET", f"/api/customers/{visitor_id}")
    assert (now["effective_tier"], now["tier_reason"]) == ("standard", "profile")


async def test_an_agent_confirms_a_suggestion_and_the_admin_unmerges_it_exactly(scene: Scene) -> None:
    status, _ = await scene.admin("PUT", "/api/customers/crm-bo", {
        "name": "Bo", "attributes": {"plan": "gold"}, "identities": [{"kind": "email", "address": "bo@customer.example"}]})
    assert status == 201
    cat = await scene.agent("cat")
    visitor = await scene.visitor(name="Bobo", email="bo@customer.example")
    offer = await ask_for_agent(visitor, cat)
    visitor_id = offer["customer"]["id"]
    status, before = await scene.admin("GET", f"/api/customers/{visitor_id}")
    assert status == 200
    # Only a pending suggestion may be confirmed.
    await cat.send(type="merge_customers", conversation_id=visitor.conversation_id, customer_id="crm-mei")
    assert (await cat.next("error"))["code"] == "no_suggestion"
    await cat.send(type="merge_customers", conversation_id=visitor.conversation_id, customer_id="crm-bo")
    answer = await cat.next("customers_merged")
    assert answer["customer"]["id"] == "crm-bo" and answer["merge"]["by"] == "agent:cat"
    assert answer["customer"]["attributes"] == {"plan": "gold", "email": "bo@customer.example"}
    assert visitor.conversation_id in answer["merge"]["moved"]["conversations"]

    status, merged = await scene.admin("GET", f"/api/customers/{visitor_id}")
    assert status == 200 and merged["merged_into"] == "crm-bo"
    status, body = await scene.admin("POST", "/api/customers/crm-bo/unmerge", {"merge_id": answer["merge"]["id"]})
    assert status == 200, body
    status, after = await scene.admin("GET", f"/api/customers/{visitor_id}")
    for key in ("id", "name", "tier", "attributes", "identities", "merged_into", "link_suggestions"):
        assert after[key] == before[key], key
    assert [c["id"] for c in after["conversations"]] == [c["id"] for c in before["conversations"]]
    status, body = await scene.admin("POST", "/api/customers/crm-bo/unmerge", {"merge_id": answer["merge"]["id"]})
    assert (status, body["error"]) == (409, "already_undone")

    # An identity that is not one of its kind is refused before anything is written.
    status, body = await scene.admin("PUT", "/api/customers/crm-bad", {"identities": [{"kind": "phone", "address": "12"}]})
    assert (status, body["error"]) == (400, "bad_customer") and "international form" in body["message"]
    assert (await scene.admin("GET", "/api/customers/crm-bad"))[0] == 404

    # The API's merge, and its refusals.
    status, body = await scene.admin("POST", "/api/customers/crm-bo/merge", {"from": "crm-bo"})
    assert (status, body["error"]) == (400, "same_customer")
    status, body = await scene.admin("POST", "/api/customers/crm-bo/merge", {"from": "nobody"})
    assert (status, body["error"]) == (404, "unknown_customer") and "nobody" in body["message"]
    status, body = await scene.admin("POST", "/api/customers/crm-bo/merge", {"form": visitor_id})
    assert (status, body["error"]) == (400, "bad_merge")
    status, body = await scene.admin("POST", "/api/customers/crm-bo/unmerge", {"merge_id": "nope"})
    assert (status, body["error"]) == (404, "unknown_merge")
    for path, payload in (("nobody/unmerge", {"merge_id": "nope"}), ("nobody/merge", {"from": "nobody"})):
        status, body = await scene.admin("POST", f"/api/customers/{path}", payload)
        assert (status, body["error"]) == (404, "unknown_customer"), path
    status, body = await scene.admin("POST", "/api/customers/crm-bo/merge", {"from": visitor_id})
    assert status == 200 and body["customer"]["id"] == "crm-bo"
    await scene.admin("PUT", "/api/customers/crm-bo", {"tier": "vip"})
    status, body = await scene.admin("POST", "/api/customers/crm-bo/unmerge", {"merge_id": body["merge"]["id"]})
    assert (status, body["error"]) == (409, "profile_changed") and "tier" in body["message"]


async def test_a_bad_signature_is_refused_and_links_nothing(scene: Scene) -> None:
    raw = Customer(await websockets.connect(scene.gateway.url("/webchat/ws")))  # no hello yet
    try:
        forged = {**signed_hello("u-42", "mei@customer.example"), "email": "lin@customer.example"}
        await raw.send(type="hello", token=None, **forged)
        error = await raw.expect("error")
        assert error["code"] == "bad_identity" and "user_hash" in error["message"]
        await raw.send(type="hello", token=None, user_id="u-42")
        assert (await raw.expect("error"))["code"] == "bad_identity"
        await raw.send(type="hello", token=None, name="Mei")  # without them, a plain visitor
        welcome = await raw.expect("welcome")
        assert welcome["conversation_id"]
        await raw.send(type="verify", code="12ab")
        assert (await raw.next("error"))["code"] == "bad_verify"
        await raw.send(type="verify_email")
        assert (await raw.next("error"))["code"] == "nothing_to_verify"
        await raw.send(type="close")
    finally:
        await raw.close()


async def test_a_vip_by_email_domain_is_a_vip_on_telegram_once_linked(scene: Scene, api: BotApi) -> None:
    # The tier rule matches the email domain vip.example; the customer's email is known only as
    # a verified identity (no email attribute), and she writes on Telegram.
    status, _ = await scene.admin("PUT", "/api/customers/crm-vic", {
        "name": "Vic", "identities": [{"kind": "email", "address": "vic@vip.example"},
                                      {"kind": "telegram", "address": "5553009"}]})
    assert status == 201
    dan = await scene.agent("dan")
    await telegram_says(scene.gateway, api, 5553009, "/agent")
    offer = (await dan.next("offer"))["conversation"]
    assert offer["channel"] == "tg-support" and offer["queue"] == "vip_desk"
    assert offer["customer"]["id"] == "crm-vic" and offer["customer"]["tier"] == "vip"
    await dan.send(type="accept", conversation_id=offer["id"])
    await dan.next("assigned")
    await dan.send(type="close", conversation_id=offer["id"])
    await dan.next("closed")


async def test_concurrent_merge_requests_on_postgres_lose_nothing(tmp_path: Path, pg_url: str) -> None:
    config = gateway_config(pg_url)
    config["channels"] = [{"type": "webchat", "identity_secret": IDENTITY_SECRET}]
    config["server"]["admin_token"] = ADMIN
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    scene = Scene(gateway, MailSink())
    try:
        ids = [f"crm-c{n}" for n in range(5)]
        for n, cid in enumerate(ids):
            assert (await scene.admin("PUT", f"/api/customers/{cid}", {
                "identities": [{"kind": "email", "address": f"c{n}@customer.example"}]}))[0] == 201
            visitor = await scene.visitor(**signed_hello(None, f"c{n}@customer.example"))  # a conversation each
            await frames_until(visitor, "message")
        conversations = {c.conversation_id for c in scene.visitors}
        # Real concurrent requests, overlapping pairs in both directions.
        pairs = [(0, 1), (1, 0), (1, 2), (2, 1), (3, 4), (4, 3), (0, 4), (2, 3)]
        answers = await asyncio.gather(*[scene.admin("POST", f"/api/customers/{ids[t]}/merge", {"from": ids[s]})
                                         for t, s in pairs])
        assert {status for status, _ in answers} <= {200, 409}
        assert any(status == 200 for status, _ in answers)
        assert all(body["error"] == "already_merged" for status, body in answers if status == 409)
        owners: dict[str, str] = {}
        found: set[str] = set()
        for cid in ids:
            status, body = await scene.admin("GET", f"/api/customers/{cid}")
            assert status == 200
            if body["merged_into"] is not None:
                assert body["identities"] == []
                continue
            for identity in body["identities"]:
                owner = owners.setdefault(identity["address"], cid)
                assert owner == cid, f"{identity} on {cid} and {owner}"
            found |= {c["id"] for c in body["conversations"]}
        assert {a for a in owners if a.endswith("@customer.example")} == {f"c{n}@customer.example" for n in range(5)}
        assert found == conversations
    finally:
        await scene.close()
        await gateway.stop()


async def test_a_mailed_code_is_still_good_after_the_gateway_restarts(tmp_path: Path, pg_url: str,
                                                                      sink: MailSink) -> None:
    config = gateway_config(pg_url)
    config["channels"] = [
        {"type": "webchat"},
        {"type": "email", "name": "mail", "address": "support@acme.example",
         "listen": {"host": "127.0.0.1", "port": 0, "accept_recipients": ["acme.example"]},
         "smtp": {"host": "127.0.0.1", "port": sink.port, "security": "none", "timeout": 5},
         "retry": {"attempts": 3, "backoff": 0.2, "backoff_max": 0.5}}]
    gateway = await GatewayProcess.write_config(tmp_path, config).start()
    visitor = await Customer.connect(gateway, name="Kim", email="kim@restart.example")
    try:
        mails_before = len(sink.messages)
        await visitor.send(type="verify_email")
        await visitor.next("verification_sent")
        raw = next(raw for _, raw in (await sink.wait_for(mails_before + 1))[mails_before:]
                   if b"kim@restart.example" in raw)
        text = BytesParser(policy=policy.default).parsebytes(raw).get_body(("plain",)).get_content()  # type: ignore[union-attr]
        code = re.search(r"\b(\d{6})\b", text).group(1)  # type: ignore[union-attr]
        await visitor.send(type="verify", code="000000" if code != "000000" else "111111")
        assert (await visitor.next("verify_failed"))["tries_left"] == 4
        await visitor.close()
        token, conversation_id = visitor.token, visitor.conversation_id

        await gateway.stop()
        await gateway.start()
        visitor = await Customer.connect(gateway, token=token)
        assert visitor.conversation_id == conversation_id
        await visitor.send(type="verify", code="000000" if code != "000000" else "111111")
        assert (await visitor.next("verify_failed")) == {"type": "verify_failed", "reason": "wrong", "tries_left": 3}
        await visitor.send(type="verify", code=code)
        assert await visitor.next("verified") == {"type": "verified", "kind": "email"}
        await visitor.send(type="verify", code=code)
        assert (await visitor.next("verify_failed"))["reason"] == "no_code"  # used once
    finally:
        with contextlib.suppress(Exception):
            await visitor.close()
        await gateway.stop()

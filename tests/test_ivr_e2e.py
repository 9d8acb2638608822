"""Whole calls through the real gateway: Twilio's webhooks posted with signatures from the twilio
package's RequestValidator (tests/support_ivr.py), the TwiML answers parsed back to what the
caller hears, the agent on the real agent websocket, the figures from the admin API. Self-service
by a key and by Chinese speech; to an agent (Enqueue, position, accept, Leave, Dial, close with
a disposition); a hang-up in the queue counted abandoned once; a callback an agent then gets;
outside hours; three invalid inputs; a known caller by name; a restart mid-call (PostgreSQL)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from twilio.request_validator import RequestValidator

from support import ALICE_TOKEN, Agent, GatewayProcess, gateway_config
from support_ivr import AUTH_TOKEN, PUBLIC_URL, Caller, post_signed

pytestmark = pytest.mark.asyncio(loop_scope="module")

ADMIN = "admin-token-for-ivr-tests"
WELCOME = "Welcome to Acme. Delivery times, 1. Billing, 2. An agent, 0. A callback, 7. 中文请按 8。"
MENU: dict[str, Any] = {
    "start": "main",
    "nodes": {
        "main": {"say": WELCOME, "gather": {"options": [
            {"key": 1, "faq": "delivery-time"},
            {"key": 2, "goto": "billing"},
            {"key": 0, "agent": "general", "words": ["agent"]},
            {"key": 3, "agent": "nobody"},
            {"key": 4, "agent": "afterhours"},
            {"key": 7, "callback": True},
            {"key": 8, "goto": "zh"}]}},
        "billing": {"say": "Billing. Press 0 for a billing agent.", "gather": {"options": [{"key": 0, "agent": "billing"}]}},
        "zh": {"language": "zh-CN", "say": "请说出您的问题。",
               "gather": {"faq": True, "options": [{"key": 0, "agent": "general", "words": {"zh": ["人工"]}}]}},
        "closed": {"say": "We are closed. Press 1 for a callback.",
                   "gather": {"options": [{"key": 1, "callback": True}, {"key": 2, "hangup": True}]}},
    },
}


LINE_KB = """\
- id: delivery-time
  en: {q: "How long does delivery take?", a: "On the freight line, pallets arrive in 5 to 8 days."}
- id: pallet-size
  en: {q: "How big may a pallet be?", alt: ["pallet size limits"], a: "A pallet is at most 120 by 100 centimetres."}
"""


def ivr_config(store_url: str) -> dict[str, Any]:
    phone = {"type": "ivr", "name": "phone", "auth_token": AUTH_TOKEN, "public_url": PUBLIC_URL, "menu": MENU,
             "waiting": {"announce_every": 30, "pause": 2}}
    night = {**phone, "name": "night", "menu": {**MENU, "hours": "never", "closed": "closed"}}
    config = gateway_config(
        store_url, channels=[{"type": "webchat"}, phone, night],
        queues=[{"name": "general"}, {"name": "billing"}, {"name": "unstaffed"},
                {"name": "afterhours", "hours": "never", "outside_hours": {
                    "text": "Our desk is closed. Leave your number and we call you back.",
                    "action": "leave_message", "queue": "general"}}],
        hours={"never": {"weekly": {}}},
        routing={"rules": [{"name": "nobody", "when": {"keywords": "ivr:nobody"}, "queue": "unstaffed"},
                           {"name": "afterhours", "when": {"keywords": "ivr:afterhours"}, "queue": "afterhours"},
                           {"name": "billing", "when": {"channel": ["phone", "night"], "keywords": "ivr:billing"},
                            "queue": "billing"}],
                 "default_queue": "general"},
        desk={"dispositions": ["resolved", "reached", "no_answer"]},
        agents=[{"id": "alice", "name": "Alice", "token": ALICE_TOKEN, "queues": ["general", "billing"],
                 "capacity": {"webchat": 1, "phone": 1, "callback": 1}}])
    config["server"]["admin_token"] = ADMIN
    return config


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("ivr")
    config = ivr_config(f"sqlite:///{directory / 'gateway.db'}")
    # A third line with a KB of its own: its `faq: <id>` keys and its spoken questions read that KB.
    (directory / "line_kb.yaml").write_text(LINE_KB, encoding="utf-8")
    line = {**next(c for c in config["channels"] if c.get("name") == "phone"), "name": "line"}
    config["channels"].append(line)
    config["selfservice"]["knowledge_bases"] = [
        {"name": "line", "faq": str(directory / "line_kb.yaml"), "when": {"channel": "line"}}]
    process = await GatewayProcess.write_config(directory, config).start()
    yield process
    await process.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def alice(gateway: GatewayProcess) -> AsyncIterator[Agent]:
    agent = await Agent.connect(gateway, ALICE_TOKEN)
    await agent.next("ready")
    yield agent
    with contextlib.suppress(Exception):
        await agent.close()


async def admin(gateway: GatewayProcess, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        async with http.request(method, gateway.http + path, json=body) as response:
            assert response.status in (200, 201), await response.text()
            return await response.json()


async def call_conversation(gateway: GatewayProcess, caller: Caller) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The conversation of this call (its CallSid is in the IVR's notices) and its events."""
    for conversation in (await admin(gateway, "GET", f"/api/conversations?channel={caller.channel}&limit=500"))["conversations"]:
        found = await admin(gateway, "GET", f"/api/conversations/{conversation['id']}?limit=500")
        if any(e["kind"] == "notice" and e["data"].get("ivr", {}).get("call_sid") == caller.sid for e in found["events"]):
            return found["conversation"], found["events"]
    raise AssertionError(f"no conversation for {caller.sid}")


def closing(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert events[-1]["kind"] == "closed", events[-1]
    return events[-1]["data"]


async def test_every_request_is_signed_bad_missing_or_for_another_url_is_403_and_nothing_done(
        gateway: GatewayProcess) -> None:
    caller = Caller(gateway)
    path, form = "/ivr/phone/voice", caller.form()
    before = (await admin(gateway, "GET", "/api/conversations?channel=phone&limit=500"))["conversations"]
    refused = [
        await post_signed(gateway, path, form, token=None),                        # missing
        await post_signed(gateway, path, form, signature="bm90IGEgc2lnbmF0dXJl"),   # bad
        await post_signed(gateway, path, form, token="another-accounts-token"),    # another account
        await post_signed(gateway, path, form, url=gateway.http + path),            # the URL we hit, not the public one
        await post_signed(gateway, path, {**form, "From": "+15559999999"},          # a field changed after signing
                          signature=RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, form)),
    ]
    assert [a.status for a in refused] == [403] * 5
    assert "X-Twilio-Signature" in refused[0].body
    without_call = dict(form)
    del without_call["CallSid"]
    missing_call = await post_signed(gateway, path, without_call)
    assert (missing_call.status, missing_call.body) == (400, "CallSid is missing")
    too_large = await post_signed(gateway, path, {**form, "Padding": "x" * 70_000})
    assert too_large.status == 413
    garbage = b"CallSid=\xff\xfe&From=%2B1"  # bytes that are no form in UTF-8
    signed_url_only = RequestValidator(AUTH_TOKEN).compute_signature(PUBLIC_URL + path, {})
    seen = []
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}, {"X-Twilio-Signature": signed_url_only}):
            async with http.post(gateway.http + path, data=garbage, headers={
                    "Content-Type": "application/x-www-form-urlencoded", **headers}) as response:
                seen.append((response.status, (await response.text()).split(" (")[0]))
    assert seen == [(403, f"missing or wrong X-Twilio-Signature for {PUBLIC_URL + path}")] * 2 + [
        (400, "the body is not an HTML form in UTF-8")]  # unsigned: refused; signed: a clear 400
    after = (await admin(gateway, "GET", "/api/conversations?channel=phone&limit=500"))["conversations"]
    assert after == before  # nothing was done
    assert (await caller.call()).said() == [WELCOME]


async def test_self_service_by_a_key_and_by_chinese_speech(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550101")
    first = await caller.call()
    gather = first.find("Gather")
    assert gather.get("action") == "/ivr/phone/step" and gather.get("numDigits") == "1"
    answer = await caller.press("1")
    assert answer.said()[0].startswith("Domestic standard delivery takes 2-4 business days")
    assert answer.said()[1] == WELCOME  # and the menu again
    await caller.hang_up()
    conversation, events = await call_conversation(gateway, caller)
    customer_said = [e["text"] for e in events if e["kind"] == "message" and e["author"] == "customer"]
    assert customer_said == ["Incoming call from +15550101", "pressed 1"]
    assert closing(events)["disposition"] == "self_service" and conversation["state"] == "closed"

    chinese = Caller(gateway, "+8613800000001")
    await chinese.call()
    asked = await chinese.press("8")
    assert asked.said() == ["请说出您的问题。"] and asked.find("Gather").get("language") == "zh-CN"
    assert "speech" in (asked.find("Gather").get("input") or "")
    heard = await chinese.say("运费多少钱")
    assert heard.said()[0].startswith("运费按重量、体积和目的地计算")
    assert {say.get("language") for say in heard.twiml.iter("Say")} == {"zh-CN"}
    _, events = await call_conversation(gateway, chinese)
    assert any(e["kind"] == "notice" and e["data"].get("faq") == "shipping-cost" for e in events)
    await chinese.hang_up()


async def test_a_channel_with_a_kb_of_its_own_answers_keys_and_speech_from_it(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550102", channel="line")
    await caller.call()
    assert (await caller.press("1")).said() == ["On the freight line, pallets arrive in 5 to 8 days.", WELCOME]
    await caller.press("8")  # the zh node asks the FAQ about speech: the same KB
    assert (await caller.say("pallet size limits")).said()[0] == "A pallet is at most 120 by 100 centimetres."
    await caller.hang_up()
    _, events = await call_conversation(gateway, caller)
    assert [e["data"]["faq"] for e in events if e["kind"] == "notice" and "faq" in e["data"]] == [
        "delivery-time", "pallet-size"]


async def test_to_an_agent_waits_hears_its_place_and_is_dialled_to_the_agent_who_accepts(
        gateway: GatewayProcess, alice: Agent) -> None:
    caller = Caller(gateway, "+15550111")
    await caller.call()
    queued = await caller.press("0")
    assert queued.said() == ["Please hold while we connect you to an agent."]
    enqueue = queued.find("Enqueue")
    assert (enqueue.get("waitUrl"), enqueue.get("action"), enqueue.text) == (
        "/ivr/phone/wait", "/ivr/phone/queued", "contactgate-phone")
    offer = (await alice.next("offer"))["conversation"]
    assert offer["channel"] == "phone" and offer["queue"] == "general"
    ivr = offer["ivr"]
    assert ivr["kind"] == "voice" and ivr["caller"] == "+15550111" and ivr["call_sid"] == caller.sid
    assert ivr["path"] == ["ivr:main", "ivr:general"] and ivr["inputs"] == ["pressed 0"]

    waiting = await caller.wait()
    assert waiting.said() == ["You are number 1 in line.", "Press 9 to leave your number, and we will call you back."]
    assert waiting.find("Gather").get("action") == "/ivr/phone/wait"
    again = await caller.wait(5)
    assert again.said() == [] and again.find("Pause").get("length") == "2"  # not announced again so soon

    # A decline puts the call back in line (nobody else can take it: it comes back to Alice).
    await alice.send(type="decline", conversation_id=offer["id"])
    await alice.next("offer_withdrawn", conversation_id=offer["id"], reason="declined")
    assert "Leave" not in (await caller.wait(7)).verbs()
    offer = (await alice.next("offer"))["conversation"]
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.next("assigned", conversation_id=offer["id"])
    assert (await caller.wait(9)).verbs() == ["Leave"]
    bridged = await caller.queue_ended("leave")
    assert bridged.said() == ["Connecting you to Alice."]
    dial = bridged.find("Dial")
    assert dial.get("action") == "/ivr/phone/dialed" and bridged.find("Client").text == "alice"
    note = await alice.next("notice", conversation_id=offer["id"], text="Call connected to the agent")
    assert note["notice"] == "ivr"
    assert (await caller.dial_ended("completed")).verbs() == ["Hangup"]
    await caller.hang_up()
    conversation, _ = await call_conversation(gateway, caller)
    assert conversation["state"] == "assigned"  # the desk keeps it until the agent closes it
    await alice.send(type="close", conversation_id=offer["id"], disposition="resolved")
    await alice.next("closed", conversation_id=offer["id"])
    _, events = await call_conversation(gateway, caller)
    assert closing(events)["disposition"] == "resolved"


async def test_a_call_to_an_agent_carries_the_bots_guesses_for_the_callers_question(
        gateway: GatewayProcess, alice: Agent) -> None:
    """The offer's handoff guesses are for the question the caller asked the FAQ, not for the
    words that chose the agent option ("人工" alone would guess the service hours)."""
    async def counted(faq_id: str) -> dict[str, int]:
        entry = next(e for e in (await admin(gateway, "GET", "/api/kb/stats"))["entries"] if e["faq_id"] == faq_id)
        return {k: entry[k] for k in ("answered", "handed_off")}

    before = await counted("lost-parcel")
    caller = Caller(gateway, "+8613800000077")
    await caller.call()
    await caller.press("8")
    answered = await caller.say("我的快递丢了")
    assert "Enqueue" in (await caller.say("人工")).verbs()
    offer = (await alice.next("offer"))["conversation"]
    # The answer the IVR read out counts in the KB's deflection figures, and so does the handoff after it.
    read_out = any(e["kind"] == "notice" and e["data"].get("faq") == "lost-parcel"
                   for e in (await call_conversation(gateway, caller))[1])
    assert read_out, answered.said()
    assert await counted("lost-parcel") == {"answered": before["answered"] + 1, "handed_off": before["handed_off"] + 1}
    assert offer["handoff"]["reason"] == "asked"
    assert offer["handoff"]["guesses"][0]["faq_id"] == "lost-parcel"
    assert offer["ivr"]["speech"] == ["我的快递丢了", "人工"]
    # The agent's suggestions are for what the caller said, not for the gateway's account of
    # the call ("Incoming call from …", "pressed 8", the route), which are marked not_words.
    marked = [e["text"] for e in offer["transcript"] if e["author"] == "customer" and e.get("not_words")]
    assert marked[:2] == ["Incoming call from +8613800000077", "pressed 8"] and len(marked) == 3
    assert [s["faq_id"] for s in offer["suggestions"]][:1] == ["lost-parcel"]
    assert "opening-hours-service" not in [s["faq_id"] for s in offer["suggestions"]]  # what "人工" alone gets
    await caller.hang_up()
    _, events = await call_conversation(gateway, caller)
    assert closing(events)["disposition"] == "abandoned"


async def test_a_hang_up_in_the_queue_is_abandoned_and_counted_once(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550122")
    await caller.call()
    assert "Enqueue" in (await caller.press("3")).verbs()
    assert (await caller.wait()).said()[0] == "You are number 1 in line."
    figures = {q["queue"]: q for q in (await admin(gateway, "GET", "/api/queues"))["queues"]}
    assert figures["unstaffed"]["waiting"] == 1 and figures["unstaffed"]["abandoned"] == 0
    await caller.hang_up()
    _, events = await call_conversation(gateway, caller)
    assert closing(events) == {"closed_by": "customer", "disposition": "abandoned", "state_before": "queued"}
    await caller.hang_up()  # Twilio delivers the status callback again
    _, again = await call_conversation(gateway, caller)
    assert len(again) == len(events)
    figures = {q["queue"]: q for q in (await admin(gateway, "GET", "/api/queues"))["queues"]}
    assert figures["unstaffed"]["waiting"] == 0 and figures["unstaffed"]["abandoned"] == 1
    # Another caller hangs up: the queue's end says so first, then the status callback.
    other = Caller(gateway, "+15550123")
    await other.call()
    await other.press("3")
    assert (await other.queue_ended("hangup")).verbs() == ["Hangup"]
    await other.hang_up()
    _, events = await call_conversation(gateway, other)
    assert closing(events)["disposition"] == "abandoned"
    figures = {q["queue"]: q for q in (await admin(gateway, "GET", "/api/queues"))["queues"]}
    assert figures["unstaffed"]["abandoned"] == 2


async def test_a_callback_confirmed_with_another_number_reaches_an_agent(gateway: GatewayProcess, alice: Agent) -> None:
    caller = Caller(gateway, "+15550133")
    await caller.call()
    asked = await caller.press("7")
    assert asked.said() == ["We will call you back at + 1 5 5 5 0 1 3 3. Press 1 to confirm, or enter another "
                            "number followed by the pound key."]
    assert asked.find("Gather").get("finishOnKey") == "#"
    other = await caller.press("8613900001111")
    assert other.said()[0].startswith("We will call you back at 8 6 1 3 9 0 0 0 0 1 1 1 1.")
    done = await caller.press("1")
    assert done.said() == ["Thank you. We will call you back at 8 6 1 3 9 0 0 0 0 1 1 1 1. Goodbye."]
    assert done.verbs() == ["Say", "Hangup"]

    offer = (await alice.next("offer"))["conversation"]
    assert offer["channel"] == "callback"
    assert offer["ivr"]["kind"] == "callback" and offer["ivr"]["number"] == "8613900001111"
    assert offer["ivr"]["caller"] == "+15550133"
    assert [(e["author"], e["text"]) for e in offer["transcript"]] == [  # no bot greeting: nobody is there
        ("customer", "Please call me back at 8613900001111."), ("bot", "Let me find you an agent. Please hold on.")]
    await alice.send(type="accept", conversation_id=offer["id"])
    await alice.next("assigned", conversation_id=offer["id"])
    await alice.send(type="close", conversation_id=offer["id"], disposition="reached")
    await alice.next("closed", conversation_id=offer["id"])
    _, events = await call_conversation(gateway, caller)
    assert closing(events)["disposition"] == "callback_requested"


async def test_an_accepted_call_stays_on_the_desk_when_the_caller_leaves_before_being_connected(
        gateway: GatewayProcess, alice: Agent) -> None:
    """docs/channels.md: the agent's desk keeps an accepted call until the agent closes it; the
    caller hanging up (before the next wait request connects them), or leaving a callback when the
    agent's phone did not answer, does not close it: the agent is told."""
    async def accepted(caller: Caller) -> str:
        await caller.call()
        await caller.press("0")
        offer = (await alice.next("offer"))["conversation"]
        await alice.send(type="accept", conversation_id=offer["id"])
        await alice.next("assigned", conversation_id=offer["id"])
        return offer["id"]

    async def still_on_the_desk(caller: Caller, cid: str) -> None:
        conversation, events = await call_conversation(gateway, caller)
        assert conversation["state"] == "assigned" and not [e for e in events if e["kind"] == "closed"]
        await alice.send(type="close", conversation_id=cid, disposition="resolved")
        await alice.next("closed", conversation_id=cid)
        _, events = await call_conversation(gateway, caller)
        assert closing(events)["disposition"] == "resolved"

    hung_up = Caller(gateway, "+15550161")
    cid = await accepted(hung_up)
    await hung_up.hang_up()  # before any wait request: never connected
    await hung_up.hang_up()  # the status callback again
    told = await alice.next("notice", conversation_id=cid, notice="caller_left")
    assert told["text"] == "The caller hung up before being connected."
    await still_on_the_desk(hung_up, cid)
    # What the caller pressed is stored before the state it led to (docs/channels.md, step 3).
    _, events = await call_conversation(gateway, hung_up)
    pressed = next(n for n, e in enumerate(events) if e["kind"] == "message" and e["text"] == "pressed 0")
    waiting = next(n for n, e in enumerate(events) if e["kind"] == "notice" and e["data"].get("call", {}).get("phase") == "queued")
    assert pressed < waiting

    no_answer = Caller(gateway, "+15550162")
    cid = await accepted(no_answer)
    assert (await no_answer.wait()).verbs() == ["Leave"]
    await no_answer.queue_ended("leave")
    assert "Gather" in (await no_answer.dial_ended("no-answer")).verbs()  # offered a callback
    assert (await no_answer.press("1")).verbs() == ["Say", "Hangup"]
    callback = (await alice.next("offer"))["conversation"]  # the callback request comes first
    assert callback["channel"] == "callback" and callback["ivr"]["call_conversation_id"] == cid
    told = await alice.next("notice", conversation_id=cid, notice="caller_left")
    assert told["text"].startswith("The caller asked to be called back")
    await no_answer.hang_up()
    await still_on_the_desk(no_answer, cid)
    await alice.send(type="accept", conversation_id=callback["id"])
    await alice.next("assigned", conversation_id=callback["id"])
    await alice.send(type="close", conversation_id=callback["id"], disposition="reached")
    await alice.next("closed", conversation_id=callback["id"])


async def test_outside_hours_the_closed_message_and_the_callback(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550144", channel="night")
    closed = await caller.call()
    assert closed.said() == ["We are closed. Press 1 for a callback."]
    assert (await caller.press("1")).said()[0].startswith("We will call you back at + 1 5 5 5 0 1 4 4.")
    await caller.hang_up()
    _, events = await call_conversation(gateway, caller)
    assert closing(events)["disposition"] == "hung_up"


async def test_a_queue_closed_outside_hours_is_said_to_the_caller_then_the_callback(gateway: GatewayProcess) -> None:
    """Its outside_hours text is a bot message no caller can read: the first wait request says it
    and (leave_message) takes the caller out of the queue to leave a number."""
    caller = Caller(gateway, "+15550145")
    await caller.call()
    assert "Enqueue" in (await caller.press("4")).verbs()
    told = await caller.wait()
    assert told.said()[0] == "Our desk is closed. Leave your number and we call you back." and "Leave" in told.verbs()
    left = await caller.queue_ended("leave")
    assert left.said()[0].startswith("We will call you back at + 1 5 5 5 0 1 4 5."), left.said()
    await caller.hang_up()


async def test_three_invalid_or_missing_inputs_end_the_call(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550155")
    await caller.call()
    assert (await caller.press("5")).said() == ["Sorry, I did not get that.", WELCOME]
    assert (await caller.silence()).said() == ["Sorry, I did not get that.", WELCOME]
    last = await caller.press("6")
    assert last.said() == ["Sorry, I did not get that.", "Thank you for calling. Goodbye."]
    assert last.verbs() == ["Say", "Say", "Hangup"]
    _, events = await call_conversation(gateway, caller)
    assert closing(events)["disposition"] == "self_service"


async def test_keys_no_phone_sends_are_an_invalid_input_and_not_stored(gateway: GatewayProcess) -> None:
    caller = Caller(gateway, "+15550156")
    await caller.call()
    assert (await caller.press("x" * 40)).said() == ["Sorry, I did not get that.", WELCOME]
    assert (await caller.press("1" * 33)).said() == ["Sorry, I did not get that.", WELCOME]
    await caller.hang_up()
    _, events = await call_conversation(gateway, caller)
    assert [e["text"] for e in events if e["author"] == "customer"] == ["Incoming call from +15550156"]
    assert not any("x" * 10 in str(e) or "1" * 33 in str(e) for e in events)


async def test_a_known_caller_is_greeted_by_name(gateway: GatewayProcess) -> None:
    await admin(gateway, "PUT", "/api/customers/crm-ada", {
        "name": "Ada Lovelace", "identities": [{"channel": "phone", "address": "+15550166"}]})
    caller = Caller(gateway, "+15550166")
    assert (await caller.call()).said() == ["Hello Ada Lovelace.", WELCOME]
    repeated = await caller.call()  # the provider asked again: the same step, no second conversation
    assert repeated.said() == [WELCOME]
    await caller.hang_up()


async def test_the_caller_id_is_a_verified_phone_of_any_channel_and_anonymous_callers_stay_apart(
        gateway: GatewayProcess) -> None:
    # The CRM gave Grace a phone number (a kind, no channel): her call lands on her, greeted.
    await admin(gateway, "PUT", "/api/customers/crm-grace", {
        "name": "Grace Hopper", "identities": [{"kind": "phone", "address": "+1 555 0199"}]})
    grace = Caller(gateway, "+15550199")
    assert (await grace.call()).said()[0] == "Hello Grace Hopper."
    conversation, _ = await call_conversation(gateway, grace)
    assert conversation["customer_id"] == "crm-grace"
    await grace.hang_up()
    known = await admin(gateway, "GET", "/api/customers/crm-grace")
    assert [(i["kind"], i["address"], i["verified"]) for i in known["identities"]] == [("phone", "+15550199", True)]

    # Two callers without a number are two customers, not one "anonymous" one; so are two with
    # the number Twilio writes for a withheld caller id (ANONYMOUS on a keypad).
    callers = [Caller(gateway, "anonymous"), Caller(gateway, "anonymous"),
               Caller(gateway, "+266696687"), Caller(gateway, "+266696687")]
    for caller in callers:
        await caller.call()
    ones = [(await call_conversation(gateway, c))[0]["customer_id"] for c in callers]
    assert len(set(ones)) == 4
    withheld = await admin(gateway, "GET", f"/api/customers/{ones[2]}")
    assert [i["address"] for i in withheld["identities"]] == [f"+266696687:{callers[2].sid}"]
    for caller in callers:
        await caller.hang_up()


async def test_a_restart_mid_call_continues_the_menu_from_the_next_webhook(tmp_path: Path, pg_url: str) -> None:
    process = await GatewayProcess.write_config(tmp_path, ivr_config(pg_url)).start()
    try:
        caller = Caller(process, "+15550177")
        await caller.call()
        assert (await caller.press("2")).said() == ["Billing. Press 0 for a billing agent."]
        await process.stop()
        await process.start()
        queued = await caller.press("0")  # billing's 0, not the main menu's
        assert queued.said() == ["Please hold while we connect you to an agent."] and "Enqueue" in queued.verbs()
        conversation, events = await call_conversation(process, caller)
        assert conversation["state"] == "queued" and conversation["queue"] == "billing"
        assert [e["text"] for e in events if e["author"] == "customer"][-1] == "ivr:main ivr:billing"
    finally:
        await process.stop()

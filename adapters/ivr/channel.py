"""The voice channel (``type: ivr``): Twilio's voice webhooks, which SignalWire (LaML) and
Telnyx (TeXML) also speak, in and out of the pure call state machine (``ivr.call``).

Every request's ``X-Twilio-Signature`` is checked by the twilio package's ``RequestValidator``
over the public URL (``public_url`` + the path and query asked) and the form: bad, missing or
for another URL answers 403 and does nothing. A call is a conversation: the caller's number
identifies the customer, what the caller presses and says are its messages, the IVR's state
after each step is a ``notice`` event on it (so a restart continues the call from the next
webhook: the last one is read back), and a choice "to an agent" hands it to routing like any
other conversation. The provider's CallSid names the conversation (a ref); a status callback
redelivered is a ref already taken (CallSid/status), so it changes nothing twice.

Routes under ``path`` (default /ivr/<channel>): ``/voice`` (incoming call), ``/step`` (a
gather's answer), ``/wait`` (<Enqueue waitUrl>), ``/queued`` (<Enqueue action>), ``/dialed``
(<Dial action>), ``/status`` (the status callback).
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from twilio.request_validator import RequestValidator

from adapters.base import NOT_WORDS, GatewayPort, Inbound, Thread
from gateway.locks import KeyedLocks
from gateway.logs import about
from gateway.model import Conversation, ConversationState, Event, EventKind
from gateway.pipeline import ConversationError
from gateway.selfservice import Answer
from gateway.store import StoreUnavailable
from ivr.call import (Answered, Call, CallbackRequested, Ended, FaqHit, Heard, LeftQueue, Machine, Step, ToAgent)
from ivr.knowledge import answer_of
from ivr.menu import Menu, Phrases, Waiting, merge_phrases
from ivr.twiml import Urls, render

log = logging.getLogger("contactgate.ivr")

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNALWIRE_HEADER = "X-SignalWire-Signature"  # SignalWire's LaML: the same HMAC-SHA1, with its signing key
ENDED = ("completed", "busy", "failed", "no-answer", "canceled")  # CallStatus values that end a call
CACHE_CALLS = 10_000
STATE_NOTICE = "ivr"
# How a call that ends in each phase closes its conversation (a bridged call is the agent's to close).
CLOSE_AS = {"menu": "self_service", "callback": "hung_up", "queued": "abandoned"}
# What an accepted call's agent is told when the caller leaves before being connected.
CALLER_LEFT = {"abandoned": "The caller hung up before being connected.",
               "hung_up": "The caller hung up before being connected.",
               "callback_requested": "The caller asked to be called back (a callback request follows).",
               "left_queue_callback": "The caller asked to be called back (a callback request follows).",
               "left_queue_max_wait": "The caller waited too long and left."}
DIAL = r"^(client:[A-Za-z0-9_.@-]+|sip:\S+|\+?[0-9]{5,20})$"


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    auth_token: SecretStr = Field(min_length=1)    # the account's auth token: ${TWILIO_AUTH_TOKEN}
    # The URL the provider reaches the gateway at, without the path (behind a proxy, the
    # public one): signatures are computed over it.
    public_url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    path: str | None = Field(default=None, pattern=r"^/[^\s{}?#]*[^\s{}?#/]$")  # default /ivr/<channel>
    callback_channel: str = Field(default="callback", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # Agent id -> where their calls ring: client:<identity>, sip:<uri> or a phone number.
    # An agent not listed: client:<agent id>.
    dial: dict[str, str] = {}
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    menu: Menu
    waiting: Waiting = Waiting()
    phrases: dict[str, Phrases] = {}               # per language (en, zh): what the IVR itself says

    @field_validator("dial")
    @classmethod
    def _dial(cls, dial: dict[str, str]) -> dict[str, str]:
        for agent, target in dial.items():
            if not re.match(DIAL, target):
                raise ValueError(f"{agent}: {target!r} is not client:<identity>, sip:<uri> or a phone number")
        return dial

    def hours_references(self) -> list[tuple[tuple[str, ...], str]]:
        """Names of ``hours:`` this channel uses, with their keys (gateway/config.py checks them)."""
        return [(("menu", "hours"), self.menu.hours)] if self.menu.hours else []

    def faq_references(self) -> list[tuple[tuple[str | int, ...], str, tuple[str, ...]]]:
        """The menu's ``faq: <id>`` options with their keys and languages (gateway/selfservice
        checks each id against the KB that answers this channel's calls in that language)."""
        return [(("menu", *path), faq_id, languages) for path, faq_id, languages in self.menu.faq_options()]


def create(name: str, settings: Settings, gateway: GatewayPort) -> "IvrChannel":
    return IvrChannel(name, settings, gateway)


class IvrChannel:
    def __init__(self, name: str, settings: Settings, gateway: GatewayPort, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.settings = settings
        self.gateway = gateway
        self.path = settings.path or f"/ivr/{name}"
        self.urls = Urls.under(self.path)
        self.validator = RequestValidator(settings.auth_token.get_secret_value())
        self.machine = Machine(settings.menu, settings.waiting, merge_phrases(settings.phrases),
                               self._answer_of, settings.waiting.queue_name or f"contactgate-{name}")
        self._public = settings.public_url.rstrip("/")
        self._clock = clock
        self._locks = KeyedLocks()
        self._calls: OrderedDict[str, tuple[str, Call]] = OrderedDict()   # CallSid -> (conversation, state)
        self._positions: dict[str, tuple[int, int]] = {}                  # conversation -> (position, wait)
        self._outside: dict[str, tuple[str, str]] = {}                    # conversation -> (outside_hours text, action)

    # lifecycle ---------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        handlers: dict[str, Callable[[dict[str, str]], Awaitable[str]]] = {
            "voice": self.incoming, "step": self.step, "wait": self.wait, "queued": self.queued,
            "dialed": self.dialed, "status": self.status}
        return [web.post(f"{self.path}/{part}", self._webhook(handler)) for part, handler in handlers.items()]

    async def start(self) -> None:
        log.info("ivr: channel started", extra={"channel": self.name, "path": self.path})

    async def stop(self) -> None:
        pass

    async def send(self, conversation: Conversation, event: Event) -> None:
        """A caller hears no text (agents' messages on a call stay on the desk as notes); the
        place in line a conversation was queued with is what the next wait request announces."""
        if event.kind in (EventKind.QUEUED, EventKind.TRANSFERRED) and "position" in event.data:
            self._positions[conversation.id] = (int(event.data["position"]), int(event.data.get("estimated_wait") or 0))
        elif event.kind is EventKind.MESSAGE and "outside_hours" in event.data:  # the next wait request says it
            self._outside[conversation.id] = (event.text or "", str(event.data.get("action") or "message"))

    async def notify(self, conversation_id: str, status: dict[str, Any]) -> None:
        if status.get("type") == "position":
            self._positions[conversation_id] = (int(status["position"]), int(status.get("estimated_wait") or 0))

    # requests ----------------------------------------------------------------------------------
    def _webhook(self, handler: Callable[[dict[str, str]], Awaitable[str]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def webhook(request: web.Request) -> web.Response:
            limit = self.settings.max_body_bytes
            if request.content_length is not None and request.content_length > limit:
                return web.Response(status=413, text=f"a webhook may have {limit} bytes at most")
            signature = request.headers.get(SIGNATURE_HEADER) or request.headers.get(SIGNALWIRE_HEADER, "")
            url = self._public + str(request.rel_url)
            try:
                form = await request.post()
            except ValueError as exc:  # UnicodeDecodeError too: bytes that are no form
                # No fields to check the signature over: only one made for the URL alone says
                # the sender holds the token; anyone else is refused as unsigned.
                if signature and self.validator.validate(url, {}, signature):
                    return web.Response(status=400, text=f"the body is not an HTML form in UTF-8 ({exc.__class__.__name__})")
                form = None
            params = {key: str(value) for key, value in form.items() if isinstance(value, str)} if form is not None else {}
            if form is None or not signature or not self.validator.validate(url, params, signature):
                log.warning("ivr: webhook without a valid signature",
                            extra={"channel": self.name, "path": request.path, "signed": bool(signature)})
                return web.Response(status=403, text=f"missing or wrong {SIGNATURE_HEADER} for {url}")
            sid = params.get("CallSid", "")
            if not sid:
                return web.Response(status=400, text="CallSid is missing")
            async with self._locks(sid):
                try:
                    twiml = await handler(params)
                except StoreUnavailable:
                    log.warning("ivr: storage unavailable", extra={"channel": self.name})
                    return web.Response(status=503, text="storage is unavailable; try again")
            return web.Response(text=twiml, content_type="application/xml")

        return webhook

    async def incoming(self, params: dict[str, str]) -> str:
        sid, caller = params["CallSid"], _e164(params.get("From", ""))
        loaded = await self._load(sid)
        if loaded is not None:  # the provider asked again: the same step, said again
            cid, call = loaded
            return self._render(self.machine.repeat(call, self._clock()))
        # The caller id is a verified phone identity (the channel's kind is phone): a known number
        # lands on its customer whatever channel it was learned on. A caller without a number
        # (anonymous, a client) is a customer of this call only, not one shared by all of them.
        receipt = await self.gateway.receive(Inbound(
            channel=self.name, address=_identity(caller, sid), text=f"Incoming call from {caller}", client_id=f"{sid}:call",
            profile={"phone": caller} if _dialable(caller) else {}, thread=Thread(refs=(sid,)),
            details={"call_sid": sid, "to": params.get("To"), NOT_WORDS: True}, bot="quiet"))
        cid = receipt.event.conversation_id
        await self.gateway.add_ref(self.name, sid, cid)
        conversation = await self.gateway.get_conversation(cid)
        customer = await self.gateway.get_customer(conversation.customer_id)
        hours = self.settings.menu.hours
        with about(cid):
            log.info("ivr: incoming call", extra={"channel": self.name, "known": customer.name is not None})
            step = self.machine.start(caller, name=customer.name, now=self._clock(),
                                      is_open=hours is None or self.gateway.open_now(hours))
            return await self._apply(sid, cid, None, step)

    async def step(self, params: dict[str, str]) -> str:
        sid = params["CallSid"]
        loaded = await self._load(sid)
        if loaded is None:
            return await self.incoming(params)  # a call we never heard of (the first webhook was lost)
        cid, call = loaded
        speech = params.get("SpeechResult") or None
        hit = None
        node = self.settings.menu.nodes.get(call.node)
        if speech and call.phase == "menu" and node is not None and node.gather is not None and node.gather.faq:
            reply = await self.gateway.selfservice.areply(speech, 0, self.name)
            if isinstance(reply, Answer):
                hit = FaqHit(reply.faq_id, reply.text)
        step = self.machine.input(call, params.get("Digits"), speech, hit, self._clock())
        return await self._apply(sid, cid, call, step)

    async def wait(self, params: dict[str, str]) -> str:
        sid = params["CallSid"]
        loaded = await self._load(sid)
        if loaded is None:
            return self._render(Step(Call("", "", ""), ()))
        cid, call = loaded
        now = self._clock()
        if "Digits" in params:
            step = self.machine.wait_key(call, params.get("Digits"), now)
        else:
            conversation = await self.gateway.get_conversation(cid)
            position, estimate = self._positions.get(cid, (None, None))
            step = self.machine.wait(call, position=position, estimated_wait=estimate, now=now,
                                     assigned=conversation.state is ConversationState.ASSIGNED,
                                     closed=not conversation.state.is_open, outside_hours=self._outside.pop(cid, None))
        return await self._apply(sid, cid, call, step)

    async def queued(self, params: dict[str, str]) -> str:
        sid = params["CallSid"]
        loaded = await self._load(sid)
        if loaded is None:
            return self._render(Step(Call("", "", ""), ()))
        cid, call = loaded
        dial = agent_name = None
        if call.leaving == "agent":
            conversation = await self.gateway.get_conversation(cid)
            if conversation.state is ConversationState.ASSIGNED and conversation.agent_id:
                dial = self.settings.dial.get(conversation.agent_id, f"client:{conversation.agent_id}")
                agent_name = await self._agent_name(cid, conversation.agent_id)
        step = self.machine.queue_left(call, params.get("QueueResult", ""), dial=dial, agent_name=agent_name,
                                       now=self._clock())
        return await self._apply(sid, cid, call, step)

    async def dialed(self, params: dict[str, str]) -> str:
        sid = params["CallSid"]
        loaded = await self._load(sid)
        if loaded is None:
            return self._render(Step(Call("", "", ""), ()))
        cid, call = loaded
        return await self._apply(sid, cid, call, self.machine.dialed(call, params.get("DialCallStatus"), self._clock()))

    async def status(self, params: dict[str, str]) -> str:
        sid, status = params["CallSid"], params.get("CallStatus", "")
        loaded = await self._load(sid)
        if loaded is None or status not in ENDED:
            return self._render(Step(Call("", "", ""), ()))
        cid, call = loaded
        if not await self.gateway.add_ref(self.name, f"{sid}/{status}", cid):
            return self._render(Step(call, ()))  # redelivered: done the first time
        with about(cid):
            log.info("ivr: call ended", extra={"channel": self.name, "status": status, "phase": call.phase})
        return await self._apply(sid, cid, call, self.machine.hangup(call))

    # state and effects -------------------------------------------------------------------------
    async def _load(self, sid: str) -> tuple[str, Call] | None:
        cached = self._calls.get(sid)
        if cached is not None:
            return cached
        ref = await self.gateway.find_ref(self.name, [sid])
        if ref is None:
            return None
        for event in reversed(await self.gateway.events_after(ref.conversation_id, 0)):
            if event.kind is EventKind.NOTICE and event.data.get("notice") == STATE_NOTICE and "call" in event.data:
                loaded = (ref.conversation_id, Call.from_json(event.data["call"]))
                self._remember(sid, loaded)
                return loaded
        return None

    def _remember(self, sid: str, loaded: tuple[str, Call]) -> None:
        self._calls[sid] = loaded
        self._calls.move_to_end(sid)
        while len(self._calls) > CACHE_CALLS:
            self._calls.popitem(last=False)

    async def _apply(self, sid: str, cid: str, before: Call | None, step: Step) -> str:
        """Store the new state, do the effects, then answer: what the caller hears next is only
        said once it is stored."""
        call = step.call
        with about(cid):
            # What the caller pressed or said first (stored once by its id, should this step be
            # replayed), then the state it led to, then what that state does.
            heard = [e for e in step.effects if isinstance(e, Heard)]
            for effect in heard:
                await self._effect(sid, cid, call, effect, step)
            if before is None or _changed(before, call):
                await self.gateway.record_notice(self.name, [sid], STATE_NOTICE, text=_state_text(call), data={
                    "ivr": self._summary(sid, call), "call": call.to_json()})
            self._remember(sid, (cid, call))
            for effect in step.effects:
                if not isinstance(effect, Heard):
                    await self._effect(sid, cid, call, effect, step)
        return self._render(step)

    async def _effect(self, sid: str, cid: str, call: Call, effect: Any, step: Step) -> None:
        if isinstance(effect, Heard):
            try:
                await self.gateway.customer_message(cid, effect.text, f"{sid}:in:{len(call.inputs)}", bot="quiet",
                                                    details=None if effect.speech else {NOT_WORDS: True})
            except ConversationError:  # closed meanwhile (an agent closed a bridged call): nothing to add to
                pass
        elif isinstance(effect, Answered):
            said = await self.gateway.record_notice(self.name, [sid], "ivr_answer", text=effect.text,
                                                    data={"faq": effect.faq_id})
            if said is not None:  # the deflection figures count it as the bot's answer
                await self.gateway.count_kb_outcome(cid, said.seq, effect.faq_id, "answered")
        elif isinstance(effect, ToAgent):
            log.info("ivr: to an agent", extra={"route": list(effect.route), "language": effect.language})
            routed = await self.gateway.receive(Inbound(
                channel=self.name, address=_identity(call.caller, sid), text=" ".join(effect.route),
                client_id=f"{sid}:agent:{len(call.inputs)}",
                profile={"language": effect.language}, thread=Thread(refs=(sid,)),
                details={"ivr": self._summary(sid, call), NOT_WORDS: True}, bot="handoff",
                question=call.questions[-1] if call.questions else None))  # the guesses: for the last question
            if call.answers:  # handed to a person after the IVR's last answer: that answer did not settle it
                await self.gateway.count_kb_outcome(cid, routed.event.seq, call.answers[-1], "handed_off")
        elif isinstance(effect, LeftQueue):
            self._positions.pop(cid, None)
            self._outside.pop(cid, None)
            await self._leave(sid, cid, f"left_queue_{effect.reason}")
        elif isinstance(effect, CallbackRequested):
            await self._callback(sid, cid, call, effect.number)
        elif isinstance(effect, Ended):
            self._positions.pop(cid, None)
            if effect.phase in CLOSE_AS:
                requested = any(isinstance(e, CallbackRequested) for e in step.effects)
                await self._leave(sid, cid, "callback_requested" if requested else CLOSE_AS[effect.phase])

    async def _leave(self, sid: str, cid: str, disposition: str) -> None:
        """The caller left before talking to an agent: the conversation closes with
        ``disposition``, unless an agent has accepted it (the caller hung up before the agent's
        phone was answered, or left a callback after it was not): the agent's desk keeps an
        accepted call until the agent closes it, told what happened."""
        conversation = await self.gateway.get_conversation(cid)
        if conversation.state is ConversationState.ASSIGNED:
            await self.gateway.record_notice(self.name, [sid], "caller_left", text=CALLER_LEFT.get(disposition, disposition),
                                             data={"why": disposition})
        elif conversation.state.is_open:
            await self.gateway.customer_leaves(cid, disposition)

    async def _callback(self, sid: str, cid: str, call: Call, number: str) -> None:
        """A callback conversation on the callback channel, routed like any other."""
        channel = self.settings.callback_channel
        customer = await self.gateway.identify(self.name, _identity(call.caller, sid))
        conversation, _ = await self.gateway.current_conversation(customer, channel, seen_seq=2**62, greet=False)
        ref = f"callback:{sid}"
        await self.gateway.add_ref(channel, ref, conversation.id)
        with about(conversation.id):
            log.info("ivr: callback requested", extra={"channel": channel, "call_conversation": cid})
            await self.gateway.record_notice(channel, [ref], "callback", text=f"Call back {number}", data={
                "ivr": {**self._summary(sid, call), "kind": "callback", "number": number, "call_conversation_id": cid}})
            await self.gateway.customer_message(conversation.id, f"Please call me back at {number}.", ref,
                                                bot="handoff")

    async def _agent_name(self, cid: str, agent_id: str) -> str | None:
        for event in reversed(await self.gateway.events_after(cid, 0)):
            if event.kind is EventKind.ASSIGNED:
                agent = event.data.get("agent") or {}
                return agent.get("name") if agent.get("id") == agent_id else None
        return None

    def _summary(self, sid: str, call: Call) -> dict[str, Any]:
        """What the agent's offer shows of the call (docs/protocol.md, ``ivr``)."""
        return {"kind": "voice", "call_sid": sid, "caller": call.caller, "path": call.route,
                "inputs": list(call.inputs), "speech": list(call.speech), "answers": list(call.answers),
                "language": call.language, "phase": call.phase}

    def _render(self, step: Step) -> str:
        return render(step.verbs, self.urls)

    def _answer_of(self, faq_id: str, language: str) -> str | None:
        # The KB this channel's calls in this language get, as for a spoken question.
        return answer_of(self.gateway.selfservice.kb_for_channel(self.name, language).index, faq_id, language)


def _state_text(call: Call) -> str:
    """The state notice as the agent reads it."""
    if call.phase == "queued" and call.leaving == "agent":  # accepted: the caller leaves the queue to ring
        return "Call leaving the queue for the agent"
    return {"menu": f"Call in the menu: {call.node}", "callback": "Call: confirming a callback number",
            "queued": "Call waiting for an agent", "bridged": "Call connected to the agent",
            "ended": "Call ended"}[call.phase]


def _changed(before: Call, after: Call) -> bool:
    """Whether the state is worth storing: an announcement's time alone is not."""
    return before.to_json() | {"announced_at": None} != after.to_json() | {"announced_at": None}


# What Twilio writes in From for a withheld caller id: ANONYMOUS, RESTRICTED, UNKNOWN and BLOCKED
# on a keypad. No caller has these numbers.
WITHHELD = frozenset({"+266696687", "+7378742833", "+8656696", "+2562533"})


def _dialable(number: str) -> bool:
    return number.startswith("+") and number[1:].isdigit() and number not in WITHHELD


def _identity(caller: str, sid: str) -> str:
    """Who the call is from: the number (a verified phone identity, see above), or for a caller
    without one, this call alone."""
    return caller if _dialable(caller) else f"{caller}:{sid}"


def _e164(number: str) -> str:
    """The caller's number as the provider gives it (+15551234567), without spaces; a caller
    without a number (anonymous, a client) keeps the provider's word for it."""
    return "".join(number.split()) or "anonymous"

"""Twilio's side of a call, played by the test: its real voice webhook form fields (CallSid, From,
To, Digits, SpeechResult, QueueResult, CallStatus, ...) POSTed to the real gateway, signed by the
twilio package's own RequestValidator over the public URL, and the TwiML answers parsed back to
what the caller would hear."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import aiohttp
from twilio.request_validator import RequestValidator

from support import GatewayProcess

AUTH_TOKEN = "twilio-auth-token-for-tests"
PUBLIC_URL = "https://voice.acme.example"
ACCOUNT = "AC" + "0" * 32


@dataclass
class Answer:
    status: int
    body: str

    @property
    def twiml(self) -> ET.Element:
        assert self.status == 200, (self.status, self.body)
        root = ET.fromstring(self.body)  # our own output
        assert root.tag == "Response"
        return root

    def said(self) -> list[str]:
        return [(say.text or "").strip() for say in self.twiml.iter("Say")]

    def verbs(self) -> list[str]:
        return [verb.tag for verb in self.twiml]

    def find(self, tag: str) -> ET.Element:
        found = self.twiml.find(f".//{tag}")
        assert found is not None, f"no <{tag}> in {self.body}"
        return found


async def post_signed(gateway: GatewayProcess, path: str, params: dict[str, str], *,
                      token: str | None = AUTH_TOKEN, url: str | None = None,
                      signature: str | None = None) -> Answer:
    """POST Twilio's form to ``path``, signed as Twilio signs it (over ``url``, default the public
    URL of ``path``) with ``token``; ``token=None`` sends no signature at all."""
    headers = {}
    if token is not None:
        signed_url = url or PUBLIC_URL + path
        headers["X-Twilio-Signature"] = signature or RequestValidator(token).compute_signature(signed_url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(gateway.http + path, data=params, headers=headers) as response:
            return Answer(response.status, await response.text())


class Caller:
    """One call to one IVR channel (one CallSid)."""

    def __init__(self, gateway: GatewayProcess, number: str = "+15550100", channel: str = "phone",
                 to: str = "+15557770000") -> None:
        self.gateway, self.number, self.channel, self.to = gateway, number, channel, to
        self.sid = "CA" + uuid.uuid4().hex

    def form(self, **extra: str) -> dict[str, str]:
        return {"AccountSid": ACCOUNT, "ApiVersion": "2010-04-01", "CallSid": self.sid, "From": self.number,
                "To": self.to, "Direction": "inbound", "CallStatus": "in-progress", **extra}

    async def post(self, part: str, **extra: Any) -> Answer:
        return await post_signed(self.gateway, f"/ivr/{self.channel}/{part}", self.form(**extra))

    async def call(self) -> Answer:
        return await self.post("voice", CallStatus="ringing")

    async def press(self, digits: str) -> Answer:
        return await self.post("step", Digits=digits)

    async def say(self, speech: str, confidence: str = "0.92") -> Answer:
        return await self.post("step", SpeechResult=speech, Confidence=confidence)

    async def silence(self) -> Answer:
        return await self.post("step")  # actionOnEmptyResult: the gather timed out

    async def wait(self, seconds_in_queue: int = 0) -> Answer:
        return await self.post("wait", QueueSid="QU" + "1" * 32, QueuePosition="1", QueueTime=str(seconds_in_queue),
                               AvgQueueTime="0", CurrentQueueSize="1")

    async def press_waiting(self, digits: str) -> Answer:
        return await self.post("wait", Digits=digits, QueueSid="QU" + "1" * 32)

    async def queue_ended(self, result: str) -> Answer:
        return await self.post("queued", QueueResult=result, QueueSid="QU" + "1" * 32, QueueTime="3")

    async def dial_ended(self, status: str = "completed") -> Answer:
        return await self.post("dialed", DialCallStatus=status, DialCallDuration="42")

    async def hang_up(self, status: str = "completed") -> Answer:
        return await self.post("status", CallStatus=status, CallDuration="30")

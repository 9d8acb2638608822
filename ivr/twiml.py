"""Verbs (ivr.call) as TwiML, built by the twilio package's ``VoiceResponse``, never by string
formatting: what Twilio, SignalWire (LaML) and Telnyx (TeXML) execute."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from twilio.twiml.voice_response import Gather as TwimlGather, VoiceResponse

from .verbs import Dial, Enqueue, Gather, Hangup, Leave, Pause, Play, Say, Verb


@dataclass(frozen=True, slots=True)
class Urls:
    """Where the provider sends the caller's next request (under the channel's path)."""

    step: str       # a gather's answer
    wait: str       # <Enqueue waitUrl>, and a key pressed while waiting
    queued: str     # <Enqueue action>: the caller left the queue
    dialed: str     # <Dial action>: the call with the agent ended

    @classmethod
    def under(cls, prefix: str) -> "Urls":
        prefix = prefix.rstrip("/")
        return cls(f"{prefix}/step", f"{prefix}/wait", f"{prefix}/queued", f"{prefix}/dialed")


def render(verbs: Sequence[Verb], urls: Urls) -> str:
    response = VoiceResponse()
    for verb in verbs:
        _add(response, verb, urls)
    return str(response)


def _add(parent: VoiceResponse | TwimlGather, verb: Verb, urls: Urls) -> None:
    if isinstance(verb, Say):
        kwargs = {"language": verb.language}
        if verb.voice:
            kwargs["voice"] = verb.voice
        parent.say(verb.text, **kwargs)
    elif isinstance(verb, Play):
        parent.play(verb.url)
    elif isinstance(verb, Pause):
        parent.pause(length=verb.seconds)
    elif isinstance(verb, Gather):
        assert isinstance(parent, VoiceResponse)
        kwargs: dict[str, object] = {
            "action": urls.step if verb.action == "step" else urls.wait, "method": "POST",
            "input": verb.input, "timeout": verb.timeout, "finish_on_key": verb.finish_on_key,
            "language": verb.language}
        if verb.num_digits is not None:
            kwargs["num_digits"] = verb.num_digits
        if verb.on_empty:
            kwargs["action_on_empty_result"] = True
        if "speech" in verb.input:
            kwargs["speech_timeout"] = "auto"
            if verb.hints:
                kwargs["hints"] = ", ".join(verb.hints)
        gather = parent.gather(**kwargs)
        for prompt in verb.prompts:
            _add(gather, prompt, urls)
    elif isinstance(verb, Enqueue):
        assert isinstance(parent, VoiceResponse)
        parent.enqueue(verb.queue, wait_url=urls.wait, wait_url_method="POST", action=urls.queued, method="POST")
    elif isinstance(verb, Leave):
        assert isinstance(parent, VoiceResponse)
        parent.leave()
    elif isinstance(verb, Dial):
        assert isinstance(parent, VoiceResponse)
        dial = parent.dial(action=urls.dialed, method="POST")
        if verb.target.startswith("client:"):
            dial.client(verb.target[len("client:"):])
        elif verb.target.startswith("sip:"):
            dial.sip(verb.target)
        else:
            dial.number(verb.target)
    elif isinstance(verb, Hangup):
        assert isinstance(parent, VoiceResponse)
        parent.hangup()

"""What a step of a call produces: the verbs the caller hears and does (one per TwiML verb,
rendered by ``ivr.twiml``) and the effects the gateway carries out (adapters/ivr)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Phase = Literal["menu", "callback", "queued", "bridged", "ended"]


# What the caller hears and does: one per TwiML verb ------------------------------------------------
@dataclass(frozen=True, slots=True)
class Say:
    text: str
    language: str
    voice: str | None = None


@dataclass(frozen=True, slots=True)
class Play:
    url: str


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: int


@dataclass(frozen=True, slots=True)
class Gather:
    prompts: tuple[Say | Play | Pause, ...]
    action: Literal["step", "wait"]    # which of our URLs gets the answer
    input: str = "dtmf"
    timeout: int = 5
    num_digits: int | None = 1
    finish_on_key: str = ""
    language: str = "en-US"
    hints: tuple[str, ...] = ()
    on_empty: bool = True              # ask our URL even without input (that is how a timeout is heard)


@dataclass(frozen=True, slots=True)
class Enqueue:
    queue: str


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Dial:
    target: str                        # client:<identity>, sip:<uri> or a phone number


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


Verb = Say | Play | Pause | Gather | Enqueue | Leave | Dial | Hangup


# What the gateway does ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Heard:
    """The caller pressed or said something: a message on the conversation."""

    text: str
    speech: bool = False


@dataclass(frozen=True, slots=True)
class Answered:
    faq_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ToAgent:
    """Hand the call to routing (channel, tier, ``route`` words and language)."""

    route: tuple[str, ...]
    language: str


@dataclass(frozen=True, slots=True)
class LeftQueue:
    reason: str                        # callback or max_wait


@dataclass(frozen=True, slots=True)
class CallbackRequested:
    number: str


@dataclass(frozen=True, slots=True)
class Ended:
    phase: Phase                       # the phase the call was in when it ended


Effect = Heard | Answered | ToAgent | LeftQueue | CallbackRequested | Ended

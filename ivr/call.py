"""The call: a pure state machine. A call's state and one event go in; what the caller hears
next (verbs, rendered as TwiML by ``ivr.twiml``) and what the gateway must do (effects: record
what the caller said, hand the call to an agent, ask for a callback) come out, with the new
state. No I/O, no clock, no await: the adapter (adapters/ivr) brings the time, the FAQ's
answers and the queue's news in, and does the effects.

    menu --(agent option)--> queued --(agent accepted: Leave, Dial)--> bridged --> ended
     |  \\--(callback option)--> callback --(confirmed)--> ended
     \\--(hangup option, on_fail, no next node)--> ended
    queued --(callback key, max_wait: Leave)--> callback (or on_max_wait's hangup)

Every event in every phase has an answer: an event that does not fit the phase (a late wait
request, a key press after the call was bridged) ends in a defined place, never an exception.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from .menu import KEYS, Gather as GatherConfig, Menu, Phrases, Target, Waiting, phrases_for, short_language, spoken_number
from .verbs import (Answered, CallbackRequested, Dial, Effect, Ended, Enqueue, Gather, Hangup, Heard, Leave, LeftQueue,
                    Pause, Phase, Play, Say, ToAgent, Verb)

__all__ = ["Answered", "Call", "CallbackRequested", "Dial", "Effect", "Ended", "Enqueue", "FaqHit", "Gather", "Hangup",
           "Heard", "Leave", "LeftQueue", "Machine", "Pause", "Phase", "Play", "Say", "Step", "ToAgent", "Verb"]

MAX_INPUTS_KEPT = 50
CALLBACK_TRIES = 3
MIN_CALLBACK_DIGITS = 5
MAX_DIGITS = 32  # a phone number with its extension fits; Twilio sends nothing longer for a gather


@dataclass(frozen=True, slots=True)
class Call:
    """One call's state, stored after every step (a restart continues from the next webhook)."""

    caller: str
    node: str
    language: str                      # BCP-47, of what the caller hears now
    phase: Phase = "menu"
    path: tuple[str, ...] = ()         # nodes entered, in order; back pops it
    tries: int = 0                     # invalid or missing inputs at this node, in a row
    inputs: tuple[str, ...] = ()       # keys pressed and words said, for the agent
    speech: tuple[str, ...] = ()       # speech results only
    questions: tuple[str, ...] = ()    # speech asked of the FAQ (it chose no option), answered or not
    answers: tuple[str, ...] = ()      # FAQ ids answered
    agent_label: str | None = None     # the agent option taken (routing sees ivr:<label>)
    callback_number: str | None = None
    queued_at: float | None = None     # seconds (the adapter's clock)
    announced_at: float | None = None
    leaving: str | None = None         # why we asked the provider to take the caller out of the queue

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Call":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("path", "inputs", "speech", "questions", "answers"):
            known[key] = tuple(known.get(key) or ())
        return cls(**known)

    @property
    def route(self) -> list[str]:
        """The path as routing sees it: ivr:<node> for each node entered, ivr:<agent label>."""
        words = [f"ivr:{node}" for node in self.path]
        if self.agent_label:
            words.append(f"ivr:{self.agent_label}")
        return list(dict.fromkeys(words))


@dataclass(frozen=True, slots=True)
class FaqHit:
    """The FAQ's answer to a speech result, above the threshold (the adapter asks the matcher)."""

    faq_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Step:
    call: Call
    verbs: tuple[Verb, ...]
    effects: tuple[Effect, ...] = field(default=())


# An entry's answer in a language (en, zh), or None when the FAQ has no such entry.
AnswerOf = Callable[[str, str], "str | None"]


class Machine:
    """The IVR of one channel: its menu, how callers wait, what it says in each language."""

    def __init__(self, menu: Menu, waiting: Waiting, phrases: dict[str, Phrases], answer_of: AnswerOf,
                 queue_name: str) -> None:
        self.menu = menu
        self.waiting = waiting
        self.phrases = phrases
        self.answer_of = answer_of
        self.queue_name = queue_name

    # events ---------------------------------------------------------------------------------
    def start(self, caller: str, *, name: str | None = None, is_open: bool = True, now: float = 0.0) -> Step:
        """An incoming call: the start node (the closed node outside the menu's hours)."""
        node = self.menu.start if is_open or self.menu.closed is None else self.menu.closed
        call = Call(caller=caller, node=node, language=self.menu.node_language(node), path=(node,))
        verbs: list[Verb] = []
        if name and self.menu.greet_known:
            verbs.append(self._say(call, self.menu.greet_known.replace("{name}", name)))
        return self._enter(call, verbs, [], now)

    def repeat(self, call: Call, now: float = 0.0) -> Step:
        """What the caller hears again (a redelivered webhook)."""
        if call.phase == "menu":
            return self._enter(call, [], [], now)
        if call.phase == "callback":
            return self._callback_prompt(call, [], [])
        if call.phase == "queued":
            return Step(call, (Enqueue(self.queue_name),))
        if call.phase == "bridged":  # a late request of the caller's leg: nothing changes
            return Step(call, (Leave(),))
        return Step(call, (Hangup(),))

    def input(self, call: Call, digits: str | None = None, speech: str | None = None,
              faq: FaqHit | None = None, now: float = 0.0) -> Step:
        """The answer to a gather: keys, a speech result, or nothing (the timeout). Keys that
        are not 0-9, * and # (or more than ``MAX_DIGITS``) are no input: the invalid-input path."""
        digits = keys_pressed(digits)
        speech = (speech or "").strip() or None
        if call.phase == "callback":
            return self._callback_input(call, digits)
        if call.phase != "menu":
            return self._off_phase(call)
        effects: list[Effect] = []
        if digits is not None:
            call = self._heard(call, f"pressed {digits}")
            effects.append(Heard(f"pressed {digits}"))
        if speech is not None:
            call = self._heard(call, speech, spoken=True)
            effects.append(Heard(speech, speech=True))
        if digits is None and speech is None:
            return self._miss(call, [], effects, now)
        if digits is not None and digits == self.menu.repeat_key:
            return self._enter(call, [], effects, now)
        if digits is not None and digits == self.menu.back_key:
            path = call.path[:-1] or call.path
            call = replace(call, node=path[-1], path=path, tries=0)
            return self._enter(call, [], effects, now)
        gather = self.menu.nodes[call.node].gather
        if gather is None:  # a webhook for a node without a gather: say it again
            return self._enter(call, [], effects, now)
        option = None
        if digits is not None:
            option = next((o for o in gather.options if o.key == digits), None)
        if option is None and speech is not None:
            lang = short_language(call.language)
            option = next((o for o in gather.options if o.heard_in(speech, lang)), None)
        if option is not None:
            return self._target(call, option, [], effects, now, then=option.then or gather.after_answer)
        if speech is not None and gather.faq:
            call = replace(call, questions=(call.questions + (speech,))[-MAX_INPUTS_KEPT:])
        if speech is not None and gather.faq and faq is not None:
            call = replace(call, answers=call.answers + (faq.faq_id,), tries=0)
            effects.append(Answered(faq.faq_id, faq.text))
            after = gather.after_answer or call.node
            return self._goto(call, after, [self._say(call, faq.text)], effects, now, push=after != call.node)
        # A question the FAQ is not sure of was heard, not missed: "no answer", not "did not get that".
        return self._miss(call, [], effects, now, unanswered=speech is not None and gather.faq)

    def wait(self, call: Call, *, position: int | None, estimated_wait: int | None, assigned: bool,
             now: float, closed: bool = False, outside_hours: tuple[str, str] | None = None) -> Step:
        """The provider's wait request: news of the queue, hold music; out of the queue once an
        agent accepted (the queue-end request then connects them), after ``max_wait``, or when
        the conversation was closed meanwhile (``closed``: it then ends with an apology).
        ``outside_hours``: (text, action) when routing found the queue closed: the caller hears
        the text, then waits on (``message``), is offered a callback (``leave_message``: a caller
        cannot leave a written message) or the call ends (``callback``: already requested)."""
        if call.phase != "queued":
            return self.repeat(call, now)
        if assigned:
            return Step(replace(call, leaving="agent"), (Leave(),))
        told: tuple[Say, ...] = (self._say(call, outside_hours[0]),) if outside_hours and outside_hours[0] else ()
        if closed:
            return Step(replace(call, leaving="closed" if not told else "told"), (*told, Leave()))
        if outside_hours is not None and outside_hours[1] == "leave_message":
            return Step(replace(call, leaving="callback"), (*told, Leave()))
        waited = now - (call.queued_at if call.queued_at is not None else now)
        if self.waiting.max_wait is not None and waited >= self.waiting.max_wait:
            return Step(replace(call, leaving="max_wait"), (Leave(),))
        prompts: list[Say | Play | Pause] = list(told)
        every = self.waiting.announce_every
        if call.announced_at is None or now - call.announced_at >= every:
            words = phrases_for(self.phrases, call.language)
            if position is not None:
                prompts.append(self._say(call, words.position.replace("{position}", str(position))))
            if estimated_wait:
                minutes = max(1, math.ceil(estimated_wait / 60))
                said = words.wait_one if minutes == 1 and words.wait_one else words.wait
                prompts.append(self._say(call, said.replace("{minutes}", str(minutes))))
            if self.waiting.callback_key is not None:
                prompts.append(self._say(call, words.callback_offer.replace("{key}", self.waiting.callback_key)))
            call = replace(call, announced_at=now)
        return Step(call, self._hold(call, prompts))

    def wait_key(self, call: Call, digits: str | None, now: float) -> Step:
        """A key pressed while waiting."""
        digits = keys_pressed(digits)
        if call.phase != "queued":
            return self.repeat(call, now)
        if digits is not None and digits == self.waiting.callback_key:
            call = self._heard(call, f"pressed {digits}")
            return Step(replace(call, leaving="callback"), (Leave(),), (Heard(f"pressed {digits}"),))
        return Step(call, self._hold(call, []))

    def queue_left(self, call: Call, result: str, *, dial: str | None, agent_name: str | None,
                   now: float = 0.0) -> Step:
        """The end of the caller's <Enqueue> (``result``: Twilio's QueueResult)."""
        if call.phase != "queued":
            return self._off_phase(call)
        leaving = call.leaving
        call = replace(call, leaving=None)
        if result == "hangup":
            return Step(replace(call, phase="ended"), (Hangup(),), (Ended("queued"),))
        if result == "leave" and leaving == "agent":
            if dial is None:  # the agent gave it back meanwhile: wait again
                return Step(call, (Enqueue(self.queue_name),))
            words = phrases_for(self.phrases, call.language)
            verbs: list[Verb] = []
            if agent_name:
                verbs.append(self._say(call, words.connecting.replace("{agent}", agent_name)))
            return Step(replace(call, phase="bridged"), (*verbs, Dial(dial)))
        if result == "leave" and leaving in ("callback", "max_wait"):
            target = Target(callback=True) if leaving == "callback" else self.waiting.on_max_wait
            call = replace(call, phase="menu", queued_at=None, announced_at=None)
            step = self._target(call, target, [], [LeftQueue(leaving)], now)
            return step
        if result == "bridged":  # dequeued by someone else: their call now
            return Step(replace(call, phase="bridged"), ())
        words = phrases_for(self.phrases, call.language)
        if leaving == "told":  # closed outside hours, the caller told why (a callback is requested)
            return Step(replace(call, phase="ended"), (self._say(call, words.goodbye), Hangup()), (Ended("queued"),))
        return Step(replace(call, phase="ended"), (self._say(call, words.unavailable), Hangup()), (Ended("queued"),))

    def dialed(self, call: Call, status: str | None, now: float = 0.0) -> Step:
        """The end of the <Dial> to the agent (``status``: DialCallStatus)."""
        if call.phase != "bridged" or status in (None, "completed", "answered"):
            return Step(replace(call, phase="ended"), (Hangup(),))
        # The agent's phone did not answer: say so, and offer the callback.
        words = phrases_for(self.phrases, call.language)
        call = replace(call, phase="menu")
        return self._target(call, Target(callback=True), [self._say(call, words.unavailable)], [], now)

    def hangup(self, call: Call) -> Step:
        """The call ended (the status callback)."""
        if call.phase == "ended":
            return Step(call, ())
        return Step(replace(call, phase="ended"), (), (Ended(call.phase),))

    # the menu -----------------------------------------------------------------------------------
    def _enter(self, call: Call, verbs: list[Verb], effects: list[Effect], now: float) -> Step:
        """Say the node; gather, or go on to ``next``, or end the call."""
        for _ in range(len(self.menu.nodes) + 1):  # the validator refuses loops without a gather
            node = self.menu.nodes[call.node]
            if node.language:
                call = replace(call, language=node.language)
            prompts: list[Say | Play | Pause] = []
            if node.say:
                prompts.append(Say(node.say, call.language, node.voice or self.menu.voice))
            if node.play:
                prompts.append(Play(node.play))
            if node.gather is not None:
                verbs.append(self._gather(call, node.gather, prompts))
                return Step(call, tuple(verbs), tuple(effects))
            verbs.extend(prompts)
            if node.next is None:
                break
            call = replace(call, node=node.next, path=call.path + (node.next,), tries=0)
        verbs.append(Hangup())
        return Step(replace(call, phase="ended"), tuple(verbs), (*effects, Ended("menu")))

    def _gather(self, call: Call, gather: GatherConfig, prompts: list[Say | Play | Pause]) -> Gather:
        keys = [o.key for o in gather.options if o.key is not None]
        lang = short_language(call.language)
        hints = tuple(w for o in gather.options for k, ws in o.words.items() if k in ("any", lang) for w in ws)
        return Gather(tuple(prompts), "step", input=gather.input, timeout=gather.timeout,
                      num_digits=1 if keys or self.menu.repeat_key or self.menu.back_key else None,
                      language=call.language, hints=hints[:50])

    def _miss(self, call: Call, verbs: list[Verb], effects: list[Effect], now: float, *,
              unanswered: bool = False) -> Step:
        gather = self.menu.nodes[call.node].gather
        words = phrases_for(self.phrases, call.language)
        if unanswered:
            text = words.no_answer
        else:
            text = (gather.invalid if gather is not None and gather.invalid else None) or words.invalid
        call = replace(call, tries=call.tries + 1)
        verbs.append(self._say(call, text))
        if gather is not None and call.tries >= gather.retries:
            return self._target(replace(call, tries=0), gather.on_fail, verbs, effects, now)
        return self._enter(call, verbs, effects, now)

    def _target(self, call: Call, target: Target, verbs: list[Verb], effects: list[Effect], now: float,
                then: str | None = None) -> Step:
        words = phrases_for(self.phrases, call.language)
        if target.goto is not None:
            return self._goto(call, target.goto, verbs, effects, now)
        if target.faq is not None:
            answer = self.answer_of(target.faq, short_language(call.language))
            if answer is None:
                verbs.append(self._say(call, words.no_answer))
            else:
                call = replace(call, answers=call.answers + (target.faq,))
                effects.append(Answered(target.faq, answer))
                verbs.append(self._say(call, answer))
            after = then or call.node
            return self._goto(call, after, verbs, effects, now, push=after != call.node)
        if target.agent is not None:
            call = replace(call, phase="queued", agent_label=target.agent, tries=0, queued_at=now, announced_at=None)
            effects.append(ToAgent(tuple(call.route), short_language(call.language)))
            verbs.extend((self._say(call, words.handoff), Enqueue(self.queue_name)))
            return Step(call, tuple(verbs), tuple(effects))
        if target.callback:
            number = call.caller if _dialable(call.caller) else None
            call = replace(call, phase="callback", callback_number=number, tries=0)
            return self._callback_prompt(call, verbs, effects)
        verbs.extend((self._say(call, words.goodbye), Hangup()))
        return Step(replace(call, phase="ended"), tuple(verbs), (*effects, Ended("menu")))

    def _goto(self, call: Call, node: str, verbs: list[Verb], effects: list[Effect], now: float,
              push: bool = True) -> Step:
        path = call.path + (node,) if push else call.path
        return self._enter(replace(call, node=node, path=path, tries=0), verbs, effects, now)

    # the callback ------------------------------------------------------------------------------
    def _callback_prompt(self, call: Call, verbs: list[Verb], effects: list[Effect]) -> Step:
        words = phrases_for(self.phrases, call.language)
        number = call.callback_number
        text = words.callback_confirm.replace("{number}", spoken_number(number)) if number else words.callback_enter
        gather = Gather((self._say(call, text),), "step", input="dtmf", timeout=10, num_digits=None,
                        finish_on_key="#", language=call.language)
        return Step(call, (*verbs, gather), tuple(effects))

    def _callback_input(self, call: Call, digits: str | None) -> Step:
        words = phrases_for(self.phrases, call.language)
        effects: list[Effect] = []
        if digits is not None:
            call = self._heard(call, f"pressed {digits}")
            effects.append(Heard(f"pressed {digits}"))
        if digits == "1" and call.callback_number:
            number = call.callback_number
            done = self._say(call, words.callback_done.replace("{number}", spoken_number(number)))
            return Step(replace(call, phase="ended"), (done, Hangup()),
                        (*effects, CallbackRequested(number), Ended("callback")))
        if digits is not None and digits.isdigit() and len(digits) >= MIN_CALLBACK_DIGITS:
            return self._callback_prompt(replace(call, callback_number=digits, tries=0), [], effects)
        call = replace(call, tries=call.tries + 1)
        if call.tries >= CALLBACK_TRIES:
            verbs = (self._say(call, words.invalid), self._say(call, words.goodbye), Hangup())
            return Step(replace(call, phase="ended"), verbs, (*effects, Ended("callback")))
        return self._callback_prompt(call, [self._say(call, words.invalid)], effects)

    # helpers -----------------------------------------------------------------------------------
    def _off_phase(self, call: Call) -> Step:
        if call.phase == "queued":
            return Step(call, (Enqueue(self.queue_name),))
        return Step(replace(call, phase="ended") if call.phase != "bridged" else call, (Hangup(),))

    def _hold(self, call: Call, prompts: list[Say | Play | Pause]) -> tuple[Verb, ...]:
        hold: Say | Play | Pause = (Play(self.waiting.hold_music) if self.waiting.hold_music
                                    else Pause(self.waiting.pause))
        if self.waiting.callback_key is None:
            return (*prompts, hold)
        return (Gather((*prompts, hold), "wait", input="dtmf", timeout=1, num_digits=1,
                       language=call.language, on_empty=False),)

    def _say(self, call: Call, text: str) -> Say:
        return Say(text, call.language, self.menu.voice)

    @staticmethod
    def _heard(call: Call, text: str, spoken: bool = False) -> Call:
        return replace(call, inputs=(call.inputs + (text,))[-MAX_INPUTS_KEPT:],
                       speech=(call.speech + (text,))[-MAX_INPUTS_KEPT:] if spoken else call.speech)


def keys_pressed(digits: str | None) -> str | None:
    """The keys of a ``Digits`` field, or None for none or for what no phone sends (anything but
    0-9, * and #, or longer than ``MAX_DIGITS``): a forged or broken request is not stored as
    "pressed ..." and counts as an invalid input."""
    digits = (digits or "").strip()
    if not digits or len(digits) > MAX_DIGITS or any(key not in KEYS for key in digits):
        return None
    return digits


def _dialable(caller: str) -> bool:
    digits = caller.lstrip("+")
    return digits.isdigit() and len(digits) >= MIN_CALLBACK_DIGITS

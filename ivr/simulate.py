"""``contactgate ivr-simulate``: a call through an IVR channel's menu without a phone, printing
the TwiML of each step (what the caller would hear), like ``simulate`` does for routing. A call
that reaches "to an agent" shows where routing would send it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence
from xml.dom import minidom

from gateway.config import GatewayConfig
from gateway.selfservice import Answer, SelfService
from gateway.simulate import render as render_routing, simulate as simulate_routing
from routing.hours import is_open

from .call import FaqHit, Machine, Step, ToAgent
from .knowledge import answer_of
from .menu import Menu, Phrases, Waiting, merge_phrases
from .twiml import Urls, render


class SimulationError(ValueError):
    """The config has no such IVR channel."""


@dataclass(frozen=True, slots=True)
class Turn:
    said: str               # what the caller did, as shown
    step: Step
    twiml: str


def ivr_channels(config: GatewayConfig) -> list[str]:
    return [c.channel_name for c in config.channels if c.type == "ivr"]


def simulate_call(config: GatewayConfig, selfservice: SelfService, *, channel: str | None = None,
                  digits: Sequence[str] = (), speech: Sequence[str] = (), caller: str = "+15550100",
                  name: str | None = None, at: datetime | None = None) -> list[Turn]:
    """The call's steps: the incoming call, then each of ``digits`` ("" is a timeout), then
    each of ``speech``. Stops where the call ends or waits for an agent."""
    names = ivr_channels(config)
    if not names:
        raise SimulationError("no channel of type ivr in this config")
    channel = channel or names[0]
    found = next((c for c in config.channels if c.channel_name == channel and c.type == "ivr"), None)
    if found is None:
        raise SimulationError(f"no ivr channel named {channel!r} (ivr channels: {', '.join(names)})")
    raw = found.settings
    menu = Menu.model_validate(raw["menu"])
    waiting = Waiting.model_validate(raw.get("waiting", {}))
    phrases = merge_phrases({k: Phrases.model_validate(v) for k, v in (raw.get("phrases") or {}).items()})
    machine = Machine(menu, waiting, phrases,
                      lambda faq_id, lang: answer_of(selfservice.kb_for_channel(channel, lang).index, faq_id, lang),
                      waiting.queue_name or f"contactgate-{channel}")
    urls = Urls.under(raw.get("path") or f"/ivr/{channel}")
    now = at or datetime.now().astimezone()
    open_ = menu.hours is None or menu.hours not in config.hours or is_open(config.hours[menu.hours], now)
    step = machine.start(caller, name=name, is_open=open_)
    turns = [Turn("incoming call" + ("" if open_ else f" (outside hours {menu.hours!r})"), step,
                  render(step.verbs, urls))]
    inputs: list[tuple[str, str | None, str | None]] = [(f"pressed {d}" if d else "(no input)", d or None, None)
                                                        for d in digits]
    inputs += [(f"said {s!r}", None, s) for s in speech]
    for said, keys, words in inputs:
        if step.call.phase not in ("menu", "callback"):
            break
        hit = None
        if words:
            reply = selfservice.reply(words, 0, channel)
            if isinstance(reply, Answer):
                hit = FaqHit(reply.faq_id, reply.text)
        step = machine.input(step.call, keys, words, hit)
        turns.append(Turn(said, step, render(step.verbs, urls)))
    return turns


def render_turns(turns: list[Turn], config: GatewayConfig, selfservice: SelfService, channel: str | None,
                 at: datetime | None = None) -> str:
    out: list[str] = []
    for number, turn in enumerate(turns, 1):
        call = turn.step.call
        out.append(f"--- step {number}: {turn.said} -> node {call.node} ({call.phase}, {call.language})")
        out.append(_pretty(turn.twiml))
        for effect in turn.step.effects:
            out.append(f"    effect: {_effect(effect)}")
            if isinstance(effect, ToAgent):
                result = simulate_routing(config, selfservice, channel=channel or ivr_channels(config)[0],
                                          text=" ".join(effect.route), phone=call.caller,
                                          attributes={"language": effect.language}, at=at)
                result["self_service"] = None  # the caller chose an agent: no bot turn to tell of
                out.extend("    " + line for line in render_routing(result).splitlines())
    last = turns[-1].step.call
    if last.phase in ("menu", "callback"):
        out.append(f"(the call waits for input at node {last.node})")
    return "\n".join(out)


def _effect(effect: Any) -> str:
    fields = ", ".join(f"{name}={getattr(effect, name)!r}" for name in effect.__dataclass_fields__)
    return f"{type(effect).__name__}({fields})"


def _pretty(twiml: str) -> str:
    # Our own output, parsed back only to indent it.
    return "\n".join(line for line in minidom.parseString(twiml).toprettyxml(indent="  ").splitlines()[1:]
                     if line.strip())

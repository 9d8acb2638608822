"""The IVR without a network: the call state machine (ivr/call.py) fed events, its TwiML parsed
back to what the caller would hear, the menu validator's errors with their lines, and a property:
any sequence of keys, words, timeouts and queue news ends in a defined node, never an exception."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ConfigError, load_config
from ivr.call import (Answered, Call, CallbackRequested, Ended, Enqueue, FaqHit, Gather, Hangup, Heard, Leave,
                      LeftQueue, Machine, Say, Step, ToAgent)
from ivr.menu import DEFAULT_PHRASES, Menu, Phrases, Waiting, merge_phrases
from ivr.twiml import Urls, render
from tests.support import REPO

MENU: dict[str, Any] = {
    "start": "main",
    "nodes": {
        "main": {"say": "Welcome. Billing 1, delivery 2, agent 0, callback 7, Chinese 8.",
                 "gather": {"options": [
                     {"key": 1, "goto": "billing", "words": {"en": ["billing", "invoice"]}},
                     {"key": 2, "faq": "delivery-time", "words": ["delivery"]},
                     {"key": 0, "agent": "general", "words": ["agent"]},
                     {"key": 7, "callback": True},
                     {"key": 8, "goto": "zh"},
                     {"key": 9, "hangup": True}],
                     "retries": 3, "on_fail": {"agent": "general"}}},
        "billing": {"say": "Billing. Ask your question, or press 0 for an agent.",
                    "gather": {"faq": True, "options": [{"key": 0, "agent": "billing"}]}},
        "zh": {"language": "zh-CN", "say": "请说出您的问题。",
               "gather": {"faq": True, "options": [{"key": 0, "agent": "chinese", "words": {"zh": ["人工"]}}]}},
        "notice": {"say": "A notice.", "next": "bye"},
        "bye": {"say": "Goodbye."},
    },
}
ANSWERS = {("delivery-time", "en"): "Two to four days.", ("delivery-time", "zh"): "两到四天。"}


def machine(menu: dict[str, Any] | None = None, **waiting: Any) -> Machine:
    return Machine(Menu.model_validate(menu or MENU), Waiting.model_validate(waiting), DEFAULT_PHRASES,
                   lambda faq_id, lang: ANSWERS.get((faq_id, lang)), "contactgate-phone")


URLS = Urls.under("/ivr/phone")


def heard(step: Step) -> list[tuple[str, str]]:
    """The TwiML parsed back: (verb, what the caller hears or where it goes), nested gathers flattened."""
    root = ET.fromstring(render(step.verbs, URLS))
    assert root.tag == "Response"
    out = []
    for verb in root.iter():
        if verb is root:
            continue
        if verb.tag == "Gather":
            out.append(("Gather", verb.get("action", "")))
        elif verb.tag == "Dial":
            out.append(("Dial", verb.get("action", "")))
        else:
            out.append((verb.tag, (verb.text or "").strip()))
    return out


def test_a_call_begins_at_the_start_node_and_a_known_caller_is_greeted_by_name() -> None:
    step = machine().start("+15550100", name="Ada")
    assert step.call.node == "main" and step.call.phase == "menu"
    assert heard(step) == [("Say", "Hello Ada."), ("Gather", "/ivr/phone/step"),
                           ("Say", "Welcome. Billing 1, delivery 2, agent 0, callback 7, Chinese 8.")]
    root = ET.fromstring(render(step.verbs, URLS))
    gather = root.find("Gather")
    assert gather is not None and gather.get("numDigits") == "1" and gather.get("actionOnEmptyResult") == "true"
    assert gather.get("input") == "dtmf speech" and "billing" in (gather.get("hints") or "")


def test_a_faq_answer_by_key_then_the_menu_again() -> None:
    m = machine()
    step = m.input(m.start("+15550100").call, digits="2")
    assert Heard("pressed 2") in step.effects and Answered("delivery-time", "Two to four days.") in step.effects
    assert heard(step)[0] == ("Say", "Two to four days.") and step.call.node == "main"


def test_words_choose_an_option_and_speech_is_asked_of_the_faq_in_the_callers_language() -> None:
    m = machine()
    step = m.input(m.start("+15550100").call, speech="I have a question about my invoice")
    assert step.call.node == "billing"
    # A word counts whole: "agent" is not heard in "agents" or "reagent", nor "billing" in "rebilling".
    for speech in ("no agents are needed", "reagent prices", "rebilling"):
        assert m.input(m.start("+15550100").call, speech=speech).call.node == "main", speech
    assert m.input(m.start("+15550100").call, speech="Agent, please.").effects[-1].__class__.__name__ == "ToAgent"
    zh = m.input(m.input(m.start("+15550100").call, digits="8").call, speech="多久能到",
                 faq=FaqHit("delivery-time", "两到四天。"))
    assert zh.call.language == "zh-CN" and ("Say", "两到四天。") in heard(zh)
    root = ET.fromstring(render(zh.verbs, URLS))
    assert {s.get("language") for s in root.iter("Say")} == {"zh-CN"}
    # Speech the FAQ is not sure of (no hit) counts as an invalid input, said in Chinese with
    # "no answer" (it was heard); keys of no option are "did not get that".
    miss = m.input(zh.call, speech="随便说说")
    assert heard(miss)[0] == ("Say", DEFAULT_PHRASES["zh"].no_answer) and miss.call.tries == 1
    pressed = m.input(miss.call, digits="7")
    assert heard(pressed)[0] == ("Say", DEFAULT_PHRASES["zh"].invalid) and pressed.call.tries == 2
    # The questions asked of the FAQ, answered or not, are kept apart from the words that chose
    # an option (a handoff's guesses are for the last question): and stored with the call.
    assert step.call.questions == () and step.call.speech == ("I have a question about my invoice",)
    assert pressed.call.questions == ("多久能到", "随便说说")
    assert Call.from_json(pressed.call.to_json()) == pressed.call
    assert Call.from_json({k: v for k, v in pressed.call.to_json().items() if k != "questions"}).questions == ()


def test_repeat_and_back_keys_everywhere() -> None:
    m = machine()
    billing = m.input(m.start("+15550100").call, digits="1").call
    again = m.input(billing, digits="*")
    assert again.call.node == "billing" and heard(again)[1][1].startswith("Billing.")
    back = m.input(billing, digits="#")
    assert back.call.node == "main" and back.call.path == ("main",)
    assert m.input(back.call, digits="#").call.node == "main"  # back at the start stays there


def test_three_invalid_or_missing_inputs_lead_to_on_fail() -> None:
    m = machine()
    call = m.start("+15550100").call
    first = m.input(call, digits="5")
    second = m.input(first.call)  # a timeout
    assert (first.call.tries, second.call.tries) == (1, 2)
    assert heard(second)[0] == ("Say", "Sorry, I did not get that.")
    third = m.input(second.call, digits="6")
    assert third.call.phase == "queued" and any(isinstance(e, ToAgent) for e in third.effects)
    assert [v for v in heard(third) if v[0] == "Enqueue"] == [("Enqueue", "contactgate-phone")]


def test_keys_no_phone_sends_are_an_invalid_input_and_not_kept() -> None:
    m = machine()
    call = m.start("+15550100").call
    for digits in ("xxxx", "1; DROP", "2" * 33, "１"):  # letters, punctuation, too long, a full-width 1
        step = m.input(call, digits=digits)
        assert heard(step)[0] == ("Say", "Sorry, I did not get that.") and step.call.tries == 1, digits
        assert step.effects == () and step.call.inputs == (), digits
    assert m.input(call, digits=" 2 ").effects[0] == Heard("pressed 2")  # what Twilio sends, trimmed
    callback = m.input(call, digits="7").call
    step = m.input(callback, digits="555x0100")
    assert step.call.phase == "callback" and step.call.tries == 1 and step.effects == ()
    queued = m.input(call, digits="0").call
    step = m.wait_key(queued, "9" * 40, now=1.0)
    assert step.call.leaving is None and step.effects == ()


def test_to_an_agent_routing_sees_the_path_and_the_language() -> None:
    m = machine()
    step = m.input(m.input(m.start("+15550100").call, digits="8").call, speech="我要转人工")
    assert ToAgent(("ivr:main", "ivr:zh", "ivr:chinese"), "zh") in step.effects
    root = ET.fromstring(render(step.verbs, URLS))
    enqueue = root.find("Enqueue")
    assert enqueue is not None and enqueue.get("waitUrl") == "/ivr/phone/wait" and enqueue.get("action") == "/ivr/phone/queued"


def test_waiting_announces_position_at_most_every_n_seconds_then_the_agent_is_dialled() -> None:
    m = machine(announce_every=30, hold_music="https://music.example/hold.mp3")
    queued = m.input(m.start("+15550100").call, digits="0", now=100.0).call
    first = m.wait(queued, position=2, estimated_wait=150, assigned=False, now=101.0)
    assert heard(first) == [("Gather", "/ivr/phone/wait"), ("Say", "You are number 2 in line."),
                            ("Say", "Your estimated wait is about 3 minutes."),
                            ("Say", "Press 9 to leave your number, and we will call you back."),
                            ("Play", "https://music.example/hold.mp3")]
    # One minute or less is said in the singular ("about 1 minutes" before).
    short = m.wait(queued, position=1, estimated_wait=40, assigned=False, now=101.0)
    assert ("Say", "Your estimated wait is about one minute.") in heard(short)
    soon = m.wait(first.call, position=1, estimated_wait=0, assigned=False, now=120.0)
    assert heard(soon) == [("Gather", "/ivr/phone/wait"), ("Play", "https://music.example/hold.mp3")]
    later = m.wait(soon.call, position=1, estimated_wait=0, assigned=False, now=131.5)
    assert ("Say", "You are number 1 in line.") in heard(later)
    accepted = m.wait(later.call, position=None, estimated_wait=None, assigned=True, now=140.0)
    assert accepted.verbs == (Leave(),) and accepted.call.leaving == "agent"
    bridged = m.queue_left(accepted.call, "leave", dial="client:alice", agent_name="Alice")
    assert bridged.call.phase == "bridged"
    assert heard(bridged) == [("Say", "Connecting you to Alice."), ("Dial", "/ivr/phone/dialed"), ("Client", "alice")]
    assert m.dialed(bridged.call, "completed").verbs == (Hangup(),)


def test_a_hangup_while_waiting_ends_the_call_once() -> None:
    m = machine()
    queued = m.input(m.start("+15550100").call, digits="0").call
    ended = m.hangup(queued)
    assert ended.effects == (Ended("queued"),) and ended.call.phase == "ended"
    assert m.hangup(ended.call).effects == ()  # a redelivered status callback


def test_the_callback_key_and_max_wait_leave_the_queue_for_a_callback() -> None:
    m = machine(max_wait=60)
    queued = m.input(m.start("+15550100").call, digits="0", now=0.0).call
    pressed = m.wait_key(queued, "9", now=5.0)
    assert pressed.verbs == (Leave(),)
    left = m.queue_left(pressed.call, "leave", dial=None, agent_name=None)
    assert LeftQueue("callback") in left.effects and left.call.phase == "callback"
    assert "+ 1 5 5 5 0 1 0 0" in heard(left)[1][1]
    too_long = m.wait(queued, position=3, estimated_wait=600, assigned=False, now=61.0)
    assert too_long.call.leaving == "max_wait"
    assert m.queue_left(too_long.call, "leave", dial=None, agent_name=None).call.phase == "callback"


def test_outside_hours_the_caller_hears_why_then_waits_leaves_a_number_or_is_told_goodbye() -> None:
    """Routing found the queue closed (its outside_hours text, stored as a bot message): a caller
    cannot read it, so the next wait request says it, then per the action."""
    m = machine()
    queued = m.input(m.start("+15550100").call, digits="0", now=0.0).call
    closed_text = "We are closed now; an agent will answer when we open."
    waits = m.wait(queued, position=1, estimated_wait=0, assigned=False, now=1.0, outside_hours=(closed_text, "message"))
    assert heard(waits)[1] == ("Say", closed_text) and waits.call.leaving is None  # then the usual hold
    # leave_message: out of the queue to the callback (no written message on a phone).
    leaves = m.wait(queued, position=1, estimated_wait=0, assigned=False, now=1.0,
                    outside_hours=(closed_text, "leave_message"))
    assert heard(leaves)[0] == ("Say", closed_text) and leaves.verbs[-1] == Leave()
    left = m.queue_left(leaves.call, "leave", dial=None, agent_name=None)
    assert LeftQueue("callback") in left.effects and left.call.phase == "callback"
    # callback: the conversation was closed with the callback requested; the caller is told, then goodbye.
    told = m.wait(queued, position=None, estimated_wait=None, assigned=False, now=1.0, closed=True,
                  outside_hours=("We will call you back when we open.", "callback"))
    assert heard(told)[0] == ("Say", "We will call you back when we open.")
    ended = m.queue_left(told.call, "leave", dial=None, agent_name=None)
    assert heard(ended) == [("Say", "Thank you for calling. Goodbye."), ("Hangup", "")] and ended.call.phase == "ended"


def test_a_callback_confirms_the_caller_id_or_digits_entered() -> None:
    m = machine()
    asked = m.input(m.start("+15550100").call, digits="7")
    root = ET.fromstring(render(asked.verbs, URLS))
    gather = root.find("Gather")
    assert gather is not None and gather.get("finishOnKey") == "#" and gather.get("numDigits") is None
    confirmed = m.input(asked.call, digits="1")
    assert CallbackRequested("+15550100") in confirmed.effects and confirmed.verbs[-1] == Hangup()
    other = m.input(asked.call, digits="862100001111")
    assert other.call.callback_number == "862100001111" and "8 6 2 1" in heard(other)[1][1]
    assert CallbackRequested("862100001111") in m.input(other.call, digits="1").effects
    # An anonymous caller is asked for a number.
    anonymous = m.input(m.start("anonymous").call, digits="7")
    assert heard(anonymous)[1][1] == DEFAULT_PHRASES["en"].callback_enter


def test_outside_hours_the_call_begins_at_the_closed_node() -> None:
    menu = {**MENU, "hours": "office", "closed": "bye"}
    step = machine(menu).start("+15550100", is_open=False)
    assert heard(step) == [("Say", "Goodbye."), ("Hangup", "")] and Ended("menu") in step.effects


def test_next_links_chain_until_a_node_without_next_ends_the_call() -> None:
    m = machine({**MENU, "start": "notice"})
    step = m.start("+15550100")
    assert [v for v in step.verbs if isinstance(v, Say)] == [Say("A notice.", "en-US"), Say("Goodbye.", "en-US")]
    assert step.call.phase == "ended" and step.call.node == "bye"


def test_the_state_round_trips_through_json() -> None:
    m = machine()
    call = m.input(m.start("+15550100").call, digits="1").call
    assert Call.from_json(yaml.safe_load(yaml.safe_dump(call.to_json()))) == call


EVENTS = st.one_of(
    st.tuples(st.just("input"), st.one_of(st.none(), st.sampled_from(list("0123456789*#")), st.text("0123456789", min_size=2, max_size=12)),
              st.one_of(st.none(), st.sampled_from(["billing", "delivery", "agent", "人工", "nonsense"]))),
    st.tuples(st.just("wait"), st.one_of(st.none(), st.integers(1, 20)), st.booleans()),
    st.tuples(st.just("wait_key"), st.sampled_from(list("0123456789*#")), st.none()),
    st.tuples(st.just("queue_left"), st.sampled_from(["leave", "hangup", "bridged", "error", "queue-full"]), st.booleans()),
    st.tuples(st.just("dialed"), st.sampled_from(["completed", "no-answer", "busy", None]), st.none()),
    st.tuples(st.just("hangup"), st.none(), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=30), st.booleans())
def test_any_sequence_of_events_ends_in_a_defined_node_never_an_exception(events: list[tuple[Any, Any, Any]],
                                                                          is_open: bool) -> None:
    m = machine({**MENU, "hours": "office", "closed": "main"}, max_wait=100, announce_every=10)
    step = m.start("+15550100", is_open=is_open)
    now = 0.0
    for kind, a, b in events:
        now += 7.0
        if kind == "input":
            step = m.input(step.call, digits=a, speech=b, faq=FaqHit("x", "An answer.") if b == "nonsense" else None, now=now)
        elif kind == "wait":
            step = m.wait(step.call, position=a, estimated_wait=(a or 0) * 30, assigned=b, now=now)
        elif kind == "wait_key":
            step = m.wait_key(step.call, a, now)
        elif kind == "queue_left":
            step = m.queue_left(step.call, a, dial="client:alice" if b else None, agent_name="Alice", now=now)
        elif kind == "dialed":
            step = m.dialed(step.call, a, now)
        else:
            step = m.hangup(step.call)
        assert step.call.node in m.menu.nodes
        assert step.call.phase in ("menu", "callback", "queued", "bridged", "ended")
        assert step.call.path and all(node in m.menu.nodes for node in step.call.path)
        ET.fromstring(render(step.verbs, URLS))  # always valid TwiML
        if step.call.phase == "menu":  # a caller in the menu is always asked something
            assert any(isinstance(v, Gather) for v in step.verbs)
        if step.call.phase == "queued" and kind == "input":
            assert any(isinstance(v, Enqueue) for v in step.verbs)


# the validator, through config.yaml: errors name the key and the line -----------------------------
def config_with(tmp_path: Path, menu_yaml: str) -> Path:
    base = textwrap.dedent("""\
        channels:
          - type: ivr
            auth_token: secret
            public_url: https://support.example
            menu:
        """)
    body = textwrap.indent(textwrap.dedent(menu_yaml), " " * 6)
    rest = textwrap.dedent("""\
        queues: [{name: general}]
        hours: {office: {weekly: {mon: "09:00-18:00"}}}
        routing: {default_queue: general}
        """)
    path = tmp_path / "config.yaml"
    path.write_text(base + body + rest, encoding="utf-8")
    return path


def problems(tmp_path: Path, menu_yaml: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config_with(tmp_path, menu_yaml))
    return caught.value.problems


def test_an_unknown_node_is_refused_with_its_line(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        nodes:
          main:
            say: Hi
            gather:
              options:
                - {key: 1, goto: billing}
        """)
    assert found == ["11: channels[0].menu.nodes.main.gather.options[0].goto: unknown node 'billing' (nodes: main)"]


def test_a_loop_without_input_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        nodes:
          main: {say: One, next: two}
          two: {say: Two, next: main}
        """)
    assert len(found) == 1 and found[0].startswith("7: channels[0].menu.nodes.main.next: a loop without input: main -> two -> main")


def test_an_option_without_a_target_or_a_way_to_choose_it_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        nodes:
          main:
            say: Hi
            gather:
              options:
                - {key: 1}
                - {goto: main}
        """)
    assert found[0].startswith("11: channels[0].menu.nodes.main.gather.options[0]: ") and "no target" in found[0]
    assert found[1].startswith("12: channels[0].menu.nodes.main.gather.options[1]: ") and "neither a key nor words" in found[1]


def test_a_key_twice_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        nodes:
          main:
            say: Hi
            gather:
              options:
                - {key: 1, hangup: true}
                - {key: 1, goto: main}
        """)
    assert found == ["12: channels[0].menu.nodes.main.gather.options[1].key: key '1' is already options[0]'s"]


def test_the_repeat_key_as_an_option_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        nodes:
          main:
            say: Hi
            gather:
              options:
                - {key: 1, hangup: true}
                - {key: "*", goto: main}
        """)
    assert found == [
        "12: channels[0].menu.nodes.main.gather.options[1].key: key '*' repeats or goes back everywhere (repeat_key, back_key)"]


def test_unknown_hours_and_a_closed_node_without_hours_are_refused(tmp_path: Path) -> None:
    assert problems(tmp_path, """\
        hours: weekend
        closed: main
        nodes: {main: {say: Hi}}
        """) == ["6: channels[0].menu.hours: unknown hours 'weekend' (define it under `hours:`)"]
    assert problems(tmp_path, """\
        closed: main
        nodes: {main: {say: Hi}}
        """) == ["6: channels[0].menu.closed: hours and closed go together: the node for calls outside the hours"]


def test_faq_options_are_checked_against_the_kb_that_answers_the_channels_calls(tmp_path: Path) -> None:
    from gateway.selfservice import load_gateway_config
    (tmp_path / "default.yaml").write_text(
        '- id: delivery-time\n  en: {q: "How long does delivery take?", a: "Two to four days."}\n', encoding="utf-8")
    (tmp_path / "phone.yaml").write_text(
        '- id: phone-hours\n  en: {q: "When can I call?", a: "Nine to six."}\n'
        '- id: delivery-time\n  zh: {q: "配送需要多长时间?", a: "两到四天。"}\n', encoding="utf-8")
    path = config_with(tmp_path, """\
        nodes:
          main:
            say: Hi
            gather:
              options:
                - {key: 1, faq: phone-hours}
                - {key: 2, faq: delivery-time}
                - {key: 3, faq: returns}
        """)
    kbs = "selfservice: {faq: default.yaml, knowledge_bases: [{name: phones, faq: phone.yaml, when: {channel: ivr}}]}\n"
    path.write_text(path.read_text(encoding="utf-8") + kbs, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    # phone-hours is the phone KB's only (fine); delivery-time is there in Chinese (said in any language).
    assert caught.value.problems == [
        "13: channels[0].menu.nodes.main.gather.options[2].faq: no entry 'returns' in selfservice.knowledge_bases"
        " 'phones', the KB that answers calls on channel 'ivr'"]
    # Valid once 'returns' is gone, and ivr-simulate says the channel's KB's answer too.
    from ivr.simulate import simulate_call
    with_kb = path.read_text(encoding="utf-8")
    path.write_text("".join(line for line in with_kb.splitlines(keepends=True) if "returns" not in line), encoding="utf-8")
    config, selfservice = load_gateway_config(path)
    assert Answered("phone-hours", "Nine to six.") in simulate_call(config, selfservice, digits=["1"])[1].step.effects
    path.write_text(with_kb, encoding="utf-8")
    # Without that KB the default answers: phone-hours is then the missing one.
    path.write_text(path.read_text(encoding="utf-8").replace(kbs, "selfservice: {faq: default.yaml}\n"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert [p.split(": ", 2)[2] for p in caught.value.problems] == [
        "no entry 'phone-hours' in selfservice.faq, the KB that answers calls on channel 'ivr'",
        "no entry 'returns' in selfservice.faq, the KB that answers calls on channel 'ivr'"]
    path.write_text(path.read_text(encoding="utf-8").replace("selfservice: {faq: default.yaml}\n", ""), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_gateway_config(path)
    assert caught.value.problems[0] == ("11: channels[0].menu.nodes.main.gather.options[0].faq: no KB answers calls"
                                        " on channel 'ivr': set selfservice.faq, or leave out faq: phone-hours")


def test_the_shipped_ivr_example_is_valid_once_uncommented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(shipped_ivr_example(), encoding="utf-8")
    (tmp_path / "faq").symlink_to(REPO / "faq")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "an-auth-token")
    config = load_config(path)
    phone = next(c for c in config.channels if c.type == "ivr")
    assert phone.channel_name == "phone" and phone.settings["menu"]["hours"] == "office"


def shipped_ivr_example() -> str:
    """config.yaml with its commented-out ivr channel uncommented, as docs/channels.md says."""
    out, inside = [], False
    for line in (REPO / "config.yaml").read_text(encoding="utf-8").splitlines():
        if line.startswith("  # - type: ivr"):
            inside = True
        elif inside and not line.startswith("  #"):
            inside = False
        out.append("  " + line[4:] if inside else line)
    return "\n".join(out) + "\n"


def test_phrases_given_in_part_keep_their_languages_defaults() -> None:
    from ivr.menu import Phrases, merge_phrases
    merged = merge_phrases({"zh": Phrases.model_validate({"goodbye": "再会。"}),
                            "de": Phrases.model_validate({"goodbye": "Auf Wiederhören."})})
    assert merged["zh"].goodbye == "再会。" and merged["zh"].invalid == DEFAULT_PHRASES["zh"].invalid
    assert merged["de"].goodbye == "Auf Wiederhören." and merged["de"].invalid == DEFAULT_PHRASES["en"].invalid
    assert merged["en"] == DEFAULT_PHRASES["en"]


def test_a_chinese_caller_hears_the_queue_in_chinese() -> None:
    m = machine()
    zh = m.input(m.input(m.start("+8613800000001").call, digits="8").call, speech="人工")
    assert zh.call.phase == "queued" and heard(zh)[0] == ("Say", DEFAULT_PHRASES["zh"].handoff)
    waiting = m.wait(zh.call, position=3, estimated_wait=200, assigned=False, now=1.0)
    assert [text for verb, text in heard(waiting) if verb == "Say"] == [
        "您目前排在第 3 位。", "预计等待约 4 分钟。", "按 9 键留下电话号码，我们会给您回电。"]


# contactgate ivr-simulate ---------------------------------------------------------------------------
def test_ivr_simulate_prints_the_twiml_of_each_step_and_where_routing_sends_a_handoff(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main
    path = tmp_path / "config.yaml"
    path.write_text(shipped_ivr_example(), encoding="utf-8")
    (tmp_path / "faq").symlink_to(REPO / "faq")
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "an-auth-token")
    at = "2026-12-02T10:00+08:00"  # a Wednesday morning in Shanghai: office hours
    assert main(["ivr-simulate", str(path), "--digits", "8", "--speech", "运费多少钱", "--speech", "转人工",
                 "--at", at]) == 0
    out = capsys.readouterr().out
    steps = out.split("--- step ")[1:]
    assert [s.split("\n", 1)[0] for s in steps] == [
        "1: incoming call -> node main (menu, en-US)", "2: pressed 8 -> node zh_main (menu, zh-CN)",
        "3: said '运费多少钱' -> node zh_main (menu, zh-CN)", "4: said '转人工' -> node zh_main (queued, zh-CN)"]
    assert "<Say language=\"zh-CN\">运费按重量" in steps[2] and "Answered(faq_id='shipping-cost'" in steps[2]
    assert "<Enqueue action=\"/ivr/phone/queued\"" in steps[3] and "rule: mandarin" in steps[3]
    assert "self-service:" not in steps[3]  # not the chat's "no answer; after max_unanswered misses ..."
    # Outside hours the call begins at the closed node.
    assert main(["ivr-simulate", str(path), "--digits", "1", "--at", "2026-12-02T23:00+08:00"]) == 0
    out = capsys.readouterr().out
    assert "1: incoming call (outside hours 'office') -> node closed" in out and "We will call you back at" in out


def test_ivr_simulate_without_an_ivr_channel_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main
    path = tmp_path / "config.yaml"
    path.write_text("channels: [{type: webchat}]\nqueues: [{name: general}]\nrouting: {default_queue: general}\n",
                    encoding="utf-8")
    assert main(["ivr-simulate", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"{path}: no channel of type ivr in this config"


def test_a_channels_own_wait_phrase_is_said_for_one_minute_too() -> None:
    mine = merge_phrases({"en": Phrases.model_validate({"wait": "About {minutes} min."})})
    assert mine["en"].wait_one is None and mine["zh"].wait_one is None
    m = Machine(Menu.model_validate(MENU), Waiting.model_validate({}), mine,
                lambda faq_id, lang: ANSWERS.get((faq_id, lang)), "contactgate-phone")
    queued = m.input(m.start("+15550100").call, digits="0", now=100.0).call
    assert ("Say", "About 1 min.") in heard(m.wait(queued, position=1, estimated_wait=30, assigned=False, now=101.0))

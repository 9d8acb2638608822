"""``contactgate simulate``: which rule and which steps would take a contact, and why.

The command line is run for real (``python -m gateway.cli simulate``) for what only it does:
argument parsing, text and JSON output, exit codes. ``gateway.simulate.simulate`` is called
directly for the finer checks, on the shipped ``config.yaml``. Loading the FAQ (jieba) takes
seconds per process, so the command-line runs are started together once per module.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig, load_config, parse_config
from gateway.model import Conversation, ConversationState, Customer
from gateway.pipeline import Pipeline
from gateway.selfservice import SelfService
from gateway.simulate import render, simulate
from gateway.store import make_store
from routing import choose_queue

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"
TUESDAY_NIGHT = "2026-11-24T22:00+08:00"   # the shipped `office` hours (Asia/Shanghai) are closed
TUESDAY_MORNING = "2026-11-24T10:00+08:00"
CHINESE = "我想查一下我的快递到哪里了"
VIP_SAY = "Thanks for waiting — we've widened the search for an available agent."

# A config that cannot be used: an unknown key on line 9 (written by the `broken` fixture).
BROKEN = """\
channels:
  - type: webchat
queues:
  - name: general
routing:
  default_queue: general
agents:
  - id: alice
    nmae: Alice
    token: alice-token-1234
    queues: [general]
"""

CLI_CASES: dict[str, list[str]] = {
    "email": [str(SHIPPED), "--email", "Ops@EU.BigShipper.example", "--text", "My parcel arrived damaged"],
    "json_closed": [str(SHIPPED), "--text", CHINESE, "--at", TUESDAY_NIGHT, "--json"],
    "attr_tier": [str(SHIPPED), "--attr", "lifetime_value=25000", "--attr", "segment=retail", "--json",
                  "--at", "2026-11-24T10:00:00Z"],
    "bad_at": [str(SHIPPED), "--at", "next tuesday"],
    "bad_attr": [str(SHIPPED), "--attr", "lifetime_value"],
    "empty_attr_name": [str(SHIPPED), "--attr", "=25000"],
    "broken": ["{broken}"],
    "missing": ["{tmp}/no-such-config.yaml"],
}


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "simulate", *args], cwd=str(REPO),
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    directory = tmp_path_factory.mktemp("simulate")
    broken = directory / "broken.yaml"
    broken.write_text(BROKEN, encoding="utf-8")
    cases = {name: [a.format(broken=broken, tmp=directory) for a in args] for name, args in CLI_CASES.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(cases, pool.map(run_cli, cases.values())))
    results["_broken_path"] = broken  # type: ignore[assignment]
    return results


@pytest.fixture(scope="module")
def shipped() -> tuple[GatewayConfig, SelfService]:
    config = load_config(SHIPPED, env={})
    return config, SelfService.from_config(config.selfservice)


def sim(shipped: tuple[GatewayConfig, SelfService], text: str = "", at: str = TUESDAY_MORNING,
        channel: str = "webchat", **contact: Any) -> dict[str, Any]:
    config, selfservice = shipped
    return simulate(config, selfservice, channel=channel, text=text, at=datetime.fromisoformat(at), **contact)


# the command line --------------------------------------------------------------------------------
def test_cli_text_output_tier_from_email_rule_and_steps(cli: dict[str, Any]) -> None:
    result = cli["email"]
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "self-service: answers with FAQ 'damaged-parcel'" in result.stdout
    # The email domain (a subdomain, any case) makes a VIP; the VIP rule comes before claims.
    assert "tier: vip (from tiers.rules[0])" in lines
    assert "rule: vip-first  priority in home queue: 10" in lines
    assert "  step 0: vip_desk from 0s for 60s" in lines
    assert "  step 1: vip_desk, general from 60s until answered, priority +5" in lines
    assert "business hours" not in result.stdout   # no hours on the VIP desk


def test_cli_json_is_valid_and_shows_closed_hours(cli: dict[str, Any]) -> None:
    result = cli["json_closed"]
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["at"] == "2026-11-24T22:00:00+08:00"
    assert out["language"] == "zh" and out["rule"] == "mandarin"
    assert out["tier"] == {"tier": "standard", "from": "tiers.default"}
    assert [s["queues"] for s in out["steps"]] == [["chinese"]]
    assert out["hours"]["name"] == "office" and out["hours"]["open"] is False
    assert out["hours"]["opens"] == "2026-11-25T09:00:00+08:00"
    assert out["hours"]["outside_hours"]["action"] == "leave_message"
    assert out["hours"]["outside_hours"]["queue"] == "messages"
    assert "中文客服" in out["hours"]["outside_hours"]["text"]   # not \u-escaped


def test_cli_attributes_are_typed_and_decide_the_tier(cli: dict[str, Any]) -> None:
    result = cli["attr_tier"]
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["at"] == "2026-11-24T10:00:00+00:00"
    assert out["tier"] == {"tier": "vip", "from": "tiers.rules[1]"}   # lifetime_value >= 10000
    assert out["rule"] == "vip-first" and out["priority"] == 10
    assert out["self_service"] is None and out["language"] is None


@pytest.mark.parametrize("case, words", [
    ("bad_at", ["--at", "next tuesday", "ISO 8601"]),
    ("bad_attr", ["--attr", "lifetime_value", "NAME=VALUE"]),
    ("empty_attr_name", ["--attr", "=25000", "NAME=VALUE"]),
])
def test_cli_bad_arguments_exit_2_with_a_message(cli: dict[str, Any], case: str, words: list[str]) -> None:
    result = cli[case]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == ""
    for word in words:
        assert word in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_cli_broken_or_missing_config_exits_2(cli: dict[str, Any]) -> None:
    result = cli["broken"]
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"{cli['_broken_path']}:9: agents[0].nmae: unknown key" in result.stderr, result.stderr
    assert "agents[0].name: required key is missing" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    result = cli["missing"]
    assert result.returncode == 2 and "cannot read the file" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


# tiers ---------------------------------------------------------------------------------------------
def test_tier_from_email_domain(shipped: Any) -> None:
    for email in ("ann@bigshipper.example", "Ops@EU.BigShipper.EXAMPLE", "x@vip.example"):
        assert sim(shipped, email=email)["tier"] == {"tier": "vip", "from": "tiers.rules[0]"}, email
    for email in ("ann@notbigshipper.example", "vip.example@gmail.example", "no-at-sign"):
        assert sim(shipped, email=email)["tier"] == {"tier": "standard", "from": "tiers.default"}, email


def test_tier_from_attribute(shipped: Any) -> None:
    for value in (10000, 25000.5, "12000"):   # CRMs send numbers as strings often enough
        out = sim(shipped, attributes={"lifetime_value": value})
        assert out["tier"] == {"tier": "vip", "from": "tiers.rules[1]"}, value
    for attributes in ({"lifetime_value": 9999.99}, {"lifetime_value": "lots"}, {"segment": "retail"}):
        assert sim(shipped, attributes=attributes)["tier"]["tier"] == "standard", attributes


def test_tier_from_profile_wins(shipped: Any) -> None:
    assert sim(shipped, tier="vip")["tier"] == {"tier": "vip", "from": "--tier (profile)"}
    out = sim(shipped, tier="standard", email="boss@vip.example", attributes={"lifetime_value": 99999})
    assert out["tier"] == {"tier": "standard", "from": "--tier (profile)"}
    assert out["rule"] == "routing.default_queue"


# rules and steps -------------------------------------------------------------------------------------
def test_vip_rule_steps_with_timing(shipped: Any) -> None:
    out = sim(shipped, tier="vip")
    assert out["rule"] == "vip-first" and out["priority"] == 10
    assert out["steps"] == [
        {"step": 0, "from_second": 0.0, "queues": ["vip_desk"], "priority_boost": 0, "for_seconds": 60.0, "say": None},
        {"step": 1, "from_second": 60.0, "queues": ["vip_desk", "general"], "priority_boost": 5,
         "for_seconds": None, "say": VIP_SAY},
    ]
    assert "hours" not in out


def test_default_rule_when_nothing_matches(shipped: Any) -> None:
    out = sim(shipped)
    assert out["rule"] == "routing.default_queue" and out["self_service"] is None and out["language"] is None
    assert out["steps"] == [{"step": 0, "from_second": 0.0, "queues": ["general"], "priority_boost": 0,
                             "for_seconds": None, "say": None}]
    assert out["priority"] == 0 and "hours" not in out


def test_faq_topic_picks_the_claims_rule(shipped: Any) -> None:
    for text, topic in (("My parcel arrived damaged, what should I do?", "damaged-parcel"),
                        ("My parcel is lost, can I get compensation?", "lost-parcel")):
        out = sim(shipped, text)
        assert out["self_service"]["answer"] == topic and out["self_service"]["score"] >= 0.35
        assert out["language"] == "en" and out["rule"] == "claims"
        assert [(s["queues"], s["priority_boost"]) for s in out["steps"]] == [(["general"], 2)]
    # Another FAQ topic is answered but routes by default.
    out = sim(shipped, "How do I track my parcel?")
    assert out["self_service"]["answer"] == "track-parcel" and out["rule"] == "routing.default_queue"
    # Asking for a person directly: no topic, default route.
    out = sim(shipped, "I want to talk to an agent")
    assert out["self_service"] == {"handoff": "asked"} and out["rule"] == "routing.default_queue"


def test_a_did_you_mean_is_shown_as_the_gateway_would_offer_it(shipped: Any) -> None:
    config, _ = shipped
    strict = config.selfservice.model_copy(update={"calibration": None, "min_score": 0.9, "choices_min_score": 0.25})
    out = simulate(config, SelfService.from_config(strict), channel="webchat", text="parcel broken",
                   at=datetime.fromisoformat(TUESDAY_MORNING))
    assert [o["faq_id"] for o in out["self_service"]["did_you_mean"]] == ["damaged-parcel", "track-parcel", "signature-proof"]
    assert "self-service: did you mean 'damaged-parcel' (0.646)" in render(out)


def test_chinese_text_picks_the_mandarin_rule(shipped: Any) -> None:
    out = sim(shipped, CHINESE)
    assert out["language"] == "zh" and out["rule"] == "mandarin"
    assert [s["queues"] for s in out["steps"]] == [["chinese"]]
    # Rules are ordered: language comes before the claims topic, the VIP rule before both.
    assert sim(shipped, "包裹到货时破损了怎么办?")["rule"] == "mandarin"
    assert sim(shipped, "转人工")["self_service"] == {"handoff": "asked"}
    assert sim(shipped, "转人工")["rule"] == "mandarin"
    assert sim(shipped, CHINESE, tier="vip")["rule"] == "vip-first"
    # A little Chinese in English text is still English.
    assert sim(shipped, "can I pay with 支付宝 when the courier comes?")["rule"] != "mandarin"


# business hours ------------------------------------------------------------------------------------
def test_business_hours_closed_shows_the_next_opening(shipped: Any) -> None:
    out = sim(shipped, CHINESE, at=TUESDAY_NIGHT)
    assert out["at"] == "2026-11-24T22:00:00+08:00"
    assert out["hours"]["open"] is False and out["hours"]["opens"] == "2026-11-25T09:00:00+08:00"
    assert out["hours"]["outside_hours"]["action"] == "leave_message"
    text = render(out)
    assert "business hours office: closed (opens 2026-11-25T09:00:00+08:00); outside hours: leave_message" in text
    assert "rule: mandarin" in text and "step 0: chinese from 0s until answered" in text

    assert sim(shipped, CHINESE, at=TUESDAY_MORNING)["hours"] == {"name": "office", "open": True}
    # The same instant in another zone.
    assert sim(shipped, CHINESE, at="2026-11-24T02:00+00:00")["hours"]["open"] is True
    assert sim(shipped, CHINESE, at="2026-11-24T10:00+00:00")["hours"]["open"] is False
    # A holiday (a Friday): closed all day, next opening on Saturday morning.
    holiday = sim(shipped, CHINESE, at="2026-12-25T10:00+08:00")["hours"]
    assert holiday["open"] is False and holiday["opens"] == "2026-12-26T10:00:00+08:00"
    # Saturday's lunch break.
    lunch = sim(shipped, CHINESE, at="2026-11-28T12:30+08:00")["hours"]
    assert lunch["open"] is False and lunch["opens"] == "2026-11-28T13:00:00+08:00"
    # Sunday evening: Monday 09:00.
    assert sim(shipped, CHINESE, at="2026-11-29T20:00+08:00")["hours"]["opens"] == "2026-11-30T09:00:00+08:00"


def shipped_with(**changes: Any) -> GatewayConfig:
    """The shipped config with some top-level sections replaced (validated as a whole)."""
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data.update(changes)
    return parse_config(yaml.safe_dump(data, allow_unicode=True), source="changed.yaml", env={}, base_dir=REPO)


def test_hours_conditions_in_rules_use_the_given_instant(shipped: Any) -> None:
    config, selfservice = shipped
    routing = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))["routing"]
    routing["rules"].insert(0, {"name": "after-hours", "when": {"outside_hours": "office"}, "queue": "messages"})
    changed = shipped_with(routing=routing)
    night = simulate(changed, selfservice, channel="webchat", text="", at=datetime.fromisoformat(TUESDAY_NIGHT))
    day = simulate(changed, selfservice, channel="webchat", text="", at=datetime.fromisoformat(TUESDAY_MORNING))
    assert night["rule"] == "after-hours" and night["steps"][0]["queues"] == ["messages"]
    assert day["rule"] == "routing.default_queue"


def test_default_instant_is_now(shipped: Any) -> None:
    config, selfservice = shipped
    before = datetime.now(timezone.utc)
    out = simulate(config, selfservice, channel="webchat", text="")
    assert before <= datetime.fromisoformat(out["at"]) <= datetime.now(timezone.utc)


# the simulation decides as the gateway does ---------------------------------------------------------
def gateway_rule(config: GatewayConfig, selfservice: SelfService, profile_tier: str | None,
                 attributes: dict[str, Any], at: datetime) -> tuple[str, str]:
    """(tier, rule) as the running gateway decides them for a customer with this profile."""
    pipeline = Pipeline(config, make_store("sqlite:///unused.db"), selfservice, clock=lambda: at)
    customer = Customer(id="c1", name=None, tier=profile_tier, attributes=attributes)
    conversation = Conversation(id="v1", customer_id="c1", channel="webchat", state=ConversationState.BOT,
                                queue=None, agent_id=None, last_seq=0, created_at=at, updated_at=at)
    contact = pipeline.contact(conversation, customer, at)
    return contact.tier or "", choose_queue(config.routing, contact).rule


@pytest.mark.parametrize("profile_tier, attributes", [
    (None, {}),
    (None, {"email": "boss@vip.example"}),
    (None, {"lifetime_value": 20000}),
    ("standard", {"lifetime_value": 20000}),
    ("vip", {}),
    # A customer profile can carry its language (a CRM's preferred language): the gateway routes
    # by it (gateway/pipeline.py Pipeline.contact), so the simulation must too.
    (None, {"language": "zh"}),
])
def test_simulation_matches_the_gateway_for_profile_attributes(
        shipped: Any, profile_tier: str | None, attributes: dict[str, Any]) -> None:
    config, selfservice = shipped
    at = datetime.fromisoformat(TUESDAY_MORNING)
    expected = gateway_rule(config, selfservice, profile_tier, attributes, at)
    out = simulate(config, selfservice, channel="webchat", text="", tier=profile_tier,
                   email=attributes.get("email"), phone=attributes.get("phone"), attributes=attributes, at=at)
    assert (out["tier"]["tier"], out["rule"]) == expected


def test_step_timing_follows_the_queues_max_wait_as_the_gateway_does(shipped: Any) -> None:
    """A step without its own timeout lasts the home queue's ``max_wait``: the gateway's
    ``Pipeline._next_step`` schedules every later step with the home queue (the rule's first
    queue), so the simulation must report the same timeline."""
    config, selfservice = shipped
    changed = parse_config(yaml.safe_dump({
        "channels": [{"type": "webchat"}],
        "queues": [{"name": "first", "max_wait": 30}, {"name": "second", "max_wait": 10}, {"name": "third"}],
        "routing": {"rules": [{"name": "ladder", "steps": [{"queue": "first"}, {"queues": ["second"]},
                                                          {"queues": ["third"]}]}],
                    "default_queue": "third"}}), base_dir=REPO)
    out = simulate(changed, selfservice, channel="webchat", text="", at=datetime.fromisoformat(TUESDAY_MORNING))
    assert out["rule"] == "ladder"
    assert [(s["from_second"], s["for_seconds"]) for s in out["steps"]] == [(0.0, 30.0), (30.0, 30.0), (60.0, None)]

"""config.yaml: loading, ``${VAR}`` expansion, and errors that name the file, line and key path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import ConfigError, GatewayConfig, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "config.yaml"

# A small valid config; line numbers below refer to it (line 1 is "channels:").
MINIMAL = """\
channels:
  - type: webchat
queues:
  - name: general
routing:
  default_queue: general
"""


def cfg(text: str) -> str:
    return textwrap.dedent(text)


def parse(text: str, env: dict[str, str] | None = None) -> GatewayConfig:
    return parse_config(cfg(text), "test.yaml", env=env or {})


def error_of(text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return str(info.value)


def clean_env() -> dict[str, str]:
    """The test process's environment without the CONTACTGATE_* variables config.yaml reads."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONTACTGATE_")}


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "check-config", str(path)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60,
    )


# -- the shipped config -------------------------------------------------------------------------

def test_shipped_config_loads() -> None:
    config = load_config(SHIPPED, env={})
    assert "webchat" in [c.type for c in config.channels]
    queues = {q.name for q in config.queues}
    assert config.routing.default_queue in queues
    assert all(q in queues for rule in config.routing.rules for step in rule.steps for q in step.queues)
    assert config.agents and all(set(a.queues) <= queues for a in config.agents)
    assert config.server.port == 8080
    assert config.selfservice.faq == REPO / "faq" / "shipping_kb.yaml"
    assert config.selfservice.faq.is_file()
    assert config.store.url == f"sqlite:///{REPO / 'data' / 'contactgate.db'}"


def test_shipped_config_takes_secrets_from_the_environment() -> None:
    default = {a.id: a.token.get_secret_value() for a in load_config(SHIPPED, env={}).agents}
    assert default["alice"] == "demo-alice-token"
    config = load_config(SHIPPED, env={"CONTACTGATE_AGENT_ALICE_TOKEN": "from-the-env-123",
                                       "CONTACTGATE_PORT": "9090",
                                       "CONTACTGATE_STORE_URL": "postgresql://cg@db.internal:5432/cg"})
    tokens = {a.id: a.token.get_secret_value() for a in config.agents}
    assert tokens["alice"] == "from-the-env-123"
    assert tokens["bob"] == default["bob"]
    assert config.server.port == 9090
    assert config.store.url == "postgresql://cg@db.internal:5432/cg"


def test_cli_check_config_accepts_the_shipped_config() -> None:
    result = check_config(Path("config.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config.yaml: ok")
    assert result.stderr == ""


def test_cli_check_config_reports_a_broken_file_on_stderr(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MINIMAL.replace("default_queue: general", "default_queue: genral"))
    result = check_config(broken)
    assert result.returncode == 2
    assert f"{broken}:6: routing.default_queue: unknown queue 'genral'" in result.stderr
    assert result.stdout == ""


def test_cli_check_config_reports_an_unset_variable(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MINIMAL + "server:\n  admin_token: ${CONTACTGATE_TEST_UNSET_ADMIN}\n")
    result = check_config(broken)
    assert result.returncode == 2
    assert (f"{broken}:8: server.admin_token: environment variable CONTACTGATE_TEST_UNSET_ADMIN "
            "is not set") in result.stderr


def test_cli_check_config_missing_file(tmp_path: Path) -> None:
    result = check_config(tmp_path / "nope.yaml")
    assert result.returncode == 2
    assert "cannot read the file" in result.stderr


# -- ${VAR} expansion ---------------------------------------------------------------------------

def test_variable_is_expanded_and_coerced() -> None:
    config = parse(MINIMAL + "server:\n  port: ${PORT}\n  host: ${HOST}\n",
                   env={"PORT": "9000", "HOST": "0.0.0.0"})
    assert config.server.port == 9000
    assert config.server.host == "0.0.0.0"


def test_default_used_when_unset_or_empty() -> None:
    text = MINIMAL + "server:\n  host: ${HOST:-10.0.0.1}\n  port: ${PORT:-8081}\n"
    assert parse(text, env={}).server.host == "10.0.0.1"
    assert parse(text, env={}).server.port == 8081
    assert parse(text, env={"HOST": ""}).server.host == "10.0.0.1"
    assert parse(text, env={"HOST": "h.example"}).server.host == "h.example"


def test_variable_inside_a_longer_string() -> None:
    config = parse(MINIMAL + "store:\n  url: postgresql://${DB_USER:-cg}@${DB_HOST}:5432/cg\n",
                   env={"DB_HOST": "db.internal"})
    assert config.store.url == "postgresql://cg@db.internal:5432/cg"


def test_env_argument_replaces_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CG_TEST_HOST", "from-os")
    text = MINIMAL + "server:\n  host: ${CG_TEST_HOST:-dflt}\n"
    assert parse_config(text, "t.yaml", env={}).server.host == "dflt"
    assert parse_config(text, "t.yaml").server.host == "from-os"


def test_unset_variable_without_default_names_key_and_line() -> None:
    message = error_of(MINIMAL + "server:\n  port: ${PORT}\n")
    assert message.startswith("test.yaml:8: server.port: environment variable PORT is not set")
    # The unset variable explains the bad port; no second, confusing "not an integer" line.
    assert "integer" not in message
    assert len(message.splitlines()) == 1


def test_unset_variable_is_an_error_even_where_empty_would_validate() -> None:
    # An empty host would pass validation: a missing secret must still stop the gateway.
    message = error_of(MINIMAL + "server:\n  host: ${HOST}\n")
    assert message.startswith("test.yaml:8: server.host: environment variable HOST is not set")
    # Set but empty is as much an error, and says so.
    message = error_of(MINIMAL + "server:\n  host: ${HOST}\n", env={"HOST": ""})
    assert message.startswith("test.yaml:8: server.host: environment variable HOST is empty")


def test_all_unset_variables_are_reported_together() -> None:
    message = error_of(MINIMAL + """\
agents:
  - id: a
    name: A
    token: ${TOKEN_A}
    queues: [general]
  - id: b
    name: B
    token: ${TOKEN_B}
    queues: [general]
""")
    lines = message.splitlines()
    assert lines[0].startswith("test.yaml:10: agents[0].token: environment variable TOKEN_A is not set")
    assert lines[1].startswith("test.yaml:14: agents[1].token: environment variable TOKEN_B is not set")
    assert len(lines) == 2


# -- validation errors --------------------------------------------------------------------------

def test_wrong_type() -> None:
    message = error_of(MINIMAL + "server:\n  port: eighty\n")
    assert message.startswith("test.yaml:8: server.port: ")
    assert "integer" in message


def test_out_of_range() -> None:
    message = error_of(MINIMAL + "server:\n  port: 70000\n")
    assert message.startswith("test.yaml:8: server.port: ")


def test_wrong_type_deep_in_a_list() -> None:
    message = error_of(MINIMAL.replace("  - name: general\n", "  - name: general\n    priority: {vip: high}\n"))
    assert message == ("test.yaml:5: queues[0].priority.vip: "
                       "Input should be a valid integer, unable to parse string as an integer")


def test_value_out_of_range_in_a_list() -> None:
    message = error_of(MINIMAL + """\
agents:
  - id: a
    name: A
    token: long-enough-token
    capacity: 0
    queues: [general]
""")
    assert message.startswith("test.yaml:11: agents[0].capacity: ")
    assert "capacity must be 1-100" in message


CAPACITY_LOTS = MINIMAL + """\
agents:
  - id: a
    name: A
    token: long-enough-token
    capacity: lots
    queues: [general]
"""


def test_wrong_type_of_a_number_or_mapping_key() -> None:
    message = error_of(CAPACITY_LOTS)
    assert message.startswith("test.yaml:11: agents[0].capacity")
    assert "valid integer" in message


def test_wrong_type_of_a_union_key_names_only_the_key() -> None:
    message = error_of(CAPACITY_LOTS)
    assert len(message.splitlines()) == 1
    assert message.startswith("test.yaml:11: agents[0].capacity: ")


def test_unknown_key_typo() -> None:
    message = error_of(MINIMAL + "server:\n  prot: 8080\n")
    assert message == "test.yaml:8: server.prot: unknown key (check its spelling and indentation)"


def test_unknown_top_level_section() -> None:
    message = error_of(MINIMAL + "queue:\n  - name: other\n")
    assert message == "test.yaml:7: queue: unknown key (check its spelling and indentation)"


def test_unknown_key_in_a_routing_condition() -> None:
    message = error_of(cfg("""\
        channels:
          - type: webchat
        queues:
          - name: general
        routing:
          default_queue: general
          rules:
            - queue: general
              when: {teir: vip}
        """))
    assert message.startswith("test.yaml:9: routing.rules[0].when.teir: unknown key")


def test_missing_required_section() -> None:
    message = error_of("channels:\n  - type: webchat\nqueues:\n  - name: general\n")
    assert message == "test.yaml:1: routing: required key is missing"


def test_missing_required_key_in_a_list_item() -> None:
    message = error_of(MINIMAL + """\
agents:
  - id: a
    token: long-enough-token
    queues: [general]
""")
    assert message == "test.yaml:8: agents[0].name: required key is missing"


RULE_WITH_UNKNOWN_QUEUE = """\
channels:
  - type: webchat
queues:
  - name: general
routing:
  default_queue: general
  rules:
    - name: vip
      when: {tier: vip}
      queue: vip_desk
"""


def test_unknown_queue_in_routing_rule() -> None:
    message = error_of(RULE_WITH_UNKNOWN_QUEUE)
    assert message.startswith("test.yaml:")
    assert "routing.rules[0]" in message
    assert message.endswith(": unknown queue 'vip_desk'")
    assert len(message.splitlines()) == 1


def test_unknown_queue_in_routing_rule_names_the_queue_key() -> None:
    assert error_of(RULE_WITH_UNKNOWN_QUEUE) == "test.yaml:10: routing.rules[0].queue: unknown queue 'vip_desk'"


def test_unknown_queue_in_a_routing_step() -> None:
    message = error_of(cfg("""\
        channels:
          - type: webchat
        queues:
          - name: general
        routing:
          default_queue: general
          rules:
            - steps:
                - queues: [general]
                - queues: [general, overflow]
                  timeout: 30
        """))
    assert message == "test.yaml:10: routing.rules[0].steps[1]: unknown queue 'overflow'"


def test_unknown_default_queue() -> None:
    message = error_of(MINIMAL.replace("default_queue: general", "default_queue: nowhere"))
    assert message == "test.yaml:6: routing.default_queue: unknown queue 'nowhere'"


def test_unknown_queue_of_an_agent() -> None:
    message = error_of(MINIMAL + """\
agents:
  - id: a
    name: A
    token: long-enough-token
    queues:
      - general
      - billing
""")
    assert message == "test.yaml:11: agents[0].queues: unknown queue 'billing'"


def test_unknown_tier_in_queue_priority() -> None:
    message = error_of(cfg("""\
        channels:
          - type: webchat
        tiers:
          default: standard
          rules:
            - tier: vip
              when: {email_domain: vip.example}
        queues:
          - name: general
            priority:
              vip: 10
              gold: 5
        routing:
          default_queue: general
        """))
    assert message == "test.yaml:12: queues[0].priority.gold: unknown tier 'gold' (known: ['standard', 'vip'])"


def test_duplicate_queue_names() -> None:
    message = error_of(cfg("""\
        channels:
          - type: webchat
        queues:
          - name: general
          - name: general
        routing:
          default_queue: general
        """))
    assert message == "test.yaml:5: queues[1]: duplicate 'general'"


AGENTS_DUP = MINIMAL + """\
agents:
  - id: a
    name: A
    token: token-number-1
    queues: [general]
  - id: {second_id}
    name: B
    token: {second_token}
    queues: [general]
"""


def test_duplicate_agent_ids() -> None:
    message = error_of(AGENTS_DUP.format(second_id="a", second_token="token-number-2"))
    assert message == "test.yaml:12: agents[1]: duplicate 'a'"


def test_duplicate_agent_tokens() -> None:
    message = error_of(AGENTS_DUP.format(second_id="b", second_token="token-number-1"))
    assert message == "test.yaml:14: agents[1].token: same token as agent 'a'"
    assert "token-number-1" not in message  # the secret itself is not printed


def test_several_problems_are_reported_in_line_order() -> None:
    message = error_of(AGENTS_DUP.format(second_id="a", second_token="token-number-1")
                       .replace("default_queue: general", "default_queue: nowhere"))
    assert message.splitlines() == [
        "test.yaml:6: routing.default_queue: unknown queue 'nowhere'",
        "test.yaml:12: agents[1]: duplicate 'a'",
        "test.yaml:14: agents[1].token: same token as agent 'a'",
    ]


def test_unknown_channel_type() -> None:
    message = error_of(MINIMAL.replace("type: webchat", "type: fax"))
    assert message == "test.yaml:2: channels[0].type: unknown channel type 'fax' (known: ['email', 'ivr', 'telegram', 'webchat'])"


def test_bad_webchat_setting_value() -> None:
    message = error_of(MINIMAL.replace("  - type: webchat\n", "  - type: webchat\n    path: webchat/ws\n"))
    assert message.startswith("test.yaml:3: channels[0].path: ")
    assert "^/" in message


def test_unknown_webchat_setting() -> None:
    message = error_of(MINIMAL.replace("  - type: webchat\n", "  - type: webchat\n    pth: /ws\n"))
    assert message == "test.yaml:3: channels[0].pth: unknown key (check its spelling and indentation)"


def test_invalid_yaml_gives_the_line() -> None:
    message = error_of("server:\n  port: 1\n   host: x\n")
    assert message.startswith("test.yaml:3:")
    assert "invalid YAML" in message


def test_unclosed_flow_sequence() -> None:
    message = error_of(MINIMAL + "agents: [\n")
    assert "invalid YAML" in message
    assert message.startswith("test.yaml:8:")


@pytest.mark.parametrize("text", ["- server\n- queues\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    message = error_of(text)
    assert message.startswith("test.yaml:1: ")
    assert "top level must be a mapping" in message


def test_empty_file_reports_the_missing_sections() -> None:
    message = error_of("")
    assert "channels: required key is missing" in message
    assert "routing: required key is missing" in message


def test_attribute_test_that_does_not_parse() -> None:
    message = error_of(cfg("""\
        channels:
          - type: webchat
        tiers:
          rules:
            - tier: vip
              when:
                attribute: "lifetime_value >>= 3"
        queues:
          - name: general
        routing:
          default_queue: general
        """))
    assert message.startswith("test.yaml:7: tiers.rules[0].when.attribute[0]: ")
    assert "lifetime_value >>= 3" in message


@pytest.mark.parametrize("test", ["lifetime_value", ">= 3", "lifetime_value => 3", "a >= ", "1abc > 2", "a =< 3"])
def test_other_malformed_attribute_tests(test: str) -> None:
    text = MINIMAL + f"tiers:\n  rules:\n    - tier: vip\n      when: {{attribute: {test!r}}}\n"
    message = error_of(text)
    assert message.startswith("test.yaml:10: tiers.rules[0].when.attribute[0]: ")


def test_error_has_problems_and_source() -> None:
    with pytest.raises(ConfigError) as info:
        parse(MINIMAL + "server:\n  prot: 1\n")
    assert info.value.source == "test.yaml"
    assert info.value.problems == ["8: server.prot: unknown key (check its spelling and indentation)"]


# -- paths relative to the config file ----------------------------------------------------------

def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "etc" / "cg"
    config_dir.mkdir(parents=True)
    path = config_dir / "gateway.yaml"
    path.write_text(MINIMAL + "selfservice:\n  faq: kb/faq.yaml\nstore:\n  url: sqlite:///relative.db\n")
    monkeypatch.chdir(tmp_path)  # somewhere else than the config's directory
    config = load_config(path, env={})
    assert config.selfservice.faq == config_dir.resolve() / "kb" / "faq.yaml"
    assert config.store.url == f"sqlite:///{config_dir.resolve() / 'relative.db'}"
    assert config.store.url.startswith("sqlite:////")


def test_relative_config_path_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text(MINIMAL + "store:\n  url: sqlite:///data/x.db\n")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/c.yaml", env={})
    assert config.store.url == f"sqlite:///{tmp_path.resolve() / 'conf' / 'data' / 'x.db'}"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "selfservice:\n  faq: /srv/kb/faq.yaml\nstore:\n  url: sqlite:////var/lib/cg/cg.db\n")
    config = load_config(path, env={})
    assert config.selfservice.faq == Path("/srv/kb/faq.yaml")
    assert config.store.url == "sqlite:////var/lib/cg/cg.db"


def test_postgres_url_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL + "store:\n  url: postgresql://cg@db:5432/cg\n")
    assert load_config(path, env={}).store.url == "postgresql://cg@db:5432/cg"


def test_parse_config_resolves_against_base_dir(tmp_path: Path) -> None:
    config = parse_config(MINIMAL + "selfservice:\n  faq: faq.yaml\n", "t.yaml", env={}, base_dir=tmp_path)
    assert config.selfservice.faq == tmp_path / "faq.yaml"
    assert config.store.url == f"sqlite:///{tmp_path / 'data' / 'contactgate.db'}"


def test_when_abandoned_names_an_existing_queue_and_needs_one_for_leave_message() -> None:
    def queue_with(when_abandoned: str) -> str:
        return cfg(f"""\
            channels:
              - type: webchat
                abandon_after: 60
            queues:
              - name: general
                when_abandoned: {when_abandoned}
            routing:
              default_queue: general
            """)

    assert error_of(queue_with("{action: leave_message, queue: messages}")) == \
        "test.yaml:6: queues[0].when_abandoned.queue: unknown queue 'messages'"
    assert error_of(queue_with("{action: leave_message}")) == \
        "test.yaml:6: queues[0].when_abandoned: Value error, action leave_message needs `queue`: where the left messages wait"
    assert error_of(queue_with("{action: close, queue: general}").replace("abandon_after: 60", "abandon_after: -1")) == \
        "test.yaml:3: channels[0].abandon_after: Input should be greater than or equal to 0"


# -- YAML slips: the line, and a hint of what is probably wrong ---------------------------------

VALID_TAIL = MINIMAL  # the rest of a valid file, after the broken section


@pytest.mark.parametrize("broken, line, hint", [
    # a key indented deeper than its siblings
    ("server:\n  host: 127.0.0.1\n   port: 8080\n", 3, "indented more than line 2"),
    # a key indented by a number of spaces no block uses
    ("server:\n  host: 127.0.0.1\n port: 8080\nstore: {}\n", 3, "indented 1 space(s), which matches no block"),
    # a tab
    ("server:\n\thost: 127.0.0.1\n", 2, "a tab character"),
    # no space after the colon
    ("server:\n  host:127.0.0.1\n  port: 8080\n", 3, "missing space after the colon on line 2: write `host: 127.0.0.1`"),
    # an unquoted value with ": " in it
    ("selfservice:\n  greeting: Hello: ask me anything\n", 2, 'quotes, e.g. greeting: "Hello: ask me anything"'),
    # a list item deeper than its list
    ("agents:\n  - id: a\n    name: A\n    token: a-token-123\n    queues: [general]\n      - id: b\n", 6, "a list item (`- `) at the wrong depth"),
    # a list item shallower than its list
    ("agents:\n  - id: a\n    queues: [general]\n - id: b\n", 4, "indented 1 space(s)"),
    # a key of a list item at the depth of the `- `
    ("agents:\n  - id: a\n  name: A\n", 3, "a key at the depth of the list's `- ` items"),
    # a quote never closed
    ('selfservice:\n  greeting: "Hello\n  min_score: 0.5\n', None, "the quote opened on line 2 is never closed"),
    # a [ list never closed
    ("selfservice:\n  handoff_phrases: [agent, human\n  min_score: 0.5\n", 3, "list opened on line 2 is not closed"),
])
def test_yaml_mistakes_get_a_hint(tmp_path: Path, broken: str, line: int | None, hint: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(broken + VALID_TAIL, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 2, result.stdout
    message = result.stderr.splitlines()[1]
    if line is not None:
        assert message.startswith(f"{path}:{line}:"), message
    assert "invalid YAML: " in message and "(probably " in message and hint in message, message


# -- warnings: valid, but probably not meant ------------------------------------------------------

WARNED = """\
channels:
  - type: webchat
queues:
  - name: general
  - name: chinese
    skills: {mandarin: 3}
  - name: orphan
routing:
  rules:
    - name: lonely
      queue: orphan
    - name: zh
      steps:
        - queues: [chinese, orphan]
        - queues: [general]
  default_queue: general
agents:
  - id: bob
    name: Bob
    token: bob-token-123
    queues: [general, chinese]
    skills: {mandarin: 2}
"""


def test_check_config_warns_about_queues_nobody_serves(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(WARNED, encoding="utf-8")
    result = check_config(path)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout and "4 warning(s)" in result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {path}:5: queues[1]: no agent serving queue 'chinese' (bob) has the skills it needs (mandarin 3): conversations routed there wait until one does",
        f"warning: {path}:7: queues[2]: no agent serves queue 'orphan' (add it to an agent's `queues`): conversations routed there wait until one does",
        f"warning: {path}:11: routing.rules[0].queue: rule 'lonely' offers to nobody at this step: no agent can take conversations from 'orphan'",
        f"warning: {path}:14: routing.rules[1].steps[0]: rule 'zh' offers to nobody at this step: no agent can take conversations from 'chinese', 'orphan'",
    ]


def test_config_warnings_without_lines_and_none_for_the_shipped_config() -> None:
    from gateway.config import config_warnings

    assert config_warnings(load_config(SHIPPED, env={})) == []
    assert config_warnings(parse_config(WARNED, "t.yaml", env={}))[1] == (
        "0: queues[2]: no agent serves queue 'orphan' (add it to an agent's `queues`): "
        "conversations routed there wait until one does")


async def test_the_gateway_logs_warnings_at_start_and_on_reload(tmp_path: Path) -> None:
    import asyncio

    from tests.support import GatewayProcess

    served = WARNED.replace("queues: [general, chinese]", "queues: [general, chinese, orphan]").replace(
        "{mandarin: 2}", "{mandarin: 3}")
    path = tmp_path / "config.yaml"
    path.write_text(served + f"server:\n  port: 0\n  reload_poll: 0.1\nstore:\n  url: sqlite:///{tmp_path / 'g.db'}\n",
                    encoding="utf-8")
    gateway = await GatewayProcess(path).start()
    try:
        assert not [r for r in gateway.logs if r.get("msg") == "config warning"]
        path.write_text(path.read_text().replace("queues: [general, chinese, orphan]", "queues: [general, chinese]"))
        # (the file watcher reloads it)
        deadline = asyncio.get_running_loop().time() + 10
        while not any(r.get("msg") == "config reloaded" for r in gateway.logs):
            assert asyncio.get_running_loop().time() < deadline, gateway.log_text()
            await asyncio.sleep(0.05)
        warned = [r["warning"] for r in gateway.logs if r.get("msg") == "config warning"]
        assert warned == [f"{path}:7: queues[2]: no agent serves queue 'orphan' (add it to an agent's `queues`): "
                          "conversations routed there wait until one does",
                          f"{path}:11: routing.rules[0].queue: rule 'lonely' offers to nobody at this step: "
                          "no agent can take conversations from 'orphan'"]
    finally:
        await gateway.stop()
    restarted = await GatewayProcess(path).start()
    try:
        assert [r["level"] for r in restarted.logs if r.get("msg") == "config warning"] == ["warning", "warning"]
    finally:
        await restarted.stop()


def shipped_email_example() -> str:
    """config.yaml with its commented-out email channel (and its selfservice.channels) uncommented,
    as docs/channels.md tells a newcomer to do."""
    lines, out, inside = (REPO / "config.yaml").read_text(encoding="utf-8").splitlines(), [], False
    for line in lines:
        if line.startswith("  # - type: email"):
            inside = True
        elif inside and not line.startswith("  #"):
            inside = False
        if (inside and not line.startswith("  #   #")) or line.startswith(("  # channels:", "  #   email: {")):
            line = "  " + line[4:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_the_shipped_email_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(shipped_email_example(), encoding="utf-8")
    (tmp_path / "faq").symlink_to(REPO / "faq")
    config = load_config(path)
    email = next(c for c in config.channels if c.type == "email")
    assert email.settings["listen"]["port"] == 2525 and email.settings["smtp"]["port"] == 1025
    assert config.selfservice.channels["email"].max_unanswered == 1


def test_a_condition_on_a_channel_must_name_one() -> None:
    """A misspelt channel in a routing or tier rule would silently match nothing."""
    rule = MINIMAL + "  rules:\n    - name: mail-first\n      when: {channel: nochan}\n      queue: general\n"
    assert "routing.rules[0].when.channel: no channel named 'nochan'" in error_of(rule)
    tier = MINIMAL + "tiers:\n  rules:\n    - tier: vip\n      when: {channel: [webchat, fax]}\n"
    assert "tiers.rules[0].when.channel: no channel named 'fax'" in error_of(tier)


def test_an_agent_token_is_measured_in_characters() -> None:
    text = MINIMAL + "agents:\n  - {id: a, name: A, token: short, queues: [general]}\n"
    assert "agents[0].token: Value error, a token must be at least 8 characters, not 5" in error_of(text)


def test_selfservice_channels_must_name_a_channel() -> None:
    text = MINIMAL + "selfservice:\n  channels:\n    email: {min_score: 0.5}\n"
    assert "selfservice.channels.email: no channel named 'email'" in error_of(text)


def test_serve_takes_the_config_file_as_the_other_commands_do(tmp_path: Path, capsys) -> None:
    """`contactgate serve FILE` as `check-config FILE` (or --config FILE); both at once is an error."""
    from gateway.cli import main

    missing = tmp_path / "nope.yaml"
    assert main(["serve", str(missing)]) == 2
    assert f"{missing}:0: cannot read the file" in capsys.readouterr().err
    assert main(["serve", "--config", str(missing)]) == 2
    with pytest.raises(SystemExit):
        main(["serve", str(missing), "--config", str(tmp_path / "other.yaml")])
    assert "give the config file once" in capsys.readouterr().err

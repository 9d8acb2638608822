"""The limiter core on a fake clock (no sleeps): token buckets, bounded tables, the failed-auth
tracker, and the client address behind trusted proxies."""

from __future__ import annotations

import itertools
from ipaddress import ip_network

import pytest
import yaml

from gateway.clientaddr import client_address
from gateway.limits import BucketTable, FailedAuth, FailedAuthConfig, Limits, LimitsConfig, Rate, RateLimited, TokenBucket
from tests.support import REPO


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limits_on(clock: Clock, **config: object) -> tuple[Limits, list[LimitsConfig]]:
    live = [LimitsConfig.model_validate({"failed_auth": {"delay": 0}, **config})]
    return Limits(lambda: live[0], clock), live


def test_bucket_allows_the_burst_then_refuses_with_the_wait_until_the_next_token() -> None:
    rate, now = Rate(rate=2, burst=3), 0.0
    bucket = TokenBucket.full(rate, now)
    assert [bucket.take(rate, now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(rate, now) == pytest.approx(0.5)
    assert bucket.take(rate, now + 0.25) == pytest.approx(0.25)  # a refusal takes nothing
    assert bucket.take(rate, now + 0.5) == 0.0
    assert bucket.take(rate, now + 0.5) > 0
    assert [bucket.take(rate, now + 100) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refills to burst, no more


def test_customer_limit_counts_all_sockets_and_a_refusal_costs_neither_bucket() -> None:
    clock = Clock()
    limits, _ = limits_on(clock, messages_per_connection={"rate": 1, "burst": 3},
                          messages_per_customer={"rate": 1, "burst": 4})
    tab1, tab2 = limits.connection_bucket(), limits.connection_bucket()
    for i in range(3):
        limits.customer_message(tab1, "cust", f"a{i}")
    with pytest.raises(RateLimited) as refused:
        limits.customer_message(tab1, "cust", "a3")          # this socket is out
    assert refused.value.error.frame() == {"type": "error", "code": "rate_limited", "id": "a3",
                                           "retry_after": 1.0, "message": refused.value.error.message}
    limits.customer_message(tab2, "cust", "b0")             # the customer had one left
    with pytest.raises(RateLimited):
        limits.customer_message(tab2, "cust", "b1")          # now the customer is out
    limits.customer_message(limits.connection_bucket(), "other", "c0")  # another customer is not
    assert limits.refused["messages_per_connection"] == 1 and limits.refused["messages_per_customer"] == 1
    clock.now += 1
    limits.customer_message(tab2, "cust", "b1")


def test_a_reload_applies_to_buckets_that_already_exist() -> None:
    clock = Clock()
    limits, live = limits_on(clock, agent_messages_per_connection={"rate": 10, "burst": 10})
    desk = limits.connection_bucket()
    limits.agent_message(desk, "conv", "m0")
    live[0] = LimitsConfig.model_validate({"agent_messages_per_connection": {"rate": 1, "burst": 1}})
    limits.agent_message(desk, "conv", "m1")
    with pytest.raises(RateLimited) as refused:
        limits.agent_message(desk, "conv", "m2")
    assert refused.value.error.frame()["conversation_id"] == "conv"


def test_new_conversations_per_address() -> None:
    clock = Clock()
    limits, _ = limits_on(clock, new_conversations_per_address={"rate": 0.1, "burst": 2})
    limits.new_conversation("203.0.113.7")
    limits.new_conversation("203.0.113.7")
    with pytest.raises(RateLimited) as refused:
        limits.new_conversation("203.0.113.7")
    assert refused.value.retry_after == pytest.approx(10)
    limits.new_conversation("198.51.100.1")
    clock.now += 10
    limits.new_conversation("203.0.113.7")


def test_bucket_table_stays_bounded_under_a_flood_of_keys() -> None:
    table, rate = BucketTable(), Rate(rate=1, burst=2)
    for i in range(10_000):
        table.get(f"10.0.{i // 256}.{i % 256}", rate, 0.0, max_tracked=100).take(rate, 0.0)
    assert len(table) <= 100
    # Buckets that are full again are forgotten as time goes on, even below the cap.
    for i in range(50):
        table.get(f"late-{i}", rate, 10.0, max_tracked=100).take(rate, 10.0)
    assert len(table) <= 52


def test_failed_auth_locks_out_after_attempts_and_a_success_resets() -> None:
    config, tracker, now = FailedAuthConfig(attempts=3, window=60, lockout=30), FailedAuth(), 0.0
    assert tracker.failed("a", config, now, 100) is False
    assert tracker.failed("a", config, now + 1, 100) is False
    assert tracker.failed("a", config, now + 2, 100) is True     # the lockout starts once
    assert tracker.locked_for("a", now + 2) == pytest.approx(30)
    assert tracker.locked_for("b", now + 2) == 0.0
    assert tracker.locked_out(now + 2) == 1
    assert tracker.locked_for("a", now + 32) == 0.0               # over after the lockout
    assert tracker.failed("a", config, now + 33, 100) is False    # counting starts again
    tracker.succeeded("a")
    assert tracker.failed("a", config, now + 34, 100) is False
    assert tracker.failed("a", config, now + 35, 100) is False
    assert tracker.failed("a", config, now + 200, 100) is False   # the window passed: 1 again


def test_failed_auth_stays_bounded() -> None:
    config, tracker = FailedAuthConfig(attempts=3, window=60, lockout=30), FailedAuth()
    for i in range(5000):
        tracker.failed(f"addr-{i}", config, float(i) / 100, max_tracked=100)
    assert len(tracker._by_address) <= 100


async def test_lockout_counts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limits, _ = limits_on(clock, failed_auth={"attempts": 2, "window": 60, "lockout": 5, "delay": 0})
    await limits.auth_failed("agent", "203.0.113.7")
    await limits.auth_failed("agent", "203.0.113.7")
    assert limits.locked_for("agent", "203.0.113.7") == pytest.approx(5)
    assert limits.locked_for("admin", "203.0.113.7") == 0.0      # each endpoint counts its own
    assert limits.auth_failures["agent"] == 2 and limits.lockouts["agent"] == 1
    assert limits.locked_out("agent") == 1
    lines = [r for r in caplog.records if r.name == "contactgate.limits"]
    assert [r.getMessage() for r in lines] == ["agent auth failed", "agent auth failed", "agent auth locked out"]
    assert all(getattr(r, "address") == "203.0.113.7" for r in lines)
    clock.now += 5
    assert limits.locked_out("agent") == 0


TRUSTED = [ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")]


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("203.0.113.7", [], "203.0.113.7"),                                    # no proxy
    ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),                      # untrusted peer: header ignored
    ("10.0.0.5", ["198.51.100.1"], "198.51.100.1"),                        # behind a trusted proxy
    ("10.0.0.5", ["6.6.6.6, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),     # right to left, past trusted hops
    ("10.0.0.5", ["6.6.6.6", "198.51.100.1"], "198.51.100.1"),             # two headers are one list
    ("10.0.0.5", ["198.51.100.1:51000"], "198.51.100.1"),                  # with a port
    ("10.0.0.5", ["[2001:db9::1]:443"], "2001:db9::1"),
    ("10.0.0.5", ["not-an-address"], "10.0.0.5"),                          # malformed: the peer
    ("10.0.0.5", ["198.51.100.1, garbage"], "10.0.0.5"),
    ("10.0.0.5", [""], "10.0.0.5"),
    ("10.0.0.5", ["10.0.0.7"], "10.0.0.7"),                                # only trusted hops: the leftmost
    ("::ffff:203.0.113.7", [], "203.0.113.7"),                             # IPv4-mapped
    (None, [], "unknown"),
])
def test_client_address(peer: str | None, forwarded: list[str], expected: str) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_client_address_without_trusted_proxies_ignores_the_header() -> None:
    assert client_address("10.0.0.5", ["198.51.100.1"], []) == "10.0.0.5"


def test_the_commented_limits_block_of_config_yaml_is_the_defaults() -> None:
    text = (REPO / "config.yaml").read_text(encoding="utf-8")
    block = text[text.index("# limits:"):].splitlines()
    lines = [block[0]] + list(itertools.takewhile(lambda line: line.startswith("#   "), block[1:]))
    uncommented = "\n".join(line[2:] for line in lines)
    assert LimitsConfig.model_validate(yaml.safe_load(uncommented)["limits"]) == LimitsConfig()

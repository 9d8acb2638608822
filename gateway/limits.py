"""Rate limits and failed-authentication throttling: what keeps one client from drowning the
others (a message flood, a flood of new conversations, a token-guessing run).

The promise: a refusal happens *before* anything is stored or changed, so it loses nothing
that was acknowledged; it tells the client when to try again (``retry_after``); and the
memory it needs stays bounded however many distinct addresses or customers show up.

The core here is pure: token buckets and a failed-auth tracker on an injected monotonic clock
(unit-tested with a fake one). :class:`Limits` ties them to the live ``limits:`` config (read at
each use, so a hot reload applies at once), counts refusals for ``/metrics`` and writes the log
lines. The limits are per process, like queue state (one gateway process per store).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any, Callable, Literal

from aiohttp import web
from pydantic import Field, field_validator

from routing.config import Strict

from .clientaddr import client_address
from .websocket import CLOSE_RATE_LIMITED, FrameError, FrameRejected, FrameSender

log = logging.getLogger("contactgate.limits")

Endpoint = Literal["agent", "admin"]
LimitName = Literal["messages_per_connection", "messages_per_customer", "agent_messages_per_connection",
                    "new_conversations_per_address"]
LIMIT_NAMES: tuple[LimitName, ...] = ("messages_per_connection", "messages_per_customer",
                                      "agent_messages_per_connection", "new_conversations_per_address")
ENDPOINTS: tuple[Endpoint, ...] = ("agent", "admin")


# config -------------------------------------------------------------------------------------
class Rate(Strict):
    """A token bucket: ``burst`` at once, then ``rate`` per second on average."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class FailedAuthConfig(Strict):
    # ``attempts`` wrong tokens from one address within ``window`` seconds lock the address out
    # for ``lockout`` seconds (even a right token is refused then). Each wrong token is answered
    # ``delay`` seconds late, which slows a guesser that tries one token after another.
    attempts: int = Field(default=10, ge=1)
    window: float = Field(default=60.0, gt=0)
    lockout: float = Field(default=60.0, gt=0)
    delay: float = Field(default=0.5, ge=0, le=10)


class LimitsConfig(Strict):
    # A person types a few messages a second at most; the bursts allow for pasting.
    messages_per_connection: Rate = Rate(rate=5, burst=20)
    # All sockets of one customer together (several tabs).
    messages_per_customer: Rate = Rate(rate=10, burst=40)
    agent_messages_per_connection: Rate = Rate(rate=10, burst=40)
    # Web chat hellos with a null token (new customers) per client address. Generous: many
    # customers can share one address (an office, a mobile carrier's NAT).
    new_conversations_per_address: Rate = Rate(rate=0.5, burst=20)
    failed_auth: FailedAuthConfig = FailedAuthConfig()
    # Proxies whose X-Forwarded-For is believed (CIDRs). Empty: the peer is the client.
    trusted_proxies: list[IPv4Network | IPv6Network] = []
    # Most keys (addresses, customers) remembered per limit; the least recently seen is
    # forgotten first, so a flood of distinct addresses cannot grow memory without bound.
    max_tracked: int = Field(default=100_000, ge=100)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if not isinstance(value, list):
            return value
        networks = []
        for item in value:
            try:
                networks.append(ip_network(str(item)))
            except ValueError as exc:  # ipaddress says why: "has host bits set", "does not appear to be ..."
                raise ValueError(f"{item!r} is not an IP address or CIDR network: {exc}") from None
        return networks


# the pure core ------------------------------------------------------------------------------
@dataclass(slots=True)
class TokenBucket:
    tokens: float
    at: float            # when ``tokens`` was last brought up to date
    refusing: bool = False  # the last take was refused (to log once per episode, not per try)

    @classmethod
    def full(cls, rate: Rate, now: float) -> "TokenBucket":
        return cls(float(rate.burst), now)

    def _refill(self, rate: Rate, now: float) -> None:
        if now > self.at:
            self.tokens = min(float(rate.burst), self.tokens + (now - self.at) * rate.rate)
            self.at = now
        self.tokens = min(self.tokens, float(rate.burst))  # a reload may have lowered the burst

    def wait(self, rate: Rate, now: float) -> float:
        """Seconds until one token is there (0: now). Takes nothing."""
        self._refill(rate, now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / rate.rate

    def take(self, rate: Rate, now: float) -> float:
        """Take one token: 0.0, or the seconds to wait (then nothing is taken)."""
        wait = self.wait(rate, now)
        if wait == 0.0:
            self.tokens -= 1
        self.refusing = wait > 0
        return wait

    def idle_full(self, rate: Rate, now: float) -> bool:
        """Full again: forgetting it changes nothing."""
        return self.tokens + (now - self.at) * rate.rate >= rate.burst


class BucketTable:
    """Token buckets by key (an address, a customer), least recently used first, bounded."""

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def get(self, key: str, rate: Rate, now: float, max_tracked: int) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket.full(rate, now)
        else:
            self._buckets.move_to_end(key)
        self._sweep(rate, now, max_tracked)
        return bucket

    def _sweep(self, rate: Rate, now: float, max_tracked: int) -> None:
        # Amortised: drop buckets from the old end while they are full again (a few per call),
        # and the oldest beyond the cap (a flood of new keys forgets the longest-idle ones).
        while len(self._buckets) > max_tracked:
            self._buckets.popitem(last=False)
        for _ in range(2):
            oldest_key = next(iter(self._buckets))
            oldest = self._buckets[oldest_key]
            if len(self._buckets) == 1 or not oldest.idle_full(rate, now):
                return
            del self._buckets[oldest_key]


@dataclass(slots=True)
class _Failures:
    count: int
    since: float                     # the first failure of the current window
    locked_until: float | None = None


class FailedAuth:
    """Failed authentications per address: ``attempts`` within ``window`` lock it out for
    ``lockout``. A success resets the address. Bounded like :class:`BucketTable`."""

    def __init__(self) -> None:
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()

    def locked_for(self, address: str, now: float) -> float:
        """Seconds the address stays locked out (0: not locked)."""
        entry = self._by_address.get(address)
        if entry is None or entry.locked_until is None or entry.locked_until <= now:
            return 0.0
        return entry.locked_until - now

    def failed(self, address: str, config: FailedAuthConfig, now: float, max_tracked: int) -> bool:
        """Count a failure; True when this one starts a lockout."""
        entry = self._by_address.get(address)
        if entry is None or now - entry.since > config.window or (entry.locked_until or now) < now:
            entry = _Failures(0, now)
        entry.count += 1
        self._by_address[address] = entry
        self._by_address.move_to_end(address)
        started = entry.count >= config.attempts and entry.locked_until is None
        if started:
            entry.locked_until = now + config.lockout
        self._sweep(config, now, max_tracked)
        return started

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)

    def locked_out(self, now: float) -> int:
        return sum(1 for e in self._by_address.values() if e.locked_until is not None and e.locked_until > now)

    def _sweep(self, config: FailedAuthConfig, now: float, max_tracked: int) -> None:
        while len(self._by_address) > max_tracked:
            self._by_address.popitem(last=False)
        for _ in range(2):
            address, oldest = next(iter(self._by_address.items()))
            expired = (now - oldest.since > config.window and (oldest.locked_until is None or oldest.locked_until <= now))
            if not expired:
                return
            del self._by_address[address]


# errors -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RateLimitedError(FrameError):
    retry_after: float = 0.0
    id: str | None = None
    conversation_id: str | None = None

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message,
                                 "retry_after": self.retry_after}
        if self.conversation_id is not None:
            frame["conversation_id"] = self.conversation_id
        if self.id is not None:
            frame["id"] = self.id
        return frame


class RateLimited(FrameRejected):
    """Over a limit: nothing was stored or changed; retry after ``retry_after`` seconds (a
    message with the same id)."""

    def __init__(self, retry_after: float, message: str, client_id: str | None = None,
                 conversation_id: str | None = None) -> None:
        super().__init__("rate_limited", message)
        self.retry_after = retry_after
        self.error = RateLimitedError("rate_limited", message, retry_after, client_id, conversation_id)


def seconds(wait: float) -> float:
    """A wait as the client sees it: rounded up to the millisecond, never 0."""
    return max(0.001, math.ceil(wait * 1000) / 1000)


# tied to the live config --------------------------------------------------------------------
class Limits:
    """The gateway's limits, reading ``limits:`` from the live config at every use."""

    def __init__(self, config: Callable[[], LimitsConfig], clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self.clock = clock
        self._tables: dict[LimitName, BucketTable] = {name: BucketTable() for name in LIMIT_NAMES}
        self._auth: dict[Endpoint, FailedAuth] = {endpoint: FailedAuth() for endpoint in ENDPOINTS}
        self.refused: dict[LimitName, int] = dict.fromkeys(LIMIT_NAMES, 0)
        self.auth_failures: dict[Endpoint, int] = dict.fromkeys(ENDPOINTS, 0)
        self.lockouts: dict[Endpoint, int] = dict.fromkeys(ENDPOINTS, 0)

    @property
    def config(self) -> LimitsConfig:
        return self._config()

    def client_address(self, request: web.Request) -> str:
        """The address per-address limits and log lines name (``trusted_proxies`` applied)."""
        return client_address(request.remote, request.headers.getall("X-Forwarded-For", ()),
                              self.config.trusted_proxies)

    def connection_bucket(self) -> TokenBucket:
        """A bucket for one socket's messages; it lives (and goes) with the socket."""
        # Infinite tokens are cut to the live burst at first use, whichever limit it serves.
        return TokenBucket(float("inf"), self.clock())

    # messages -------------------------------------------------------------------------------
    def customer_message(self, connection: TokenBucket, customer_id: str, client_id: str) -> None:
        """Raise :class:`RateLimited` when this socket or this customer is over its rate."""
        config, now = self.config, self.clock()
        customer = self._tables["messages_per_customer"].get(customer_id, config.messages_per_customer, now,
                                                             config.max_tracked)
        per_connection = connection.wait(config.messages_per_connection, now)
        per_customer = customer.wait(config.messages_per_customer, now)
        # Both must have room, and only then is a token taken from each: a refusal costs nothing.
        if per_connection or per_customer:
            name: LimitName = "messages_per_connection" if per_connection >= per_customer else "messages_per_customer"
            self.refused[name] += 1
            raise RateLimited(seconds(max(per_connection, per_customer)),
                              "too many messages; nothing was stored, resend the same id after retry_after seconds",
                              client_id)
        connection.take(config.messages_per_connection, now)
        customer.take(config.messages_per_customer, now)

    def agent_message(self, connection: TokenBucket, conversation_id: str, client_id: str) -> None:
        rate = self.config.agent_messages_per_connection
        wait = connection.take(rate, self.clock())
        if wait:
            self.refused["agent_messages_per_connection"] += 1
            raise RateLimited(seconds(wait), "too many messages; nothing was stored, resend the same id after retry_after seconds",
                              client_id, conversation_id)

    # new conversations ----------------------------------------------------------------------
    def new_conversation(self, address: str) -> None:
        """Raise :class:`RateLimited` when this address starts conversations too fast."""
        config, now = self.config, self.clock()
        rate = config.new_conversations_per_address
        bucket = self._tables["new_conversations_per_address"].get(address, rate, now, config.max_tracked)
        was_refusing = bucket.refusing
        wait = bucket.take(rate, now)
        if wait:
            self.refused["new_conversations_per_address"] += 1
            if not was_refusing:
                log.warning("new conversations rate limited", extra={"address": address})
            raise RateLimited(seconds(wait), "too many new conversations from this address; retry after retry_after seconds")

    # failed authentication ------------------------------------------------------------------
    def locked_for(self, endpoint: Endpoint, address: str) -> float:
        """Seconds this address stays locked out of ``endpoint`` (0: it may try)."""
        return self._auth[endpoint].locked_for(address, self.clock())

    async def auth_failed(self, endpoint: Endpoint, address: str) -> None:
        """A wrong token from ``address``: logged (naming it), counted, answered late."""
        config = self.config
        self.auth_failures[endpoint] += 1
        log.warning(f"{endpoint} auth failed", extra={"address": address})
        if self._auth[endpoint].failed(address, config.failed_auth, self.clock(), config.max_tracked):
            self.lockouts[endpoint] += 1
            log.warning(f"{endpoint} auth locked out", extra={
                "address": address, "attempts": config.failed_auth.attempts, "lockout": config.failed_auth.lockout})
        if config.failed_auth.delay:
            await asyncio.sleep(config.failed_auth.delay)

    async def close_if_locked_out(self, endpoint: Endpoint, address: str, sender: FrameSender) -> bool:
        """For a socket's ``auth`` frame: while ``address`` is locked out after failed
        authentications, tell it when to retry, close it with 4429 and return True. Refused
        before the token is even compared, and not logged again (the lockout was)."""
        locked_for = self.locked_for(endpoint, address)
        if not locked_for:
            return False
        sender.send(RateLimited(seconds(locked_for), "too many failed authentications from this address; "
                                "retry after retry_after seconds").error.frame())
        await sender.close(CLOSE_RATE_LIMITED, "too many failed authentications; retry later")
        return True

    def auth_succeeded(self, endpoint: Endpoint, address: str) -> None:
        self._auth[endpoint].succeeded(address)

    def locked_out(self, endpoint: Endpoint) -> int:
        return self._auth[endpoint].locked_out(self.clock())

"""The customer's tier from a CRM over HTTP: the last source after the profile and the tier rules.

A lookup never raises and never holds routing up for longer than ``timeout``: anything that goes
wrong (no value for the URL, an error status, a timeout, a refused connection, a body that is not
the JSON expected) is logged as one line and answers ``None``, and the caller falls back to
``CrmConfig.fallback_tier`` or the tiers default. Answers, misses included, are cached per
rendered URL for ``cache_ttl`` seconds, and concurrent lookups of one URL share one request, so a
burst of contacts from one customer (or a slow CRM) costs one call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import Any, Callable
from urllib.parse import quote

import aiohttp

from routing.config import CrmConfig

log = logging.getLogger("contactgate.crm")

DEFAULT_MAX_ENTRIES = 10_000


class _Failed(Exception):
    """A lookup that went wrong on the wire or in the answer (counted in ``errors``)."""


class CrmClient:
    """Looks tiers up in the CRM; owns one ``aiohttp.ClientSession`` between ``start`` and ``close``.

    Counters, for metrics: ``hits`` lookups answered from the cache or by joining a request already
    in flight; ``misses`` lookups that had to ask the CRM; ``requests`` HTTP requests sent;
    ``errors`` requests that failed (error status other than 404, timeout, connection, bad JSON,
    tier not a string); ``skipped`` lookups not made because the URL needs a value the customer
    lacks.
    """

    def __init__(
        self,
        config: CrmConfig,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self.config = config
        self._session_factory = session_factory or self._default_session
        self._clock = clock
        self._max_entries = max(1, max_entries)
        self._placeholders = config.placeholders
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None
        # Rendered URL -> (expires at, tier or None); insertion order is age, oldest first.
        self._cache: OrderedDict[str, tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[str | None]] = {}
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.requests = 0
        self.skipped = 0

    def _default_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=self._timeout)

    async def start(self) -> None:
        """Open the HTTP session (idempotent)."""
        if self._session is None or self._session.closed:
            self._session = self._session_factory()

    async def close(self) -> None:
        """Cancel lookups in flight and close the session (idempotent)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def render(self, *, customer_id: str, email: str | None, phone: str | None, channel: str) -> str | None:
        """The lookup URL for this customer, or ``None`` when the template needs a value it lacks."""
        values = {"email": email, "phone": phone, "customer_id": customer_id, "channel": channel}
        if self._missing(values):
            return None
        return self.config.url.format(**{
            name: quote(str(values[name]), safe="") for name in self._placeholders
        })

    def _missing(self, values: dict[str, str | None]) -> list[str]:
        return sorted(name for name in self._placeholders if not values[name])

    async def lookup_tier(self, *, customer_id: str, email: str | None, phone: str | None, channel: str) -> str | None:
        """The tier the CRM gives this customer, or ``None`` (unknown, or the lookup failed)."""
        url = self.render(customer_id=customer_id, email=email, phone=phone, channel=channel)
        if url is None:
            self.skipped += 1
            missing = self._missing({"email": email, "phone": phone, "customer_id": customer_id, "channel": channel})
            # Routine (a phone caller has no email), so not worth a warning per contact.
            log.debug("crm lookup skipped for customer %s: no %s", customer_id, ", ".join(missing))
            return None

        cached = self._cache.get(url)
        if cached is not None:
            expires, tier = cached
            if self._clock() < expires:
                self.hits += 1
                return tier
            del self._cache[url]

        task = self._inflight.get(url)
        if task is not None:
            self.hits += 1
        else:
            self.misses += 1
            task = asyncio.get_running_loop().create_task(self._fetch(url, customer_id))
            self._inflight[url] = task
            task.add_done_callback(lambda _t, url=url: self._inflight.pop(url, None))
        # Shielded: a caller giving up (its contact went away) must not cancel the others' answer.
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and current.cancelling() == 0:
                return None  # close() ended the request, not our caller
            raise

    async def _fetch(self, url: str, customer_id: str) -> str | None:
        try:
            tier = await self._request(url, customer_id)
        except _Failed as exc:
            self.errors += 1
            log.warning("crm lookup failed for customer %s: %s", customer_id, exc)
            tier = None
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let a CRM quirk take routing down
            self.errors += 1
            log.warning("crm lookup failed for customer %s: unexpected %s", customer_id, type(exc).__name__)
            tier = None
        self._remember(url, tier)
        return tier

    async def _request(self, url: str, customer_id: str) -> str | None:
        """The tier, ``None`` when the CRM has none; raises ``_Failed`` with the reason otherwise.

        Reasons name the failure but never the URL (it may carry personal data or a token) nor
        the headers.
        """
        await self.start()
        assert self._session is not None
        self.requests += 1
        try:
            async with self._session.get(url, headers=self.config.headers, timeout=self._timeout) as response:
                if response.status == 404:
                    log.warning("crm lookup for customer %s: not found (HTTP 404)", customer_id)
                    return None
                if response.status >= 400:
                    raise _Failed(f"HTTP {response.status}")
                body = await response.read()
        except asyncio.TimeoutError:
            raise _Failed(f"no answer within {self.config.timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise _Failed(f"connection failed ({type(exc).__name__})") from None

        try:
            document: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise _Failed(f"the answer is not JSON (HTTP {response.status}, {len(body)} bytes)") from None
        for part in self.config.tier_field.split("."):
            if not isinstance(document, dict) or part not in document:
                log.warning("crm lookup for customer %s: the answer has no %r", customer_id, self.config.tier_field)
                return None
            document = document[part]
        if not isinstance(document, str) or not document:
            raise _Failed(f"{self.config.tier_field!r} is {type(document).__name__}, not a tier name")
        return document

    def _remember(self, url: str, tier: str | None) -> None:
        ttl = self.config.cache_ttl
        if ttl <= 0:
            return
        self._cache[url] = (self._clock() + ttl, tier)
        self._cache.move_to_end(url)
        while len(self._cache) > self._max_entries:
            self._cache.popitem(last=False)

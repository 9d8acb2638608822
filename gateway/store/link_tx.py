"""The transaction seam of customer_links.py and customer_merges.py: what each engine provides
(:class:`LinkTx`), their errors, and the retry of a transaction PostgreSQL aborted to break a
lock cycle."""

from __future__ import annotations

import asyncio
import functools
import json
import random
from datetime import datetime
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

from ..model import Customer, utcnow
from .base import StoreError

T = TypeVar("T")
CUSTOMER_COLS = "id, name, tier, attributes, created_at, merged_into"


class MergeRefused(StoreError):
    """A merge or unmerge that cannot be done; ``code`` and the message say why (the API's 4xx)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class TransientConflict(StoreError):
    """The database broke a lock cycle by aborting this transaction (PostgreSQL's deadlock
    detection); nothing of it was written, and :func:`retried` runs it again."""


RETRIES = 5


def retried(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run a whole transaction again when it was aborted to break a lock cycle: rare (an
    addition following a merge chain while merges of the same customers run), and harmless,
    as the aborted attempt wrote nothing."""
    @functools.wraps(method)
    async def run(*args: Any, **kwargs: Any) -> T:
        for attempt in range(RETRIES):
            try:
                return await method(*args, **kwargs)
            except TransientConflict:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0.001, 0.02) * (attempt + 1))
        raise AssertionError("unreachable")

    return run


class LinkTx(Protocol):
    """One transaction of an engine. SQL is written with ``?`` placeholders."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...
    async def execute(self, sql: str, *args: Any) -> None: ...
    def at(self, value: datetime | None) -> Any: ...          # a timestamp as the engine stores it
    def read_at(self, value: Any) -> datetime | None: ...
    async def lock_customers(self, ids: Sequence[str], *, share: bool = False) -> None: ...
    async def lock_identity(self, kind: str, address: str) -> None: ...


def _customer(tx: LinkTx, row: Any) -> Customer:
    return Customer(id=row["id"], name=row["name"], tier=row["tier"], attributes=json.loads(row["attributes"]),
                    created_at=tx.read_at(row["created_at"]) or utcnow(), merged_into=row["merged_into"])


async def customer_row(tx: LinkTx, customer_id: str) -> Customer | None:
    rows = await tx.fetch(f"SELECT {CUSTOMER_COLS} FROM customers WHERE id = ?", customer_id)
    return _customer(tx, rows[0]) if rows else None

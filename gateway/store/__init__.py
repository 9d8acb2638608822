"""Durable storage behind one protocol, with an embedded default and a production engine.

``open_store(url)`` picks the engine from the URL scheme:

- ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite://:memory:`` — the
  embedded default, through aiosqlite;
- ``postgresql://user@host:port/db`` — PostgreSQL through an asyncpg pool.
"""

from __future__ import annotations

from .base import ConversationKey, Store, StoreError, StoreUnavailable, NotFound


def make_store(url: str) -> Store:
    """The store for ``url``, not yet opened (``await store.open()`` connects and migrates)."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteStore

        store: Store = SQLiteStore(url)
    elif url.startswith(("postgresql:", "postgres:")):
        from .postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise StoreError(f"unsupported store url {url!r}: use sqlite:///path.db or postgresql://...")
    return store


async def open_store(url: str) -> Store:
    """Connect, run pending migrations and return a ready store."""
    store = make_store(url)
    await store.open()
    return store


__all__ = ["ConversationKey", "Store", "StoreError", "StoreUnavailable", "NotFound", "open_store", "make_store"]

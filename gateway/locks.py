"""One asyncio.Lock per key (a conversation id), kept only while a task holds or waits for it.

The pipeline changes a conversation under its lock, so appends, state changes and their fan-out
happen one at a time per conversation and never block other conversations.
"""

from __future__ import annotations

import asyncio


class KeyedLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __call__(self, key: str) -> _Holding:
        """``async with locks(key):`` — the section runs while no other task holds ``key``."""
        return _Holding(self._entries, key)

    def __len__(self) -> int:
        """Keys held or waited for right now."""
        return len(self._entries)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # tasks holding or waiting


class _Holding:
    __slots__ = ("_entries", "_key")

    def __init__(self, entries: dict[str, _Entry], key: str) -> None:
        self._entries = entries
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._entries.get(self._key)
        if entry is None:
            entry = self._entries[self._key] = _Entry()
        entry.users += 1
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting
            self._leave(entry)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        entry = self._entries[self._key]
        entry.lock.release()
        self._leave(entry)

    def _leave(self, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._entries[self._key]

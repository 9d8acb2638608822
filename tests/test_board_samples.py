"""The supervisor board's queue samples in the store, on both engines: one row per (queue,
minute) whoever writes it first (several gateway processes sample the same minute), read back
by time, pruned by age, bad samples refused."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from gateway.model import QueueSample
from gateway.store import Store, open_store

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)


def minute(n: int, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=n, seconds=seconds)


async def test_a_minute_is_stored_once_read_back_in_order_and_pruned(store: Store) -> None:
    assert await store.add_queue_samples([QueueSample("general", minute(1, 12.5), 87.5, 3),
                                          QueueSample("vip_desk", minute(1, 13), None, 0),
                                          QueueSample("general", minute(0, 59.9), 100.0, 1)]) == 3
    # A second process sampling the same minutes (a little later in them) writes nothing.
    assert await store.add_queue_samples([QueueSample("general", minute(1, 40), 50.0, 9),
                                          QueueSample("general", minute(2), 80.0, 2)]) == 1
    assert await store.add_queue_samples([]) == 0
    found = await store.queue_samples(since=minute(0, 30))  # the minute of `since` is included
    assert found == [QueueSample("general", minute(0), 100.0, 1), QueueSample("general", minute(1), 87.5, 3),
                     QueueSample("general", minute(2), 80.0, 2), QueueSample("vip_desk", minute(1), None, 0)]
    assert all(s.minute.tzinfo is not None and s.minute.utcoffset() == timedelta(0) for s in found)
    assert await store.queue_samples(since=minute(2)) == [QueueSample("general", minute(2), 80.0, 2)]

    # Pruned by age: minutes before the minute of `before`.
    await store.add_queue_samples([QueueSample("general", minute(n), 90.0, n) for n in range(3, 6)])
    assert await store.prune_queue_samples(before=minute(3, 30)) == 4   # general 0, 1, 2 and vip_desk 1
    assert [(s.queue, s.waiting) for s in await store.queue_samples(since=T0)] == [("general", 3), ("general", 4),
                                                                                   ("general", 5)]
    assert await store.prune_queue_samples(before=minute(3)) == 0


async def test_bad_samples_are_refused_and_two_processes_store_a_minute_once(store: Store) -> None:
    for bad in (QueueSample("general", minute(0).replace(tzinfo=None), 90.0, 1),
                QueueSample("general", minute(0), 100.5, 1), QueueSample("general", minute(0), -1.0, 1),
                QueueSample("general", minute(0), 90.0, -2)):
        with pytest.raises(ValueError):
            await store.add_queue_samples([QueueSample("general", minute(5), 90.0, 1), bad])
    assert await store.queue_samples(since=T0) == []  # nothing of a refused batch is written

    other = await open_store(store.url)  # a second gateway process on the same database
    try:
        written = await asyncio.gather(*(s.add_queue_samples([QueueSample(q, minute(7, 1), 75.0, 2)
                                                              for q in ("general", "vip_desk")])
                                         for s in (store, other, store, other)))
    finally:
        await other.close()
    assert sum(written) == 2
    assert len(await store.queue_samples(since=T0)) == 2

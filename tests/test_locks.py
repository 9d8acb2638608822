"""gateway.locks.KeyedLocks: one holder per key, no memory kept for keys nobody holds."""

from __future__ import annotations

import asyncio

import pytest

from gateway.locks import KeyedLocks


async def test_one_holder_per_key_and_keys_do_not_block_each_other() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    a_inside = asyncio.Event()
    release_a = asyncio.Event()

    async def hold(key: str, name: str, wait: asyncio.Event | None = None) -> None:
        async with locks(key):
            order.append(f"{name} in")
            if wait is not None:
                a_inside.set()
                await wait.wait()
            order.append(f"{name} out")

    first = asyncio.ensure_future(hold("c1", "a", release_a))
    await a_inside.wait()
    second = asyncio.ensure_future(hold("c1", "b"))   # same key: waits for a
    await asyncio.wait_for(hold("c2", "c"), 1)       # another key: goes through while a holds c1
    await asyncio.sleep(0)
    assert order == ["a in", "c in", "c out"]
    assert len(locks) == 1
    release_a.set()
    await asyncio.gather(first, second)
    assert order == ["a in", "c in", "c out", "a out", "b in", "b out"]
    assert len(locks) == 0  # nothing kept once nobody holds or waits


async def test_a_waiter_cancelled_leaves_the_key_usable() -> None:
    locks = KeyedLocks()
    inside = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks("k"):
            inside.set()
            await release.wait()

    held = asyncio.ensure_future(holder())
    await inside.wait()
    waiter = asyncio.ensure_future(locks("k").__aenter__())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await held
    assert len(locks) == 0
    async with locks("k"):  # still works after a cancelled waiter
        assert len(locks) == 1


async def test_an_error_inside_releases_the_key() -> None:
    locks = KeyedLocks()
    with pytest.raises(RuntimeError):
        async with locks("k"):
            raise RuntimeError("boom")
    assert len(locks) == 0
    await asyncio.wait_for(locks("k").__aenter__(), 1)

"""KeyedLock: per-key mutual exclusion of one process (a recipient's decisions and sends)."""

from __future__ import annotations

import asyncio

from sendguard.store.keyed_lock import KeyedLock


async def test_a_key_is_held_by_one_holder_at_a_time() -> None:
    locks = KeyedLock()
    order: list[str] = []

    async def holder(name: str, keys: list[str]) -> None:
        async with locks.hold(keys):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(holder("a", ["x", "y"]), holder("b", ["y"]), holder("c", ["z"]))
    assert order.index("a out") < order.index("b in")  # b waited for a's "y"
    assert order.index("c in") < order.index("a out")  # "z" was free
    assert locks._locks == {}  # nothing is left once nobody holds or waits


async def test_a_cancelled_waiter_leaves_the_holders_key_held() -> None:
    locks = KeyedLock()
    holding = locks.hold(["x"])
    await holding.__aenter__()
    waiter = asyncio.create_task(_hold_briefly(locks, ["w", "x"]))
    await asyncio.sleep(0.01)  # the waiter holds "w" and waits for "x"
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    lock, users = locks._locks["x"]
    assert lock.locked() and users == 1  # still the first holder's
    assert "w" not in locks._locks  # the waiter gave back what it took
    third = asyncio.create_task(_hold_briefly(locks, ["x"]))
    await asyncio.sleep(0.01)
    assert not third.done()  # "x" is still held: nobody else gets in
    await holding.__aexit__(None, None, None)
    await asyncio.wait_for(third, 1)
    assert locks._locks == {}


async def test_an_error_inside_gives_every_key_back() -> None:
    locks = KeyedLock()
    try:
        async with locks.hold(["b", "a", "a"]):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert locks._locks == {}
    async with locks.hold(["a", "b"]):
        pass


async def _hold_briefly(locks: KeyedLock, keys: list[str]) -> None:
    async with locks.hold(keys):
        await asyncio.sleep(0)

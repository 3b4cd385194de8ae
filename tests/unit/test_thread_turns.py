"""The switch interval is short while the loop works through a large message, and only then
(sendguard/thread_turns.py): for good it would cost CPU at full load of small messages."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import pytest

from sendguard.delivery.smtp_data import encode
from sendguard.ingress.smtp_data import read_data
from sendguard.offload import LARGE
from sendguard.thread_turns import PROMPT, prompt_turns

NORMAL = 0.005


@pytest.fixture(autouse=True)
def normal_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(NORMAL)
    yield
    sys.setswitchinterval(before)


def test_held_the_interval_is_prompt_and_left_it_is_as_before() -> None:
    with prompt_turns():
        assert sys.getswitchinterval() == pytest.approx(PROMPT)
    assert sys.getswitchinterval() == pytest.approx(NORMAL)
    with pytest.raises(RuntimeError), prompt_turns():
        raise RuntimeError("a large message's step failed")
    assert sys.getswitchinterval() == pytest.approx(NORMAL)


def test_overlapping_holds_keep_it_prompt_until_the_last_is_left() -> None:
    first, second = prompt_turns(), prompt_turns()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # two large messages: the first one is done
    assert sys.getswitchinterval() == pytest.approx(PROMPT)
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(NORMAL)


async def intervals_while(work: asyncio.Task[object]) -> set[float]:
    """The switch intervals seen on the loop at every turn until `work` is done."""
    seen = set()
    while not work.done():
        seen.add(round(sys.getswitchinterval(), 6))
        await asyncio.sleep(0)
    await work
    return seen


async def test_a_large_message_s_data_form_is_made_with_prompt_turns() -> None:
    big = b"a line of text for the upstream\r\n" * (LARGE // 16)
    seen = await intervals_while(asyncio.create_task(encode(big)))
    assert round(PROMPT, 6) in seen
    assert sys.getswitchinterval() == pytest.approx(NORMAL)
    small = await intervals_while(asyncio.create_task(encode(b"Subject: hi\r\n\r\nhi\r\n")))
    assert small <= {round(NORMAL, 6)}


async def test_a_large_message_s_data_is_read_with_prompt_turns() -> None:
    reader = asyncio.StreamReader(limit=64 * 1024)
    line = b"a line of text from the client\r\n"
    lines = LARGE * 2 // len(line)

    async def client() -> None:
        for _ in range(lines // 1000):
            reader.feed_data(line * 1000)
            await asyncio.sleep(0)
        reader.feed_data(b".\r\n")

    feeding = asyncio.create_task(client())
    reading = asyncio.create_task(read_data(reader, None))
    seen = await intervals_while(reading)
    await feeding
    assert reading.result() == line * (lines // 1000 * 1000)
    assert round(PROMPT, 6) in seen and round(NORMAL, 6) in seen  # once past LARGE only
    assert sys.getswitchinterval() == pytest.approx(NORMAL)


async def test_a_client_that_trickles_its_large_data_gets_no_prompt_turns() -> None:
    # Past LARGE a fast client holds the short interval; once the client makes the loop wait
    # for its data, the interval is the normal one again (the loop idles meanwhile, and a
    # client must not keep every message of the process on the short interval).
    reader = asyncio.StreamReader(limit=64 * 1024)
    line = b"a line of text from the client\r\n"
    seen_fast: set[float] = set()
    seen_slow: set[float] = set()

    async def client() -> None:
        for _ in range(LARGE * 2 // len(line) // 1000):
            reader.feed_data(line * 1000)
            await asyncio.sleep(0)
        seen_fast.add(round(sys.getswitchinterval(), 6))
        for _ in range(5):  # then a trickle, slower than WAITED
            await asyncio.sleep(0.01)
            reader.feed_data(line * 2500)  # 80 KB: past the buffer's limit each time
            await asyncio.sleep(0.005)
            seen_slow.add(round(sys.getswitchinterval(), 6))
        reader.feed_data(b".\r\n")

    feeding = asyncio.create_task(client())
    await read_data(reader, None)
    await feeding
    assert seen_fast == {round(PROMPT, 6)}
    assert seen_slow == {round(NORMAL, 6)}
    assert sys.getswitchinterval() == pytest.approx(NORMAL)

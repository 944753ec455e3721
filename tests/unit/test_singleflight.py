"""SingleFlight: callers that miss together share one read, and only while it runs."""

from __future__ import annotations

import asyncio
import gc

import pytest

from antigv.store.singleflight import SingleFlight


class Reader:
    """A read that waits for the test to let it finish, counting how often it started."""

    def __init__(self) -> None:
        self.started = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.started += 1
        run = self.started
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return run


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_that_overlap_share_one_read():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    callers = [asyncio.ensure_future(flight.run("k", read)) for _ in range(10)]
    await settle()
    read.release.set()
    assert await asyncio.gather(*callers) == [1] * 10
    assert read.started == 1


async def test_a_finished_read_is_not_reused():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    read.release.set()
    assert await flight.run("k", read) == 1
    assert await flight.run("k", read) == 2


async def test_keys_do_not_share():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    both = asyncio.gather(flight.run("a", read), flight.run("b", read))
    await settle()
    read.release.set()
    assert sorted(await both) == [1, 2]


async def test_a_cancelled_caller_leaves_the_read_to_the_others():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    first = asyncio.ensure_future(flight.run("k", read))
    second = asyncio.ensure_future(flight.run("k", read))
    await settle()
    first.cancel()
    await settle()
    read.release.set()
    assert await second == 1
    assert first.cancelled()


async def test_a_failed_read_raises_for_every_caller_and_is_not_kept():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    read.fail = RuntimeError("database down")
    callers = [asyncio.ensure_future(flight.run("k", read)) for _ in range(3)]
    await settle()
    read.release.set()
    for caller in callers:
        with pytest.raises(RuntimeError, match="database down"):
            await caller
    read.fail = None
    assert await flight.run("k", read) == 2


async def test_forget_makes_the_next_caller_read_anew():
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    before = asyncio.ensure_future(flight.run("k", read))
    await settle()
    flight.forget("k")
    after = asyncio.ensure_future(flight.run("k", read))
    other = asyncio.ensure_future(flight.run("j", read))
    await settle()
    flight.forget()
    last = asyncio.ensure_future(flight.run("j", read))
    await settle()
    read.release.set()
    assert (await before, await after, await other, await last) == (1, 2, 3, 4)


async def test_an_abandoned_failure_is_not_reported_as_unretrieved(caplog):
    flight: SingleFlight[str, int] = SingleFlight()
    read = Reader()
    read.fail = RuntimeError("nobody waits")
    caller = asyncio.ensure_future(flight.run("k", read))
    await settle()
    caller.cancel()
    read.release.set()
    await settle()
    del caller
    gc.collect()  # asyncio reports an unretrieved exception when the task is collected
    assert "never retrieved" not in caplog.text

"""Background work: stopping it (nothing hangs, nothing is written twice) and usage retention."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

import antigv.accounting.usage
from antigv.accounting.usage import UsageRecord, UsageRecorder
from antigv.app import create_app
from antigv.appkeys import DB, TASKS
from antigv.ops.tasks import cancel_and_wait
from tests.conftest import make_config
from tests.quota_helpers import insert_account, insert_usage, insert_user, open_db, sql, usage_record, value


async def test_cancel_and_wait_ends_a_loop_whose_first_cancellation_was_swallowed():
    results: list[asyncio.Future[int]] = []

    async def loop_awaiting_results() -> None:
        while True:  # as a writer loop awaiting one aiopg query after another
            results.append(asyncio.get_running_loop().create_future())
            await asyncio.wait_for(results[-1], 5)

    task = asyncio.create_task(loop_awaiting_results())
    await asyncio.sleep(0)
    # The result and the cancellation in one loop turn: Python 3.11's wait_for
    # returns the result and drops the cancellation.
    results[-1].set_result(1)
    await asyncio.wait_for(cancel_and_wait(task), 2)
    assert task.cancelled()


async def test_closing_the_writer_writes_every_row_once(db_dsn):
    async with open_db(db_dsn) as db:
        recorder = UsageRecorder(db, interval=0.01)
        recorder.start()
        for n in range(300):
            recorder.record(usage_record(n))
            if n % 50 == 0:
                await asyncio.sleep(0.005)  # rounds of the writer run in between
        await recorder.close()
        assert recorder.pending == 0
        assert await value(db, "SELECT count(*) FROM usage_log") == 300
        assert await value(db, "SELECT count(DISTINCT request_id) FROM usage_log") == 300


async def test_a_failing_listener_does_not_stop_the_writer(db_dsn):
    async with open_db(db_dsn) as db:
        recorder = UsageRecorder(db, interval=0.01)
        seen: list[int] = []

        def broken(batch: list[UsageRecord]) -> None:
            raise RuntimeError("a bug in a listener")

        recorder.listeners += [broken, lambda batch: seen.extend(range(len(batch)))]
        recorder.start()
        recorder.record(usage_record(1))
        await asyncio.sleep(0.2)
        recorder.record(usage_record(2))
        await recorder.close()
        assert await value(db, "SELECT count(*) FROM usage_log") == 2
        assert len(seen) == 2  # the listener after the broken one still heard of both rows


# --- usage retention ---------------------------------------------------------------


@pytest.mark.parametrize("retention_days", [30, 0])
async def test_usage_rows_past_the_retention_are_purged(aiohttp_client, db_dsn, monkeypatch, retention_days):
    monkeypatch.setattr(antigv.accounting.usage, "PURGE_BATCH", 2)  # several statements for five rows
    app = create_app(make_config(db_dsn, tasks={"enabled": False, "usage_retention_days": retention_days}))
    await aiohttp_client(app)
    db = app[DB]
    user_id = await insert_user(db)
    account_id = await insert_account(db, user_id)
    now = datetime.now(UTC)
    for age in (40, 35, 31, 31, 30.5):
        await insert_usage(db, user_id, account_id, consumed_at=now - timedelta(days=age))
    recent = {
        await insert_usage(db, user_id, account_id, consumed_at=now - timedelta(days=age)) for age in (29, 1)
    }

    assert await app[TASKS].run_once("purge_old_usage")

    kept = {row["log_id"] for row in await sql(db, "SELECT log_id FROM usage_log")}
    assert len(kept) == (2 if retention_days else 7)
    assert recent <= kept

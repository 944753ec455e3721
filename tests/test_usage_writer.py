"""The usage writer: a row the database refuses is dropped alone, never with its batch
(issue 11 item 14), and counted in ``antigv_usage_rows_dropped``."""

from __future__ import annotations

from antigv.accounting.usage import BATCH_SIZE, UsageRecorder
from antigv.ops.metrics import Metrics
from tests.quota_helpers import open_db, sql, usage_record, value


def dropped(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("antigv_usage_rows_dropped_total") or 0.0


async def test_every_tenth_row_out_of_range_loses_only_those_rows(db_dsn):
    async with open_db(db_dsn) as db:
        metrics = Metrics()
        recorder = UsageRecorder(db, metrics=metrics)
        written_batches: list[int] = []
        recorder.listeners.append(lambda batch: written_batches.append(len(batch)))
        # The fuzzing run: every tenth reply claimed 3e9 prompt tokens, beyond the integer column.
        for n in range(209):
            recorder.record(usage_record(n, prompt_tokens=3_000_000_000 if n % 10 == 0 else 10))

        assert await recorder.flush() == 188

        rows = await sql(db, "SELECT request_id FROM usage_log ORDER BY log_id")
        assert [row["request_id"] for row in rows] == [f"req-{n}" for n in range(209) if n % 10]
        assert dropped(metrics) == 21
        assert sum(written_batches) == 188
        assert recorder.pending == 0


async def test_one_refused_row_in_a_full_batch_costs_a_few_statements(db_dsn):
    async with open_db(db_dsn) as db:
        metrics = Metrics()
        recorder = UsageRecorder(db, metrics=metrics)
        statements = 0
        execute = db.execute

        async def counting_execute(query: str, /, **params):
            nonlocal statements
            statements += 1
            return await execute(query, **params)

        db.execute = counting_execute  # type: ignore[method-assign]
        for n in range(BATCH_SIZE):
            recorder.record(usage_record(n, prompt_tokens=2**31 if n == 300 else 10))

        assert await recorder.flush() == BATCH_SIZE - 1
        assert await value(db, "SELECT count(*) FROM usage_log") == BATCH_SIZE - 1
        assert dropped(metrics) == 1
        assert statements < 4 * BATCH_SIZE.bit_length()  # a bisection, not a row at a time


async def test_rows_are_written_once_and_in_order_around_refused_ones(db_dsn):
    async with open_db(db_dsn) as db:
        recorder = UsageRecorder(db)
        bad = {3, 4, 17}
        for n in range(20):
            recorder.record(usage_record(n, prompt_tokens=2**40 if n in bad else 10))
        assert await recorder.flush() == 17
        rows = await sql(db, "SELECT request_id FROM usage_log ORDER BY log_id")
        assert [row["request_id"] for row in rows] == [f"req-{n}" for n in range(20) if n not in bad]

"""A test phase that runs too long fails, and shows where every asyncio task waits.

CI has a hard time limit for the whole run: without this, one await that never
returns ends the run with no result and no clue. Each phase (setup, call,
teardown) gets ``ANTIGV_TEST_TIMEOUT`` seconds (default 120; 0 turns it off).
Thread stacks alone would show only the event loop's ``select``, so the task
stacks are printed too.

A phase stuck inside C (a blocking libpq call retries through the signal) never
runs the Python handler; 30 s later a watchdog thread writes the thread stacks
to ``HANG_LOG`` and ends the run, and ``make test`` prints that file.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

LIMIT = float(os.environ.get("ANTIGV_TEST_TIMEOUT", "120"))
HANG_LOG = Path(__file__).resolve().parent.parent / "var" / "test-hang.log"

HANG_LOG_FILE = pytest.StashKey[IO[str]]()


def _dump_and_fail(signum: int, frame: Any) -> None:
    out = sys.__stderr__
    print(f"\n=== a test phase ran over {LIMIT:g} s; threads, then asyncio tasks ===", file=out)
    faulthandler.dump_traceback(file=out)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    for task in asyncio.all_tasks(loop) if loop is not None else ():
        print(f"--- {task!r}", file=out)
        task.print_stack(file=out)
    out.flush()
    pytest.fail(f"timed out after {LIMIT:g} s (stacks on stderr)", pytrace=False)


@contextmanager
def _phase(item: pytest.Item) -> Iterator[None]:
    hang_log = item.config.stash.get(HANG_LOG_FILE, None)
    if LIMIT <= 0 or hang_log is None:
        yield
        return
    hang_log.seek(0)
    hang_log.truncate()
    hang_log.write(f"stuck in {item.nodeid}\n")
    hang_log.flush()
    previous = signal.signal(signal.SIGALRM, _dump_and_fail)
    signal.setitimer(signal.ITIMER_REAL, LIMIT)
    faulthandler.dump_traceback_later(LIMIT + 30, exit=True, file=hang_log)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pytest_sessionstart(session: pytest.Session) -> None:
    HANG_LOG.parent.mkdir(exist_ok=True)
    session.config.stash[HANG_LOG_FILE] = HANG_LOG.open("w")


def pytest_sessionfinish(session: pytest.Session) -> None:
    # Reached only when no phase hung for good: nothing to report.
    hang_log = session.config.stash.get(HANG_LOG_FILE, None)
    if hang_log is not None:
        hang_log.close()
        HANG_LOG.unlink(missing_ok=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _phase(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _phase(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _phase(item):
        return (yield)

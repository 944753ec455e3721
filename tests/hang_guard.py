"""A test phase that runs too long fails, and shows where every asyncio task waits.

CI has a hard time limit for the whole run: without this, one await that never
returns ends the run with no result and no clue. Each phase (setup, call,
teardown) gets ``ANTIGV_TEST_TIMEOUT`` seconds (default 120; 0 turns it off).
Thread stacks alone would show only the event loop's ``select``, so the task
stacks are printed too.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

LIMIT = float(os.environ.get("ANTIGV_TEST_TIMEOUT", "120"))


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
def _phase() -> Iterator[None]:
    if LIMIT <= 0:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _dump_and_fail)
    signal.setitimer(signal.ITIMER_REAL, LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _phase():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _phase():
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _phase():
        return (yield)

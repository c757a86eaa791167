"""Waiting in tests: poll for what the test needs to see, never sleep for a guessed time.

A deadline only bounds a hang; it is not a guess at how long the work takes, so it is generous
(a passing test returns as soon as the condition holds, whatever the deadline). CI runs on a
shared 2-core machine, so every deadline is multiplied by INFERNO_TEST_TIME_SCALE (default 1):
a machine slower still turns into a slower run, not a red one.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

SCALE = float(os.environ.get("INFERNO_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    return seconds * SCALE


async def until(
    check: Callable[[], T | Awaitable[T | None] | None],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    on_miss: Callable[[], None] | None = None,
) -> T:
    """The first truthy value of `check` (sync or async); fails naming `what` after `timeout`
    (scaled). `on_miss` runs after each miss, e.g. to print why a child process died."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if on_miss is not None:
            on_miss()
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(interval)


def until_blocking(
    check: Callable[[], T | None], what: str, timeout: float = 60.0, *, interval: float = 0.1
) -> T:
    """`until` for tests that drive processes from synchronous code."""
    limit = scaled(timeout)
    deadline = time.monotonic() + limit
    while not (result := check()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(interval)
    return result

"""`cancel_and_wait` ends a task that loses a cancel, as Python 3.11's `wait_for` can."""

from __future__ import annotations

import asyncio

import pytest

from inferno.runtime.tasks import cancel_and_wait


async def test_a_loop_that_loses_its_first_cancel_still_ends():
    rounds = 0

    async def loop_losing_a_cancel() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if rounds == 1:
                    continue  # swallowed, as wait_for does when the reply is in
                raise

    task = asyncio.create_task(loop_losing_a_cancel())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every_s=0.01), 30)
    assert task.cancelled()
    assert rounds == 2


async def test_what_the_task_raised_instead_is_raised():
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(fails_on_cancel())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(task)

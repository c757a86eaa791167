"""Ending a task for sure.

On Python 3.11 a cancel can be lost: `asyncio.wait_for`, under every nats-py request, returns
the reply that arrived together with the cancel (or turns a cancel that races its timeout into a
TimeoutError, which nats-py makes a nats Error). A loop around such a request then runs on, and
whoever awaits the cancelled task waits forever. 3.12's `wait_for` keeps the cancel.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, every_s: float = 0.1) -> None:
    """Cancel `task` and wait until it has ended, cancelling again while it runs on. What it
    raised besides the cancel is raised here."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=every_s)
    if not task.cancelled():
        task.result()

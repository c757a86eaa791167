"""A test that hangs says where: after `INFERNO_TEST_HANG_S` seconds (default 600, several times
the slowest test on a shared 2-core machine) every thread's stack and every asyncio task's stack
go to stderr and to `inferno-test-hangs.txt` in the temp dir, and the hung test's task is
cancelled, so CI reports the hang with its stacks instead of running into its time limit."""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import io
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

HANG_S = float(os.environ.get("INFERNO_TEST_HANG_S", "600"))


def _watched(item: pytest.Item, phase: str) -> Iterator[None]:
    out = Path(tempfile.gettempdir()) / "inferno-test-hangs.txt"
    timer = threading.Timer(HANG_S, _report, args=(f"{item.nodeid} ({phase})", out))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return (yield from _watched(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return (yield from _watched(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    """A fixture's teardown can hang too (a task that never ends on cancel)."""
    return (yield from _watched(item, "teardown"))


def _report(nodeid: str, out: Path) -> None:
    with out.open("a") as file:
        file.write(f"=== {nodeid} still running after {HANG_S:.0f} s\n")
        file.flush()
        faulthandler.dump_traceback(file=file)
    loops = [o for o in gc.get_objects() if isinstance(o, asyncio.AbstractEventLoop)]
    for loop in loops:
        if loop.is_running():
            loop.call_soon_threadsafe(_dump_tasks_and_cancel, loop, nodeid, out)


def _dump_tasks_and_cancel(loop: asyncio.AbstractEventLoop, nodeid: str, out: Path) -> None:
    text = io.StringIO()
    for task in asyncio.all_tasks(loop):
        text.write(f"--- {task!r}\n")
        task.print_stack(file=text)
    with out.open("a") as file:
        file.write(text.getvalue())
    sys.stderr.write(f"{nodeid} hung: task stacks in {out}\n{text.getvalue()}")
    for task in asyncio.all_tasks(loop):
        if "pytest_asyncio" in repr(task.get_coro()) or "test_" in repr(task.get_coro()):
            task.cancel(f"hung for {HANG_S:.0f} s: stacks in {out}")

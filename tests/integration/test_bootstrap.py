"""Every service starts the same way (`inferno.runtime.bootstrap`): one line and an exit status for
what a person must fix, never a traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from nats.js.api import StreamConfig

from inferno.runtime.bootstrap import open_log, service_main
from inferno.runtime.settings import Settings

SERVICES = ("api", "scheduler", "executor")


@pytest.mark.parametrize("service", SERVICES)
def test_a_bad_variable_exits_2_naming_it(service):
    env = {**os.environ, "INFERNO_REPLICAS": "9", "INFERNO_EXECUTOR_SLOTS": "2"}
    done = subprocess.run(
        [sys.executable, "-m", f"inferno.{service}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"inferno {service}: INFERNO_REPLICAS='9' is invalid" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.usefixtures("restore_logging")
async def test_a_log_that_conflicts_exits_1_with_the_conflict(js, names, nats_url, capsys):
    """`open_log` finds the conflict at start, before the service does anything."""
    await js.add_stream(StreamConfig(name=names.cmd_stream, subjects=[f"{names.namespace}.x.>"]))
    settings = Settings(nats_url=nats_url, namespace=names.namespace)

    def serve(_from_env: Settings) -> None:
        asyncio.run(open_log(settings, "test-bootstrap"))

    assert await asyncio.to_thread(service_main, "scheduler", serve) == 1
    out = capsys.readouterr().out
    assert "cannot start" in out
    assert names.cmd_stream in out
    assert "subjects" in out

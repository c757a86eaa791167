"""Honest status for API-backed pipelines (issue 7, item 6), with every part real: the api served
by uvicorn on loopback, the scheduler and an executor with the `openai` backend, one event loop,
the session's nats-server. Endpoints: a dead port, and the OpenAI-compatible test server
(bench/openai_server.py) failing some rows.

- a pipeline whose endpoint is dead fails after `max_attempts` with the endpoint's error, instead
  of completing with every row an error and no metrics;
- a pipeline whose endpoint fails some rows completes, and the failed rows show as counts in the
  api's pipeline view, the leaderboard and `inferno ps`.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from nats.js import JetStreamContext

from bench import openai_server as fake
from inferno.api.app import create_app
from inferno.client import cli
from inferno.client.embedded import free_port
from inferno.events import decode_event
from inferno.events.batches import expanded
from inferno.events.events import ShardFailed, ShardReleased
from inferno.events.names import Names
from inferno.executor.backends import openai as openai_backend
from inferno.executor.service import run as run_executor
from inferno.jetstream import ensure_log, replay
from inferno.runtime.settings import Settings
from inferno.scheduler.service import run as run_scheduler
from tests.waiting import until

ROWS = [{"id": i, "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
POISON = {"What is 1 + 1?", "What is 4 + 4?"}  # one row of each 3-row shard never works
FAST = {"max_attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.02}
DEAD_URL = "http://127.0.0.1:1/v1"  # nothing listens on port 1
SETTLED = ("completed", "failed", "stopped", "deleted")


def answer_or_fail(prompt: str) -> str:
    if any(question in prompt for question in POISON):
        raise ValueError("this prompt always fails")  # the server answers it with a 500
    return fake.arithmetic(prompt)


@pytest.fixture
def server() -> Iterator[Any]:
    with fake.OpenAIServer(answer_or_fail) as s:
        yield s


@pytest.fixture
async def api_url(nats_url: str, names: Names, js: JetStreamContext) -> AsyncIterator[str]:
    """The whole cluster in this loop; yields the api's base URL."""
    settings = Settings(
        nats_url=nats_url, namespace=names.namespace, heartbeat_ttl_s=3.0, lease_ttl_s=1.0
    )
    await ensure_log(js, names, heartbeat_ttl_s=3.0, lease_ttl_s=1.0)
    stop = asyncio.Event()
    services = [
        asyncio.create_task(
            run_scheduler(settings, scheduler_id="s1", stop=stop, tick_interval=0.02)
        ),
        asyncio.create_task(
            run_executor(
                settings,
                executor_id="ex1",
                slots=2,
                stop=stop,
                backends={"openai": openai_backend.BACKEND},
                poll_s=0.1,
            )
        ),
    ]
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    api = uvicorn.Server(config)
    serving = asyncio.create_task(api.serve())

    def started() -> bool:
        assert not serving.done(), serving.result()
        return api.started

    await until(started, "the api to start", interval=0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        api.should_exit = True
        await asyncio.wait_for(serving, 30)
        stop.set()
        for task in services:
            await asyncio.wait_for(task, 30)


def openai_pipeline(name: str, base_url: str) -> dict[str, Any]:
    return {
        "pipeline_name": name,
        "pipeline_type": "openai",
        "model_config": {"model": "m"},
        "sampling_params": {"max_tokens": 8},
        "client_config": {"base_url": base_url, **FAST},
    }


async def settled(http: httpx.AsyncClient, pipeline_id: int) -> dict[str, Any]:
    """The pipeline once it is settled with nothing in flight."""

    async def settled_pipeline() -> dict[str, Any] | None:
        pipeline = (await http.get(f"/api/v1/pipelines/{pipeline_id}")).json()
        return pipeline if pipeline["status"] in SETTLED and not pipeline["in_flight"] else None

    return await until(settled_pipeline, f"pipeline {pipeline_id} to settle", 90)


async def events(js: JetStreamContext, names: Names) -> list[Any]:
    out: list[Any] = []
    await replay(js, names.evt_stream, lambda data, seq: out.extend(expanded(decode_event(data))))
    return out


async def test_a_dead_endpoint_fails_the_pipeline_and_row_errors_show_as_counts(
    api_url: str, server: Any, js: JetStreamContext, names: Names
) -> None:
    body = {
        "experiment_name": "honest",
        "num_shards": 2,
        "dataset": {"rows": ROWS},
        "eval": {
            "prompt": "{question}",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [
            openai_pipeline("dead", DEAD_URL),
            openai_pipeline("flaky", server.base_url),
        ],
        "max_attempts": 2,
        "retry_backoff_s": 0.1,
    }
    async with httpx.AsyncClient(base_url=api_url, timeout=30, trust_env=False) as http:
        created = (await http.post("/api/v1/experiments", json=body, params={"wait": 20})).json()
        assert created["status"] == "completed", created
        dead_id, flaky_id = (p["pipeline_id"] for p in created["pipelines"])
        dead = await settled(http, dead_id)
        flaky = await settled(http, flaky_id)
        board = (
            await http.get(f"/api/v1/experiments/{created['experiment_id']}/leaderboard")
        ).json()

    # the dead endpoint: retried within max_attempts, then the pipeline failed with its error
    assert dead["status"] == "failed", dead
    assert "all 3 rows failed at the endpoint" in dead["error"], dead["error"]
    assert "APIConnectionError" in dead["error"], dead["error"]
    assert "attempt 2 of 2" in dead["error"], dead["error"]
    log = await events(js, names)
    retried = [e for e in log if isinstance(e, ShardReleased) and e.pipeline_id == dead_id]
    failed = [e for e in log if isinstance(e, ShardFailed) and e.pipeline_id == dead_id]
    assert retried, log
    assert {e.attempt for e in retried} == {1}, log  # each shard tried again
    assert [e.attempt for e in failed] == [2], log  # ... and the first to fail twice ends it

    # some rows failing: completed, with the failed rows counted everywhere
    assert (flaky["status"], flaky["rows_processed"], flaky["row_errors"]) == ("completed", 6, 2)
    assert flaky["metrics"]["exact_match"]["count"] == 4
    entries = {e["pipeline_id"]: e for e in board["pipelines"]}
    assert (entries[flaky_id]["row_errors"], entries[dead_id]["row_errors"]) == (2, 0)

    out = io.StringIO()
    assert await asyncio.to_thread(cli.main, ["--api", api_url, "ps"], out) == 0
    header, *lines = out.getvalue().splitlines()
    columns = header.split()
    assert "ERRORS" in columns, header
    flaky_line = next(line for line in lines if line.split()[:2] == [str(flaky_id), "flaky"])
    assert flaky_line.split()[columns.index("ERRORS")] == "2", out.getvalue()
    assert any(
        f"pipeline {dead_id} (dead) failed" in line and "at the endpoint" in line for line in lines
    ), out.getvalue()

"""The events routes against a real nats-server: a log written by hand (commands as the api
stores them, events as the scheduler does), read back through the api running in-process.

`GET /api/v1/events` is called over ASGI; the SSE stream needs a real HTTP server (httpx's ASGI
transport waits for a response to end), so those tests run uvicorn on a loopback port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.api.app import create_app
from inferno.api.streams import Server
from inferno.events import Names, encode, subject_for
from inferno.events.commands import ClonePipeline, CreateExperiment, ResumePipeline, StopPipeline
from inferno.events.events import (
    ExperimentCreated,
    OperationFailed,
    PipelineCreated,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
)
from inferno.events.model import PipelineChanges, PipelineSpec
from inferno.runtime.settings import Settings
from tests import waiting

SECRET = "sk-handwritten-secret-0123456789"
SPECS = [
    PipelineSpec(pipeline_name=name, pipeline_type="sim", model_config={"model": name})
    for name in ("a", "b")
]


class HandLog:
    """Appends to the namespace's CMD and EVT as the api and the scheduler would."""

    def __init__(self, js: JetStreamContext, names: Names) -> None:
        self.js, self.names = js, names

    async def command(self, command: Any) -> int:
        ack = await self.js.publish(command.subject(self.names), encode(command))
        return ack.seq

    async def event(self, event: Any) -> int:
        ack = await self.js.publish(subject_for(self.names, event), encode(event))
        return ack.seq


async def story(log: HandLog) -> dict[str, int]:
    """Experiment (pipelines 1, 2) by alice; shard 0 of 1 done; bob stops 1 with a reason; carol
    clones 1 into 3 (with a key in the payload, which must never show); a failed resume of 2."""
    ic = {}
    ic["create"] = await log.command(
        CreateExperiment(
            experiment_id="exp-a",
            context_id="ctx-a",
            experiment_name="arith",
            dataset_ref="sha256-00",
            row_count=4,
            num_shards=2,
            pipelines=SPECS,
            actor="alice",
            reason="baseline",
            trace_id="t-1",
        )
    )
    await log.event(
        ExperimentCreated(
            ic_id=ic["create"],
            experiment_id="exp-a",
            context_id="ctx-a",
            experiment_name="arith",
            dataset_ref="sha256-00",
            row_count=4,
            num_shards=2,
            pipelines=SPECS,
            first_pipeline_id=1,
        )
    )
    for pid in (1, 2):
        await log.event(ShardAssigned(pipeline_id=pid, shard=0, attempt=1, executor_id="ex-1"))
    await log.event(ShardCompleted(pipeline_id=1, shard=0, attempt=1, executor_id="ex-1"))
    ic["stop"] = await log.command(StopPipeline(pipeline_id=1, actor="bob", reason="diverging"))
    await log.event(PipelineStopped(ic_id=ic["stop"], pipeline_id=1))
    changes = PipelineChanges(pipeline_name="a2", client_config={"api_key": SECRET})
    ic["clone"] = await log.command(ClonePipeline(pipeline_id=1, changes=changes, actor="carol"))
    spec = PipelineSpec(pipeline_name="a2", pipeline_type="sim", client_config={"api_key": SECRET})
    await log.event(
        PipelineCreated(
            ic_id=ic["clone"],
            pipeline_id=3,
            experiment_id="exp-a",
            context_id="ctx-a",
            spec=spec,
            parent_pipeline_id=1,
            source="clone",
        )
    )
    ic["resume"] = await log.command(ResumePipeline(pipeline_id=2, actor="dave"))
    await log.event(
        OperationFailed(ic_id=ic["resume"], error="pipeline 2 is not stopped", pipeline_id=2)
    )
    return ic


@asynccontextmanager
async def in_process(nc: NATS, names: Names) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(Settings(namespace=names.namespace), nc=nc)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client, app


@pytest.fixture
async def told(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Any]:
    """The api over a log holding `story`; (client, ic_ids, app)."""
    async with in_process(nc, names) as (client, app):
        ic = await story(HandLog(js, names))
        model = app.state.gateway.projection.model
        await waiting.until(lambda: model.evt_seq >= 7 and model.cmd_seq >= 4, "the projection")
        yield client, ic, app


async def entries(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


async def test_the_whole_history_in_order_with_who_and_why(told: Any):
    client, ic, _ = told
    shown = await entries(client)
    assert [(e["stream"][-3:], e["type"]) for e in shown] == [
        ("CMD", "create_experiment"),
        ("EVT", "experiment_created"),
        ("EVT", "shard_assigned"),
        ("EVT", "shard_assigned"),
        ("EVT", "shard_completed"),
        ("CMD", "stop_pipeline"),
        ("EVT", "pipeline_stopped"),
        ("CMD", "clone_pipeline"),
        ("EVT", "pipeline_created"),
        ("CMD", "resume_pipeline"),
        ("EVT", "operation_failed"),
    ]
    stopped = shown[6]
    assert (stopped["actor"], stopped["reason"]) == ("bob", "diverging")
    assert stopped["ids"] == {"ic_id": ic["stop"], "pipeline_id": 1, "experiment_id": "exp-a"}
    assert shown[1]["trace_id"] == "t-1"
    assert shown[4]["ids"] == {"pipeline_id": 1, "shard": 0, "experiment_id": "exp-a"}
    assert shown[4]["actor"] is None  # the scheduler's own decision: nobody asked
    assert all(e["time"].endswith("Z") for e in shown)
    assert SECRET not in json.dumps(shown)
    assert shown[7]["payload"]["changes"]["client_config"]["api_key"] == "***"


async def test_one_pipeline_s_story_includes_its_experiment_and_clones(told: Any):
    client, _, _ = told
    shown = await entries(client, pipeline_id=1)
    assert [e["type"] for e in shown] == [
        "create_experiment",
        "experiment_created",
        "shard_assigned",
        "shard_completed",
        "stop_pipeline",
        "pipeline_stopped",
        "clone_pipeline",
        "pipeline_created",
    ]
    assert shown[-1]["ids"]["pipeline_id"] == 3
    assert shown[-1]["actor"] == "carol"
    assert [e["type"] for e in await entries(client, pipeline_id=2)] == [
        "create_experiment",
        "experiment_created",
        "shard_assigned",
        "resume_pipeline",
        "operation_failed",
    ]


async def test_filters_by_ic_id_type_actor_experiment_and_stream(told: Any):
    client, ic, _ = told
    by_ic = await entries(client, ic_id=ic["stop"])
    assert [(e["type"], e["seq"]) for e in by_ic] == [
        ("stop_pipeline", ic["stop"]),
        ("pipeline_stopped", 5),
    ]
    assert [e["ids"]["ic_id"] for e in await entries(client, actor="bob")] == [ic["stop"]] * 2
    typed = await entries(client, type="stop_pipeline,operation_failed")
    assert [e["type"] for e in typed] == ["stop_pipeline", "operation_failed"]
    assert len(await entries(client, experiment_id="exp-a")) == 11
    assert await entries(client, experiment_id="exp-other") == []
    assert {e["stream"][-3:] for e in await entries(client, stream="cmd")} == {"CMD"}
    assert [e["seq"] for e in await entries(client, stream="evt", from_seq=4, to_seq=6)] == [
        4,
        5,
        6,
    ]


async def test_time_ranges_in_rfc3339_and_epoch_seconds(told: Any):
    client, _, _ = told
    shown = await entries(client)
    since = shown[5]["time"]
    assert [e["seq"] for e in await entries(client, since=since)] == [e["seq"] for e in shown[5:]]
    until = shown[2]["time"]
    assert len(await entries(client, until=until)) >= 3
    assert await entries(client, since="2000-01-01T00:00:00Z", until="946684800") == []


async def test_pages_follow_the_cursor_and_miss_and_repeat_nothing(told: Any):
    client, _, _ = told
    everything = await entries(client)
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        body = (await client.get("/api/v1/events", params=params)).json()
        seen += body["entries"]
        after, pages = body["cursor"], pages + 1
        if not body["more"]:
            break
    assert [(e["stream"], e["seq"]) for e in seen] == [(e["stream"], e["seq"]) for e in everything]
    assert pages == 4
    assert after == "cmd:4,evt:7"


async def test_pipelines_at_a_moment_are_folded_from_the_log_up_to_it(told: Any):
    client, ic, _ = told
    [stop] = await entries(client, ic_id=ic["stop"], stream="cmd")
    then = (await client.get("/api/v1/pipelines", params={"at": stop["time"]})).json()
    assert {p["pipeline_id"]: p["status"] for p in then} == {1: "ongoing", 2: "ongoing"}
    assert then[0]["shards_completed"] == 1
    now = (await client.get("/api/v1/pipelines")).json()
    assert {p["pipeline_id"]: p["status"] for p in now}[1] == "stopped"
    assert (await client.get("/api/v1/pipelines", params={"at": "0"})).json() == []
    refused = await client.get("/api/v1/pipelines", params={"at": "noon"})
    assert refused.status_code == 400
    assert "'at'" in refused.json()["error"]


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"after": "evt=3"}, "after"),
        ({"type": "pipeline_exploded"}, "type"),
        ({"stream": "logs"}, "stream"),
        ({"pipeline_id": "one"}, "pipeline_id"),
        ({"limit": "0"}, "limit"),
    ],
)
async def test_bad_filters_are_400s_naming_the_parameter(told: Any, params: dict, named: str):
    client, _, _ = told
    for path in ("/api/v1/events", "/api/v1/events/stream"):
        if path.endswith("stream") and named == "limit":
            continue
        response = await client.get(path, params=params)
        assert response.status_code == 400, response.text
        assert f"'{named}'" in response.json()["error"]


# the live stream, over a real HTTP server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@asynccontextmanager
async def served(nc: NATS, names: Names) -> AsyncIterator[str]:
    port = free_port()
    app = create_app(Settings(namespace=names.namespace, api_port=port), nc=nc)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on")
    server = Server(config, app.state.event_streams)
    task = asyncio.create_task(server.serve())
    await waiting.until(lambda: server.started, "uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, waiting.scaled(30))


async def sse_messages(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Each SSE message as {field: value} (comments under ":")."""
    message: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if message:
                yield message
            message = {}
            continue
        name, _, value = line.partition(":")
        message[name] = value.removeprefix(" ") if name else message.get("", "") + value
    if message:
        yield message


async def read_entries(stream: AsyncIterator[dict[str, str]], count: int) -> list[dict[str, str]]:
    found = []
    async for message in stream:
        if "data" in message:
            found.append(message)
            if len(found) == count:
                break
    return found


async def test_the_stream_pushes_new_entries_and_resumes_after_a_disconnect(
    nc: NATS, js: JetStreamContext, names: Names
):
    async with served(nc, names) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        log = HandLog(js, names)
        async with http.stream("GET", "/api/v1/events/stream", params={"heartbeat": 0.5}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            messages = sse_messages(r)
            first = await anext(messages)
            assert first["id"] == "cmd:0,evt:0"  # nothing stored yet: it follows from the start
            ic = await story(log)
            got = await read_entries(messages, 6)
        assert [json.loads(m["data"])["type"] for m in got][:2] == [
            "create_experiment",
            "experiment_created",
        ]
        last_id = got[-1]["id"]
        # disconnected: more is stored meanwhile; a resume gets exactly the rest
        later = await log.command(StopPipeline(pipeline_id=2, actor="erin", reason="later"))
        await log.event(PipelineStopped(ic_id=later, pipeline_id=2))
        headers = {"Last-Event-ID": last_id}
        async with http.stream("GET", "/api/v1/events/stream", headers=headers) as r:
            rest = await read_entries(sse_messages(r), 7)
        everything = (await http.get("/api/v1/events")).json()["entries"]
        streamed = [json.loads(m["data"]) for m in got + rest]
        for stream in (names.cmd_stream, names.evt_stream):  # each stream in order, none twice
            assert [e["seq"] for e in streamed if e["stream"] == stream] == [
                e["seq"] for e in everything if e["stream"] == stream
            ]
        assert len(streamed) == len(everything) == 13
        assert {e["actor"] for e in streamed if e["ids"].get("ic_id") == later} == {"erin"}
        assert ic["resume"] == 4


async def test_heartbeats_and_filters_on_the_stream(nc: NATS, js: JetStreamContext, names: Names):
    async with served(nc, names) as url, httpx.AsyncClient(base_url=url, timeout=60) as http:
        log = HandLog(js, names)
        params: dict[str, Any] = {"heartbeat": 0.5, "pipeline_id": 1, "type": "pipeline_stopped"}
        async with http.stream("GET", "/api/v1/events/stream", params=params) as r:
            messages = sse_messages(r)
            await anext(messages)
            beat = await anext(messages)
            assert beat == {"": " heartbeat"}
            await story(log)
            [stopped] = await read_entries(messages, 1)
        entry = json.loads(stopped["data"])
        assert (entry["type"], entry["ids"]["pipeline_id"], entry["actor"]) == (
            "pipeline_stopped",
            1,
            "bob",
        )


async def test_sigterm_ends_open_streams_instead_of_waiting_on_them(
    nats_url: str, names: Names, js: JetStreamContext, tmp_path: Any
):
    """`python -m inferno.api` as people run it: a SIGTERM with a stream open exits, cleanly."""
    port = free_port()
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "INFERNO_NAMESPACE": names.namespace,
        "INFERNO_API_PORT": str(port),
    }
    log = (tmp_path / "api.log").open("wb")
    api = subprocess.Popen(  # noqa: ASYNC220 - started once; the test awaits its effects
        [sys.executable, "-m", "inferno.api"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:

            async def up() -> bool | None:
                try:
                    return (await http.get("/healthz")).status_code == 200 or None
                except httpx.TransportError:
                    return api.poll() is not None or None  # died: the assertion below says so

            await waiting.until(up, "the api to listen", 60)  # type: ignore[arg-type]
            assert api.poll() is None, (tmp_path / "api.log").read_text()
            async with http.stream("GET", "/api/v1/events/stream") as r:
                messages = sse_messages(r)
                await anext(messages)
                api.send_signal(signal.SIGTERM)
                rest = [m async for m in messages]  # the api ends the response
            assert all("data" not in m for m in rest)
        await waiting.until(lambda: api.poll() is not None, "the api to exit", 30)
        shown = (tmp_path / "api.log").read_text()
        assert "Finished server process" in shown, shown  # a graceful shutdown, all the way
        assert api.returncode in (0, -signal.SIGTERM), shown  # uvicorn re-raises the signal
    finally:
        if api.poll() is None:
            api.kill()
        api.wait()
        log.close()

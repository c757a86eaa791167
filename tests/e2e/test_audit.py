"""The audit trail on a real cluster: the events API, the SSE stream (an event arrives; a resume
after a disconnect misses nothing and repeats nothing), and `inferno events | history | ps --at
| verify` run as people run them, as separate processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

INFERNO = Path(sys.executable).parent / "inferno"
ACTOR = {"X-Inferno-Actor": "auditor@e2e"}


async def inferno(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(INFERNO), "--api", api_url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    message: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if message:
                yield message
            message = {}
            continue
        name, _, value = line.partition(":")
        message[name] = value.removeprefix(" ")


async def until_entry(
    messages: AsyncIterator[dict[str, str]], check: Any
) -> tuple[dict, str, float]:
    """The first streamed entry `check` accepts, the id it came with, and when it arrived."""
    async for message in messages:
        if "data" in message:
            entry = json.loads(message["data"])
            if check(entry):
                return entry, message["id"], time.time()
    raise AssertionError("the stream ended")


async def test_who_stopped_it_and_why_live_and_after_the_fact(shared_live: Any):
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("slow", latency_ms=200), live.sim("other", latency_ms=200))
    )
    pid = created["pipelines"][0]["pipeline_id"]
    await live.running(pid, completed=1)  # a shard done, one in flight
    http = live.http
    url = "/api/v1/events/stream"
    async with http.stream("GET", url, params={"pipeline_id": pid, "heartbeat": 1}) as r:
        assert r.status_code == 200
        messages = sse(r)
        first = await anext(messages)
        assert "id" in first
        stop = await live.post(
            f"/api/v1/pipelines/{pid}/stop", {"reason": "diverging"}, headers=ACTOR
        )
        stopped, last_id, arrived = await until_entry(
            messages, lambda e: e["type"] == "pipeline_stopped"
        )
    assert stopped["ids"]["ic_id"] == stop["ic_id"]
    assert (stopped["actor"], stopped["reason"]) == ("auditor@e2e", "diverging")
    print(f"stop settled -> arrived on the stream: {arrived - _epoch(stopped['time']):.4f} s")

    # disconnected: more happens; a resume with Last-Event-ID gets exactly what was missed
    await live.post(f"/api/v1/pipelines/{pid}/resume", {"reason": "false alarm"}, headers=ACTOR)
    clone = await live.post(f"/api/v1/pipelines/{pid}/clone?wait=10", {"reason": "a copy"})
    clone_id = clone["result"]["pipeline_id"]
    headers = {"Last-Event-ID": last_id}
    streamed = []
    async with http.stream("GET", url, params={"pipeline_id": pid}, headers=headers) as r:
        messages = sse(r)
        async for message in messages:
            if "data" in message:
                streamed.append(json.loads(message["data"]))
                if streamed[-1]["type"] == "pipeline_created":
                    resumed_to = message["id"]
                    break
    assert streamed[-1]["ids"]["pipeline_id"] == clone_id
    paged = await live.get("/api/v1/events", pipeline_id=pid, after=last_id, limit=5000)
    upto = dict(part.split(":") for part in resumed_to.split(","))
    wanted = [
        e for e in paged["entries"] if e["seq"] <= int(upto[e["stream"].rsplit("_", 1)[1].lower()])
    ]
    key = lambda e: (e["stream"], e["seq"])  # noqa: E731
    assert sorted(map(key, streamed)) == sorted(map(key, wanted))  # nothing missed
    assert len(set(map(key, streamed))) == len(streamed)  # nothing twice

    # one curl: who stopped it and why
    answer = await live.get("/api/v1/events", pipeline_id=pid, type="pipeline_stopped")
    [entry] = answer["entries"]
    assert (entry["actor"], entry["reason"]) == ("auditor@e2e", "diverging")

    # the CLI, as separate processes
    api = live.cluster.api_url
    result = await inferno(api, "events", "--pipeline", str(pid), "--type", "stop_pipeline")
    assert result.returncode == 0, result.stderr
    assert 'by auditor@e2e: "diverging"' in result.stdout
    result = await inferno(api, "events", "--ic-id", str(stop["ic_id"]), "--json")
    assert [json.loads(line)["type"] for line in result.stdout.splitlines()] == [
        "stop_pipeline",
        "pipeline_stopped",
    ]
    result = await inferno(api, "history", str(pid))
    assert result.returncode == 0, result.stderr
    story = result.stdout
    assert "created as 'slow' (sim, model sim-slow)" in story
    assert 'stopped by auditor@e2e: "diverging"' in story
    assert 'resumed by auditor@e2e: "false alarm"' in story
    assert f"cloned into pipeline {clone_id}" in story
    assert f"clones: {clone_id}" in story
    assert "done" in story  # shards done

    # ps --at: as it was just before the stop, though it has moved on since
    before_stop = await live.get("/api/v1/events", ic_id=stop["ic_id"], stream="cmd")
    moment = before_stop["entries"][0]["time"]
    then = await live.get("/api/v1/pipelines", at=_before(moment))
    assert {p["pipeline_id"]: p["status"] for p in then}[pid] == "ongoing"
    assert clone_id not in {p["pipeline_id"] for p in then}
    result = await inferno(api, "ps", "--at", moment, "--all")
    assert result.returncode == 0, result.stderr
    assert f"as of {moment}" in result.stdout


async def test_verify_holds_on_a_real_run(shared_live: Any):
    live = shared_live
    created = await live.create_experiment(live.experiment_body(live.sim("v"), num_shards=4))
    [pid] = [p["pipeline_id"] for p in created["pipelines"]]
    await live.settled(pid)
    api = live.cluster.api_url
    result = await inferno(api, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ALL HELD" in result.stdout
    assert "shard_completed_once" in result.stdout
    result = await inferno(api, "verify", "--json")
    body = json.loads(result.stdout)
    assert body["held"] is True
    assert body["counts"]["shard_completed"] >= 4


async def test_bad_filters_are_clear_errors(shared_live: Any):
    live = shared_live
    response = await live.http.get("/api/v1/events", params={"since": "last tuesday"})
    assert response.status_code == 400
    assert "'since'" in response.json()["error"]
    result = await inferno(live.cluster.api_url, "events", "--since", "last tuesday")
    assert result.returncode == 2
    assert "--since" in result.stderr
    assert "Traceback" not in result.stderr


def _epoch(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339).timestamp()


def _before(rfc3339: str) -> str:
    """One microsecond earlier."""
    earlier = datetime.fromisoformat(rfc3339) - timedelta(microseconds=1)
    return earlier.isoformat().replace("+00:00", "Z")


async def test_events_follow_prints_the_history_then_what_happens_next(shared_live: Any):
    live = shared_live
    created = await live.create_experiment(live.experiment_body(live.sim("f", latency_ms=200)))
    [pid] = [p["pipeline_id"] for p in created["pipelines"]]
    await live.running(pid)
    args = ["--api", live.cluster.api_url, "events", "--follow", "--pipeline", str(pid)]
    follower = subprocess.Popen(  # noqa: ASYNC220 - one child, read from a thread
        [str(INFERNO), *args, "--type", "create_experiment,pipeline_stopped"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 60)  # type: ignore[union-attr]
        assert " create_experiment " in first  # the history first
        await live.post(f"/api/v1/pipelines/{pid}/stop", {"reason": "enough"}, headers=ACTOR)
        second = await asyncio.wait_for(asyncio.to_thread(follower.stdout.readline), 60)  # type: ignore[union-attr]
        assert " pipeline_stopped " in second
        assert 'by auditor@e2e: "enough"' in second
    finally:
        follower.kill()
        follower.wait()

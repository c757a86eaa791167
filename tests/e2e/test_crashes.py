"""Crashes in a live cluster: the leader scheduler or an executor killed with SIGKILL mid-run, the
api restarted. After each, every (pipeline, shard) is completed exactly once, and the state
folded from INFERNO_EVT sequence 1 has every pipeline that was not stopped or deleted completed.

The clusters run with a 2 s heartbeat TTL, so a dead executor's shards come back within seconds.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from inferno.client.embedded import die_with_parent_hook
from inferno.client.launcher import Child
from inferno.events.events import ShardAssigned, ShardCompleted, ShardReleased

if TYPE_CHECKING:
    from conftest import Live

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_HEARTBEAT_TTL_S": "2"}


async def shards_done(live: Live, pipeline_ids: list[int]) -> int:
    return sum([(await live.pipeline(pid))["shards_completed"] for pid in pipeline_ids])


async def test_leader_killed_mid_run(live: Live) -> None:
    started = time.monotonic()
    created = await live.create_experiment(
        live.experiment_body(*(live.sim(name, latency_ms=40) for name in ("a", "b", "c")))
    )
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    leader = await live.leader()
    standby = ({"scheduler-1", "scheduler-2"} - {leader}).pop()

    async def some_done() -> bool:
        return await shards_done(live, ids) >= 4

    await live.until(some_done, "4 shards completed")
    live.child(leader).process.kill()  # type: ignore[union-attr]
    killed_at = (await live.js.stream_info(live.names.evt_stream)).state.last_seq
    assert await shards_done(live, ids) < 24  # mid-run

    # commands sent while nobody leads wait in INFERNO_CMD for the standby
    stop = await live.post("/dispatcher/stop-pipeline", {"pipeline_id": ids[2]})
    assert stop["status"] == "pending"
    resume = await live.post(
        "/dispatcher/resume-pipeline", {"pipeline_id": ids[2]}, params={"wait": 20}
    )
    assert resume["status"] == "completed", resume
    assert (await live.operation(stop["ic_id"]))["status"] == "completed"

    final = await live.settled(*ids, timeout=30)
    assert [(p["status"], p["shards_completed"]) for p in final] == [("completed", 8)] * 3
    assert await live.leader() == standby
    last = (await live.js.stream_info(live.names.evt_stream)).state.last_seq
    assert last > killed_at
    before = await live.js.get_msg(live.names.evt_stream, killed_at)
    after = await live.js.get_msg(live.names.evt_stream, last)
    assert (before.headers or {})["Inferno-Scheduler"] == leader
    assert (after.headers or {})["Inferno-Scheduler"] == standby
    assert int((after.headers or {})["Inferno-Term"]) > int((before.headers or {})["Inferno-Term"])
    live.assert_run_complete(await live.events())
    print(f"leader kill: {time.monotonic() - started:.1f}s")


async def test_executor_killed_mid_shard(live: Live) -> None:
    started = time.monotonic()
    created = await live.create_experiment(
        live.experiment_body(
            live.sim("a", latency_ms=60), live.sim("b", latency_ms=60), retry_backoff_s=0.2
        )
    )
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    running = await live.running(ids[0], completed=1)
    victim = running["in_flight"][0]["executor_id"]
    live.child(victim).process.kill()  # type: ignore[union-attr]
    held = {
        (pid, shard)
        for pid, p in (await live.state()).pipelines.items()
        for shard, a in p.in_flight.items()
        if a.executor_id == victim
    }
    assert (ids[0], running["in_flight"][0]["shard"]) in held

    final = await live.settled(*ids, timeout=30)
    assert [(p["status"], p["shards_completed"]) for p in final] == [("completed", 8)] * 2
    events = await live.events()
    live.assert_run_complete(events)

    reassigned = 0
    for pid, shard in sorted(held):
        about = [e for _, e in events if getattr(e, "pipeline_id", None) == pid]
        about = [e for e in about if getattr(e, "shard", None) == shard]
        [done] = [e for e in about if isinstance(e, ShardCompleted)]
        if done.attempt == 1 and done.executor_id == victim:
            continue  # its report was in INFERNO_EXEC before the kill
        [released] = [e for e in about if isinstance(e, ShardReleased) and e.attempt == 1]
        assert released.reason == f"executor {victim} heartbeat lapsed"
        [again] = [e for e in about if isinstance(e, ShardAssigned) and e.attempt == 2]
        assert again.executor_id != victim
        assert done.attempt >= 2  # 2, unless a loaded machine let the survivor lapse too
        assert done.executor_id != victim
        reassigned += 1
    assert reassigned >= 1
    executors = await live.get("/api/v1/executors")  # its heartbeat expired with the TTL
    assert [e["executor_id"] for e in executors] == [({"exec-1", "exec-2"} - {victim}).pop()]
    print(f"executor kill: {reassigned} shard(s) reassigned, {time.monotonic() - started:.1f}s")


def stop_api(api: Child) -> None:
    """SIGTERM the api and wait for its graceful shutdown."""
    assert api.process is not None
    api.process.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal it caught
    assert api.process.wait(10) in (0, -signal.SIGTERM)
    assert api.log_file is not None
    assert "Application shutdown complete" in api.log_file.read_text()


def start_api(api: Child) -> None:
    """Start the api again as LocalCluster starts its children: the same argv (`python -m
    inferno.api`) and environment, output appended to the same log, dying with this process
    (call it from the event loop's thread: the kernel ties that to the starting thread)."""
    assert api.log_file is not None
    with api.log_file.open("ab") as log:
        api.process = subprocess.Popen(
            api.argv,
            env=api.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )


async def restarted(live: Live) -> None:
    api = live.child("api")
    await asyncio.to_thread(stop_api, api)
    start_api(api)

    async def ready() -> bool:
        try:
            return (await live.http.get("/readyz")).status_code == 200
        except httpx.TransportError:  # not listening yet
            return False

    await live.until(ready, "the new api to be ready", timeout=20)


async def projection(live: Live) -> dict[str, Any]:
    return {
        what: await live.get(f"/api/v1/{what}")
        for what in ("experiments", "pipelines", "operations")
    }


def shown(pipeline: dict[str, Any]) -> dict[str, Any]:
    keys = ("pipeline_id", "status", "shards_completed", "rows_processed", "in_flight")
    return {k: pipeline[k] for k in (*keys, "parent_pipeline_id", "source")}


async def test_api_restart_rebuilds_its_projection(live: Live) -> None:
    started = time.monotonic()
    created = await live.create_experiment(
        live.experiment_body(*(live.sim(name, latency_ms=40) for name in ("a", "b", "c")))
    )
    a, b, c = (p["pipeline_id"] for p in created["pipelines"])
    await live.running(a, completed=1)
    await live.post(f"/api/v1/pipelines/{a}/stop", params={"wait": 5})
    clone = await live.post(
        f"/api/v1/pipelines/{b}/clone",
        {"sampling_params": {"temperature": 0.5}},
        params={"wait": 5},
    )
    d = clone["result"]["pipeline_id"]
    await live.post(f"/api/v1/pipelines/{c}/delete", params={"wait": 5})

    await restarted(live)  # mid-run: the scheduler and executors go on without the api
    await live.post(f"/api/v1/pipelines/{a}/resume", params={"wait": 5})
    final = await live.settled(a, b, c, d, timeout=30)
    assert [p["status"] for p in final] == ["completed", "completed", "deleted", "completed"]

    before = await projection(live)
    await restarted(live)
    assert await projection(live) == before

    # and it is what a fold of the log from sequence 1 gives
    live.assert_run_complete(await live.events())
    model = await live.read_model()
    assert [shown(p) for p in before["pipelines"]] == [
        {
            "pipeline_id": pid,
            "status": p.status,
            "shards_completed": len(p.completed),
            "rows_processed": p.rows_processed,
            "in_flight": [],
            "parent_pipeline_id": p.parent_pipeline_id,
            "source": p.source,
        }
        for pid, p in sorted(model.pipelines.items())
    ]
    assert before["operations"] == [
        {
            "ic_id": op.ic_id,
            "pipeline_id": op.pipeline_id,
            "operation": op.operation,
            "status": op.status,
            "error": op.error,
            "created_at": op.created_at,
            "processed_at": op.processed_at,
            "result": op.result,
            "actor": op.actor,
            "reason": op.reason,
            "trace_id": op.trace_id,
        }
        for _, op in sorted(model.operations.items())
    ]
    print(f"api restarts: {time.monotonic() - started:.1f}s")

"""Admission by declared resources and the executor registry's cleanup, on a real cluster.

The cluster's two executors run on this CPU-only host. A pipeline that needs a GPU stays
unassigned and says why; once an executor declares one (INFERNO_EXECUTOR_RESOURCES), it runs
there, never more of its shards at once than the declared memory holds. An executor killed with
SIGKILL is removed by `inferno executors --prune` before its heartbeat TTL runs out, while the
live one stays; the route needs the token.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inferno.events.events import ShardAssigned, ShardCompleted, ShardFailed, ShardReleased

if TYPE_CHECKING:
    from conftest import Live

pytestmark = pytest.mark.slow

TOKEN = "e2e-resources-token"
TTL_S = 24.0  # cleanup may remove what is silent for 2/3 of it, before the bucket expires it
INFERNO = Path(sys.executable).parent / "inferno"


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_HEARTBEAT_TTL_S": str(TTL_S), "INFERNO_TOKEN": TOKEN}


def needing_gpu(name: str, gpu_mem_gb: float) -> dict[str, Any]:
    return {
        "pipeline_name": name,
        "pipeline_type": "sim",
        "model_config": {"model": "sim-big", "latency_ms_per_row": 20, "accuracy": 0.9},
        "resources": {"gpus": 1, "gpu_mem_gb": gpu_mem_gb},
    }


async def test_a_gpu_pipeline_waits_for_an_executor_that_declares_enough(live: Live) -> None:
    body = live.experiment_body(needing_gpu("big", 50), live.sim("small", latency_ms=5))
    created = await live.create_experiment(body)
    big, small = (p["pipeline_id"] for p in created["pipelines"])
    await live.settled(small)

    waiting = await live.pipeline(big)
    assert waiting["status"] == "new"
    assert waiting["in_flight"] == []
    assert waiting["resources"] == {"gpus": 1.0, "gpu_mem_gb": 50.0}
    assert waiting["unschedulable"] == "needs a GPU; every executor that runs sim is CPU-only"
    listed = {p["pipeline_id"]: p for p in await live.get("/api/v1/pipelines")}
    assert listed[big]["unschedulable"] == waiting["unschedulable"]
    assert listed[small]["unschedulable"] is None
    assert not any(
        isinstance(e, ShardAssigned) and e.pipeline_id == big for _, e in await live.events()
    )
    for executor in await live.get("/api/v1/executors"):
        assert executor["capacity"]["gpus"] == 0
        assert executor["has_gpu"] is False

    # exec-2 comes back declaring a GPU with 80 GB: room for one 50 GB shard at a time
    exec2 = live.child("exec-2")
    exec2.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    exec2.process.wait(30)  # type: ignore[union-attr]
    exec2.env["INFERNO_EXECUTOR_RESOURCES"] = '{"slots": 3, "gpus": 1, "gpu_mem_gb": 80}'
    live.restart(exec2)
    (done,) = await live.settled(big, timeout=120)
    assert done["status"] == "completed", done
    assert done["unschedulable"] is None

    declared = await live.get("/api/v1/executors/exec-2")
    assert declared["capacity"] == {"slots": 3, "gpus": 1.0, "gpu_mem_gb": 80.0}
    assert declared["used"] == {"slots": 0, "gpus": 0, "gpu_mem_gb": 0}
    assert declared["has_gpu"] is True
    at_once = 0
    running: set[int] = set()
    for _, event in await live.events():
        if getattr(event, "pipeline_id", None) != big:
            continue
        if isinstance(event, ShardAssigned):
            assert event.executor_id == "exec-2"
            running.add(event.shard)
            at_once = max(at_once, len(running))
        elif isinstance(event, ShardCompleted | ShardReleased | ShardFailed):
            running.discard(event.shard)
    assert at_once == 1  # 3 slots free, but 2 × 50 GB exceed the 80 declared


async def test_prune_removes_a_killed_executor_and_keeps_the_live_one(live: Live) -> None:
    unauthorized = await live.http.post(
        "/api/v1/admin/cleanup", json={}, headers={"Authorization": "Bearer wrong"}
    )
    assert unauthorized.status_code == 401
    too_soon = await live.http.post("/api/v1/admin/cleanup", json={"older_than_s": 1})
    assert too_soon.status_code == 400
    assert "older_than_s" in too_soon.json()["error"]
    nothing = await live.post("/api/v1/admin/cleanup", {})
    assert nothing["removed"] == []
    assert nothing["kept"] == ["exec-1", "exec-2"]

    live.child("exec-1").process.kill()  # type: ignore[union-attr]
    live.child("exec-1").process.wait(10)  # type: ignore[union-attr]
    floor = 2 * TTL_S / 3

    async def silent() -> bool:
        return (await live.get("/api/v1/executors/exec-1"))["heartbeat_age_s"] > floor + 0.5

    await live.until(silent, "exec-1 silent for two heartbeats", timeout=TTL_S)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env.update(INFERNO_API_URL=live.cluster.api_url, INFERNO_TOKEN=TOKEN)
    pruned = await asyncio.to_thread(
        subprocess.run,
        [str(INFERNO), "executors", "--prune", "--older-than", str(floor + 0.5)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 1 executor(s)" in pruned.stdout
    assert "exec-1" in pruned.stdout
    # removed by the prune, not by the bucket's expiry (which would have left it nothing to remove)

    async def gone() -> bool:
        response = await live.http.get("/api/v1/executors/exec-1")
        return response.status_code == 404 and "exec-1" in response.json()["error"]

    await live.until(gone, "exec-1 removed from the registry", timeout=60)
    assert [e["executor_id"] for e in await live.get("/api/v1/executors")] == ["exec-2"]

"""`from inferno import Experiment` and the async client against a real local cluster (behind a
bearer token, as a shared deployment runs): run_evals returns what the api shows, stop and clone
go through the Experiment while it runs, the async client's stream yields the stored entries."""

from __future__ import annotations

import ast
import asyncio
import io
import os
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from inferno import AsyncClient, Client, Experiment
from inferno.client.sdk import InfernoError

if TYPE_CHECKING:
    from conftest import Live

TOKEN = "e2e-sdk-token-77d1"
ROOT = Path(__file__).resolve().parents[2]
ARITH = ROOT / "examples" / "arith.jsonl"
EVAL = {"prompt": "Q: {question}\nA:", "scorers": [{"name": "exact_match", "target": "answer"}]}


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_TOKEN": TOKEN}


def _name(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:6]}"


async def test_run_evals_returns_the_metrics_and_rows_the_api_shows(shared_live: Live) -> None:
    api = shared_live.cluster.api_url
    out = io.StringIO()
    pipelines = [shared_live.sim("small", accuracy=0.5), shared_live.sim("large", accuracy=0.9)]
    with Experiment(_name("arith"), api=api, token=TOKEN) as exp:
        results = await asyncio.to_thread(
            exp.run_evals, pipelines, ARITH, eval=EVAL, num_shards=4, progress="lines", out=out
        )
        assert exp.experiment_id is not None
    assert sorted(r.pipeline_name for r in results.values()) == ["large", "small"]
    for pid, result in results.items():
        shown = await shared_live.pipeline(pid)
        assert shown["experiment_id"] == exp.experiment_id
        assert (result.status, result.shards_completed, result.num_shards) == ("completed", 4, 4)
        metric = result.metrics["exact_match"]
        expected = shown["metrics"]["exact_match"]
        assert (metric.value, metric.lower_bound, metric.upper_bound, metric.count) == (
            expected["value"],
            expected["lower_bound"],
            expected["upper_bound"],
            expected["count"],
        )
        assert metric.lower_bound is not None
        assert metric.lower_bound <= metric.value <= metric.upper_bound
        assert sorted(row["row_index"] for row in result.rows) == list(range(96))
        assert result.simulated
    printed = out.getvalue()
    for pid, result in results.items():
        assert f"pipeline {pid} ({result.pipeline_name}) completed 4/4 shards" in printed
    assert "\x1b" not in printed  # plain lines: no terminal control characters


async def test_stop_and_clone_through_the_experiment_while_run_evals_runs(
    shared_live: Live,
) -> None:
    api, name = shared_live.cluster.api_url, _name("steer")
    pipelines = [shared_live.sim("small", latency_ms=60), shared_live.sim("large", latency_ms=60)]
    runner = Experiment(name, api=api, token=TOKEN)
    returned: dict[str, Any] = {}

    def run() -> None:
        returned["results"] = runner.run_evals(
            pipelines, ARITH, eval=EVAL, num_shards=8, progress="off", reason="nightly"
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    created = await shared_live.until(
        lambda: runner.experiment_id and runner.pipelines(), "run_evals to create its pipelines"
    )
    ids = {p["pipeline_name"]: p["pipeline_id"] for p in created}
    await shared_live.running(ids["small"])

    with Experiment(name, api=api, token=TOKEN, actor="alice@lab") as steer:
        assert steer.experiment_id == runner.experiment_id  # found by name: the newest
        stopped = await asyncio.to_thread(steer.stop, "small", "losing")
        assert (stopped["status"], stopped["reason"], stopped["actor"]) == (
            "completed",
            "losing",
            "INFERNO_TOKEN (alice@lab)",  # behind a token: its identity, then what we said
        )
        with pytest.raises(ValueError, match=r"no pipeline named 'medium'.*large, small"):
            steer.stop("medium")
        with pytest.raises(InfernoError, match="only stopped pipelines can be resumed") as refused:
            await asyncio.to_thread(steer.resume, ids["large"], "not stopped")
        assert refused.value.status == 409
        clone = await asyncio.to_thread(
            steer.clone,
            "large",
            {"sampling_params": {"temperature": 0.7, "max_tokens": 16}},
            "try warmer",
            pipeline_name="large-warm",
        )
        await asyncio.to_thread(thread.join, 120.0)
        assert not thread.is_alive(), "run_evals did not return"
        results = returned["results"]
        assert results[ids["small"]].status == "stopped"
        assert results[ids["small"]].shards_completed < 8
        assert results[ids["large"]].status == "completed"
        assert results[clone].parent_pipeline_id == ids["large"]  # run_evals waited for it
        assert results[clone].status == "completed"
        assert len(results[clone].rows) == 96

        stops = list(steer.events(type=["stop_pipeline", "pipeline_stopped"]))
        assert [e["type"] for e in stops] == ["stop_pipeline", "pipeline_stopped"]
        assert {(e["actor"], e["reason"]) for e in stops} == {
            ("INFERNO_TOKEN (alice@lab)", "losing")
        }
        creates = list(steer.events(type="create_experiment"))
        assert [e["reason"] for e in creates] == ["nightly"]
    runner.close()


async def test_run_evals_refuses_a_bad_spec_naming_the_field(shared_live: Live) -> None:
    with Experiment(_name("bad"), api=shared_live.cluster.api_url, token=TOKEN) as exp:
        with pytest.raises(InfernoError, match="num_shards") as refused:
            exp.run_evals([shared_live.sim("a")], ARITH, eval=EVAL, num_shards=0)
        assert refused.value.status == 400
        with pytest.raises(TypeError, match="dataset: give rows"):
            exp.run_evals([shared_live.sim("a")], 42, eval=EVAL)
        with pytest.raises(LookupError, match="run_evals first"):
            exp.stop(1)
    with pytest.raises(InfernoError) as unauthorized:
        Experiment("x", api=shared_live.cluster.api_url, token="")  # none, whatever the env
    assert unauthorized.value.status == 401


async def test_the_async_client_streams_the_entries_the_history_holds(shared_live: Live) -> None:
    body = shared_live.experiment_body(shared_live.sim("solo"), name=_name("aio"), num_shards=4)
    async with AsyncClient(shared_live.cluster.api_url, TOKEN, actor="svc@ci") as api:
        entries: list[dict[str, Any]] = []
        since = time.time() - 1.0  # the stream replays from here, whenever it connects
        created = await api.create_experiment(body, wait=10, reason="async")

        async def follow() -> None:
            types = ["create_experiment", "pipeline_completed"]
            async for entry in api.follow_events(since=since, type=types):
                if entry["ids"].get("experiment_id") == created["experiment_id"]:
                    entries.append(entry)
                    if entry["type"] == "pipeline_completed":
                        return

        follower = asyncio.create_task(follow())
        pid = created["pipelines"][0]["pipeline_id"]
        await asyncio.wait_for(follower, 120)
        assert created["status"] == "completed"
        mine = entries
        assert [e["type"] for e in mine] == ["create_experiment", "pipeline_completed"]
        assert mine[0]["actor"] == "INFERNO_TOKEN (svc@ci)"
        history = [
            e
            async for e in api.events(
                experiment_id=created["experiment_id"],
                type=["create_experiment", "pipeline_completed"],
            )
        ]
        assert history == mine

        # the seed's dispatcher routes, on the async client and the sync one
        clone = await api.dispatch(
            "clone-pipeline",
            {"context_id": created["context_id"], **shared_live.sim("solo-2")},
            wait=10,
            reason="another",
        )
        status = await api.operation_status(clone["ic_id"])
        assert (status["status"], status["reason"]) == ("completed", "another")
        assert (await api.pipeline(pid))["status"] == "completed"
    with Client(shared_live.cluster.api_url, TOKEN) as sync:
        assert sync.operation_status(clone["ic_id"]) == status
        assert clone["ic_id"] in [op["ic_id"] for op in sync.all_operations()]
        stop = sync.dispatch("stop-pipeline", {"pipeline_id": pid}, wait=10)
        assert sync.operation_status(stop["ic_id"])["status"] == "failed"  # it had completed


def readme_sdk_block() -> str:
    """The ```python block under the README's "The SDK in five lines"."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### The SDK in five lines", 1)[1]
    found = re.search(r"^```python\n(.*?)^```$", section, re.M | re.S)
    assert found, "the README lost its SDK example"
    return found.group(1)


async def test_the_readmes_five_lines_run_as_written(shared_live: Live) -> None:
    block = readme_sdk_block()
    assert len(block.strip().splitlines()) == 5
    env = {**os.environ, "INFERNO_API_URL": shared_live.cluster.api_url, "INFERNO_TOKEN": TOKEN}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        block,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(child.communicate(), 180)
    assert child.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert any("pipeline" in line and "(large) completed 8/8 shards" in line for line in lines)
    shown = ast.literal_eval(lines[-1])  # the block's print: {name: value}
    assert set(shown) == {"small", "large"}
    assert 0 <= shown["small"] < shown["large"] <= 1


TTY_SCRIPT = """
from inferno import Experiment
sim = {"pipeline_name": "solo", "pipeline_type": "sim", "model_config": {"model": "m"}}
eval = {"prompt": "Q: {question}\\nA:", "scorers": [{"name": "exact_match", "target": "answer"}]}
results = Experiment("tty").run_evals(sim, "examples/arith.jsonl", eval=eval, num_shards=4)
print("RETURNED", sorted(results))
"""


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def test_on_a_terminal_run_evals_redraws_watchs_table(shared_live: Live) -> None:
    """Under a pseudo-terminal `progress="auto"` is rich's live board, not lines."""
    env = {
        **os.environ,
        "INFERNO_API_URL": shared_live.cluster.api_url,
        "INFERNO_TOKEN": TOKEN,
        "COLUMNS": "140",
    }
    controller, terminal = os.openpty()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        TTY_SCRIPT,
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    try:
        drawn = await asyncio.wait_for(asyncio.to_thread(_read_all, controller), 180)
        shown = drawn.decode(errors="replace")
        assert await asyncio.wait_for(child.wait(), 180) == 0, shown
    finally:
        os.close(controller)
    assert "\x1b[" in shown  # drawn with terminal control sequences
    assert "PROGRESS" in shown  # the board's header
    assert "exact_match [interval]" in shown
    assert "completed" in shown
    assert "RETURNED [" in shown

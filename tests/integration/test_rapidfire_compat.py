"""RapidFire's own clients against the api (a real nats-server, the api in-process): each call
as its code sends it, each answer read as its code reads it.

From github:RapidFireAI/rapidfireai: the evals notebook panel (`evals/utils/notebook_ui.py`:
`fetch`, any non-2xx an error, ids sent back as the <select>'s string value), the fit Python
controller (`fit/utils/interactive_controller.py`: `requests`, `raise_for_status`, then
`result.get("error")`) and the dispatcher itself (`evals/dispatcher/dispatcher.py`, whose
answers and status codes these follow).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.events import Names
from inferno.events.commands import AssignWork, ExecutorSlot, ShardFinished
from inferno.events.model import MetricStats, ShardStats
from tests.integration.test_api import Api, PlayScheduler, created, running_api


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Api]:
    async with running_api(nc, names) as running:
        yield running


@pytest.fixture
def scheduler(nc: NATS, js: JetStreamContext, names: Names, api: Api) -> PlayScheduler:
    return PlayScheduler(nc, js, names, api)


async def ok(api: Api, method: str, path: str, body: Any = None) -> Any:
    """A call as RapidFire's clients make it: JSON body, and anything but a 2xx is a failure."""
    response = await api.client.request(method, f"/dispatcher/{path}", json=body)
    assert 200 <= response.status_code < 300, (path, response.status_code, response.text)
    return response.json()


async def finish_a_shard(scheduler: PlayScheduler) -> None:
    """Pipeline 1's shard 0 assigned and done: two rows, one right."""
    slot = ExecutorSlot(executor_id="e1", backends=frozenset({"sim"}), free_slots=1)
    await scheduler.tick(AssignWork(executors=(slot,)))
    stats = ShardStats(rows=2, metrics={"exact_match": MetricStats(2, 1.0, 1.0, 0.0, 1.0)})
    finished = ShardFinished(executor_id="e1", pipeline_id=1, shard=0, attempt=1, stats=stats)
    await scheduler.tick(finished, seq=1)


async def test_an_empty_cluster_answers_as_rapidfire_does(api: Api):
    assert await ok(api, "GET", "list-all-pipeline-ids") == []
    assert await ok(api, "GET", "get-all-runs") == []
    assert await ok(api, "GET", "all-operations") == []
    assert await ok(api, "GET", "get-all-experiment-names") == []
    assert await ok(api, "POST", "get-ic-logs", {}) == []
    assert await ok(api, "POST", "get-experiment-logs", {}) == []
    none = await api.client.get("/dispatcher/get-running-experiment")
    assert (none.status_code, none.json()) == (404, {"error": "No running experiment found"})


async def test_the_notebook_panel_in_its_order(api: Api, scheduler: PlayScheduler):
    experiment = await created(api, scheduler)
    # fetchPipelines: the <select> lists them newest first, `Config ID: {id} ({status})`
    listed = await ok(api, "GET", "list-all-pipeline-ids")
    assert [(p["pipeline_id"], p["status"]) for p in listed] == [(2, "new"), (1, "new")]
    assert listed[1] == {
        "pipeline_id": 1,
        "status": "new",
        "shards_completed": 0,
        "total_samples_processed": 0,
        "total_shards": 2,
    }
    # fetchPipelineConfig(pipelines[0].pipeline_id): a number the first time
    config = await ok(api, "GET", "get-pipeline-config-json/2")
    assert config["context_id"] == experiment["context_id"]
    shown = config["pipeline_config_json"]
    assert (shown["pipeline_name"], shown["pipeline_type"], shown["rpm_limit"]) == ("b", "api", 60)
    assert shown["model_config"] == {"model": "gpt-x"}
    assert "sk-verysecret123" not in json.dumps(config)

    # after a refresh the panel sends the <select>'s value: a string
    stop = await ok(api, "POST", "stop-pipeline", {"pipeline_id": "1"})
    assert set(stop) >= {"ic_id", "message"}
    await scheduler.command(stop["ic_id"])
    listed = await ok(api, "GET", "list-all-pipeline-ids")
    assert [(p["pipeline_id"], p["status"]) for p in listed] == [(2, "new"), (1, "stopped")]
    # stopped again: 200, as RapidFire answers, and the operation fails with the reason
    again = await ok(api, "POST", "stop-pipeline", {"pipeline_id": "1"})
    await scheduler.command(again["ic_id"])
    failed = await ok(api, "GET", f"operation-status/{again['ic_id']}")
    assert failed["status"] == "failed"
    assert failed["error"].startswith("cannot stop pipeline 1: it is stopped")
    resume = await ok(api, "POST", "resume-pipeline", {"pipeline_id": "1"})
    await scheduler.command(resume["ic_id"])

    # handleClone: the shown config, edited, under the parent's id (a string by now)
    edited = {**shown, "sampling_params": {"temperature": 0.7}}
    del edited["pipeline_name"]  # optional: the clone is named after its parent
    clone = await ok(
        api, "POST", "clone-pipeline", {"parent_pipeline_id": "2", "config_json": edited}
    )
    await scheduler.command(clone["ic_id"])
    status = await ok(api, "GET", f"operation-status/{clone['ic_id']}")
    assert (status["operation"], status["status"], status["error"]) == ("clone", "completed", "")
    new_id = status["result"]["pipeline_id"]
    request = json.loads(status["request_data"])
    assert request["parent_pipeline_id"] == 2
    assert request["config_json"]["sampling_params"] == {"temperature": 0.7}
    child = await ok(api, "POST", "get-pipeline", {"pipeline_id": str(new_id)})
    assert (child["parent_pipeline_id"], child["context_id"]) == (2, experiment["context_id"])
    assert (child["pipeline_type"], child["pipeline_config_json"]["pipeline_type"]) == (
        "api",
        "api",
    )
    ours = (await api.client.get(f"/api/v1/pipelines/{new_id}")).json()
    assert ours["pipeline_type"] == "openai"
    # the masked secret came back as a ref, so the clone keeps the parent's key
    assert (
        ours["client_config"]
        == (await api.client.get("/api/v1/pipelines/2")).json()["client_config"]
    )

    delete = await ok(api, "POST", "delete-pipeline", {"pipeline_id": new_id})
    await scheduler.command(delete["ic_id"])
    every = await ok(api, "GET", "get-all-pipelines")
    assert [(p["pipeline_id"], p["status"]) for p in every] == [
        (new_id, "deleted"),
        (2, "new"),
        (1, "ongoing"),  # resumed
    ]

    # all-operations: interactive control only (no create_experiment), newest first
    ops = await ok(api, "GET", "all-operations")
    assert [(op["operation"], op["status"]) for op in ops] == [
        ("delete", "completed"),
        ("clone", "completed"),
        ("resume", "completed"),
        ("stop", "failed"),
        ("stop", "completed"),
    ]
    assert [op["request_data"] for op in ops if op["operation"] != "clone"] == [None] * 4
    assert all(isinstance(op["error"], str) for op in ops)


async def test_the_panel_is_told_what_is_wrong(api: Api, scheduler: PlayScheduler):
    await created(api, scheduler)
    cases = [
        ("stop-pipeline", {"pipeline_id": "99"}, 404, "pipeline 99 not found"),
        ("stop-pipeline", {"pipeline_id": "seven"}, 400, "field 'pipeline_id': "),
        ("clone-pipeline", {"parent_pipeline_id": 99, "config_json": {"pipeline_type": "api"}},
         404, "parent pipeline 99 not found"),
        ("clone-pipeline", {"parent_pipeline_id": 1, "config_json": {}},
         400, "field 'config_json.pipeline_type': Field required"),
        ("clone-pipeline", {"parent_pipeline_id": 1, "config_json": {"pipeline_type": "tpu"}},
         400, "field 'config_json.pipeline_type': pipeline_type must be one of"),
        ("clone-pipeline", {"parent_pipeline_id": 1}, 400, "field 'config_json': Field required"),
    ]  # fmt: skip
    for path, body, code, error in cases:
        response = await api.client.post(f"/dispatcher/{path}", json=body)
        assert response.status_code == code, (path, body, response.text)
        assert response.json()["error"].startswith(error), (path, body, response.text)
    missing = await api.client.get("/dispatcher/get-pipeline-config-json/99")
    assert (missing.status_code, missing.json()) == (404, {"error": "pipeline 99 not found"})
    # the flat body of the seed still clones into a context
    context = (await api.client.get("/api/v1/pipelines/1")).json()["context_id"]
    flat = {"context_id": context, "pipeline_name": "flat", "pipeline_type": "sim"}
    ack = await ok(api, "POST", "clone-pipeline", flat)
    await scheduler.command(ack["ic_id"])
    assert (await ok(api, "GET", f"operation-status/{ack['ic_id']}"))["status"] == "completed"


async def test_the_fit_controller_and_dashboard(api: Api, scheduler: PlayScheduler):
    await created(api, scheduler)
    await finish_a_shard(scheduler)
    # _fetch_runs / load_run
    runs = await ok(api, "GET", "get-all-runs")
    assert [(r["run_id"], r["status"]) for r in runs] == [(2, "New"), (1, "Ongoing")]
    run = await ok(api, "POST", "get-run", {"run_id": 1})
    assert (run["status"], run["num_chunks_visited"], run["total_shards"]) == ("Ongoing", 1, 2)
    assert run["config"]["pipeline_name"] == "a"
    assert (run["total_samples_processed"], run["error"]) == (2, "")
    unknown = await api.client.post("/dispatcher/get-run", json={"run_id": 99})
    assert (unknown.status_code, unknown.json()) == (400, {"error": "Run 99 not found"})

    # _handle_stop / _handle_resume: `result.get("error")` must be empty
    for path in ("stop-run", "resume-run"):
        result = await ok(api, "POST", path, {"run_id": 1})
        assert not result.get("error")
        await scheduler.command(result["ic_id"])
    # resume of a run that is not stopped: 200, the operation fails with the reason
    refused = await ok(api, "POST", "resume-run", {"run_id": 2})
    await scheduler.command(refused["ic_id"])
    op = await ok(api, "GET", f"operation-status/{refused['ic_id']}")
    assert (op["status"], op["error"]) == (
        "failed",
        "cannot resume pipeline 2: it is new; only stopped pipelines can be resumed",
    )

    # _handle_clone: the decision comes back within the request (it waits for it)
    body = {"run_id": 1, "config": {"sampling_params": {"temperature": 0.3}}, "warm_start": False}
    clone, _ = await asyncio.gather(
        ok(api, "POST", "clone-modify-run", body), scheduler.latest_command()
    )
    assert not clone.get("error")
    assert clone.get("result") is not False
    assert clone["new_run_id"] == 3
    child = await ok(api, "POST", "get-run", {"run_id": "3"})
    sampling = child["config"]["sampling_params"]  # merged key by key onto the parent's
    assert (child["parent_run_id"], sampling) == (1, {"temperature": 0.3, "max_tokens": 16})
    deleted = await ok(api, "POST", "delete-run", {"run_id": 3})
    await scheduler.command(deleted["ic_id"])
    assert (await ok(api, "POST", "get-run", {"run_id": 3}))["status"] == "Deleted"


async def test_experiments_and_their_logs(api: Api, scheduler: PlayScheduler):
    experiment = await created(api, scheduler)
    await finish_a_shard(scheduler)
    stop = await api.client.post(
        "/dispatcher/stop-pipeline?reason=too+slow", json={"pipeline_id": 2}
    )
    await scheduler.command(stop.json()["ic_id"])

    assert await ok(api, "GET", "get-all-experiment-names") == ["arith"]
    running = await ok(api, "GET", "get-running-experiment")
    assert running == {
        "experiment_id": experiment["experiment_id"],
        "experiment_name": "arith",
        "status": "running",
        "metric_experiment_id": None,
        "experiment_mode": "evals",
    }
    assert await ok(api, "GET", "get-experiment-by-name/arith") == running
    nope = await api.client.get("/dispatcher/get-experiment-by-name/nope")
    assert (nope.status_code, nope.json()) == (404, {"error": "Experiment not found"})
    assert await ok(api, "POST", "is-experiment-running", {"experiment_name": "arith"}) == {
        "is_running": True
    }
    assert await ok(api, "POST", "is-experiment-running", {"experiment_name": "nope"}) == {
        "is_running": False
    }
    missing = await api.client.post("/dispatcher/is-experiment-running", json={})
    assert (missing.status_code, missing.json()["error"]) == (
        400,
        "field 'experiment_name': Field required",
    )

    # the logs are the experiment's history, one text line each, filtered as RapidFire filters
    lines = await ok(api, "POST", "get-experiment-logs", {"experiment_name": "arith"})
    assert all(isinstance(line, str) and "| arith |" in line for line in lines), lines
    text = "\n".join(lines)
    for told in ("experiment created", "shard completed", "pipeline stopped", '"too slow"'):
        assert told in text, (told, lines)
    ic = await ok(api, "POST", "get-ic-logs", {})  # the running experiment's
    assert ic
    assert all("| InteractiveControl |" in line for line in ic), ic
    assert any("stop pipeline ic" in line and "too slow" in line for line in ic), ic
    assert not any("shard completed" in line for line in ic)
    assert await ok(api, "POST", "get-ic-logs", {"experiment_name": "nope"}) == []


NOTEBOOKS = ("http://localhost:8888", "http://127.0.0.1:8890", "vscode-webview://1f2e3d4c5b")


async def preflight(api: Api, origin: str) -> Any:
    """The panel's `fetch(..., {mode: 'cors'})` with a JSON body asks first."""
    return await api.client.options(
        "/dispatcher/stop-pipeline",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )


async def test_the_panel_may_call_a_loopback_api_from_the_notebook(
    api: Api, scheduler: PlayScheduler
):
    await created(api, scheduler)
    for origin in NOTEBOOKS:
        asked = await preflight(api, origin)
        assert asked.status_code == 200, (origin, asked.text)
        assert asked.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in asked.headers  # not on Colab
        read = await api.client.get("/dispatcher/list-all-pipeline-ids", headers={"Origin": origin})
        assert (read.status_code, read.headers["access-control-allow-origin"]) == (200, origin)
    # remote pages stay out, look-alikes and Colab's frames (off Colab) included
    for origin in (
        "https://evil.example",
        "http://localhost.evil.example:8888",
        "https://abc-dot-colab.googleusercontent.com",
    ):
        refused = await preflight(api, origin)
        assert refused.status_code == 403, (origin, refused.text)
        assert "access-control-allow-origin" not in refused.headers


async def test_colab_frames_with_credentials_only_on_colab(
    nc: NATS, js: JetStreamContext, names: Names, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    frame = "https://abc123-dot-colab.googleusercontent.com"
    async with running_api(nc, names) as api:
        asked = await preflight(api, frame)
        assert (asked.status_code, asked.headers["access-control-allow-origin"]) == (200, frame)
        assert asked.headers["access-control-allow-credentials"] == "true"


async def test_an_api_beyond_loopback_lets_in_only_listed_origins(
    nc: NATS, js: JetStreamContext, names: Names
):
    listed = "https://notebooks.example.com"
    async with running_api(nc, names, api_host="0.0.0.0", cors_origins=(listed,)) as api:
        assert (await preflight(api, "http://localhost:8888")).status_code == 403
        assert (await preflight(api, listed)).headers["access-control-allow-origin"] == listed

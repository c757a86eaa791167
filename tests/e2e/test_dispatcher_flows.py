"""Every curl flow of docs/api.md, done with httpx against a live cluster (nats-server, api, two
schedulers, two executors as separate processes), and judged against INFERNO_EVT itself.

The module's cluster runs with a bearer token, as a shared deployment would: every request below
carries it, and `test_health_and_auth` checks what happens without it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from inferno.events import fold
from inferno.events.commands import ShardAborted, ShardFinished, ShardStarted
from inferno.events.events import (
    PipelineCreated,
    PipelineDeleted,
    PipelineResumed,
    PipelineStopped,
    ShardAssigned,
    ShardCompleted,
)

if TYPE_CHECKING:
    from conftest import Live

TOKEN = "e2e-token-5f1c"
OP_FIELDS = {"ic_id", "pipeline_id", "operation", "status", "error", "created_at", "processed_at"}

README_CLONES = [
    {
        "pipeline_name": "my_cloned_vllm_pipeline",
        "pipeline_type": "vllm",
        "model_config": {
            "model": "Qwen/Qwen2.5-3B-Instruct",
            "dtype": "half",
            "gpu_memory_utilization": 0.6,
        },
        "sampling_params": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 512},
    },
    {
        "pipeline_name": "my_cloned_openai_pipeline",
        "pipeline_type": "openai",
        "client_config": {"api_key": "sk-readme-secret", "base_url": "http://127.0.0.1:9/v1"},
        "model_config": {"model": "gpt-4", "temperature": 0.7, "top_p": 0.9},
        "rpm_limit": 500,
        "tpm_limit": 90000,
    },
]
"""The clone bodies of RapidFire's dispatcher README; the OpenAI one points at a closed port on
loopback instead of api.openai.com, and each gets the experiment's (string) context_id."""


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_TOKEN": TOKEN}


def seq_of(events: list[tuple[int, Any]], kind: type, pipeline_id: int) -> int:
    """The sequence of the one `kind` event of this pipeline."""
    seqs = [s for s, e in events if isinstance(e, kind) and e.pipeline_id == pipeline_id]
    assert len(seqs) == 1, (kind.__name__, pipeline_id, seqs)
    return seqs[0]


async def test_health_and_auth(shared_live: Live) -> None:
    http = shared_live.http
    response = await http.get("/dispatcher/health-check", headers={"Authorization": ""})
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        assert (await http.get(path, headers={"Authorization": ""})).status_code == 200, path

    response = await http.get("/api/v1/pipelines", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json() == {"error": "missing bearer token"}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="inferno"'
    response = await http.post(
        "/dispatcher/stop-pipeline", json={"pipeline_id": 1}, headers={"Authorization": "Bearer x"}
    )
    assert (response.status_code, response.json()) == (401, {"error": "invalid bearer token"})
    assert (await http.get("/dispatcher/all-operations")).status_code == 200  # with the token

    executors = await shared_live.get("/api/v1/executors")
    assert [e["executor_id"] for e in executors] == ["exec-1", "exec-2"]
    for e in executors:
        assert "sim" in e["backends"]
        assert e["slots"] == 2
        assert e["heartbeat_age_s"] < 10


async def test_create_experiment_runs_to_completion(shared_live: Live) -> None:
    live = shared_live
    body = live.experiment_body(
        live.sim("small", accuracy=0.55, latency_ms=20),
        live.sim("large", accuracy=0.9, latency_ms=20),
        name="create",
    )
    created = await live.create_experiment(body)
    assert created["operation"] == "create_experiment"
    assert created["experiment_id"].startswith("exp-")
    assert created["context_id"].startswith("ctx-")
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    assert [p["pipeline_name"] for p in created["pipelines"]] == ["small", "large"]
    op = await live.get(f"/api/v1/operations/{created['ic_id']}")
    assert op["result"] == {
        "experiment_id": created["experiment_id"],
        "context_id": created["context_id"],
        "pipeline_ids": ids,
    }

    experiment = await live.get(f"/api/v1/experiments/{created['experiment_id']}")
    assert experiment["pipeline_ids"] == ids
    assert experiment["num_shards"] == 8
    assert experiment["row_count"] == 96
    listed = await live.get("/api/v1/pipelines", experiment_id=created["experiment_id"])
    assert [p["pipeline_id"] for p in listed] == ids

    final = await live.settled(*ids)
    for p in final:
        assert p["status"] == "completed"
        assert (p["shards_completed"], p["num_shards"], p["rows_processed"]) == (8, 8, 96)
        assert p["simulated"] is True
        assert p["metrics"]["exact_match"]["count"] == 96
    completed = await live.get("/api/v1/pipelines", status="completed")
    assert set(ids) <= {p["pipeline_id"] for p in completed}
    experiment = await live.get(f"/api/v1/experiments/{created['experiment_id']}")
    assert experiment["status"] == "completed"
    live.assert_run_complete(await live.events())
    model = await live.read_model()  # metrics are the readers', folded from the log
    small, large = (model.pipelines[pid].metrics["exact_match"] for pid in ids)
    assert small.total / small.count < large.total / large.count  # accuracy 0.55 vs 0.9


async def test_experiment_from_stored_dataset(shared_live: Live) -> None:
    live = shared_live
    rows = [{"id": i, "question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(6)]
    stored = await live.post("/api/v1/datasets", {"rows": rows})
    assert stored["dataset_ref"].startswith("sha256-")
    assert stored["row_count"] == 6
    body = live.experiment_body(live.sim("ref", latency_ms=0), num_shards=3)
    body["dataset"] = {"ref": stored["dataset_ref"]}
    created = await live.create_experiment(body)
    [p] = await live.settled(created["pipelines"][0]["pipeline_id"])
    assert (p["status"], p["shards_completed"], p["rows_processed"]) == ("completed", 3, 6)


async def test_stop_then_resume(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(
            live.sim("a", latency_ms=40), live.sim("b", latency_ms=80), name="stop-resume"
        )
    )
    a, b = (p["pipeline_id"] for p in created["pipelines"])
    await live.running(a, completed=2)

    ack = await live.post("/dispatcher/stop-pipeline", {"pipeline_id": a}, params={"wait": 5})
    assert ack["status"] == "completed", ack
    assert ack["message"] == f"stop of pipeline {a} completed"
    events = await live.events()
    stopped_at = seq_of(events, PipelineStopped, a)
    at_stop = fold(e for s, e in events if s <= stopped_at).pipelines[a]
    assert at_stop.in_flight, "the stop should land while a shard of the pipeline runs"

    # the in-flight shards finish and count; nothing new starts while b gets the free slots
    [drained] = await live.settled(a)
    assert drained["status"] == "stopped"
    assert drained["shards_completed"] == len(at_stop.completed) + len(at_stop.in_flight)
    await asyncio.sleep(0.5)
    assert (await live.pipeline(a))["shards_completed"] == drained["shards_completed"]
    events = await live.events()
    assert not [e for s, e in events if s > stopped_at and _assigned(e, a)]
    assert [e for s, e in events if s > stopped_at and _assigned(e, b)]
    done = {e.shard for s, e in events if isinstance(e, ShardCompleted) and e.pipeline_id == a}
    assert done == at_stop.completed | set(at_stop.in_flight)

    response = await live.http.post("/dispatcher/resume-pipeline", json={"pipeline_id": a})
    assert response.status_code == 200
    ack = response.json()
    assert set(ack) == {"ic_id", "message", "status"}
    assert (await live.operation(ack["ic_id"]))["status"] == "completed"
    final = await live.settled(a, b)
    assert [p["status"] for p in final] == ["completed", "completed"]

    events = await live.events()
    resumed_at = seq_of(events, PipelineResumed, a)
    first = next(e for s, e in events if s > resumed_at and _assigned(e, a))
    assert first.shard == min(set(range(8)) - done)  # the first incomplete shard
    live.assert_run_complete(events)


def _assigned(event: Any, pipeline_id: int) -> bool:
    return isinstance(event, ShardAssigned) and event.pipeline_id == pipeline_id


async def test_clone_into_context(shared_live: Live) -> None:
    """The dispatcher's clone: a new pipeline in an existing context, polled by ic_id."""
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("base", latency_ms=20), num_shards=4, name="clone-ctx")
    )
    body = {
        "context_id": created["context_id"],
        "pipeline_name": "base-hot",
        "pipeline_type": "sim",
        "model_config": {"model": "sim-hot", "accuracy": 0.9, "latency_ms_per_row": 20},
        "sampling_params": {"temperature": 0.7, "max_tokens": 16},
        "rpm_limit": None,
        "tpm_limit": None,
    }
    ack = await live.post("/dispatcher/clone-pipeline", body)
    assert ack["status"] in ("pending", "completed")
    op = await live.operation(ack["ic_id"])
    assert set(op) >= OP_FIELDS
    assert (op["operation"], op["status"], op["error"]) == ("clone", "completed", "")
    new = op["result"]["pipeline_id"]
    clone = await live.pipeline(new)
    assert (clone["source"], clone["parent_pipeline_id"]) == ("clone", None)
    assert clone["context_id"] == created["context_id"]
    assert clone["experiment_id"] == created["experiment_id"]
    assert clone["model_config"]["model"] == "sim-hot"

    final = await live.settled(created["pipelines"][0]["pipeline_id"], new)
    assert [(p["status"], p["shards_completed"]) for p in final] == [("completed", 4)] * 2
    events = await live.events()
    [made] = [e for _, e in events if isinstance(e, PipelineCreated) and e.pipeline_id == new]
    assert (made.ic_id, made.source) == (ack["ic_id"], "clone")
    live.assert_run_complete(events)

    # the RapidFire README's vLLM and OpenAI clones: accepted and shown without the key, then
    # deleted (no model server runs here)
    for body in README_CLONES:
        ack = await live.post(
            "/dispatcher/clone-pipeline",
            {**body, "context_id": created["context_id"]},
            params={"wait": 5},
        )
        assert ack["status"] == "completed", ack
        op = await live.get(f"/dispatcher/operation-status/{ack['ic_id']}")
        response = await live.http.get(f"/api/v1/pipelines/{op['result']['pipeline_id']}")
        assert "sk-readme-secret" not in response.text
        clone = response.json()
        assert (clone["pipeline_name"], clone["source"]) == (body["pipeline_name"], "clone")
        assert (clone["pipeline_type"], clone["model_config"]) == (
            body["pipeline_type"],
            body["model_config"],
        )
        assert (clone["rpm_limit"], clone["tpm_limit"]) == (
            body.get("rpm_limit"),
            body.get("tpm_limit"),
        )
        await live.post(
            "/dispatcher/delete-pipeline", {"pipeline_id": clone["pipeline_id"]}, params={"wait": 5}
        )
        await live.settled(clone["pipeline_id"])


async def test_clone_with_changes(shared_live: Live) -> None:
    """/api/v1's clone: knobs merged into the parent's, the parent linked."""
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("parent", latency_ms=20), num_shards=4, name="clone-v1")
    )
    parent = created["pipelines"][0]["pipeline_id"]
    changes = {"pipeline_name": "parent-t07", "sampling_params": {"temperature": 0.7}}
    op = await live.post(f"/api/v1/pipelines/{parent}/clone", changes, params={"wait": 5})
    assert (op["operation"], op["pipeline_id"], op["status"]) == ("clone", parent, "completed")
    clone = await live.pipeline(op["result"]["pipeline_id"])
    assert (clone["parent_pipeline_id"], clone["source"]) == (parent, "clone")
    assert clone["pipeline_name"] == "parent-t07"
    assert clone["sampling_params"] == {"temperature": 0.7, "max_tokens": 16}
    assert clone["model_config"] == created["pipelines"][0]["model_config"]

    final = await live.settled(parent, clone["pipeline_id"])
    assert [(p["status"], p["shards_completed"]) for p in final] == [("completed", 4)] * 2
    events = await live.events()
    [made] = [
        e
        for _, e in events
        if isinstance(e, PipelineCreated) and e.pipeline_id == clone["pipeline_id"]
    ]
    assert made.parent_pipeline_id == parent
    live.assert_run_complete(events)


async def test_delete_aborts_in_flight_work(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("doomed", latency_ms=250), num_shards=4, name="delete")
    )
    doomed = created["pipelines"][0]["pipeline_id"]

    # all four 3 s shards in flight (one per slot) and running on the executors
    async def all_started() -> set[int] | None:
        in_flight = {f["shard"] for f in (await live.pipeline(doomed))["in_flight"]}
        started = {
            r.shard
            for _, r in await live.reports()
            if isinstance(r, ShardStarted) and r.pipeline_id == doomed
        }
        return in_flight if len(in_flight) == 4 and in_flight <= started else None

    running = await live.until(all_started, "the doomed shards to start")

    ack = await live.post(
        "/dispatcher/delete-pipeline", {"pipeline_id": doomed}, params={"wait": 5}
    )
    assert ack["status"] == "completed", ack
    op = await live.get(f"/dispatcher/operation-status/{ack['ic_id']}")
    assert op["result"] == {"aborted_shards": sorted(running)}
    [gone] = await live.settled(doomed)
    assert (gone["status"], gone["in_flight"], gone["shards_completed"]) == ("deleted", [], 0)

    async def final_reports() -> list[Any] | None:
        ends = [
            r
            for _, r in await live.reports()
            if r.pipeline_id == doomed and isinstance(r, ShardAborted | ShardFinished)
        ]
        return ends if len(ends) == len(running) else None

    # each executor cancels its shards well before they could have finished
    ends = await live.until(final_reports, "the executors to abort")
    assert all(isinstance(r, ShardAborted) for r in ends), ends
    events = await live.events()
    deleted_at = seq_of(events, PipelineDeleted, doomed)
    late = [e for s, e in events if s > deleted_at and getattr(e, "pipeline_id", None) == doomed]
    assert late == []
    assert not any(pid == doomed for pid, _ in live.completions(events))
    experiment = await live.get(f"/api/v1/experiments/{created['experiment_id']}")
    assert experiment["status"] == "completed"  # its only pipeline is deleted

    response = await live.http.post(f"/api/v1/pipelines/{doomed}/delete")
    assert (response.status_code, response.json()) == (
        409,
        {"error": f"pipeline {doomed} is already deleted"},
    )
    # RapidFire's route answers 200, as its dispatcher does; the operation fails with the reason
    response = await live.http.post("/dispatcher/delete-pipeline", json={"pipeline_id": doomed})
    assert response.status_code == 200, response.text
    refused = await live.operation(response.json()["ic_id"])
    assert (refused["status"], refused["error"]) == (
        "failed",
        f"pipeline {doomed} is already deleted",
    )


async def test_invalid_operations(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("p", latency_ms=60), name="invalid")
    )
    pid = created["pipelines"][0]["pipeline_id"]
    await live.running(pid)
    http = live.http

    reason = f"cannot resume pipeline {pid}: it is ongoing; only stopped pipelines can be resumed"
    response = await http.post(f"/api/v1/pipelines/{pid}/resume")
    assert (response.status_code, response.json()) == (409, {"error": reason})
    # RapidFire's route: 200, as its dispatcher answers, and the operation fails with the reason
    response = await http.post("/dispatcher/resume-pipeline", json={"pipeline_id": pid})
    assert response.status_code == 200, response.text
    resumed = await live.operation(response.json()["ic_id"])
    assert (resumed["status"], resumed["error"]) == ("failed", reason)

    for path, body in (
        ("/dispatcher/stop-pipeline", {"pipeline_id": 999999}),
        ("/api/v1/pipelines/999999/stop", None),
    ):
        response = await http.post(path, json=body)
        assert response.status_code == 404, path
        assert response.json() == {"error": "pipeline 999999 not found"}
    response = await http.get("/dispatcher/operation-status/999999")
    assert (response.status_code, response.json()) == (404, {"error": "operation 999999 not found"})
    response = await http.post(
        "/dispatcher/clone-pipeline",
        json={"context_id": "ctx-nope", "pipeline_name": "x", "pipeline_type": "sim"},
    )
    assert (response.status_code, response.json()) == (404, {"error": "context ctx-nope not found"})

    response = await http.post("/dispatcher/stop-pipeline", json={})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "field 'pipeline_id': Field required"},
    )
    response = await http.post("/dispatcher/stop-pipeline", json={"pipeline_id": "one"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("field 'pipeline_id': ")

    # two stops at once, no ?wait: both go in (RapidFire's route), the decider fails the second
    first, second = await asyncio.gather(
        http.post("/dispatcher/stop-pipeline", json={"pipeline_id": pid}),
        http.post("/dispatcher/stop-pipeline", json={"pipeline_id": pid}),
    )
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    stopped = f"cannot stop pipeline {pid}: it is stopped; only new or ongoing pipelines can be"
    outcomes = [await live.operation(r.json()["ic_id"]) for r in (first, second)]
    outcomes.sort(key=lambda op: op["status"])
    assert [op["status"] for op in outcomes] == ["completed", "failed"]
    assert outcomes[1]["error"] == f"{stopped} stopped"
    ops = await live.get("/api/v1/operations", pipeline_id=pid)
    assert sorted((op["operation"], op["status"]) for op in ops) == [
        ("resume", "failed"),
        ("stop", "completed"),
        ("stop", "failed"),
    ]
    # the /api/v1 refusal never reached the log: the dispatcher's resume and the stops did
    assert len(await live.commands(live.names.pipeline_cmd(pid, "*"))) == 3

    await live.post(f"/api/v1/pipelines/{pid}/delete", params={"wait": 5})
    await live.settled(pid)


async def test_idempotency_key(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("idem", latency_ms=30), num_shards=4, name="idem")
    )
    pid = created["pipelines"][0]["pipeline_id"]
    stop = {"Idempotency-Key": "stop-idem-1"}

    first = await live.post("/dispatcher/stop-pipeline", {"pipeline_id": pid}, headers=stop)
    again = await live.post(
        "/dispatcher/stop-pipeline", {"pipeline_id": pid}, headers=stop, params={"wait": 5}
    )
    assert again["ic_id"] == first["ic_id"]
    assert again["status"] == "completed"
    # the pipeline is stopped now, so a new stop would be a 409; the retry is the same op
    later = await live.post(f"/api/v1/pipelines/{pid}/stop", headers=stop)
    assert (later["ic_id"], later["status"]) == (first["ic_id"], "completed")
    assert len(await live.commands(live.names.pipeline_cmd(pid, "stop"))) == 1

    response = await live.http.post(f"/api/v1/pipelines/{pid}/resume", headers=stop)
    assert response.status_code == 409
    assert response.json()["error"].startswith("Idempotency-Key was already used")

    resume = {"Idempotency-Key": "resume-idem-1"}
    one, two = await asyncio.gather(
        live.post(f"/api/v1/pipelines/{pid}/resume", headers=resume, params={"wait": 5}),
        live.post(f"/api/v1/pipelines/{pid}/resume", headers=resume, params={"wait": 5}),
    )
    assert one["ic_id"] == two["ic_id"]
    assert (one["status"], two["status"]) == ("completed", "completed")
    assert len(await live.commands(live.names.pipeline_cmd(pid, "resume"))) == 1
    ops = await live.get("/api/v1/operations", pipeline_id=pid)
    assert [(op["ic_id"], op["operation"]) for op in ops] == [
        (first["ic_id"], "stop"),
        (one["ic_id"], "resume"),
    ]
    await live.settled(pid)


async def test_operation_status_and_all_operations(shared_live: Live) -> None:
    live = shared_live
    created = await live.create_experiment(
        live.experiment_body(live.sim("ops", latency_ms=30), num_shards=4, name="ops")
    )
    pid = created["pipelines"][0]["pipeline_id"]
    ack = await live.post("/dispatcher/stop-pipeline", {"pipeline_id": pid}, params={"wait": 5})
    status = await live.get(f"/dispatcher/operation-status/{ack['ic_id']}")
    extra = {"result", "actor", "reason", "trace_id", "request_data"}
    assert set(status) == OP_FIELDS | extra
    assert status["ic_id"] == ack["ic_id"]
    assert (status["pipeline_id"], status["operation"], status["status"]) == (
        pid,
        "stop",
        "completed",
    )
    # RapidFire's shape: `error` is "" when there is none, `request_data` None for a stop
    assert (status["error"], status["request_data"]) == ("", None)
    assert status["created_at"] <= status["processed_at"]
    ours = await live.get(f"/api/v1/operations/{ack['ic_id']}")
    assert ours == {k: v for k, v in status.items() if k != "request_data"} | {"error": None}

    # interactive control only (no create_experiment), newest first, as RapidFire lists them
    everything = await live.get("/dispatcher/all-operations")
    assert [op["ic_id"] for op in everything] == sorted(
        (op["ic_id"] for op in everything), reverse=True
    )
    assert status in everything
    assert created["ic_id"] not in {op["ic_id"] for op in everything}
    for op in everything:
        assert set(op) >= OP_FIELDS
        assert op["operation"] in ("stop", "resume", "delete", "clone")
    listed = await live.get("/api/v1/operations", status="completed", pipeline_id=pid)
    assert listed == [ours]
    ic_ops = [
        e for e in await live.get("/api/v1/operations") if e["operation"] != "create_experiment"
    ]
    assert [e["ic_id"] for e in everything] == [e["ic_id"] for e in reversed(ic_ops)]

    await live.post("/dispatcher/delete-pipeline", {"pipeline_id": pid}, params={"wait": 5})
    await live.settled(pid)

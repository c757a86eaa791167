"""The api against a real nats-server: validation, auth, commands, idempotency, the projection.

No scheduler runs here: where a test needs decisions, `PlayScheduler` takes the scheduler's part
through the real log (read the command from INFERNO_CMD, `decide`, append the events to
INFERNO_EVT with the fence), and the api must show what it reads back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.api.app import create_app
from inferno.api.projection import Projection
from inferno.datasets.objects import read_block, read_manifest
from inferno.datasets.store import dataset_ref, from_jsonl, to_jsonl
from inferno.events import (
    Names,
    State,
    decide,
    decode_command,
    encode,
    evolve,
    subject_for,
)
from inferno.events.commands import AssignWork, ExecutorSlot, ShardFinished
from inferno.events.model import MetricStats, ShardStats
from inferno.events.work import ExecutorInfo
from inferno.jetstream import Appender, Outgoing
from inferno.readmodels import encoded
from inferno.runtime.settings import Settings
from inferno.scheduler.lease import Lease
from tests import waiting

ROWS = [
    {"id": 1, "question": "2+2?", "answer": "4"},
    {"id": 2, "question": "3+3?", "answer": "6"},
    {"id": 3, "question": "1+1?", "answer": "2"},
    {"id": 4, "question": "5+5?", "answer": "10"},
]


def experiment_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "experiment_name": "arith",
        "num_shards": 2,
        "dataset": {"rows": ROWS},
        "eval": {
            "prompt": "Q: {question}\nA:",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [
            {
                "pipeline_name": "a",
                "pipeline_type": "sim",
                "model_config": {"model": "sim-a", "accuracy": 0.8},
                "sampling_params": {"temperature": 0, "max_tokens": 16},
            },
            {
                "pipeline_name": "b",
                "pipeline_type": "openai",
                "model_config": {"model": "gpt-x"},
                "client_config": {"base_url": "http://llm", "api_key": "sk-verysecret123"},
                "rpm_limit": 60,
            },
        ],
    }
    body.update(overrides)
    return body


class _Ref:
    """Equal to any secret ref (the api keeps keys in INFERNO_SECRETS, see test_secrets.py)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("sec-")


ANY_REF = _Ref()


async def until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    await waiting.until(check, "the condition", timeout, interval=0.005)


@dataclass
class Api:
    client: httpx.AsyncClient
    app: FastAPI

    @property
    def projection(self) -> Projection:
        return self.app.state.gateway.projection


@asynccontextmanager
async def running_api(nc: NATS, names: Names, **settings: Any) -> AsyncIterator[Api]:
    """The app with its lifespan running, called in-process over ASGI."""
    app = create_app(Settings(namespace=names.namespace, **settings), nc=nc)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield Api(client, app)


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Api]:
    async with running_api(nc, names) as running:
        yield running


class PlayScheduler:
    """The scheduler's role, through the real log: decisions appended to EVT with the fence."""

    def __init__(self, nc: NATS, js: JetStreamContext, names: Names, api: Api) -> None:
        self.js, self.names, self.api = js, names, api
        self.appender = Appender(nc)
        self.state = State()
        self.evt_seq = 0

    async def command(self, ic_id: int) -> None:
        raw = await self.js.get_msg(self.names.cmd_stream, seq=ic_id)
        command = decode_command(raw.data)
        await self._append(decide(self.state, command, now=time.time(), seq=ic_id), f"cmd-{ic_id}")

    async def latest_command(self) -> int:
        """Decide the command last appended to CMD (waiting for one to appear); its ic_id."""
        known = self.state.last_command_seq
        seq = 0

        async def appended() -> bool:
            nonlocal seq
            seq = (await self.js.stream_info(self.names.cmd_stream)).state.last_seq
            return seq > known

        deadline = time.monotonic() + 30  # bounds a hang only
        while not await appended():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await self.command(seq)
        return seq

    async def tick(self, message: Any, seq: int = 0) -> None:
        events = decide(self.state, message, now=time.time(), seq=seq)
        await self._append(events, f"tick-{self.evt_seq}")

    async def _append(self, events: list[Any], source: str) -> None:
        messages = [
            Outgoing(subject_for(self.names, e), encode(e), f"{source}-{i}")
            for i, e in enumerate(events)
        ]
        result = await self.appender.append(
            self.names.evt_stream, messages, expected_last_seq=self.evt_seq
        )
        self.evt_seq = result.last_seq
        for event in events:
            evolve(self.state, event)
        await until(lambda: self.api.projection.model.evt_seq >= result.last_seq)


@pytest.fixture
def scheduler(nc: NATS, js: JetStreamContext, names: Names, api: Api) -> PlayScheduler:
    return PlayScheduler(nc, js, names, api)


async def cmd_count(js: JetStreamContext, names: Names) -> int:
    return (await js.stream_info(names.cmd_stream)).state.messages


async def created(api: Api, scheduler: PlayScheduler, **overrides: Any) -> dict[str, Any]:
    """An experiment created and decided: its pipelines exist (ids 1 and 2 in a fresh log)."""
    response = await api.client.post("/api/v1/experiments", json=experiment_body(**overrides))
    assert response.status_code == 200, response.text
    await scheduler.command(response.json()["ic_id"])
    return response.json()


# health, docs, auth


async def test_probes_and_docs(api: Api):
    assert (await api.client.get("/healthz")).json() == {"status": "ok"}
    ready = (await api.client.get("/readyz")).json()  # 503 here: no scheduler runs
    assert ready["checks"]["nats"] == {"ok": True, "detail": "connected"}
    assert (await api.client.get("/dispatcher/health-check")).status_code == 200
    assert (await api.client.get("/docs")).status_code == 200
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert "/api/v1/experiments" in paths
    assert "/dispatcher/operation-status/{ic_id}" in paths


async def test_an_unexpected_error_is_a_500_without_internals(api: Api):
    async def boom() -> None:
        raise RuntimeError("secret internals")

    api.app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/boom")
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})


async def test_readyz_reports_a_missing_stream(api: Api, js: JetStreamContext, names: Names):
    await js.delete_stream(names.cmd_stream)
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    assert names.cmd_stream in response.json()["error"]


async def test_readyz_follows_the_scheduler_lease(api: Api, js: JetStreamContext, names: Names):
    async def readiness(status: int) -> dict[str, Any]:
        """/readyz once it answers `status` (the lease reaches the api through a KV watch)."""

        async def answered() -> dict[str, Any] | None:
            response = await api.client.get("/readyz")
            return response.json() if response.status_code == status else None

        return await waiting.until(answered, f"/readyz to answer {status}", interval=0.02)

    nobody = await readiness(503)
    assert (nobody["status"], nobody["failed"]) == ("not ready", ["leader"]), nobody
    assert nobody["error"] == f"no scheduler holds the lease in {names.leader_bucket}"
    assert nobody["checks"]["executors"]["ok"]  # none registered: listed, never a failure

    lease = Lease(
        js, await js.key_value(names.leader_bucket), names.leader_bucket, "s-9", 5.0, time.time
    )
    assert await lease.acquire()  # the scheduler's own lease code
    held = await readiness(200)
    assert held["status"] == "ready"
    assert held["checks"]["leader"]["ok"]
    assert held["checks"]["leader"]["detail"].startswith(
        f"s-9 holds the lease in {names.leader_bucket}"
    )
    facts = {key: held["checks"]["leader"][key] for key in ("holder", "term", "since")}
    assert facts == {"holder": "s-9", "term": lease.term, "since": lease.since}
    assert set(held["checks"]) == {"nats", "streams", "projection", "leader", "executors"}

    await lease.release()  # what a clean shutdown does; an expiry leaves a marker instead
    gone = await readiness(503)
    assert "(last leader s-9, lapsed" in gone["error"], gone


async def test_bearer_token_guards_everything_but_probes(
    nc: NATS, js: JetStreamContext, names: Names
):
    async with running_api(nc, names, token="s3cret", cors_origins=("http://dash",)) as api:
        client = api.client
        missing = await client.get("/api/v1/pipelines")
        assert (missing.status_code, missing.json()) == (401, {"error": "missing bearer token"})
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.post(
            "/dispatcher/stop-pipeline",
            json={"pipeline_id": 1},
            headers={"Authorization": "Bearer nope"},
        )
        assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid bearer token"})
        ok = await client.get("/api/v1/pipelines", headers={"Authorization": "Bearer s3cret"})
        assert (ok.status_code, ok.json()) == (200, [])
        for open_path in ("/healthz", "/readyz", "/dispatcher/health-check"):
            assert (await client.get(open_path)).status_code != 401  # /readyz: 503, no scheduler
        preflight = await client.options(
            "/api/v1/pipelines",
            headers={"Origin": "http://dash", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://dash"
    assert await cmd_count(js, names) == 0


# validation


async def test_bad_requests_are_400s_naming_the_field_and_never_reach_the_log(
    api: Api, js: JetStreamContext, names: Names
):
    scorers = [{"name": "exact_match", "target": "answer"}]
    cases: list[tuple[str, str, Any, str]] = [
        ("POST", "/dispatcher/stop-pipeline", {}, "field 'pipeline_id': Field required"),
        ("POST", "/dispatcher/stop-pipeline", {"pipeline_id": "seven"}, "field 'pipeline_id': "),
        ("POST", "/dispatcher/resume-pipeline", {"pipeline_id": 1.5}, "field 'pipeline_id': "),
        ("POST", "/dispatcher/delete-pipeline", None, "request body is required"),
        ("POST", "/dispatcher/stop-pipeline?wait=61", {"pipeline_id": 1}, "parameter 'wait'"),
        (
            "POST",
            "/dispatcher/clone-pipeline",
            {"context_id": "a.b", "pipeline_name": "x", "pipeline_type": "sim"},
            "field 'context_id'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={"rows": ROWS, "ref": "sha256-00"}),
            "field 'dataset': give exactly one of 'rows'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={}),
            "field 'dataset': give exactly one of 'rows'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={"rows": []}),
            "field 'dataset.rows'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={"rows": [1, 2]}),
            "field 'dataset.rows.0'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(eval={"prompt": "{question}", "scorers": [{"name": "bleu"}]}),
            "field 'eval.scorers.0.name': unknown scorer 'bleu'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(eval={"prompt": "Q: {query}", "scorers": scorers}),
            "field 'eval.prompt': uses {query}, which the rows lack",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(num_shards=5),
            "field 'num_shards': 5 shards exceed the dataset's 4 rows",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(policy={"prune": {"rule": "dominated", "metric": "bleu"}}),
            "field 'policy.prune.metric': 'bleu' is not one of the experiment's metrics",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(
                shuffle=False, policy={"prune": {"rule": "dominated", "metric": "exact_match"}}
            ),
            "field 'policy.prune': the dominated rule needs shuffled rows",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(policy={"prune": {"rule": "best_guess", "metric": "exact_match"}}),
            "field 'policy.prune.rule'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(shuffle_seed=-1),
            "field 'shuffle_seed'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(eval={"prompt": "{question}", "scorers": [{"name": "exact_match"}]}),
            "field 'eval.scorers.0': exact_match needs a 'target'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(eval={"prompt": "{question}", "scorers": scorers + scorers}),
            "field 'eval.scorers': exact_match appears twice",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(eval={"prompt": "{question.__class__}", "scorers": scorers}),
            "field 'eval.prompt': {question.__class__}: private attributes",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={"path": "rows.jsonl"}),
            "field 'dataset': 'path' is read by the CLI",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(num_shards=0),
            "field 'num_shards'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(
                pipelines=[{"pipeline_name": "a", "pipeline_type": "tpu", "model_config": {}}]
            ),
            "field 'pipelines.0.pipeline_type'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(pipelines=[]),
            "field 'pipelines'",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(num_shard=2),
            "field 'num_shard': Extra inputs are not permitted",
        ),
        (
            "POST",
            "/api/v1/experiments",
            experiment_body(dataset={"ref": "sha256-" + "0" * 64}),
            "field 'dataset.ref': no dataset",
        ),
        ("POST", "/api/v1/datasets", {"rows": []}, "field 'rows'"),
        ("GET", "/api/v1/pipelines?status=running", None, "query parameter 'status'"),
        ("GET", "/api/v1/pipelines/abc", None, "path parameter 'pipeline_id'"),
    ]
    for method, path, body, expected in cases:
        response = await api.client.request(method, path, json=body)
        assert response.status_code == 400, (path, body, response.text)
        assert expected in response.json()["error"], (path, body, response.json())
    invalid_json = await api.client.post(
        "/dispatcher/stop-pipeline", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert invalid_json.status_code == 400
    assert "not valid JSON" in invalid_json.json()["error"]
    assert await cmd_count(js, names) == 0


async def test_unknown_things_are_404s(api: Api, js: JetStreamContext, names: Names):
    for path in (
        "/api/v1/pipelines/99",
        "/api/v1/experiments/exp-nope",
        "/api/v1/operations/5",
        "/dispatcher/operation-status/5",
        "/no/such/route",
    ):
        response = await api.client.get(path)
        assert response.status_code == 404, path
        assert "error" in response.json()
    stop = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 99})
    assert (stop.status_code, stop.json()) == (404, {"error": "pipeline 99 not found"})
    clone = await api.client.post(
        "/dispatcher/clone-pipeline",
        json={"context_id": "ctx-nope", "pipeline_name": "x", "pipeline_type": "sim"},
    )
    assert (clone.status_code, clone.json()) == (404, {"error": "context ctx-nope not found"})
    assert (await api.client.post("/api/v1/pipelines/99/clone")).status_code == 404
    assert await cmd_count(js, names) == 0


# commands and the projection


async def test_a_write_is_pending_until_decided_and_listed(
    api: Api, js: JetStreamContext, names: Names
):
    before = time.time()
    response = await api.client.post("/api/v1/experiments", json=experiment_body())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ic_id"] == 1
    assert body["status"] == "pending"
    assert body["operation"] == "create_experiment"
    assert body["experiment_id"].startswith("exp-")
    assert len(body["experiment_id"]) == 16
    assert body["context_id"].startswith("ctx-")
    assert len(body["context_id"]) == 16
    assert body["pipelines"] == []
    assert before <= body["created_at"] <= time.time()
    assert body["processed_at"] is None

    listed = (await api.client.get("/api/v1/operations")).json()
    assert [(op["ic_id"], op["status"]) for op in listed] == [(1, "pending")]
    assert (await api.client.get("/dispatcher/all-operations")).json() == []  # IC only
    assert listed[0]["created_at"] == body["created_at"]
    assert (await api.client.get("/api/v1/operations/1")).json()["status"] == "pending"
    assert (await api.client.get("/api/v1/operations?status=completed")).json() == []

    # the rows are stored once, as canonical JSONL in blocks under their digest
    command = decode_command((await js.get_msg(names.cmd_stream, seq=1)).data)
    assert command.dataset_ref == dataset_ref(to_jsonl(ROWS))
    assert command.row_count == 4
    store = await js.object_store(names.data_store)
    manifest = await read_manifest(store, command.dataset_ref)
    assert manifest is not None
    assert [from_jsonl(await read_block(store, b)) for b in manifest.blocks] == [ROWS]


async def test_dataset_upload_then_experiment_by_ref(api: Api, scheduler: PlayScheduler):
    upload = await api.client.post("/api/v1/datasets", json={"rows": ROWS})
    assert upload.json() == {"dataset_ref": dataset_ref(to_jsonl(ROWS)), "row_count": 4}
    again = await api.client.post("/api/v1/datasets", json={"rows": ROWS})
    assert again.json() == upload.json()
    body = experiment_body(dataset={"ref": upload.json()["dataset_ref"]}, num_shards=4)
    task = asyncio.create_task(api.client.post("/api/v1/experiments?wait=5", json=body))
    ic_id = await scheduler.latest_command()
    response = await task
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["ic_id"], result["status"]) == (ic_id, "completed")
    assert [(p["pipeline_id"], p["pipeline_name"]) for p in result["pipelines"]] == [
        (1, "a"),
        (2, "b"),
    ]
    experiment = (await api.client.get(f"/api/v1/experiments/{result['experiment_id']}")).json()
    assert experiment["dataset_ref"] == upload.json()["dataset_ref"]
    assert (experiment["num_shards"], experiment["row_count"]) == (4, 4)
    assert [p["pipeline_id"] for p in experiment["pipelines"]] == [1, 2]
    assert len((await api.client.get("/api/v1/experiments")).json()) == 1


async def test_pipeline_reads_and_transitions(api: Api, scheduler: PlayScheduler):
    experiment = await created(api, scheduler)
    exp_id = experiment["experiment_id"]
    pipelines = (await api.client.get(f"/api/v1/pipelines?experiment_id={exp_id}")).json()
    assert [(p["pipeline_id"], p["status"]) for p in pipelines] == [(1, "new"), (2, "new")]
    assert (await api.client.get("/api/v1/pipelines?experiment_id=exp-other")).json() == []

    # one shard of pipeline 1 assigned, and finished: progress, in-flight work and metrics
    slot = ExecutorSlot(executor_id="e1", backends=frozenset({"sim"}), free_slots=1)
    await scheduler.tick(AssignWork(executors=(slot,)))
    one = (await api.client.get("/api/v1/pipelines/1")).json()
    assert one["status"] == "ongoing"
    assert one["in_flight"] == [{"shard": 0, "executor_id": "e1", "attempt": 1}]
    stats = ShardStats(rows=2, metrics={"exact_match": MetricStats(2, 1.0, 1.0, 0.0, 1.0)})
    await scheduler.tick(
        ShardFinished(executor_id="e1", pipeline_id=1, shard=0, attempt=1, stats=stats), seq=1
    )
    one = (await api.client.get("/api/v1/pipelines/1")).json()
    assert (one["shards_completed"], one["num_shards"], one["rows_processed"]) == (1, 2, 2)
    assert one["in_flight"] == []
    # 2 of 4 rows: Wilson (0/1 scorer) with z·sqrt((4 - 2) / (4 - 1)) in place of z
    assert one["metrics"] == {
        "exact_match": {
            "value": 0.5,
            "lower_bound": pytest.approx(0.12533, abs=1e-5),
            "upper_bound": pytest.approx(0.87467, abs=1e-5),
            "confidence_level": 0.95,
            "ci_method": "wilson",  # the stand-in executor reported no sequence terms
            "anytime_valid": False,
            "count": 2,
        }
    }
    assert (one["simulated"], one["source"], one["parent_pipeline_id"]) == (True, "user", None)
    assert one["sampling_params"] == {"temperature": 0, "max_tokens": 16}

    # secrets never leave the api
    two = (await api.client.get("/api/v1/pipelines/2")).json()
    assert two["client_config"] == {"base_url": "http://llm", "api_key_ref": ANY_REF}
    assert (two["simulated"], two["rpm_limit"]) == (False, 60)

    # 409 when the projection already shows the transition is invalid
    resume = await api.client.post("/api/v1/pipelines/1/resume")
    assert resume.status_code == 409
    assert "cannot resume pipeline 1: it is ongoing" in resume.json()["error"]

    stop = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 1})
    assert stop.status_code == 200
    ack = stop.json()
    assert ack["status"] == "pending"
    assert set(ack) == {"ic_id", "message", "status"}
    await scheduler.command(ack["ic_id"])
    status = (await api.client.get(f"/dispatcher/operation-status/{ack['ic_id']}")).json()
    assert (status["operation"], status["pipeline_id"], status["status"]) == (
        "stop",
        1,
        "completed",
    )
    assert status["processed_at"] >= status["created_at"]
    assert (await api.client.get("/api/v1/pipelines?status=stopped")).json()[0]["pipeline_id"] == 1
    again = await api.client.post("/api/v1/pipelines/1/stop")
    assert again.status_code == 409
    assert "it is stopped" in again.json()["error"]

    delete = await api.client.post("/api/v1/pipelines/2/delete")
    await scheduler.command(delete.json()["ic_id"])
    twice = await api.client.post("/api/v1/pipelines/2/delete")
    assert (twice.status_code, twice.json()) == (409, {"error": "pipeline 2 is already deleted"})
    # the dispatcher answers 200, as RapidFire's does, and the operation fails with the reason
    twice = await api.client.post("/dispatcher/delete-pipeline", json={"pipeline_id": 2})
    assert twice.status_code == 200, twice.text
    await scheduler.command(twice.json()["ic_id"])
    failed = (await api.client.get(f"/dispatcher/operation-status/{twice.json()['ic_id']}")).json()
    assert (failed["status"], failed["error"]) == ("failed", "pipeline 2 is already deleted")


async def test_no_409_while_an_earlier_command_on_the_pipeline_is_undecided(
    api: Api, scheduler: PlayScheduler
):
    """Stop, then resume at once, is valid: the projection cannot judge the resume until the
    stop is decided, so the api lets the decider do it."""
    await created(api, scheduler)
    stop = await api.client.post("/api/v1/pipelines/1/stop")
    resume = await api.client.post("/api/v1/pipelines/1/resume")
    assert (stop.status_code, resume.status_code) == (200, 200)
    await scheduler.command(stop.json()["ic_id"])
    await scheduler.command(resume.json()["ic_id"])
    for ack in (stop, resume):
        op = (await api.client.get(f"/api/v1/operations/{ack.json()['ic_id']}")).json()
        assert op["status"] == "completed"
    # once both are decided the projection judges again
    assert (await api.client.post("/api/v1/pipelines/1/resume")).status_code == 409


async def test_wait_returns_the_final_status(api: Api, scheduler: PlayScheduler):
    await created(api, scheduler)
    task = asyncio.create_task(
        api.client.post(
            "/api/v1/pipelines/1/clone?wait=10",
            json={"pipeline_name": "a2", "sampling_params": {"temperature": 0.7}},
        )
    )
    ic_id = await scheduler.latest_command()
    op = (await task).json()  # answered once decided: a lapsed wait would say "pending"
    assert (op["ic_id"], op["status"], op["operation"]) == (ic_id, "completed", "clone")
    clone = (await api.client.get(f"/api/v1/pipelines/{op['result']['pipeline_id']}")).json()
    assert (clone["pipeline_name"], clone["parent_pipeline_id"], clone["source"]) == (
        "a2",
        1,
        "clone",
    )
    assert clone["sampling_params"] == {"temperature": 0.7, "max_tokens": 16}

    # the dispatcher's routes wait too, and report a failure with its reason
    experiment_context = clone["context_id"]
    task = asyncio.create_task(
        api.client.post(
            "/dispatcher/clone-pipeline?wait=10",
            json={
                "context_id": experiment_context,
                "pipeline_name": "c",
                "pipeline_type": "sim",
                "model_config": {"model": "sim-c"},
                "sampling_params": {},
            },
        )
    )
    ic_id = await scheduler.latest_command()
    ack = (await task).json()
    assert ack["ic_id"] == ic_id
    assert ack["status"] == "completed"
    assert "new pipeline 4" in ack["message"]

    # nobody decides: ?wait gives up and answers with the current status
    short = await api.client.post("/api/v1/pipelines/1/stop?wait=0.2")
    assert short.json()["status"] == "pending"


async def test_idempotency_key_gives_one_operation(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    key = {"Idempotency-Key": "run-42"}
    first = await api.client.post("/api/v1/experiments", json=experiment_body(), headers=key)
    second = await api.client.post("/api/v1/experiments", json=experiment_body(), headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()  # same ic_id, same generated ids
    assert await cmd_count(js, names) == 1
    raw = await js.get_msg(names.cmd_stream, seq=1)
    assert raw.headers["Nats-Msg-Id"].startswith("idem-")
    assert len(raw.headers["Nats-Msg-Id"]) == 37
    await scheduler.command(1)

    # a retry after the command took effect still answers the original operation, not a 409
    stop_key = {"Idempotency-Key": "stop-1"}
    stop = await api.client.post("/api/v1/pipelines/1/stop", headers=stop_key)
    await scheduler.command(stop.json()["ic_id"])
    retry = await api.client.post("/api/v1/pipelines/1/stop", headers=stop_key)
    assert retry.status_code == 200
    assert (retry.json()["ic_id"], retry.json()["status"]) == (stop.json()["ic_id"], "completed")
    assert (await api.client.post("/api/v1/pipelines/1/stop")).status_code == 409

    # the same key for another request is refused, and stores nothing new
    other = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 2}, headers=key)
    assert other.status_code == 409
    assert "already used for another request: ic_id 1" in other.json()["error"]
    assert await cmd_count(js, names) == 2


async def test_idempotency_key_retry_found_behind_later_commands(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    """Under concurrent control other clients' commands on the pipeline often follow the
    original: a retry the state now refuses still answers the original operation."""
    await created(api, scheduler)
    ic_ids = []
    for action, key in (("stop", "a"), ("resume", "b"), ("stop", "c")):
        sent = await api.client.post(
            f"/api/v1/pipelines/1/{action}", headers={"Idempotency-Key": key}
        )
        ic_ids.append(sent.json()["ic_id"])
        await scheduler.command(ic_ids[-1])
    # pipeline 1 is stopped, and stop "a" is not its latest stop
    retry = await api.client.post("/api/v1/pipelines/1/stop", headers={"Idempotency-Key": "a"})
    assert retry.status_code == 200, retry.text
    assert (retry.json()["ic_id"], retry.json()["status"]) == (ic_ids[0], "completed")
    # a valid retry is the server's duplicate; a key never used is refused as usual
    again = await api.client.post("/api/v1/pipelines/1/resume", headers={"Idempotency-Key": "b"})
    assert again.json()["ic_id"] == ic_ids[1]
    fresh = await api.client.post("/api/v1/pipelines/1/stop", headers={"Idempotency-Key": "d"})
    assert fresh.status_code == 409
    assert await cmd_count(js, names) == 4


async def test_executors_come_from_the_heartbeat_bucket(
    api: Api, js: JetStreamContext, names: Names
):
    kv = await js.key_value(names.executors_bucket)
    info = ExecutorInfo(
        executor_id="gpu-1",
        backends=["sim", "vllm"],
        slots=2,
        busy=1,
        queue=8,
        loaded_models=["m"],
        heartbeat_at=time.time(),
    )
    await kv.put("gpu-1", encode(info))
    await until(lambda: "gpu-1" in api.projection.executors)
    [shown] = (await api.client.get("/api/v1/executors")).json()
    assert (shown["executor_id"], shown["backends"], shown["slots"], shown["busy"]) == (
        "gpu-1",
        ["sim", "vllm"],
        2,
        1,
    )
    assert shown["loaded_models"] == ["m"]
    assert shown["queue"] == 8  # what it offers beyond its slots now (it follows its shards)
    assert 0 <= shown["heartbeat_age_s"] < 5
    await kv.purge("gpu-1")
    await until(lambda: not api.projection.executors)
    assert (await api.client.get("/api/v1/executors")).json() == []


async def test_restart_rebuilds_the_same_projection(
    api: Api, scheduler: PlayScheduler, nc: NATS, names: Names
):
    await created(api, scheduler)
    await api.client.post("/api/v1/pipelines/1/stop")  # left pending: nobody decides it
    stop = await api.client.post("/api/v1/pipelines/2/stop")
    await scheduler.command(stop.json()["ic_id"])
    async with running_api(nc, names) as second:
        assert encoded(second.projection.model) == encoded(api.projection.model)
        assert (second.projection.model.cmd_seq, second.projection.model.evt_seq) == (
            3,
            scheduler.evt_seq,
        )
        assert (await second.client.get("/dispatcher/all-operations")).json() == (
            await api.client.get("/dispatcher/all-operations")
        ).json()


# issue 7: bounds, unique names, the schema's promises, the OpenAPI document


async def test_out_of_bounds_fields_are_400s_naming_the_field(
    api: Api, js: JetStreamContext, names: Names
):
    long = "x" * 257
    first = experiment_body()["pipelines"][0]
    scorers = [{"name": "exact_match", "target": "answer"}]
    cases: list[tuple[dict[str, Any], str]] = [
        (
            experiment_body(experiment_name=long),
            "field 'experiment_name': String should have at most 256",
        ),
        (
            experiment_body(pipelines=[{**first, "pipeline_name": long}]),
            "field 'pipelines.0.pipeline_name': String should have at most 256",
        ),
        (
            experiment_body(max_attempts=101),
            "field 'max_attempts': Input should be less than or equal to 100",
        ),
        (
            experiment_body(retry_backoff_s=1e308),
            "field 'retry_backoff_s': Input should be less than or equal to 3600",
        ),
        (
            experiment_body(pipelines=[{**first, "rpm_limit": 10**12}]),
            "field 'pipelines.0.rpm_limit': Input should be less than or equal to 1000000000",
        ),
        (
            experiment_body(
                pipelines=[{**first, "endpoint_limit": {"name": "a.b", "rpm_limit": 9}}]
            ),
            "field 'pipelines.0.endpoint_limit.name': String should match pattern",
        ),
        (
            experiment_body(pipelines=[{**first, "endpoint_limit": {"name": "acct"}}]),
            "field 'pipelines.0.endpoint_limit': give rpm_limit, tpm_limit or both",
        ),
        (
            experiment_body(eval={"prompt": "{question:>5000000}", "scorers": scorers}),
            "field 'eval.prompt': {question:>5000000}: format spec '>5000000': widths and"
            " precisions are at most 1000",
        ),
        (
            experiment_body(
                eval={"prompt": [{"role": "user", "content": "{answer:.2000}"}], "scorers": scorers}
            ),
            "field 'eval.prompt.0.content': {answer:.2000}",
        ),
        (
            experiment_body(eval={"prompt": "{question:>{width}}", "scorers": scorers}),
            "field 'eval.prompt': uses {width}, which the rows lack",
        ),
        (
            experiment_body(pipelines=[first, {**first, "model_config": {"model": "other"}}]),
            "field 'pipelines.1.pipeline_name': 'a' is already the name of pipelines.0",
        ),
        (
            experiment_body(dataset={"rows": None}),
            "field 'dataset.rows': Input should be a valid list",
        ),
        (
            experiment_body(dataset={"rows": ROWS, "ref": None}),
            "field 'dataset': give exactly one of 'rows'",
        ),
    ]
    for body, expected in cases:
        response = await api.client.post("/api/v1/experiments", json=body)
        assert response.status_code == 400, (expected, response.text)
        assert expected in response.json()["error"], response.json()
    assert await cmd_count(js, names) == 0


async def test_what_the_schema_allows_is_accepted(api: Api, scheduler: PlayScheduler):
    """JSON Schema's integer includes 8331.0; the api used to refuse it."""
    body = experiment_body(num_shards=2.0)
    body["pipelines"][1]["rpm_limit"] = 8331.0
    body["pipelines"][1]["endpoint_limit"] = {"name": "acct-1", "tpm_limit": 9000.0}
    await created(api, scheduler, **body)
    shown = (await api.client.get("/api/v1/pipelines/2")).json()
    assert (shown["rpm_limit"], shown["endpoint_limit"]) == (
        8331,
        {"name": "acct-1", "tpm_limit": 9000},
    )
    stop = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 1.0})
    assert stop.status_code == 200, stop.text
    half = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 1.5})
    assert half.status_code == 400


async def test_pipeline_names_stay_unique_in_an_experiment(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    experiment = await created(api, scheduler)  # pipelines a (1) and b (2)
    before = await cmd_count(js, names)
    taken = await api.client.post("/api/v1/pipelines/1/clone", json={"pipeline_name": "b"})
    assert taken.status_code == 409, taken.text
    assert "pipeline name 'b' is taken in this experiment by pipeline 2" in taken.json()["error"]
    assert await cmd_count(js, names) == before  # the 409 never reached the log
    into = await api.client.post(
        "/dispatcher/clone-pipeline",
        json={"context_id": experiment["context_id"], "pipeline_name": "a", "pipeline_type": "sim"},
    )
    # the dispatcher answers 200, as RapidFire's does, and the decider fails the operation
    assert into.status_code == 200, into.text
    await scheduler.command(into.json()["ic_id"])
    failed = (await api.client.get(f"/api/v1/operations/{into.json()['ic_id']}")).json()
    assert failed["status"] == "failed"
    assert "'a' is taken" in failed["error"]

    # a clone without a name gets the first free `<parent>-clone[-n]`
    for expected in ("a-clone", "a-clone-2"):
        clone = await api.client.post("/api/v1/pipelines/1/clone")
        await scheduler.command(clone.json()["ic_id"])
        pid = (await api.client.get(f"/api/v1/operations/{clone.json()['ic_id']}")).json()[
            "result"
        ]["pipeline_id"]
        assert (await api.client.get(f"/api/v1/pipelines/{pid}")).json()[
            "pipeline_name"
        ] == expected


async def test_the_openapi_document_says_what_the_server_sends(api: Api, nc: NATS, names: Names):
    doc = (await api.client.get("/openapi.json")).json()
    operations = [(p, m, op) for p, ops in doc["paths"].items() for m, op in ops.items()]
    assert all("422" not in op["responses"] for _, _, op in operations)
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]
    assert all("401" not in op["responses"] and "security" not in op for _, _, op in operations)

    def codes(path: str, method: str = "post") -> set[str]:
        return set(doc["paths"][path][method]["responses"])

    write = {"200", "400", "403", "404", "409", "413", "415", "503"}
    assert codes("/api/v1/pipelines/{pipeline_id}/stop") == write
    assert codes("/dispatcher/clone-pipeline") == write
    assert codes("/api/v1/experiments") == write - {"404"}
    assert codes("/api/v1/pipelines/{pipeline_id}", "get") == {"200", "400", "403", "404"}
    assert codes("/readyz", "get") == {"200", "400", "403", "503"}
    error = doc["paths"]["/dispatcher/stop-pipeline"]["post"]["responses"]["404"]
    assert error["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}

    schemas = doc["components"]["schemas"]
    assert schemas["DatasetBody"]["oneOf"] == [{"required": ["rows"]}, {"required": ["ref"]}]
    assert schemas["CloneIntoContextBody"]["properties"]["context_id"]["pattern"]
    rpm = schemas["PipelineBody"]["properties"]["rpm_limit"]["anyOf"][0]
    assert (rpm["type"], rpm["minimum"], rpm["maximum"]) == ("integer", 1, 1_000_000_000)

    # the statuses a request gets are the documented ones
    missing = await api.client.post("/dispatcher/stop-pipeline", json={"pipeline_id": 99})
    assert str(missing.status_code) in codes("/dispatcher/stop-pipeline")

    async with running_api(nc, names, token="s3cret") as guarded:
        doc = (await guarded.client.get("/openapi.json")).json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    stop = doc["paths"]["/dispatcher/stop-pipeline"]["post"]
    assert "401" in stop["responses"]
    assert stop["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/healthz"]["get"]

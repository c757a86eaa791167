"""The api's evaluation surface against a real nats-server: live metrics with intervals, the
leaderboard, streamed results, user-scorer allow-list, and dataset uploads in every format.

No scheduler runs: `Decisions` takes its part through the real log (command from INFERNO_CMD,
`decide`, events appended to INFERNO_EVT with the fence), as tests/integration/test_api.py does.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.api.app import create_app
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events import Names, State, decide, decode_command, encode, evolve, subject_for
from inferno.events.commands import AssignWork, ExecutorSlot, ShardFinished
from inferno.events.model import LATENCY_BUCKETS_MS, MetricStats, ShardStats
from inferno.events.work import report_subject
from inferno.jetstream import Appender, Outgoing
from inferno.runtime.settings import Settings

ROWS = [{"id": str(i), "question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(8)]


class Decisions:
    """The scheduler's role, through the real log; waits until the api has folded each batch."""

    def __init__(self, nc: NATS, js: JetStreamContext, names: Names, app: FastAPI) -> None:
        self.js, self.names, self.app = js, names, app
        self.appender = Appender(nc)
        self.state = State()
        self.evt_seq = 0

    async def command(self, ic_id: int) -> None:
        command = decode_command((await self.js.get_msg(self.names.cmd_stream, seq=ic_id)).data)
        await self._append(decide(self.state, command, now=time.time(), seq=ic_id))

    async def assign(self, *executors: str) -> None:
        slots = tuple(
            ExecutorSlot(executor_id=e, backends=frozenset({"sim"}), free_slots=4)
            for e in executors
        )
        await self._append(decide(self.state, AssignWork(executors=slots), now=time.time(), seq=0))

    async def finish(
        self, pipeline_id: int, shard: int, stats: ShardStats, results: tuple[bytes, ...] = ()
    ) -> None:
        """The executor's report, stored in INFERNO_EXEC (with `results` inline, if any), and
        the decision on it."""
        assignment = self.state.pipelines[pipeline_id].in_flight[shard]
        report = ShardFinished(
            executor_id=assignment.executor_id,
            pipeline_id=pipeline_id,
            shard=shard,
            attempt=assignment.attempt,
            stats=stats,
            results=[msgspec.Raw(row) for row in results],
        )
        stored = await self.js.publish(
            report_subject(self.names, report), encode(report), stream=self.names.exec_stream
        )
        await self._append(decide(self.state, report, now=time.time(), seq=stored.seq))

    async def _append(self, events: list[Any]) -> None:
        if not events:
            return
        messages = [
            Outgoing(subject_for(self.names, e), encode(e), f"t-{self.evt_seq}-{i}")
            for i, e in enumerate(events)
        ]
        result = await self.appender.append(
            self.names.evt_stream, messages, expected_last_seq=self.evt_seq
        )
        self.evt_seq = result.last_seq
        for event in events:
            evolve(self.state, event)
        projection = self.app.state.gateway.projection
        deadline = time.monotonic() + 5
        while projection.model.evt_seq < result.last_seq:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)


class Api:
    def __init__(self, client: httpx.AsyncClient, decisions: Decisions) -> None:
        self.client, self.decisions = client, decisions

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post("/api/v1/experiments", json=body)
        assert response.status_code == 200, response.text
        await self.decisions.command(response.json()["ic_id"])
        return response.json()


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Api]:
    settings = Settings(namespace=names.namespace, scorer_modules=("graders",))
    app = create_app(settings, nc=nc)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield Api(client, Decisions(nc, js, names, app))


def experiment(pipelines: int = 3, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "experiment_name": "arith",
        "num_shards": 2,
        "dataset": {"rows": ROWS},
        "eval": {
            "prompt": "Q: {question}\nA:",
            "scorers": [
                {"name": "exact_match", "target": "answer"},
                {"name": "numeric", "target": "answer", "options": {"tolerance": 1}},
            ],
        },
        "pipelines": [
            {"pipeline_name": f"p{i}", "pipeline_type": "sim", "model_config": {"model": f"m{i}"}}
            for i in range(1, pipelines + 1)
        ],
    }
    body.update(overrides)
    return body


def shard(
    exact: tuple[int, int], numeric: tuple[int, int] | None = None, **extra: Any
) -> ShardStats:
    """Stats of a shard with `ones` of `n` rows right on each metric."""
    metrics = {}
    for name, counts in (("exact_match", exact), ("numeric", numeric or exact)):
        ones, n = counts
        metrics[name] = MetricStats(n, float(ones), float(ones), float(ones < n), float(ones > 0))
    return ShardStats(rows=exact[1], metrics=metrics, **extra)


# live metrics and the leaderboard


async def test_pipeline_metrics_carry_intervals_throughput_latency_tokens_and_cost(api: Api):
    prices = {"price_per_1k_prompt_tokens": 0.5, "price_per_1k_completion_tokens": 2.0}
    body = experiment(pipelines=2)
    body["pipelines"][0]["client_config"] = prices
    await api.create(body)
    await api.decisions.assign("e1", "e2")
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[LATENCY_BUCKETS_MS.index(500)] = 4  # 4 rows in (200, 500] ms
    stats = shard((3, 4), prompt_tokens=400, completion_tokens=100, duration_s=2.0)
    stats.latency_ms_buckets = buckets
    await api.decisions.finish(1, 0, stats)

    one = (await api.client.get("/api/v1/pipelines/1")).json()
    em = one["metrics"]["exact_match"]
    assert (em["value"], em["count"], em["ci_method"], em["confidence_level"]) == (
        0.75,
        4,
        "wilson",
        0.95,
    )
    assert 0 <= em["lower_bound"] < 0.75 < em["upper_bound"] <= 1
    assert one["rows_per_s"] == 2.0
    assert one["latency_ms"] == {"p50": pytest.approx(350.0), "p95": pytest.approx(485.0)}
    assert one["tokens"] == {"prompt": 400, "completion": 100}
    assert one["estimated_cost"] == pytest.approx(0.4)
    two = (await api.client.get("/api/v1/pipelines/2")).json()
    assert (two["metrics"], two["rows_per_s"], two["estimated_cost"]) == ({}, None, None)
    assert two["latency_ms"] == {"p50": None, "p95": None}

    # every row scored: the interval is the value
    await api.decisions.finish(1, 1, shard((1, 4)))
    em = (await api.client.get("/api/v1/pipelines/1")).json()["metrics"]["exact_match"]
    assert em["lower_bound"] == em["value"] == em["upper_bound"] == 0.5


async def test_the_experiments_ci_method_and_level_apply(api: Api):
    spec = {
        "prompt": "{question}",
        "scorers": [{"name": "exact_match", "target": "answer"}],
        "ci_method": "hoeffding",
        "confidence_level": 0.9,
    }
    created = await api.create(experiment(pipelines=1, eval=spec))
    await api.decisions.assign("e1")
    await api.decisions.finish(1, 0, shard((2, 4)))
    em = (await api.client.get("/api/v1/pipelines/1")).json()["metrics"]["exact_match"]
    assert (em["ci_method"], em["confidence_level"]) == ("hoeffding", 0.9)
    experiment_id = created["experiment_id"]
    board = (await api.client.get(f"/api/v1/experiments/{experiment_id}/leaderboard")).json()
    assert board["pipelines"][0]["ci_method"] == "hoeffding"


async def test_leaderboard_ranks_by_the_chosen_metric_with_intervals(api: Api):
    created = await api.create(experiment(pipelines=4))
    url = f"/api/v1/experiments/{created['experiment_id']}/leaderboard"
    await api.decisions.assign("e1", "e2", "e3", "e4")
    await api.decisions.finish(1, 0, shard((1, 4), numeric=(4, 4)))
    await api.decisions.finish(2, 0, shard((3, 4), numeric=(3, 4)))
    await api.decisions.finish(3, 0, shard((4, 4), numeric=(0, 4)))  # and pipeline 4: none
    await api.decisions.finish(2, 1, shard((4, 4), numeric=(4, 4)))

    board = (await api.client.get(url)).json()
    assert (board["metric"], board["experiment_name"], board["row_count"]) == (
        "exact_match",  # the first scorer
        "arith",
        8,
    )
    ranked = [(e["rank"], e["pipeline_id"], e["value"]) for e in board["pipelines"]]
    assert ranked == [(1, 3, 1.0), (2, 2, 0.875), (3, 1, 0.25), (4, 4, None)]
    first = board["pipelines"][0]
    assert (first["status"], first["shards_completed"], first["num_shards"], first["count"]) == (
        "ongoing",
        1,
        2,
        4,
    )
    assert first["lower_bound"] < first["value"] == 1.0
    assert first["upper_bound"] == pytest.approx(1.0)
    done = board["pipelines"][1]  # pipeline 2 scored every row: its interval is its value
    assert (done["status"], done["lower_bound"], done["upper_bound"]) == ("completed", 0.875, 0.875)
    assert board["pipelines"][3]["lower_bound"] is None

    by_numeric = (await api.client.get(url, params={"metric": "numeric"})).json()
    assert [e["pipeline_id"] for e in by_numeric["pipelines"]] == [1, 2, 3, 4]
    assert by_numeric["metric"] == "numeric"

    delete = await api.client.post("/api/v1/pipelines/4/delete")
    await api.decisions.command(delete.json()["ic_id"])
    assert [e["pipeline_id"] for e in (await api.client.get(url)).json()["pipelines"]] == [3, 2, 1]

    unknown = await api.client.get(url, params={"metric": "bleu"})
    assert unknown.status_code == 400
    assert "query parameter 'metric': 'bleu' is not a metric" in unknown.json()["error"]
    assert "exact_match, numeric" in unknown.json()["error"]
    missing = await api.client.get("/api/v1/experiments/exp-nope/leaderboard")
    assert missing.status_code == 404


# results


async def test_results_stream_the_completed_shards_in_order(
    api: Api, js: JetStreamContext, names: Names
):
    """Shards 0 and 1 have their results in INFERNO_RESULTS (too large for a report), shard 2
    inside the report that finished it; the route reads both ways, in shard order."""
    created = await api.create(experiment(pipelines=1, num_shards=3))
    experiment_id = created["experiment_id"]
    store = await js.object_store(names.results_store)
    rows = {
        s: [msgspec.json.encode({"row_index": i, "shard": s}) for i in range(2)] for s in range(3)
    }
    lines = {s: b"".join(row + b"\n" for row in rows[s]) for s in range(3)}
    for s in (0, 1):
        await store.put(f"{experiment_id}/1/{s}.jsonl", lines[s])
    await store.put(f"{experiment_id}/1/2.jsonl", b'{"a stale attempt": true}\n')  # not read
    empty = await api.client.get("/api/v1/pipelines/1/results")
    assert (empty.status_code, empty.content) == (200, b"")

    await api.decisions.assign("e1", "e2", "e3")
    await api.decisions.finish(1, 2, shard((1, 2)), results=tuple(rows[2]))
    await api.decisions.finish(1, 0, shard((1, 2)))  # shard 1 is still running
    response = await api.client.get("/api/v1/pipelines/1/results")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.content == lines[0] + lines[2]

    await api.decisions.finish(1, 1, shard((1, 2)))
    async with api.client.stream("GET", "/api/v1/pipelines/1/results") as streamed:
        rows = [msgspec.json.decode(line) async for line in streamed.aiter_lines() if line]
    assert [(r["shard"], r["row_index"]) for r in rows] == [
        (s, i) for s in range(3) for i in (0, 1)
    ]

    missing = await api.client.get("/api/v1/pipelines/99/results")
    assert (missing.status_code, missing.json()) == (404, {"error": "pipeline 99 not found"})


# dry runs


async def test_a_dry_run_estimates_from_inline_or_stored_rows_and_stores_nothing(
    api: Api, js: JetStreamContext, names: Names
):
    body = experiment(pipelines=1)
    body["pipelines"][0]["sampling_params"] = {"max_tokens": 5}
    chars = sum(len("Q: \nA:") + len(row["question"]) for row in ROWS)
    inline = await api.client.post("/api/v1/experiments?dry_run=true", json=body)
    assert inline.status_code == 200, inline.text
    answer = inline.json()
    assert (answer["dry_run"], answer["rows"]) == (True, len(ROWS))
    [p1] = answer["pipelines"]
    assert (p1["prompt_tokens"], p1["completion_tokens_max"]) == (-(-chars // 4), 5 * len(ROWS))
    assert (p1["cost_max"], answer["total"]["unpriced"]) == (None, ["p1"])
    assert (await js.stream_info(names.cmd_stream)).state.messages == 0  # nothing appended
    assert (await js.stream_info(f"OBJ_{names.data_store}")).state.messages == 0  # nor stored

    ref = (await api.client.post("/api/v1/datasets", json={"rows": ROWS})).json()["dataset_ref"]
    stored = await api.client.post(
        "/api/v1/experiments?dry_run=true", json={**body, "dataset": {"ref": ref}}
    )
    assert stored.json() == answer  # the same rows, read from their blocks
    bad = await api.client.post("/api/v1/experiments?dry_run=true", json={**body, "num_shards": 99})
    assert bad.status_code == 400
    assert "num_shards" in bad.json()["error"]
    assert (await js.stream_info(names.cmd_stream)).state.messages == 0


# user scorers


async def test_user_scorers_must_come_from_the_allow_list(
    api: Api, js: JetStreamContext, names: Names
):
    def body(name: str) -> dict[str, Any]:
        return experiment(eval={"prompt": "{question}", "scorers": [{"name": name}]})

    for name, message in [
        ("os:system", "scorer 'os:system': module 'os' is not in INFERNO_SCORER_MODULES"),
        ("graders.sub:f", "module 'graders.sub' is not in INFERNO_SCORER_MODULES"),
        ("graders:", "unknown scorer 'graders:'"),
    ]:
        response = await api.client.post("/api/v1/experiments", json=body(name))
        assert response.status_code == 400, response.text
        assert "field 'eval.scorers.0" in response.json()["error"]
        assert message in response.json()["error"]
    assert (await js.stream_info(names.cmd_stream)).state.messages == 0  # nothing appended
    allowed = await api.client.post("/api/v1/experiments", json=body("graders:length_ratio"))
    assert allowed.status_code == 200, allowed.text


async def test_scorer_options_and_prices_are_checked(api: Api):
    bad_regex = experiment(
        eval={"prompt": "{question}", "scorers": [{"name": "regex", "options": {"pattern": "("}}]}
    )
    response = await api.client.post("/api/v1/experiments", json=bad_regex)
    assert response.status_code == 400
    assert (
        "field 'eval.scorers.0': scorer regex: options.pattern is invalid"
        in (response.json()["error"])
    )
    priced = experiment(pipelines=1)
    priced["pipelines"][0]["client_config"] = {"price_per_1k_prompt_tokens": "free"}
    response = await api.client.post("/api/v1/experiments", json=priced)
    assert response.status_code == 400
    assert (
        "field 'pipelines.0.client_config': price_per_1k_prompt_tokens must be"
        in (response.json()["error"])
    )


# dataset uploads


def parquet(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def csv_text(rows: list[dict[str, Any]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(str(r[k]) for k in header) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode()


async def test_jsonl_csv_and_parquet_uploads_of_the_same_rows_get_the_same_ref(api: Api):
    expected = {"dataset_ref": dataset_ref(to_jsonl(ROWS)), "row_count": len(ROWS)}
    # not canonical: keys in another order, and spaces
    jsonl = b"\n".join(
        msgspec.json.format(msgspec.json.encode(dict(reversed(list(r.items())))), indent=0).replace(
            b"\n", b" "
        )
        for r in ROWS
    )
    uploads = [
        {"json": {"rows": ROWS}},
        {"content": jsonl, "headers": {"Content-Type": "application/x-ndjson"}},
        {"content": csv_text(ROWS), "headers": {"Content-Type": "text/csv; charset=utf-8"}},
        {"content": parquet(ROWS), "headers": {"Content-Type": "application/vnd.apache.parquet"}},
        {
            "content": parquet(ROWS),
            "headers": {"Content-Type": "application/octet-stream"},
            "params": {"format": "parquet"},
        },
        {"files": {"file": ("rows.jsonl", jsonl)}},
        {"files": {"file": ("rows.csv", csv_text(ROWS))}},
        {"files": {"file": ("rows.parquet", parquet(ROWS), "application/octet-stream")}},
        {"files": {"file": ("upload", parquet(ROWS))}, "params": {"format": "parquet"}},
    ]
    for upload in uploads:
        response = await api.client.post("/api/v1/datasets", **upload)
        assert (response.status_code, response.json()) == (200, expected), upload.keys()
    by_ref = experiment(dataset={"ref": expected["dataset_ref"]})
    assert (await api.client.post("/api/v1/experiments", json=by_ref)).status_code == 200


async def test_parquet_keeps_types_and_csv_keeps_strings(api: Api):
    typed = [{"q": "a", "n": 1, "x": 0.5, "tags": ["t"]}, {"q": "b", "n": 2, "x": None, "tags": []}]
    response = await api.client.post(
        "/api/v1/datasets", files={"file": ("t.parquet", parquet(typed))}
    )
    assert response.json()["dataset_ref"] == dataset_ref(to_jsonl(typed))
    response = await api.client.post("/api/v1/datasets", files={"file": ("t.csv", b"n\n1\n")})
    assert response.json()["dataset_ref"] == dataset_ref(to_jsonl([{"n": "1"}]))


@pytest.mark.parametrize(
    ("upload", "status", "message"),
    [
        (
            {"files": {"file": ("rows.csv", b"a,b\n1,2\n3\n")}},
            400,
            "field 'file': the csv file line 3: expected 2 columns as in the header",
        ),
        (
            {"content": b'{"a": 1}\n[2]\n', "headers": {"Content-Type": "application/x-ndjson"}},
            400,
            "request body: the jsonl file line 2: a row must be a JSON object",
        ),
        (
            {"content": b"not parquet", "headers": {"Content-Type": "application/x-parquet"}},
            400,
            "request body: the parquet file is not a readable Parquet file",
        ),
        ({"files": {"file": ("rows.xlsx", b"x")}}, 400, "field 'file': cannot tell the format"),
        ({"files": {"other": ("rows.csv", b"a\n1\n")}}, 400, "part named 'file'"),
        ({"content": b"a\n1\n", "headers": {"Content-Type": "text/plain"}}, 415, "text/plain"),
        ({"json": {"rows": []}}, 400, "field 'rows'"),
        ({"content": b"{", "headers": {"Content-Type": "application/json"}}, 400, "not valid JSON"),
        ({"files": {"file": ("rows.csv", b"")}}, 400, "the csv file has no header row"),
    ],
)
async def test_bad_uploads_say_what_is_wrong(api: Api, upload, status, message):
    response = await api.client.post("/api/v1/datasets", **upload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]

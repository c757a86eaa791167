"""The hf backend end to end on the CPU: a real transformers model through the real executor.

The model is built here: GPT-2 shaped, random weights, with a BPE tokenizer trained on the
experiment's own rows (`hf.tiny_model`), saved to a temp dir; the hub is switched off, so nothing
is downloaded. A `LocalCluster` (nats-server, api, scheduler, one executor, each its own process)
runs an experiment on it through the api; the test stops, resumes and clones the pipeline while
shards run. The answers are noise, so scores are ~0: what is checked is that every row ran
through the model (outputs in INFERNO_RESULTS, tokens counted by the tokenizer, nothing labelled
simulated) and that steering works on a real engine.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest

from inferno.client.launcher import LocalCluster
from inferno.executor.backends import hf
from inferno.executor.service import local_gpus
from tests.waiting import until

T = TypeVar("T")
ROWS = [
    json.loads(line)
    for line in (Path(__file__).resolve().parents[2] / "examples" / "arith.jsonl").open()
]
SHARDS = 8  # 12 rows each: one generate call of 12 rows per shard
MAX_TOKENS = 320  # ~0.5 s a shard on 2 cores, so steering lands while shards run


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [f"Q: {row['question']}\nA: {row['answer']}" for row in ROWS]
    return hf.tiny_model(tmp_path_factory.mktemp("tiny-lm"), corpus)


@pytest.fixture
def hf_cluster(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalCluster]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # children inherit it: no hub, no downloads
    cluster = LocalCluster(
        tmp_path / "data", executors=1, namespace=namespace, log_dir=tmp_path / "logs"
    )
    print(f"cluster logs: {tmp_path / 'logs'}")  # shown with a failure's captured output
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def api(hf_cluster: LocalCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"{hf_cluster.api_url}/api/v1", timeout=30.0, trust_env=False
    ) as client:
        yield client


async def call(api: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
    response = await api.request(method, path, json=body, params={"wait": 10})
    assert response.status_code == 200, f"{method} {path}: {response.text}"
    return response.json()


async def pipeline_when(
    api: httpx.AsyncClient, pid: int, ready: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        p = await call(api, "GET", f"/pipelines/{pid}")
        assert p["status"] != "failed", p["error"]
        return p if ready(p) else None

    return await until(check, f"pipeline {pid}", timeout)


def settled(status: str) -> Callable[[dict[str, Any]], bool]:
    return lambda p: p["status"] == status and not p["in_flight"]


def running(p: dict[str, Any]) -> bool:
    return p["status"] == "ongoing" and bool(p["in_flight"]) and p["shards_completed"] >= 1


async def results(api: httpx.AsyncClient, pid: int) -> list[dict[str, Any]]:
    """Every row of the pipeline's completed shards, as the results route streams them."""
    response = await api.get(f"/pipelines/{pid}/results")
    assert response.status_code == 200, response.text
    return [msgspec.json.decode(line) for line in response.content.splitlines()]


async def test_an_hf_pipeline_runs_and_is_steered_mid_run(
    hf_cluster: LocalCluster, api: httpx.AsyncClient, tiny: Path
) -> None:
    started = time.monotonic()
    executors = await call(api, "GET", "/executors")
    executors = executors["executors"] if isinstance(executors, dict) else executors
    assert "hf" in executors[0]["backends"]
    assert executors[0]["has_gpu"] is bool(local_gpus())  # the heartbeat says what torch sees

    created = await call(
        api,
        "POST",
        "/experiments",
        {
            "experiment_name": "arith-hf",
            "num_shards": SHARDS,
            "dataset": {"rows": ROWS},
            "eval": {
                "prompt": "Q: {question}\nA:",
                "scorers": [{"name": "exact_match", "target": "answer"}],
            },
            "pipelines": [
                {
                    "pipeline_name": "tiny",
                    "pipeline_type": "hf",
                    "model_config": {"model": str(tiny), "dtype": "float32"},
                    "sampling_params": {"temperature": 0, "max_tokens": MAX_TOKENS},
                }
            ],
        },
    )
    assert created["status"] == "completed", created
    pid = created["pipelines"][0]["pipeline_id"]

    # the first shard pays for importing torch and loading the model
    await pipeline_when(api, pid, running, timeout=120)
    await call(api, "POST", f"/pipelines/{pid}/stop")
    stopped = await pipeline_when(api, pid, settled("stopped"), timeout=90)
    assert 1 <= stopped["shards_completed"] < SHARDS, stopped

    await call(api, "POST", f"/pipelines/{pid}/resume")
    await pipeline_when(api, pid, running, timeout=90)
    op = await call(
        api,
        "POST",
        f"/pipelines/{pid}/clone",
        {"pipeline_name": "tiny-short", "sampling_params": {"max_tokens": 4}},
    )
    assert op["status"] == "completed", op
    clone_id = op["result"]["pipeline_id"]

    original = await pipeline_when(api, pid, settled("completed"), timeout=180)
    clone = await pipeline_when(api, clone_id, settled("completed"), timeout=180)
    for p in (original, clone):
        assert (p["shards_completed"], p["rows_processed"]) == (SHARDS, len(ROWS)), p
        assert p["simulated"] is False
        assert p["pipeline_type"] == "hf"
        assert p["metrics"]["exact_match"]["count"] == len(ROWS)  # scored, ~0 with noise
        assert p["prompt_tokens"] > len(ROWS)  # the tokenizer's count, several per prompt
    assert clone["parent_pipeline_id"] == pid
    assert 0 < clone["completion_tokens"] <= 4 * len(ROWS)  # the clone's sampling took effect
    assert original["completion_tokens"] > clone["completion_tokens"]

    for p in (original, clone):
        rows = await results(api, p["pipeline_id"])
        assert sorted(r["row_index"] for r in rows) == list(range(len(ROWS)))
        assert all(isinstance(r["output"], str) and "error" not in r for r in rows)
        assert not any(r.get("simulated") for r in rows)
        assert all(r["prompt_tokens"] > 0 for r in rows)
        assert sum(r["completion_tokens"] for r in rows) == p["completion_tokens"]
        assert any(r["output"] for r in rows)  # the model wrote something
    print(f"hf pipeline, stop, resume and clone took {time.monotonic() - started:.1f}s")

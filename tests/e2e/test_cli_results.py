"""Evaluation end to end on a real local cluster: a Parquet dataset, built-in and user scorers
run by real executors, then `inferno results` (JSONL export) and `inferno results --compare`."""

from __future__ import annotations

import io
import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferno.client.cli import main
from inferno.client.launcher import LocalCluster
from inferno.client.sdk import Client

ROWS = 24


@pytest.fixture
def cluster(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalCluster]:
    """Two executors that may run scorers from the module `graders` (on their PYTHONPATH)."""
    (tmp_path / "graders.py").write_text(
        textwrap.dedent(
            """
            def half_length(output, row, scorer):
                return len(output) / 2
            """
        )
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("INFERNO_SCORER_MODULES", "graders")
    running = LocalCluster(
        tmp_path / "data", executors=2, namespace=namespace, out=io.StringIO(), sync_always=False
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def cli(cluster: LocalCluster, *args: str) -> str:
    out = io.StringIO()
    assert main(["--api", cluster.api_url, *args], out=out) == 0
    return out.getvalue()


def test_results_export_and_compare(cluster: LocalCluster, tmp_path: Path) -> None:
    dataset = tmp_path / "arith.parquet"
    rows = [{"id": i, "question": f"{i} + {i} = ?", "answer": str(2 * i)} for i in range(ROWS)]
    pq.write_table(pa.Table.from_pylist(rows), dataset)
    price = {"price_per_1k_prompt_tokens": 1.0, "price_per_1k_completion_tokens": 2.0}
    with Client(cluster.api_url) as client:
        ref = client.upload_dataset_file(dataset)["dataset_ref"]
        spec = {
            "experiment_name": "compare-me",
            "num_shards": 4,
            "dataset": {"ref": ref},
            "eval": {
                "prompt": [{"role": "user", "content": "{question}"}],
                "scorers": [
                    {"name": "exact_match", "target": "answer"},
                    {"name": "numeric", "target": "answer"},
                    {"name": "graders:half_length"},
                ],
            },
            "pipelines": [
                {
                    "pipeline_name": name,
                    "pipeline_type": "sim",
                    "model_config": {"model": name, "accuracy": accuracy},
                    "client_config": price,
                }
                for name, accuracy in (("weak", 0.3), ("strong", 0.95))
            ],
        }
        created = client.create_experiment(spec, wait=10)
        assert created["status"] == "completed", created
        experiment_id = created["experiment_id"]
        deadline = time.monotonic() + 30
        while not all(p["status"] == "completed" for p in client.pipelines(experiment_id)):
            assert time.monotonic() < deadline, client.pipelines(experiment_id)
            time.sleep(0.1)
        strong = client.pipeline(2)

    # every row scored: each interval has collapsed to its value
    for name in ("exact_match", "numeric", "graders:half_length"):
        metric = strong["metrics"][name]
        assert metric["count"] == ROWS
        assert metric["lower_bound"] == metric["value"] == metric["upper_bound"]
    assert strong["metrics"]["exact_match"]["ci_method"] == "confidence_sequence"
    assert strong["metrics"]["graders:half_length"]["ci_method"] == "normal"
    assert strong["rows_per_s"] > 0
    assert strong["latency_ms"]["p50"] is not None
    tokens = strong["tokens"]
    assert strong["estimated_cost"] == pytest.approx(
        (tokens["prompt"] + 2 * tokens["completion"]) / 1000
    )

    out = tmp_path / "strong.jsonl"
    said = cli(cluster, "results", "stro", "-o", str(out))
    assert said == f"{ROWS} rows of pipeline 2 (stro) written to {out}\n"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["row_index"] for r in lines) == list(range(ROWS))  # shuffled into shards
    assert set(lines[0]["scores"]) == {"exact_match", "numeric", "graders:half_length"}
    first = next(r for r in lines if r["row_index"] == 0)
    assert first["prompt"] == [{"role": "user", "content": "0 + 0 = ?"}]
    assert all(r["simulated"] for r in lines)
    assert cli(cluster, "results", "2").splitlines() == out.read_text().splitlines()

    table = cli(cluster, "results", "--compare", "compare")
    title, header, *entries = table.splitlines()
    assert title.startswith(f"experiment {experiment_id} (compare-me) by exact_match")
    assert "95% confidence intervals: confidence sequence (valid at every look)" in title
    columns = ["RANK", "ID", "NAME", "STATUS", "SHARDS", "exact_match", "INTERVAL", "N", "ERRORS"]
    assert header.split() == columns
    assert [e.split()[:5] for e in entries] == [
        ["1", "2", "strong", "completed", "4/4"],
        ["2", "1", "weak", "completed", "4/4"],
    ]
    table = cli(cluster, "results", "--compare", experiment_id, "--metric", "numeric")
    assert " by numeric" in table.splitlines()[0]


def test_a_dry_run_prints_the_estimate_and_creates_nothing(cluster: LocalCluster) -> None:
    spec = Path(__file__).resolve().parents[2] / "examples" / "arith.yaml"
    said = cli(cluster, "run", str(spec), "--dry-run")
    assert said.splitlines() == [
        "dry run over 96 rows: nothing was created",
        "NAME    TYPE  PROMPT TOKENS  COMPLETION MAX  TOKENS MAX  COST MAX",
        "small   sim             518             576        1094  -",
        "medium  sim             518             576        1094  -",
        "large   sim             518             576        1094  -",
        "total: at most 3282 tokens (no prices for small, medium, large)",
        "(prompt tokens ~ characters / 4; completions at their bound)",
    ]
    with Client(cluster.api_url) as client:
        assert client.experiments() == []
        assert client.operations() == []

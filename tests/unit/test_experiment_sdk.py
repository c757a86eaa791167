"""The pure parts of the Experiment API and the clients' shared wire: specs built from what a
notebook passes, results typed from the api's pipelines, requests and error mapping."""

from __future__ import annotations

import httpx
import pytest

from inferno.client import evals, wire
from inferno.client.events import SseMessages, sse_messages

PIPELINE = {
    "pipeline_id": 3,
    "pipeline_name": "large",
    "status": "completed",
    "shards_completed": 8,
    "num_shards": 8,
    "rows_processed": 96,
    "rows_per_s": 28.5,
    "tokens": {"prompt": 600, "completion": 96},
    "estimated_cost": None,
    "parent_pipeline_id": None,
    "simulated": True,
    "error": None,
    "metrics": {
        "exact_match": {
            "value": 0.9,
            "lower_bound": 0.8,
            "upper_bound": 0.96,
            "confidence_level": 0.95,
            "ci_method": "wilson",
            "count": 96,
        }
    },
}


def test_a_result_holds_the_metric_with_its_interval_and_the_rows():
    rows = [{"row_index": 0, "output": "4", "scores": {"exact_match": 1.0}}]
    got = evals.result(PIPELINE, rows)
    assert got.metrics["exact_match"] == evals.Metric(0.9, 0.8, 0.96, 0.95, "wilson", 96)
    assert (got.pipeline_id, got.status, got.rows, got.simulated) == (3, "completed", rows, True)
    assert (got.prompt_tokens, got.completion_tokens, got.rows_per_s) == (600, 96, 28.5)


def test_as_rapidfire_gives_its_pair_of_rows_and_cumulative_metrics():
    rows, cumulative = evals.result(PIPELINE, [{"row_index": 0}]).as_rapidfire()
    assert rows == [{"row_index": 0}]
    assert cumulative["run_id"] == {"value": 3}
    assert cumulative["Samples Processed"] == {"value": 96}
    assert cumulative["exact_match"]["lower_bound"] == 0.8
    assert cumulative["exact_match"]["margin_of_error"] == pytest.approx(0.08)


def test_a_metric_without_an_interval_yet_has_no_margin():
    pipeline = {**PIPELINE, "metrics": {"exact_match": {"value": None, "count": 0}}}
    _, cumulative = evals.result(pipeline, []).as_rapidfire()
    assert cumulative["exact_match"] == {
        "value": None,
        "lower_bound": None,
        "upper_bound": None,
        "margin_of_error": None,
    }


def test_datasets_are_rows_a_mapping_or_refused_naming_what_to_give():
    assert evals.dataset_spec([{"q": 1}]) == {"rows": [{"q": 1}]}
    assert evals.dataset_spec({"ref": "sha256:ab"}) == {"ref": "sha256:ab"}
    with pytest.raises(TypeError, match="must hold `rows` or `ref`"):
        evals.dataset_spec({"path": "x.jsonl"})
    with pytest.raises(TypeError, match="one dict per row"):
        evals.dataset_spec([1, 2])
    with pytest.raises(TypeError, match="not int"):
        evals.dataset_spec(7)
    assert evals.is_file("rows.jsonl")
    assert not evals.is_file([{"q": 1}])


def test_pipelines_are_one_spec_or_a_list_of_them():
    spec = {"pipeline_name": "a", "pipeline_type": "sim"}
    assert evals.pipeline_specs(spec) == [spec]
    assert evals.pipeline_specs([spec, spec]) == [spec, spec]
    for bad in ([], "a", [spec, "b"]):
        with pytest.raises(TypeError, match="pipelines: give a pipeline spec"):
            evals.pipeline_specs(bad)


def test_the_spec_is_the_apis_experiment_body():
    body = evals.experiment_spec(
        "arith", [{"pipeline_name": "a"}], {"rows": [{"q": 1}]}, None, 4, {"max_attempts": 2}
    )
    assert body == {
        "experiment_name": "arith",
        "num_shards": 4,
        "dataset": {"rows": [{"q": 1}]},
        "pipelines": [{"pipeline_name": "a"}],
        "max_attempts": 2,
    }
    with_eval = evals.experiment_spec("e", [], {"ref": "r"}, {"prompt": "{q}"}, 2, {})
    assert with_eval["eval"] == {"prompt": "{q}"}


def test_run_evals_returns_what_rapidfire_does_leaving_out_deleted_and_failed():
    pipelines = [
        {"pipeline_id": 2, "status": "stopped"},
        {"pipeline_id": 1, "status": "completed"},
        {"pipeline_id": 3, "status": "deleted"},
        {"pipeline_id": 4, "status": "failed"},
    ]
    assert [p["pipeline_id"] for p in evals.kept(pipelines)] == [1, 2]


def test_pipelines_are_found_by_id_or_by_a_unique_name():
    pipelines = [
        {"pipeline_id": 1, "pipeline_name": "small"},
        {"pipeline_id": 2, "pipeline_name": "twin"},
        {"pipeline_id": 3, "pipeline_name": "twin"},
    ]
    assert evals.resolve(pipelines, 1) == 1
    assert evals.resolve(pipelines, "small") == 1
    with pytest.raises(ValueError, match="pipeline 9 is not in this experiment"):
        evals.resolve(pipelines, 9)
    with pytest.raises(ValueError, match=r"no pipeline named 'big'.*small, twin"):
        evals.resolve(pipelines, "big")
    with pytest.raises(ValueError, match=r"2 pipelines are named 'twin': \[2, 3\]"):
        evals.resolve(pipelines, "twin")


def test_requests_leave_out_none_and_stretch_the_read_timeout_by_wait():
    args = wire.request_args(
        httpx.Timeout(30.0), "POST", "/x", {"a": 1}, 10, "key-1", {"q": None, "r": 2}
    )
    assert args["params"] == {"r": 2, "wait": 10}
    assert args["headers"] == {"Idempotency-Key": "key-1"}
    assert args["timeout"].read == 40.0
    assert wire.request_args(httpx.Timeout(30.0), "GET", "/y")["headers"] == {}


def test_headers_carry_the_token_and_a_checked_actor():
    assert wire.headers("t0k", "alice@lab") == {
        "Authorization": "Bearer t0k",
        "X-Inferno-Actor": "alice@lab",
    }
    assert wire.headers(None, None) == {}
    with pytest.raises(ValueError, match="printable ASCII"):
        wire.headers(None, "bad\nactor")


def test_the_dispatcher_routes_are_the_seeds_and_reason_is_a_query_parameter():
    assert wire.dispatcher("stop-pipeline", "why") == (
        "/dispatcher/stop-pipeline",
        {"reason": "why"},
    )
    with pytest.raises(ValueError, match="no dispatcher route 'stop-run'"):
        wire.dispatcher("stop-run", None)


def _response(status: int, content: bytes) -> httpx.Response:
    return httpx.Response(status, content=content, request=httpx.Request("GET", "http://h/p"))


def test_answers_are_json_or_an_inferno_error_with_the_servers_text():
    assert wire.answer(_response(200, b'{"a": 1}'), "http://h") == {"a": 1}
    assert wire.answer(_response(200, b""), "http://h") is None
    with pytest.raises(wire.InfernoError) as refused:
        wire.answer(_response(400, b'{"error": "num_shards: must be >= 1"}'), "http://h")
    assert (refused.value.status, refused.value.message) == (400, "num_shards: must be >= 1")
    with pytest.raises(wire.InfernoError, match="GET /p answered with something that is not JSON"):
        wire.answer(_response(200, b"<html>"), "http://h")


def test_sse_lines_fold_into_messages_one_line_at_a_time():
    fold = SseMessages()
    assert fold.feed("id: cmd:1,evt:2") is None
    assert fold.feed("data: {}") is None
    assert fold.feed("") == {"id": "cmd:1,evt:2", "data": "{}"}
    assert fold.feed("") is None
    lines = iter([": heartbeat", "", "id: 3", "data: x"])
    assert list(sse_messages(lines)) == [{"": "heartbeat"}, {"id": "3", "data": "x"}]

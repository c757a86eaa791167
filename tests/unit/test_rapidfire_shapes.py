"""The pure parts of RapidFire's compatibility: its config shapes, masked round trips, the
notebook origins a loopback api lets in, and its bodies' numeric-string ids."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from inferno.api import rapidfire
from inferno.api.guard import Rules, default_origins, listed
from inferno.api.schemas_rapidfire import ParentCloneBody, PipelineIdBody, RapidFireConfig
from inferno.audit.entries import Entry, Ids
from inferno.runtime.settings import Settings
from inferno.secrets.masking import MASK


def test_flattened_config_joins_nested_keys_with_dots():
    config = {"pipeline_name": "a", "model_config": {"model": "m", "extra": {"k": 1}}, "x": {}}
    assert rapidfire.flattened(config) == {
        "pipeline_name": "a",
        "model_config.model": "m",
        "model_config.extra.k": 1,
        "x": {},
    }


def test_a_masked_value_sent_back_keeps_the_parents():
    sent = {"base_url": "http://llm", "api_key": MASK, "headers": {"Authorization": MASK, "a": 1}}
    config = RapidFireConfig.model_validate({"pipeline_type": "api", "client_config": sent})
    changes = config.changes()
    assert changes.client_config == {"base_url": "http://llm", "headers": {"a": 1}}
    assert changes.pipeline_type == "openai"


def test_pipeline_types_as_rapidfire_names_them():
    assert [rapidfire.rapidfire_type(t) for t in ("openai", "vllm", "sim")] == [
        "api",
        "vllm",
        "sim",
    ]
    assert [rapidfire.inferno_type(t) for t in ("api", "API", "vllm")] == [
        "openai",
        "openai",
        "vllm",
    ]
    with pytest.raises(ValidationError, match="pipeline_type must be one of api, vllm"):
        RapidFireConfig.model_validate({"pipeline_type": "tpu"})


def test_ids_come_as_numbers_or_numeric_strings():
    assert PipelineIdBody.model_validate({"pipeline_id": "12"}).pipeline_id == 12
    assert PipelineIdBody.model_validate({"pipeline_id": 12.0}).pipeline_id == 12
    body = {"parent_pipeline_id": " 3 ", "config_json": {"pipeline_type": "sim"}}
    assert ParentCloneBody.model_validate(body).parent_pipeline_id == 3
    for wrong in ("twelve", "1.5", 1.5, True, None):
        with pytest.raises(ValidationError):
            PipelineIdBody.model_validate({"pipeline_id": wrong})


def test_log_lines_keep_rapidfires_filters():
    stop = Entry(
        stream="T_CMD",
        seq=7,
        time="2026-12-01T12:00:00.000001Z",
        type="stop_pipeline",
        actor="alice",
        reason="too slow",
        ids=Ids(ic_id=7, pipeline_id=2),
    )
    failed = Entry(
        stream="T_EVT",
        seq=9,
        time="2026-12-01T12:00:01.000001Z",
        type="operation_failed",
        ids=Ids(ic_id=8, pipeline_id=2),
        payload={"error": "it is stopped"},
    )
    done = Entry(
        stream="T_EVT",
        seq=10,
        time="2026-12-01T12:00:02.000001Z",
        type="shard_completed",
        ids=Ids(pipeline_id=1, shard=0),
    )
    lines = rapidfire.log_lines([stop, failed, done], "arith", ic_only=False)
    assert lines == [
        "2026-12-01T12:00:00.000001Z | arith | InteractiveControl | stop pipeline ic 7 pipeline 2"
        ' by alice: "too slow"',
        "2026-12-01T12:00:01.000001Z | arith | InteractiveControl | operation failed ic 8"
        " pipeline 2 — it is stopped",
        "2026-12-01T12:00:02.000001Z | arith | EVT | shard completed pipeline 1 shard 0",
    ]
    assert rapidfire.log_lines([stop, failed, done], "arith", ic_only=True) == lines[:2]


def test_a_loopback_api_lets_notebooks_in_and_nothing_else():
    loopback = Rules.of(Settings(), (), environ={})
    for origin in ("http://localhost:8888", "http://127.0.0.1:9000", "vscode-webview://abc-1"):
        assert listed(loopback, origin), origin
    for origin in (
        "http://localhost.evil.example:8888",
        "https://evil.example",
        "http://localhost:8888.evil.example",
        "https://x.googleusercontent.com",
        "null",
    ):
        assert not listed(loopback, origin), origin
    assert not loopback.credentials
    colab = Rules.of(Settings(), (), environ={"COLAB_RELEASE_TAG": "r"})
    assert listed(colab, "https://abc-dot-colab.googleusercontent.com")
    assert colab.credentials
    exposed = Settings(api_host="0.0.0.0")
    assert default_origins(exposed, {"COLAB_RELEASE_TAG": "r"}) is None
    assert not listed(Rules.of(exposed, (), environ={}), "http://localhost:8888")
    pattern = default_origins(Settings(), {})
    assert pattern is not None
    assert re.fullmatch(pattern, "http://[::1]:8888")

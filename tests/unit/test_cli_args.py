"""`--set` parsing, clone bodies, pipeline name prefixes, and the CLI's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferno.client.arguments import UsageError, clone_changes, parse_set, resolve_pipeline
from inferno.client.cli import build_parser, default_api_url, main


def test_set_builds_nested_changes_with_json_values() -> None:
    assert parse_set(
        [
            "sampling_params.temperature=0.7",
            'sampling_params.stop=["\\n"]',
            "model_config.model=gpt-x",
            "model_config.extra.deep=true",
            "pipeline_name=a=b",
            "rpm_limit=60",
            "endpoint_limit.name=acct-1",
            "endpoint_limit.tpm_limit=90000",
        ]
    ) == {
        "sampling_params": {"temperature": 0.7, "stop": ["\n"]},
        "model_config": {"model": "gpt-x", "extra": {"deep": True}},
        "pipeline_name": "a=b",
        "rpm_limit": 60,
        "endpoint_limit": {"name": "acct-1", "tpm_limit": 90000},
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("temperature", "expected KEY=VALUE"),
        ("sampling_params..x=1", "expected KEY=VALUE"),
        ("temperature=0.7", "'temperature' is not one of pipeline_name"),
    ],
)
def test_set_errors(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_set([item])


def test_set_cannot_descend_into_a_value() -> None:
    with pytest.raises(UsageError, match="'model_config' was already set"):
        parse_set(["model_config=1", "model_config.x=2"])


def test_clone_changes_merge_json_flags_then_sets_then_name() -> None:
    changes = clone_changes(
        "fast",
        ["sampling_params.top_p=0.9", "pipeline_name=ignored"],
        model_config='{"model": "m2"}',
        sampling_params='{"temperature": 0.7, "top_p": 1}',
    )
    assert changes == {
        "model_config": {"model": "m2"},
        "sampling_params": {"temperature": 0.7, "top_p": 0.9},
        "pipeline_name": "fast",
    }
    assert clone_changes(None, []) == {}


@pytest.mark.parametrize(
    ("raw", "message"),
    [("{", "--model-config: not valid JSON"), ("[1]", "--model-config: must be a JSON object")],
)
def test_clone_json_flag_errors(raw: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        clone_changes(None, [], model_config=raw)


PIPELINES = [
    {"pipeline_id": 1, "pipeline_name": "small", "status": "ongoing"},
    {"pipeline_id": 2, "pipeline_name": "medium", "status": "stopped"},
    {"pipeline_id": 3, "pipeline_name": "large", "status": "ongoing"},
    {"pipeline_id": 4, "pipeline_name": "large-t07", "status": "new"},
    {"pipeline_id": 5, "pipeline_name": "mini", "status": "deleted"},
]


@pytest.mark.parametrize(
    ("token", "expected"),
    [("2", 2), ("999", 999), ("sm", 1), ("med", 2), ("large", 3), ("large-", 4), ("m", 2)],
)
def test_resolve_ids_and_unique_prefixes(token: str, expected: int) -> None:
    # an exact name wins over longer names it prefixes; deleted pipelines are not candidates
    assert resolve_pipeline(token, PIPELINES) == expected


def test_resolve_ambiguous_lists_candidates() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_pipeline("lar", PIPELINES)
    assert str(caught.value) == (
        "'lar' matches 2 pipelines: 3 (large), 4 (large-t07); give more of the name, or the id"
    )


def test_resolve_unknown_lists_pipelines() -> None:
    with pytest.raises(
        UsageError,
        match=r"no pipeline id or name prefix matches 'x' \(4 pipelines: "
        r"1 \(small\), 2 \(medium\), 3 \(large\), 4 \(large-t07\)\)",
    ):
        resolve_pipeline("x", PIPELINES)
    with pytest.raises(UsageError, match=r"\(no pipelines\)"):
        resolve_pipeline("x", [])


def test_global_options_work_before_and_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--api", "http://a:1", "ps"])
    after = parser.parse_args(["ps", "--api", "http://b:2"])
    assert (before.api, after.api) == ("http://a:1", "http://b:2")
    assert not hasattr(parser.parse_args(["ps"]), "api")


def test_default_api_url(tmp_path: Path) -> None:
    assert default_api_url({"INFERNO_API_URL": "http://x:9"}, tmp_path) == "http://x:9"
    assert default_api_url({"INFERNO_API_PORT": "9000"}, tmp_path) == "http://127.0.0.1:9000"
    assert default_api_url({}, tmp_path) == "http://127.0.0.1:8851"


def test_usage_errors_exit_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clone", "7", "--set", "oops"]) == 2
    assert capsys.readouterr().err == (
        "inferno: error: --set 'oops': expected KEY=VALUE, e.g. sampling_params.top_p=0.9\n"
    )
    assert main(["run", "/nonexistent/spec.yaml"]) == 2
    assert "spec file /nonexistent/spec.yaml not found" in capsys.readouterr().err


def test_unreachable_api_exits_1_and_suggests_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--api", "http://127.0.0.1:9", "ps"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inferno: error: the Inferno api at http://127.0.0.1:9 is not reachable")
    assert err.endswith("; is `inferno up` running? (INFERNO_API_URL / --api)\n")

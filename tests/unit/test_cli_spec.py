"""Experiment spec files and the datasets they point at (no api needed)."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import pytest

from inferno.client.sdk import SpecError, load_spec, read_rows

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_example_spec_inlines_its_dataset_without_a_client() -> None:
    spec = load_spec(EXAMPLES / "arith.yaml")
    rows = spec["dataset"]["rows"]
    assert set(spec["dataset"]) == {"rows"}
    assert len(rows) >= 64
    assert all(set(r) == {"id", "question", "answer"} for r in rows)
    assert spec["num_shards"] == 8
    assert spec["eval"]["prompt"] == "Q: {question}\nA:"
    assert spec["eval"]["scorers"] == [{"name": "exact_match", "target": "answer"}]
    accuracies = {p["model_config"]["accuracy"] for p in spec["pipelines"]}
    assert len(accuracies) >= 3
    assert {p["pipeline_type"] for p in spec["pipelines"]} == {"sim"}


def test_example_answers_are_right() -> None:
    for row in read_rows(EXAMPLES / "arith.jsonl"):
        a, op, b = row["question"].removeprefix("What is ").removesuffix("?").split()
        assert str(OPERATORS[op](int(a), int(b))) == row["answer"]


class RecordingClient:
    """Records what `load_spec` uploads (the real upload is tested against the api in
    tests/e2e/test_big_datasets.py and test_cli_results.py)."""

    def __init__(self) -> None:
        self.uploads: list[Path] = []

    def upload_dataset_file(self, path: Path) -> dict:
        self.uploads.append(path)
        return {"dataset_ref": "sha256-abc", "row_count": 2}


def test_path_is_relative_to_the_spec_and_uploaded_once(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "rows.jsonl", '{"q": "1+1", "a": "2"}\n\n{"q": "2+2", "a": "4"}\n')
    spec_file = write(
        tmp_path / "spec.yaml",
        "experiment_name: x\nnum_shards: 1\ndataset: {path: data/rows.jsonl}\npipelines: []\n",
    )
    client = RecordingClient()
    spec = load_spec(spec_file, client)  # type: ignore[arg-type]
    assert spec["dataset"] == {"ref": "sha256-abc"}
    assert client.uploads == [tmp_path / "data" / "rows.jsonl"]  # the file as it is, once


def test_json_spec_and_csv_rows(tmp_path: Path) -> None:
    write(tmp_path / "rows.csv", 'id,question,answer\n1,2+2?,4\n2,"3, plus 3?",6\n')
    spec_file = write(tmp_path / "spec.json", json.dumps({"dataset": {"path": "rows.csv"}}))
    assert load_spec(spec_file)["dataset"]["rows"] == [
        {"id": "1", "question": "2+2?", "answer": "4"},
        {"id": "2", "question": "3, plus 3?", "answer": "6"},
    ]


def test_inline_rows_and_refs_pass_through(tmp_path: Path) -> None:
    spec_file = write(tmp_path / "s.yaml", "dataset: {ref: sha256-1}\nnum_shards: 2\n")
    assert load_spec(spec_file) == {"dataset": {"ref": "sha256-1"}, "num_shards": 2}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "spec file {dir}/spec.yaml not found"),
        ({"spec.yaml": "a: [1, 2\n"}, "is not valid YAML/JSON"),
        ({"spec.yaml": "- 1\n- 2\n"}, "must hold a mapping, not list"),
        ({"spec.yaml": "dataset: rows.jsonl\n"}, "`dataset` must be a mapping"),
        ({"spec.yaml": "dataset: {path: r.jsonl, ref: x}\n"}, "has `path` and `ref`; give one"),
        ({"spec.yaml": "dataset: {path: rows.jsonl}\n"}, "dataset file {dir}/rows.jsonl not found"),
        ({"spec.yaml": "dataset: {path: rows.xlsx}\n"}, "unsupported file type '.xlsx'"),
        (
            {"spec.yaml": "dataset: {path: rows.jsonl}\n", "rows.jsonl": '{"a": 1}\n{"a": \n'},
            "rows.jsonl line 2: invalid JSON",
        ),
        (
            {"spec.yaml": "dataset: {path: rows.jsonl}\n", "rows.jsonl": "[1, 2]\n"},
            "line 1: a row must be a JSON object",
        ),
        ({"spec.yaml": "dataset: {path: rows.jsonl}\n", "rows.jsonl": "\n"}, "has no rows"),
        (
            {"spec.yaml": "dataset: {path: rows.csv}\n", "rows.csv": "a,b\n1,2\n3\n"},
            "rows.csv line 3: expected 2 columns as in the header",
        ),
        ({"spec.yaml": "dataset: {path: rows.csv}\n", "rows.csv": ""}, "has no header row"),
    ],
)
def test_clear_errors(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(SpecError) as caught:
        load_spec(tmp_path / "spec.yaml")
    assert message.format(dir=tmp_path) in str(caught.value)


def test_yaml_error_names_the_line(tmp_path: Path) -> None:
    spec_file = write(tmp_path / "spec.yaml", "a: 1\nb: [1,\nc: {\n")
    with pytest.raises(SpecError, match=r"line \d+, column \d+"):
        load_spec(spec_file)

"""The pure half of `inferno.Experiment`: turning what a notebook passes into an experiment
spec, and the api's pipelines into typed results (close to what RapidFire's `run_evals`
returns: per pipeline its rows and its metrics with their intervals)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec

LEFT_OUT = frozenset({"deleted", "failed"})  # as RapidFire's run_evals leaves them out


class Metric(msgspec.Struct, frozen=True):
    """A metric's value with its confidence interval (None where the method cannot say yet)."""

    value: float | None
    lower_bound: float | None = None
    upper_bound: float | None = None
    confidence_level: float | None = None
    ci_method: str | None = None
    count: int = 0


class PipelineResult(msgspec.Struct, frozen=True, kw_only=True):
    """One pipeline once `run_evals` returned: how far it got, its metrics, and its rows."""

    pipeline_id: int
    pipeline_name: str
    status: str
    metrics: dict[str, Metric]
    rows: list[dict[str, Any]]
    shards_completed: int
    num_shards: int
    rows_processed: int
    rows_per_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_cost: float | None = None
    parent_pipeline_id: int | None = None
    simulated: bool = False
    error: str | None = None

    def as_rapidfire(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """RapidFire's `(aggregated_results, cumulative_metrics)` pair: the rows, and
        `{"run_id": {"value"}, "Samples Processed": {"value"}, metric: {"value",
        "lower_bound", "upper_bound", "margin_of_error"}}`, for code written against it."""
        cumulative: dict[str, dict[str, Any]] = {
            "run_id": {"value": self.pipeline_id},
            "pipeline_name": {"value": self.pipeline_name},
            "Samples Processed": {"value": self.rows_processed},
        }
        for name, m in self.metrics.items():
            margin = None
            if m.lower_bound is not None and m.upper_bound is not None:
                margin = (m.upper_bound - m.lower_bound) / 2
            cumulative[name] = {
                "value": m.value,
                "lower_bound": m.lower_bound,
                "upper_bound": m.upper_bound,
                "margin_of_error": margin,
            }
        return self.rows, cumulative


def dataset_spec(dataset: Any) -> dict[str, Any]:
    """`dataset` of an experiment spec: rows inline (a list of dicts), a stored dataset
    (`{"ref": ...}`), or rows already shaped (`{"rows": [...]}`). A file path is read by the
    shell (`Experiment`) and never reaches here. TypeError for anything else."""
    if isinstance(dataset, Mapping):
        if not ({"rows", "ref"} & dataset.keys()):
            raise TypeError("dataset: a mapping must hold `rows` or `ref`")
        return dict(dataset)
    if isinstance(dataset, Sequence) and not isinstance(dataset, str | bytes):
        rows = list(dataset)
        if not all(isinstance(row, Mapping) for row in rows):
            raise TypeError("dataset: a list must hold one dict per row")
        return {"rows": [dict(row) for row in rows]}
    raise TypeError(
        "dataset: give rows (a list of dicts), a file (str or Path: JSONL, CSV or Parquet),"
        f" or {{'ref': ...}}; not {type(dataset).__name__}"
    )


def is_file(dataset: Any) -> bool:
    return isinstance(dataset, Path | str)


def pipeline_specs(pipelines: Any) -> list[dict[str, Any]]:
    """One pipeline spec (a dict) or several (a list of dicts), as the api takes them."""
    if isinstance(pipelines, Mapping):
        return [dict(pipelines)]
    if isinstance(pipelines, Sequence) and not isinstance(pipelines, str | bytes):
        specs = list(pipelines)
        if specs and all(isinstance(p, Mapping) for p in specs):
            return [dict(p) for p in specs]
    raise TypeError("pipelines: give a pipeline spec (a dict) or a non-empty list of them")


def experiment_spec(
    name: str,
    pipelines: list[dict[str, Any]],
    dataset: dict[str, Any],
    eval: Mapping[str, Any] | None,
    num_shards: int,
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The body of POST /api/v1/experiments; the api validates it and names a bad field."""
    spec: dict[str, Any] = {
        "experiment_name": name,
        "num_shards": num_shards,
        "dataset": dataset,
        "pipelines": pipelines,
        **extra,
    }
    if eval is not None:
        spec["eval"] = dict(eval)
    return spec


def result(pipeline: Mapping[str, Any], rows: list[dict[str, Any]]) -> PipelineResult:
    """An api pipeline (GET /api/v1/pipelines/{id}) and its rows as a `PipelineResult`."""
    tokens = pipeline.get("tokens") or {}
    return PipelineResult(
        pipeline_id=int(pipeline["pipeline_id"]),
        pipeline_name=str(pipeline.get("pipeline_name") or ""),
        status=str(pipeline.get("status") or "?"),
        metrics={
            name: msgspec.convert(stats, Metric)
            for name, stats in (pipeline.get("metrics") or {}).items()
        },
        rows=rows,
        shards_completed=int(pipeline.get("shards_completed") or 0),
        num_shards=int(pipeline.get("num_shards") or 0),
        rows_processed=int(pipeline.get("rows_processed") or 0),
        rows_per_s=pipeline.get("rows_per_s"),
        prompt_tokens=int(tokens.get("prompt") or 0),
        completion_tokens=int(tokens.get("completion") or 0),
        estimated_cost=pipeline.get("estimated_cost"),
        parent_pipeline_id=pipeline.get("parent_pipeline_id"),
        simulated=bool(pipeline.get("simulated")),
        error=pipeline.get("error"),
    )


def kept(pipelines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The pipelines `run_evals` returns: all but deleted and failed ones, by id."""
    return sorted(
        (p for p in pipelines if p.get("status") not in LEFT_OUT), key=lambda p: p["pipeline_id"]
    )


def resolve(pipelines: Sequence[Mapping[str, Any]], pipeline: int | str) -> int:
    """A pipeline of the experiment by id or by name; ValueError naming what is there."""
    if isinstance(pipeline, int):
        if any(p["pipeline_id"] == pipeline for p in pipelines):
            return pipeline
        raise ValueError(f"pipeline {pipeline} is not in this experiment")
    named = [p["pipeline_id"] for p in pipelines if p.get("pipeline_name") == pipeline]
    if len(named) == 1:
        return int(named[0])
    names = ", ".join(sorted({str(p.get("pipeline_name")) for p in pipelines})) or "none"
    if not named:
        raise ValueError(f"no pipeline named {pipeline!r} in this experiment (it has: {names})")
    raise ValueError(f"{len(named)} pipelines are named {pipeline!r}: {named}; give an id")

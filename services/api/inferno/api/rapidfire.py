"""What RapidFire's clients read, built from the read model (pure): its evals notebook panel, its
fit dashboard and Python controller, answered as its dispatcher answers them.

RapidFire's runs are our pipelines and its chunks our shards; its `pipeline_type: "api"` is our
`openai`. Configs go out with secrets masked; a masked value sent back in a clone is dropped so
the clone inherits the parent's secret rather than the mask (`unmasked`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from inferno.api import views
from inferno.audit.entries import Entry
from inferno.readmodels import Experiment, Operation, Pipeline, ReadModel
from inferno.secrets.masking import MASK, mask_value

IC_OPERATIONS = frozenset({"stop", "resume", "delete", "clone"})
"""The operations RapidFire's interactive control has; creating an experiment is not one."""

RUN_STATUS = {
    "new": "New",
    "ongoing": "Ongoing",
    "completed": "Completed",
    "stopped": "Stopped",
    "deleted": "Deleted",
    "failed": "Failed",
}
"""RapidFire's STATUS_MAP: its dashboard shows runs' statuses capitalised."""

_TO_RAPIDFIRE_TYPE = {"openai": "api"}
_FROM_RAPIDFIRE_TYPE = {"api": "openai"}


def rapidfire_type(pipeline_type: str) -> str:
    return _TO_RAPIDFIRE_TYPE.get(pipeline_type, pipeline_type)


def inferno_type(pipeline_type: str) -> str:
    """RapidFire's `api` (an OpenAI-compatible endpoint) is our `openai`; the rest are ours."""
    return _FROM_RAPIDFIRE_TYPE.get(pipeline_type.lower(), pipeline_type.lower())


def unmasked(value: Any) -> Any:
    """`value` without the entries a masked read showed as `***`: sent back, they mean
    "keep the parent's", never the mask itself."""
    if isinstance(value, dict):
        return {k: unmasked(v) for k, v in value.items() if v != MASK}
    return value


def config_json(p: Pipeline) -> dict[str, Any]:
    """RapidFire's `pipeline_config_json`: the pipeline's editable knobs, secrets masked."""
    spec = p.spec
    config: dict[str, Any] = {
        "pipeline_name": spec.pipeline_name,
        "pipeline_type": rapidfire_type(spec.pipeline_type),
        "model_config": mask_value(spec.model_config),
        "sampling_params": mask_value(spec.sampling_params),
        "client_config": mask_value(spec.client_config),
    }
    for key in ("rpm_limit", "tpm_limit"):
        if getattr(spec, key) is not None:
            config[key] = getattr(spec, key)
    return config


def flattened(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """RapidFire's `flattened_config`: nested keys joined with dots, for its IC panel."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flattened(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def newest_first(model: ReadModel) -> list[Pipeline]:
    return [model.pipelines[i] for i in sorted(model.pipelines, reverse=True)]


def pipeline_id_entry(p: Pipeline) -> dict[str, Any]:
    """An entry of `list-all-pipeline-ids`."""
    return {
        "pipeline_id": p.pipeline_id,
        "status": p.status,
        "shards_completed": len(p.completed),
        "total_samples_processed": p.rows_processed,
        "total_shards": p.num_shards,
    }


def config_entry(p: Pipeline) -> dict[str, Any]:
    """`get-pipeline-config-json/{id}`."""
    return {"pipeline_config_json": config_json(p), "context_id": p.context_id}


def pipeline(model: ReadModel, p: Pipeline) -> dict[str, Any]:
    """RapidFire's pipeline row (`get-pipeline`, `get-all-pipelines`), plus our live view."""
    config = config_json(p)
    ours = views.pipeline(p, model.experiments[p.experiment_id])
    return {
        **ours,
        "pipeline_type": config["pipeline_type"],
        "pipeline_config": None,  # RapidFire's undecoded object; never sent over HTTP there
        "pipeline_config_json": config,
        "flattened_config": flattened(config),
        "current_shard_id": len(p.completed),
        "total_samples_processed": p.rows_processed,
        "metric_run_id": None,
        "error": p.failure or "",
    }


def run(p: Pipeline) -> dict[str, Any]:
    """A pipeline as the fit dashboard's run (`_transform_pipeline_to_run`)."""
    config = config_json(p)
    return {
        "run_id": p.pipeline_id,
        "status": RUN_STATUS.get(p.status, p.status),
        "metric_run_id": None,
        "config": config,
        "flattened_config": flattened(config),
        "full_config": config,
        "num_chunks_visited": len(p.completed),
        "total_shards": p.num_shards,
        "total_samples_processed": p.rows_processed,
        "error": p.failure or "",
        "parent_run_id": p.parent_pipeline_id,
    }


def experiment(e: Experiment) -> dict[str, Any]:
    """`get-running-experiment`, `get-experiment-by-name`: there is no MLflow experiment."""
    return {
        "experiment_id": e.experiment_id,
        "experiment_name": e.experiment_name,
        "status": e.status,
        "metric_experiment_id": None,
        "experiment_mode": "evals",
    }


def by_name(model: ReadModel, name: str) -> Experiment | None:
    """The most recent experiment of that name (names need not be unique here)."""
    found = [e for e in model.experiments.values() if e.experiment_name == name]
    return max(found, key=lambda e: e.created_at) if found else None


def running(model: ReadModel) -> Experiment | None:
    """The most recently created running experiment, as RapidFire's `get_running_experiment`."""
    found = [e for e in model.experiments.values() if e.status == "running"]
    return max(found, key=lambda e: e.created_at) if found else None


def experiment_names(model: ReadModel) -> list[str]:
    ordered = sorted(model.experiments.values(), key=lambda e: e.created_at)
    return list(dict.fromkeys(e.experiment_name for e in ordered))


def request_data(model: ReadModel, op: Operation) -> str | None:
    """RapidFire's `request_data` column, a JSON string: a clone's parent and config (the new
    pipeline's, once decided); None for stop, resume and delete, as RapidFire stores it."""
    if op.operation != "clone":
        return None
    data: dict[str, Any] = {}
    clone = model.pipelines.get(op.result.get("pipeline_id", -1))
    parent = clone.parent_pipeline_id if clone is not None else op.pipeline_id
    if parent is not None:
        data["parent_pipeline_id"] = parent
    elif op.context_id is not None:
        data["context_id"] = op.context_id
    if clone is not None:
        data["config_json"] = config_json(clone)
    return json.dumps(data)


def operation(model: ReadModel, op: Operation) -> dict[str, Any]:
    """`operation-status`: ours, with RapidFire's `request_data` and `error` "" when none."""
    return {**views.operation(op), "error": op.error or "", "request_data": request_data(model, op)}


def ic_operations(model: ReadModel) -> list[dict[str, Any]]:
    """`all-operations`: interactive-control operations only, newest first."""
    ops = model.operations
    return [
        operation(model, ops[i])
        for i in sorted(ops, reverse=True)
        if ops[i].operation in IC_OPERATIONS
    ]


def log_line(entry: Entry, experiment_name: str) -> str:
    """One history entry in the shape RapidFire's log lines have (`time | experiment | what`),
    so its filters on `| {experiment_name} |` keep them."""
    ids = entry.ids
    parts = [entry.type.replace("_", " ")]
    if ids.ic_id is not None:
        parts.append(f"ic {ids.ic_id}")
    if ids.pipeline_id is not None:
        parts.append(f"pipeline {ids.pipeline_id}")
    if ids.shard is not None:
        parts.append(f"shard {ids.shard}")
    if entry.actor:
        parts.append(f"by {entry.actor}")
    text = " ".join(parts)
    if entry.reason:
        text += f': "{entry.reason}"'
    error = entry.payload.get("error") or entry.payload.get("reason")
    if error and entry.kind != "cmd":
        text += f" — {error}"
    source = "InteractiveControl" if ids.ic_id is not None else entry.kind.upper()
    return f"{entry.time} | {experiment_name} | {source} | {text}"


def log_lines(entries: Iterable[Entry], experiment_name: str, *, ic_only: bool) -> list[str]:
    """`get-experiment-logs` (everything) or `get-ic-logs` (what carries an ic_id)."""
    return [log_line(e, experiment_name) for e in entries if not ic_only or e.ids.ic_id is not None]

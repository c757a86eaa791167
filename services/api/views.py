"""What the api shows of the projection: plain dicts, built from the state and nothing else.

Pure, so every shape a client sees is defined here once. Configs go out with secrets masked by
the same rule the logs use (`inferno.client.logs.mask_value`).
"""

from __future__ import annotations

from typing import Any

from inferno.client.logs import mask_value
from inferno.events.model import MetricStats
from inferno.events.state import Experiment, Operation, Pipeline, State
from inferno.events.work import ExecutorInfo


def operation(op: Operation) -> dict[str, Any]:
    """The dispatcher's operation-status object (plus `result`, e.g. a clone's pipeline_id)."""
    return {
        "ic_id": op.ic_id,
        "pipeline_id": op.pipeline_id,
        "operation": op.operation,
        "status": op.status,
        "error": op.error,
        "created_at": op.created_at,
        "processed_at": op.processed_at,
        "result": op.result,
    }


def describe(op: Operation) -> str:
    """`stop of pipeline 3`, `create_experiment`: an operation in words."""
    return (
        op.operation if op.pipeline_id is None else f"{op.operation} of pipeline {op.pipeline_id}"
    )


def dispatcher_ack(op: Operation) -> dict[str, Any]:
    """The seed's `{"ic_id", "message"}`, with the status so `?wait` callers can see it."""
    what = describe(op)
    if op.status == "completed":
        message = f"{what} completed"
        if "pipeline_id" in op.result:
            message += f": new pipeline {op.result['pipeline_id']}"
    elif op.status == "failed":
        message = f"{what} failed: {op.error}"
    else:
        message = f"{what} accepted; see /dispatcher/operation-status/{op.ic_id}"
    return {"ic_id": op.ic_id, "message": message, "status": op.status}


def metric(stats: MetricStats) -> dict[str, Any]:
    if stats.count == 0:
        return {"count": 0, "mean": None, "min": None, "max": None}
    return {
        "count": stats.count,
        "mean": stats.total / stats.count,
        "min": stats.minimum,
        "max": stats.maximum,
    }


def pipeline(p: Pipeline) -> dict[str, Any]:
    spec = p.spec
    return {
        "pipeline_id": p.pipeline_id,
        "pipeline_name": spec.pipeline_name,
        "experiment_id": p.experiment_id,
        "context_id": p.context_id,
        "status": p.status,
        "error": p.failure,
        "shards_completed": len(p.completed),
        "num_shards": p.num_shards,
        "rows_processed": p.rows_processed,
        "in_flight": [
            {"shard": shard, "executor_id": a.executor_id, "attempt": a.attempt}
            for shard, a in sorted(p.in_flight.items())
        ],
        "parent_pipeline_id": p.parent_pipeline_id,
        "source": p.source,
        "pipeline_type": spec.pipeline_type,
        "simulated": spec.pipeline_type == "sim",
        "model_config": mask_value(spec.model_config),
        "sampling_params": mask_value(spec.sampling_params),
        "client_config": mask_value(spec.client_config),
        "rpm_limit": spec.rpm_limit,
        "tpm_limit": spec.tpm_limit,
        "metrics": {name: metric(stats) for name, stats in sorted(p.metrics.items())},
        "prompt_tokens": p.prompt_tokens,
        "completion_tokens": p.completion_tokens,
        "created_at": p.created_at,
    }


def experiment(e: Experiment) -> dict[str, Any]:
    return {
        "experiment_id": e.experiment_id,
        "experiment_name": e.experiment_name,
        "context_id": e.context_id,
        "status": e.status,
        "dataset_ref": e.dataset_ref,
        "row_count": e.row_count,
        "num_shards": e.num_shards,
        "eval": {
            "prompt": e.eval.prompt,
            "scorers": [
                {"name": s.name, "target": s.target, "options": s.options} for s in e.eval.scorers
            ],
            "ci_method": e.eval.ci_method,
            "confidence_level": e.eval.confidence_level,
        },
        "max_attempts": e.max_attempts,
        "retry_backoff_s": e.retry_backoff_s,
        "created_at": e.created_at,
        "pipeline_ids": list(e.pipeline_ids),
    }


def experiment_detail(state: State, e: Experiment) -> dict[str, Any]:
    return {**experiment(e), "pipelines": [pipeline(state.pipelines[i]) for i in e.pipeline_ids]}


def created_experiment(state: State, op: Operation) -> dict[str, Any]:
    """A create's operation status plus the experiment's ids; its pipelines once decided."""
    ids = op.result.get("pipeline_ids", []) if op.status == "completed" else []
    return {
        **operation(op),
        "experiment_id": op.experiment_id,
        "context_id": op.context_id,
        "pipelines": [pipeline(state.pipelines[i]) for i in ids if i in state.pipelines],
    }


def executor(info: ExecutorInfo, now: float) -> dict[str, Any]:
    return {
        "executor_id": info.executor_id,
        "backends": info.backends,
        "slots": info.slots,
        "busy": info.busy,
        "loaded_models": info.loaded_models,
        "has_gpu": info.has_gpu,
        "gpus": info.gpus,
        "hostname": info.hostname,
        "pid": info.pid,
        "started_at": info.started_at,
        "heartbeat_age_s": round(max(now - info.heartbeat_at, 0.0), 3),
    }

"""What the api shows of the read model: plain dicts, built from it and nothing else.

Pure, so every shape a client sees is defined here once. Configs go out with secrets masked by
the same rule the logs use (`inferno.secrets.masking.mask_value`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from inferno.api.fleet import Hosting
from inferno.events.budgets import Spend, estimated_cost, spent
from inferno.events.model import MetricStats, all_segments, total_rows, total_shards
from inferno.events.resources import SLOTS
from inferno.events.sequences import Prefix, Strata, over_segments
from inferno.events.work import ExecutorInfo
from inferno.readmodels import Experiment, Operation, Pipeline, ReadModel
from inferno.secrets.masking import mask_value
from inferno.stats import metrics


def operation(op: Operation) -> dict[str, Any]:
    """The dispatcher's operation-status object, plus `result` (e.g. a clone's pipeline_id) and
    who asked and why (`actor`, `reason`, and the request's `trace_id`)."""
    return {
        "ic_id": op.ic_id,
        "pipeline_id": op.pipeline_id,
        "operation": op.operation,
        "status": op.status,
        "error": op.error,
        "created_at": op.created_at,
        "processed_at": op.processed_at,
        "result": op.result,
        "actor": op.actor,
        "reason": op.reason,
        "trace_id": op.trace_id,
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


def sequence_of(p: Pipeline, e: Experiment) -> Prefix | Strata | None:
    """The pipeline's confidence sequences over all the experiment's rows."""
    rows = [segment.row_count for segment in all_segments(e)]
    return over_segments(p.sequence, p.added_sequences, rows)


def live_metrics(p: Pipeline, e: Experiment) -> dict[str, Any]:
    """Per metric its value and confidence interval (`inferno.stats.metrics`), and the
    pipeline's throughput, latency, tokens and cost (docs/evaluation.md)."""
    buckets = p.latency_ms_buckets
    return {
        "metrics": metrics.metric_summaries(p.metrics, e.eval, total_rows(e), sequence_of(p, e)),
        "rows_per_s": metrics.rows_per_s(p.rows_processed, p.busy_s),
        "latency_ms": {
            "p50": metrics.latency_percentile(buckets, 0.5),
            "p95": metrics.latency_percentile(buckets, 0.95),
        },
        "tokens": {"prompt": p.prompt_tokens, "completion": p.completion_tokens},
        "estimated_cost": estimated_cost(
            p.prompt_tokens, p.completion_tokens, p.spec.client_config
        ),
        "row_errors": p.row_errors,
    }


def pipeline(p: Pipeline, e: Experiment, unschedulable: str | None = None) -> dict[str, Any]:
    """`unschedulable`: why no executor could run its pending shards (`inferno.api.fleet`),
    where the caller judged it against the live fleet."""
    spec = p.spec
    return {
        "pipeline_id": p.pipeline_id,
        "pipeline_name": spec.pipeline_name,
        "experiment_id": p.experiment_id,
        "context_id": p.context_id,
        "status": p.status,
        "error": p.failure,
        "pruned": p.pruned,
        "over_budget": p.over_budget,
        "budget": msgspec.to_builtins(spec.budget),
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
        "resources": spec.resources,
        "unschedulable": unschedulable,
        "endpoint_limit": msgspec.to_builtins(spec.endpoint_limit),
        **live_metrics(p, e),
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
        "row_count": total_rows(e),
        "num_shards": total_shards(e),
        "extensions": [
            {
                "dataset_ref": s.dataset_ref,
                "row_count": s.row_count,
                "num_shards": s.num_shards,
                "first_row": s.first_row,
                "first_shard": s.first_shard,
                "row_order": None if s.row_order is None else msgspec.to_builtins(s.row_order),
            }
            for s in e.segments
        ],
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
        "policy": msgspec.to_builtins(e.policy),
        "budget": msgspec.to_builtins(e.budget),
        "shuffle": e.row_order is not None,
        "row_order": None
        if e.row_order is None
        else {"seed": e.row_order.seed, "permutation": e.row_order.permutation},
        "created_at": e.created_at,
        "pipeline_ids": list(e.pipeline_ids),
    }


def experiment_detail(model: ReadModel, e: Experiment, hosting: Hosting) -> dict[str, Any]:
    pipelines = [
        pipeline(model.pipelines[i], e, hosting.why(model.pipelines[i])) for i in e.pipeline_ids
    ]
    return {**experiment(e), "spent": experiment_spent(model, e), "pipelines": pipelines}


def experiment_spent(model: ReadModel, e: Experiment) -> dict[str, Any]:
    """What the experiment's completed shards used, all pipelines together (deleted ones too:
    their spend was real); `usd` counts the priced pipelines only."""
    total = Spend()
    for i in e.pipeline_ids:
        p = model.pipelines[i]
        total = total.plus(spent(p.spec, p.prompt_tokens, p.completion_tokens))
    return {"tokens": total.tokens, "usd": total.usd}


def metric_names(model: ReadModel, e: Experiment) -> list[str]:
    """The experiment's metrics: its scorers in spec order, then any other a pipeline reports."""
    names = [s.name for s in e.eval.scorers]
    seen = {n for i in e.pipeline_ids for n in model.pipelines[i].metrics}
    return names + sorted(seen - set(names))


def leaderboard(model: ReadModel, e: Experiment, metric: str | None) -> dict[str, Any]:
    """The experiment's live pipelines, best first by `metric` (higher is better; pipelines
    without a value yet last; ties by id), each with the metric's interval and its progress."""
    entries = []
    for i in e.pipeline_ids:
        p = model.pipelines[i]
        if p.status == "deleted":
            continue
        name = metric or ""
        summary = metrics.metric_summary(
            name, p.metrics.get(name, MetricStats()), e.eval, total_rows(e), sequence_of(p, e)
        )
        entries.append(
            {
                "pipeline_id": p.pipeline_id,
                "pipeline_name": p.spec.pipeline_name,
                "pipeline_type": p.spec.pipeline_type,
                "status": p.status,
                "shards_completed": len(p.completed),
                "num_shards": p.num_shards,
                "row_errors": p.row_errors,  # rows without scores: not in the metric's count
                **summary,
            }
        )
    entries.sort(key=lambda x: (x["value"] is None, -(x["value"] or 0.0), x["pipeline_id"]))
    return {
        "experiment_id": e.experiment_id,
        "experiment_name": e.experiment_name,
        "metric": metric,
        "row_count": total_rows(e),
        "pipelines": [{"rank": rank, **x} for rank, x in enumerate(entries, 1)],
    }


def created_experiment(model: ReadModel, op: Operation) -> dict[str, Any]:
    """A create's operation status plus the experiment's ids; its pipelines once decided."""
    ids = op.result.get("pipeline_ids", []) if op.status == "completed" else []
    return {
        **operation(op),
        "experiment_id": op.experiment_id,
        "context_id": op.context_id,
        "pipelines": [
            pipeline(p, model.experiments[p.experiment_id])
            for p in (model.pipelines.get(i) for i in ids)
            if p is not None
        ],
    }


def executor(
    info: ExecutorInfo, now: float, used: Mapping[str, float], heartbeat_ttl_s: float
) -> dict[str, Any]:
    """An executor's heartbeat, with its capacity (slots and declared resources) beside what
    the shards the log has in flight on it take (`used`, from the read model)."""
    age = max(now - info.heartbeat_at, 0.0)
    return {
        "executor_id": info.executor_id,
        "backends": info.backends,
        "slots": info.slots,
        "busy": info.busy,
        "queue": info.queue,  # orders it holds beyond its slots: it follows its shards' length
        "capacity": {SLOTS: info.slots, **info.resources},
        "used": {SLOTS: int(used.get(SLOTS, 0)), **{k: used.get(k, 0.0) for k in info.resources}},
        "loaded_models": info.loaded_models,
        "has_gpu": info.has_gpu,
        "gpus": info.gpus,
        "hostname": info.hostname,
        "pid": info.pid,
        "started_at": info.started_at,
        "heartbeat_age_s": round(age, 3),
        "lapsed": age > heartbeat_ttl_s,
    }

"""`GET /metrics` on the api: the cluster as the read model knows it, for Prometheus.

Everything is read at scrape time from the projection (no counter to keep in step with the fold),
so a restarted api reports the same totals: operations by kind and status, pipelines by status,
per pipeline its shards, rows and tokens (counters: `rate()` gives rows/s and tokens/s), pending
shards, executor slots from heartbeats, the projection's replay lag and the leader's term.
The one label beyond fixed vocabularies is `pipeline_id` (and `executor_id`, one per executor):
a deleted pipeline's series go with it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from fastapi import APIRouter
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.responses import Response

from inferno.api.deps import Gateway, GatewayDep
from inferno.events.state import TERMINAL
from inferno.runtime.metrics import last_seq

router = APIRouter(tags=["health"])


class ReadModelCollector(Collector):
    def __init__(self, gateway: Gateway, evt_last_seq: int) -> None:
        self.gw, self.evt_last_seq = gateway, evt_last_seq

    def collect(self) -> Iterator[Metric]:
        projection = self.gw.projection
        model = projection.model
        operations = GaugeMetricFamily(
            "inferno_operations",
            "Interactive-control operations in the read model, by operation and status",
            labels=["operation", "status"],
        )
        by_kind = Counter((o.operation, o.status) for o in model.operations.values())
        for (operation, op_status), count in sorted(by_kind.items()):
            operations.add_metric([operation, op_status], count)
        yield operations
        pipelines = GaugeMetricFamily("inferno_pipelines", "Pipelines by status", labels=["status"])
        for status, count in sorted(Counter(p.status for p in model.pipelines.values()).items()):
            pipelines.add_metric([status], count)
        yield pipelines
        yield from self._per_pipeline()
        yield from self._executors()
        yield GaugeMetricFamily(
            "inferno_api_replay_lag",
            "Events of the log the api's read model has not folded yet",
            value=max(self.evt_last_seq - model.evt_seq, 0),
        )
        holder = projection.leadership.holder
        yield GaugeMetricFamily(
            "inferno_leader_present", "1 while a scheduler holds the lease", value=bool(holder)
        )
        if holder is not None:
            yield GaugeMetricFamily(
                "inferno_leader_term", "The lease term of the leading scheduler", value=holder.term
            )

    def _per_pipeline(self) -> Iterator[Metric]:
        live = [p for p in self.gw.projection.model.pipelines.values() if p.status != "deleted"]
        shards = GaugeMetricFamily(
            "inferno_pipeline_shards",
            "A pipeline's shards: completed, in_flight, pending (pending only while runnable)",
            labels=["pipeline_id", "state"],
        )
        rows = CounterMetricFamily(
            "inferno_pipeline_rows", "Rows processed (rate() is rows/s)", labels=["pipeline_id"]
        )
        tokens = CounterMetricFamily(
            "inferno_pipeline_tokens", "Tokens used", labels=["pipeline_id", "kind"]
        )
        pending_total = 0
        for p in live:
            pid = str(p.pipeline_id)
            pending = 0
            if p.status not in TERMINAL and p.status != "stopped":
                pending = max(p.num_shards - len(p.completed) - len(p.in_flight), 0)
            pending_total += pending
            shards.add_metric([pid, "completed"], len(p.completed))
            shards.add_metric([pid, "in_flight"], len(p.in_flight))
            shards.add_metric([pid, "pending"], pending)
            rows.add_metric([pid], p.rows_processed)
            tokens.add_metric([pid, "prompt"], p.prompt_tokens)
            tokens.add_metric([pid, "completion"], p.completion_tokens)
        yield shards
        yield rows
        yield tokens
        yield GaugeMetricFamily(
            "inferno_pending_shards", "Shards of runnable pipelines not yet assigned or done",
            value=pending_total,
        )  # fmt: skip

    def _executors(self) -> Iterator[Metric]:
        slots = GaugeMetricFamily(
            "inferno_cluster_executor_slots",
            "Slots per registered executor (from its heartbeat), busy and free",
            labels=["executor_id", "state"],
        )
        for executor_id, info in sorted(self.gw.projection.executors.items()):
            slots.add_metric([executor_id, "busy"], info.busy)
            slots.add_metric([executor_id, "free"], max(info.slots - info.busy, 0))
        yield slots


@router.get("/metrics", response_class=Response, include_in_schema=False)
async def metrics(gw: GatewayDep) -> Response:
    """Prometheus exposition: the process's registry, then the read model's gauges."""
    own = CollectorRegistry(auto_describe=False)
    own.register(ReadModelCollector(gw, await last_seq(gw.js, gw.names.evt_stream)))
    body = generate_latest(REGISTRY) + generate_latest(own)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

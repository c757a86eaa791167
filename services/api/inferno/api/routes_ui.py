"""The dashboard (docs/dashboard.md): its page and assets at `/` and `/ui/...`, which hold no data
and load without a token, and the one read it needs that the rest of the api does not answer:
each pipeline's metrics after every shard, for the charts.

The assets are files shipped in the package (`inferno/api/ui/`), served from a list made when
the module loads, so no request path ever reaches the file system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.responses import FileResponse, Response

from inferno.api.deps import Gateway, GatewayDep
from inferno.api.errors import ApiError
from inferno.api.history import History
from inferno.api.openapi import errors
from inferno.api.responses import json_response
from inferno.audit import query as q
from inferno.audit.entries import each_shard
from inferno.events.model import EvalSpec, MetricStats, ShardStats, all_segments
from inferno.events.sequences import Prefix, over_segments
from inferno.stats import metrics

UI_DIR = Path(__file__).parent / "ui"
_MEDIA = {
    ".html": "text/html",
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
}
ASSETS = {p.name: p for p in UI_DIR.iterdir() if p.suffix in _MEDIA}
"""Every file the page may ask for, by name: nothing outside this list is served."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
"""Only the api's own scripts run, nothing frames the page, nothing leaves for other sites."""

HISTORY_PAGE = 5000

ui_router = APIRouter(include_in_schema=False)
history_router = APIRouter(prefix="/api/v1", tags=["v1"])


def is_ui_path(path: str) -> bool:
    """The page and its assets: open without a token (BearerAuth), since they hold no data."""
    return path == "/" or path.startswith("/ui/")


def _asset(name: str) -> Response:
    path = ASSETS.get(name)
    if path is None:
        return json_response({"error": f"no dashboard asset {name!r}"}, 404)
    return FileResponse(path, media_type=_MEDIA[path.suffix], headers=SECURITY_HEADERS)


@ui_router.get("/")
async def page() -> Response:
    return _asset("index.html")


@ui_router.get("/ui/")
async def page_under_ui() -> Response:
    return _asset("index.html")


@ui_router.get("/ui/{name}")
async def asset(name: str) -> Response:
    return _asset(name)


def metric_history(
    pipeline_ids: Iterable[int],
    shards: Iterable[tuple[int, ShardStats]],
    spec: EvalSpec,
    rows: Sequence[int],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Per metric, per pipeline, one point per completed shard in the order they completed: the
    shard count and the metric's summary (value and interval) over the shards so far, the same
    fold the read model makes, so a pipeline's last point is what `/pipelines` shows. `rows`:
    the experiment's rows per segment (its own, then each extension's)."""
    wanted = set(pipeline_ids)
    folded: dict[int, dict[str, MetricStats]] = {}
    sequences: dict[int, Prefix] = {}
    added: dict[int, dict[int, Prefix]] = {}  # by pipeline, then segment
    counts: dict[int, int] = {}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for pid, stats in shards:
        if pid not in wanted:
            continue
        so_far = folded.setdefault(pid, {})
        counts[pid] = counts.get(pid, 0) + 1
        for name, more in stats.metrics.items():
            current = so_far.get(name)
            so_far[name] = more if current is None else current.merged(more)
        if (terms := stats.sequence) is not None:
            if terms.segment:
                added.setdefault(pid, {}).setdefault(terms.segment, Prefix()).absorb(terms)
            else:
                sequences.setdefault(pid, Prefix()).absorb(terms)
        sequence = over_segments(sequences.get(pid), added.get(pid, {}), rows)
        for name, total in so_far.items():
            summary = metrics.metric_summary(name, total, spec, sum(rows), sequence)
            point = {"shards": counts[pid], **summary}
            out.setdefault(name, {}).setdefault(str(pid), []).append(point)
    return out


async def _completed_shards(gw: Gateway, pipeline_id: int) -> list[tuple[int, ShardStats]]:
    """The pipeline's shard_completed events from the log, oldest first (its subjects only)."""
    history = History(gw.js, gw.names, gw.projection)
    types = frozenset({"shard_completed", "shards_completed"})
    query = q.Query(streams=("evt",), pipeline_id=pipeline_id, types=types)
    cursor: q.Cursor = {}
    found: list[tuple[int, ShardStats]] = []
    while True:
        page = await history.page(query, cursor, HISTORY_PAGE)
        for entry in each_shard(page.entries):
            payload = entry.payload
            if payload.get("pipeline_id") == pipeline_id:
                found.append((pipeline_id, msgspec.convert(payload.get("stats", {}), ShardStats)))
        cursor = page.cursor
        if not page.more:
            return found


@history_router.get("/experiments/{experiment_id}/metric-history", responses=errors(404))
async def experiment_metric_history(experiment_id: str, gw: GatewayDep) -> Response:
    """Each metric's value and interval after every shard of each of the experiment's pipelines:
    `{"experiment_id", "metrics": {metric: {pipeline_id: [{shards, value, lower_bound,
    upper_bound, ...}]}}}`, folded from the shard_completed events in the log."""
    experiment = gw.projection.model.experiments.get(experiment_id)
    if experiment is None:
        raise ApiError(404, f"experiment {experiment_id!r} not found")
    ids = list(experiment.pipeline_ids)
    shards = [shard for pid in ids for shard in await _completed_shards(gw, pid)]
    rows = [segment.row_count for segment in all_segments(experiment)]
    history = metric_history(ids, shards, experiment.eval, rows)
    return json_response({"experiment_id": experiment_id, "metrics": history})

"""The executors as readers judge them: which are live, and why a pipeline has nowhere to run.

Derived, never recorded: the verdict comes from the read model and the heartbeats in
INFERNO_EXECUTORS at the moment of the request, with the placement's own rules
(`inferno.events.resources.unplaceable`), so the log gets no event per tick for it.
"""

from __future__ import annotations

from collections.abc import Mapping

from inferno.events.resources import needs, needs_gpu, unplaceable
from inferno.events.work import ExecutorInfo
from inferno.readmodels import Pipeline


def live(
    executors: Mapping[str, ExecutorInfo], now: float, heartbeat_ttl_s: float
) -> list[ExecutorInfo]:
    """Those whose heartbeat is within the TTL, as the scheduler counts them."""
    return [e for e in executors.values() if now - e.heartbeat_at <= heartbeat_ttl_s]


class Hosting:
    """Why a pipeline's pending shards cannot be placed, judged against one view of the fleet
    (one per request; pipelines asking for the same thing share a verdict)."""

    def __init__(self, executors: list[ExecutorInfo]) -> None:
        self._fleet = [e.capacity() for e in executors]
        self._verdicts: dict[tuple[object, ...], str | None] = {}

    def why(self, pipeline: Pipeline) -> str | None:
        """None when it could run, or has nothing left to place (not new or ongoing, or every
        shard done or in flight)."""
        pending = pipeline.num_shards - len(pipeline.completed) - len(pipeline.in_flight)
        if pipeline.status not in ("new", "ongoing") or pending <= 0:
            return None
        spec = pipeline.spec
        key = (spec.pipeline_type, needs_gpu(spec), *needs(spec).items())
        if key not in self._verdicts:
            self._verdicts[key] = unplaceable(spec, self._fleet)
        return self._verdicts[key]

"""The executor's Prometheus metrics (docs/operations.md lists them).

Counters move where the facts happen: a shard's end (`_finish`), a rate-limiter wait. Slots and
the work backlog are read at scrape time (inferno.runtime.metrics serves them on the loop).
Labels are bounded (outcome, token kind); rows and tokens per pipeline are on the api's /metrics.
Rows/s and tokens/s are `rate()` of the counters.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from inferno.events.model import ShardStats

if TYPE_CHECKING:  # the executor counts through this module
    from inferno.executor.service import Executor

SHARDS = Counter("inferno_executor_shards", "Shards this executor ended, by outcome", ["outcome"])
ROWS = Counter("inferno_executor_rows", "Rows of finished shards (rate() is rows/s)")
ROW_ERRORS = Counter("inferno_executor_row_errors", "Rows the engine failed on")
TOKENS = Counter("inferno_executor_tokens", "Tokens of finished shards", ["kind"])
RATELIMIT_WAITS = Counter(
    "inferno_executor_ratelimit_waits", "Requests that waited for the endpoint's rpm/tpm window"
)
RATELIMIT_WAIT_SECONDS = Counter(
    "inferno_executor_ratelimit_wait_seconds", "Time requests spent waiting for the window"
)

DATASET_BLOCKS = Counter(
    "inferno_executor_dataset_blocks",
    "Dataset blocks read for shards, by where from (store, disk)",
    ["source"],
)


def shard_ended(outcome: str, stats: ShardStats | None = None) -> None:
    SHARDS.labels(outcome).inc()
    if stats is not None:
        ROWS.inc(stats.rows)
        ROW_ERRORS.inc(stats.errors)
        TOKENS.labels("prompt").inc(stats.prompt_tokens)
        TOKENS.labels("completion").inc(stats.completion_tokens)


def dataset_block_read(source: str) -> None:
    DATASET_BLOCKS.labels(source).inc()


def rate_limited(waited_s: float) -> None:
    RATELIMIT_WAITS.inc()
    RATELIMIT_WAIT_SECONDS.inc(waited_s)


class SlotsCollector(Collector):
    """Slots busy and free, and the work orders waiting on this executor's consumer."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.work_pending: int | None = None  # set by `refresh`

    async def refresh(self, js: JetStreamContext, stream: str, consumer: str) -> None:
        info = await js.consumer_info(stream, consumer)
        self.work_pending = int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        executor = self.executor
        busy = executor.busy_slots()
        yield GaugeMetricFamily(
            "inferno_executor_slots", "Shards this executor runs at once", value=executor.slots
        )
        yield GaugeMetricFamily("inferno_executor_slots_busy", "Slots running a shard", value=busy)
        free = max(executor.slots - busy, 0)
        yield GaugeMetricFamily("inferno_executor_slots_free", "Slots free", value=free)
        if self.work_pending is not None:
            yield GaugeMetricFamily(
                "inferno_executor_work_pending",
                "Work messages (a tick's orders each) sent to this executor, not yet acked",
                value=self.work_pending,
            )

"""One shard, start to finish: rows → prompts → engine batches → scores → results and reports.

`ShardStarted` goes out only once a shard has run for `progress_every_s` (`_StartedLater`):
`ShardFinished` implies it, so a short shard stores one report instead of two, and a long one
still shows it is alive before its first progress report. Results that fit in one message go in
the `ShardFinished` report itself, larger ones first to INFERNO_RESULTS
(`inferno.jetstream.results`). The caller sends it, with the other finished shards of its work
message (`ShardsFinished`), so most shards store a part of one message of their own.

Failures raise; the caller decides what to report (`ShardErrored`, or `ShardAborted` when it
cancelled the shard). Errors that would recur on every attempt (bad template, unknown scorer,
unusable model_config, missing dataset, unknown secret ref) are `PERMANENT`: the scheduler fails
the pipeline at once with the reason instead of retrying. A shard whose every row failed at the
endpoint (`Generation.endpoint_error`: no answer came) raises `EndpointUnavailable`, which the
scheduler retries: completing it would report a run with nothing but errors as a success.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from inferno.events.commands import (
    Report,
    ReportIds,
    ShardFinished,
    ShardProgress,
    ShardStarted,
)
from inferno.events.model import SequenceTerms
from inferno.events.rows import positions_rows
from inferno.events.scorers import BINARY_SCORERS
from inferno.events.sequences import shard_terms
from inferno.events.work import WorkOrder, repair_results_name, results_name
from inferno.executor.backends.base import (
    EndpointUnavailable,
    EngineConfigError,
    GenerationRequest,
)
from inferno.executor.datasets import DatasetCache, DatasetError
from inferno.executor.engines import EngineCache
from inferno.executor.evaluation import (
    EvalError,
    RowResult,
    check_eval,
    evaluate,
    reference,
    render,
    stats_of,
)
from inferno.executor.secrets import SecretError, Secrets
from inferno.jetstream.results import INLINE_RESULTS_MAX, inline_payload, jsonl
from inferno.secrets.masking import mask_text

PERMANENT: tuple[type[Exception], ...] = (
    EvalError,
    EngineConfigError,
    DatasetError,
    SecretError,
)
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Runtime:
    """What every shard of one executor shares."""

    executor_id: str
    engines: EngineCache
    datasets: DatasetCache
    store_results: Callable[[str, bytes], Awaitable[None]]  # object name, JSONL
    report: Callable[[Report], Awaitable[None]]
    secrets: Secrets  # the engine opens with the spec's secret refs resolved
    batch_size: int = 16
    progress_every_s: float = 1.0  # progress is liveness only: no need to flood INFERNO_EXEC
    scorer_modules: frozenset[str] = frozenset()  # INFERNO_SCORER_MODULES: user scorers' modules
    inline_results_max: int = INLINE_RESULTS_MAX  # bytes of results carried in the report


def _results_name(order: WorkOrder) -> str:
    if order.rows:
        return repair_results_name(
            order.experiment_id, order.pipeline_id, order.shard, order.attempt
        )
    return results_name(order.experiment_id, order.pipeline_id, order.shard)


def sequence_terms(order: WorkOrder, results: list[RowResult]) -> SequenceTerms:
    """The shard's part of the confidence sequence of each 0/1 metric (`inferno.events.sequences`);
    a row without a score (the engine failed on it) is None."""
    names = [s.name for s in order.eval.scorers if s.name in BINARY_SCORERS]
    scores = {name: [r.scores.get(name) for r in results] for name in names}
    terms = shard_terms(scores, order.row_start, order.row_count, order.eval.confidence_level)
    terms.segment = order.segment
    return terms


def endpoint_failure(endpoint_errors: Counter[str], rows: int) -> str | None:
    """The shard's error when all `rows` failed at the endpoint, else None (some row got an
    answer, or failed for its own reason: those count as row errors). Names the most common
    error: the rows of one outage usually share it."""
    failed = endpoint_errors.total()
    if not rows or failed < rows:
        return None
    (error, times), *_ = endpoint_errors.most_common(1)
    others = f" ({failed - times} with other errors)" if times < failed else ""
    return f"all {rows} rows failed at the endpoint{others}: {error}"


class _StartedLater:
    """Reports `ShardStarted` after `after_s`, unless the shard is over by then. A timer, not a
    task that sleeps: most shards end first, and starting and cancelling a task cost each of
    them more than the timer."""

    def __init__(self, rt: Runtime, ids: ReportIds, after_s: float) -> None:
        self._sending: asyncio.Future[None] | None = None
        # the callback, and the task it starts, run in a copy of this context (the log's ids)
        self._timer = asyncio.get_running_loop().call_later(after_s, self._send, rt, ids)

    def _send(self, rt: Runtime, ids: ReportIds) -> None:
        self._sending = asyncio.ensure_future(rt.report(ShardStarted(**ids, at=time.time())))

    async def settle(self) -> None:
        """Before the final report: a started report on its way lands first (it may fail the
        shard, as it did when it went out first); one still waiting is never sent."""
        self._timer.cancel()
        if self._sending is not None:
            await self._sending

    def cancel(self) -> None:
        self._timer.cancel()
        if self._sending is not None and not self._sending.done():
            self._sending.cancel()


async def run_shard(rt: Runtime, order: WorkOrder) -> ShardFinished:
    """The shard's `ShardFinished`, for the caller to send (with its work message's others)."""
    ids: ReportIds = {
        "executor_id": rt.executor_id,
        "pipeline_id": order.pipeline_id,
        "shard": order.shard,
        "attempt": order.attempt,
    }
    started = _StartedLater(rt, ids, rt.progress_every_s)
    try:
        return await _run(rt, order, ids, started)
    finally:
        started.cancel()


async def _run(
    rt: Runtime, order: WorkOrder, ids: ReportIds, started_later: _StartedLater
) -> ShardFinished:
    started = time.monotonic()
    scorers = check_eval(order.eval, rt.scorer_modules)
    positions = range(order.row_start, order.row_end)
    offset = order.row_offset  # results name the experiment's rows, not the dataset's
    # a repair runs only the rows the engine failed on
    own = [row - offset for row in order.rows] or positions_rows(
        order.row_count, positions, order.row_order
    )
    rows = await rt.datasets.rows(order.dataset_ref, own)
    indices = [offset + row for row in own] if offset else own
    # every prompt first: a template that fails on some row fails before any model loads
    prompts = [render(order.eval.prompt, row) for row in rows]
    results: list[RowResult] = []
    endpoint_errors: Counter[str] = Counter()
    if rows:
        spec = await rt.secrets.resolve_spec(order.spec)  # for the engine only: never logged
        async with rt.engines.use(order.spec, resolved=spec) as engine:
            last_progress = time.monotonic()
            for start in range(0, len(rows), rt.batch_size):
                end = min(start + rt.batch_size, len(rows))
                requests = [
                    GenerationRequest(
                        prompt=prompts[i],
                        key=str(indices[i]),  # the row's own index: answers do not move with it
                        reference=reference(order.eval, rows[i]),
                    )
                    for i in range(start, end)
                ]
                generations = await engine.generate(requests, spec.sampling_params)
                if len(generations) != len(requests):
                    raise RuntimeError(
                        f"engine returned {len(generations)} generations for {len(requests)}"
                    )
                for gen in generations:  # a row's error text may quote a secret (an echoed key)
                    if gen.error is not None:
                        gen.error = mask_text(gen.error)
                        if gen.endpoint_error:
                            endpoint_errors[gen.error] += 1
                results += [
                    evaluate(
                        order.eval,
                        indices[start + j],
                        rows[start + j],
                        prompts[start + j],
                        gen,
                        scorers,
                    )
                    for j, gen in enumerate(generations)
                ]
                now = time.monotonic()
                if end < len(rows) and now - last_progress >= rt.progress_every_s:
                    await rt.report(ShardProgress(**ids, at=time.time(), rows_done=end))
                    last_progress = now
    if (failure := endpoint_failure(endpoint_errors, len(rows))) is not None:
        raise EndpointUnavailable(failure)
    stats = stats_of(results, duration_s=time.monotonic() - started)
    stats.error_rows = [r.row_index for r in results if r.error is not None]
    # positions are a random order of the rows; a repair's rows are no sample of anything, and
    # the shard's terms stand (they count a row without an answer at both extremes)
    if order.row_order is not None and results and not order.rows:
        stats.sequence = sequence_terms(order, results)
    await started_later.settle()
    encoded = [_encode(r) for r in results]
    inline = inline_payload(encoded, rt.inline_results_max)
    if inline is None:
        await rt.store_results(_results_name(order), jsonl(encoded))
    return ShardFinished(**ids, at=time.time(), stats=stats, results=inline or [])

"""Value types shared by commands, events and state.

Everything here is stored in the log, so fields are only ever added, each with a default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

import msgspec

PipelineType = Literal["vllm", "openai", "hf", "sim"]
PIPELINE_TYPES: tuple[str, ...] = ("vllm", "openai", "hf", "sim")

# Bounds on what a request may ask for. The api's schema refuses more with a 400 naming the field
# and `decide` refuses the rest, so the stored types stay as lenient as the logs already written.
MAX_NAME_LENGTH = 256
"""Experiment and pipeline names: a name is a label people type and read in a table."""
MAX_ATTEMPTS = 100
MAX_RETRY_BACKOFF_S = 3600.0
"""The first retry's delay, and the cap of the exponential backoff that follows it."""
MAX_RATE_LIMIT = 1_000_000_000
"""rpm / tpm limits: per minute; above this a limit limits nothing."""


class EndpointLimit(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A limit several pipelines share (one account or base_url), held across the fleet: every
    pipeline naming it counts against the same rpm / tpm (docs/backends.md)."""

    name: str
    rpm_limit: int | None = None
    tpm_limit: int | None = None


class Budget(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """The most a run may spend (`inferno.events.budgets`): tokens, dollars or both."""

    usd: Annotated[float, msgspec.Meta(ge=0)] | None = None
    tokens: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def raised(self, to: Budget) -> Budget:
        """This budget with what `to` sets replaced."""
        return Budget(
            usd=self.usd if to.usd is None else to.usd,
            tokens=self.tokens if to.tokens is None else to.tokens,
        )


class PipelineSpec(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """What a user asks for: one model/sampling/client configuration over a context."""

    pipeline_name: str
    pipeline_type: PipelineType
    model_config: dict[str, Any] = {}
    sampling_params: dict[str, Any] = {}
    client_config: dict[str, Any] = {}
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    resources: dict[str, float] = {}  # what one shard needs (inferno.events.resources)
    endpoint_limit: EndpointLimit | None = None
    budget: Budget | None = None


class PipelineChanges(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The knobs a clone overrides; dicts are merged key by key onto the parent's."""

    pipeline_name: str | None = None
    pipeline_type: PipelineType | None = None
    model_config: dict[str, Any] | None = None
    sampling_params: dict[str, Any] | None = None
    client_config: dict[str, Any] | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    resources: dict[str, float] | None = None
    endpoint_limit: EndpointLimit | None = None
    budget: Budget | None = None


class Scorer(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    target: str | None = None
    options: dict[str, Any] = {}


Prompt = str | list[dict[str, str]]
"""A format string over a row's fields, or chat messages whose contents are ones."""


class EvalSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    prompt: Prompt = "{prompt}"
    scorers: list[Scorer] = []
    ci_method: Literal["normal", "wilson", "hoeffding", "confidence_sequence"] | None = None
    confidence_level: float = 0.95


class MetricStats(msgspec.Struct, array_like=True, gc=False):
    """Sufficient statistics of one metric: merging two is exact, so shards merge in any order."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")

    def merged(self, other: MetricStats) -> MetricStats:
        # conditionals, not min()/max(): this runs once per shard in every replay
        return MetricStats(
            self.count + other.count,
            self.total + other.total,
            self.total_sq + other.total_sq,
            other.minimum if other.minimum < self.minimum else self.minimum,
            other.maximum if other.maximum > self.maximum else self.maximum,
        )


class SideTerms(msgspec.Struct, array_like=True, gc=False):
    """One side of one metric's sequence over a shard's rows (`inferno.events.sequences`)."""

    total: float  # Σ λ_i (x_i + P_{i−1} / (N − i + 1)), P the shard's sum before row i
    weight: float  # Σ λ_i / (N − i + 1)
    scale: float  # Σ λ_i N / (N − i + 1)
    penalty: float  # Σ (x_i − m_{i−1})² (−log(1 − λ_i) − λ_i)
    sum: float  # Σ x_i


class SequenceTerms(msgspec.Struct, kw_only=True, gc=False):
    """A shard's part of its 0/1 metrics' confidence sequences over positions [start, start +
    rows): sums that only a fold in position order can combine. `low` counts a row without a
    score as 0, `high` as 1."""

    start: int
    rows: int
    low: dict[str, SideTerms] = {}
    high: dict[str, SideTerms] = {}
    segment: int = 0  # which rows: the experiment's own (0) or those an extension added (1, ...)


class ShardStats(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """What an executor reports for one finished shard. `sequence` only for a shuffled
    experiment, whose positions are a random order of the rows."""

    rows: int = 0
    metrics: dict[str, MetricStats] = {}
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0
    latency_ms_buckets: list[int] = []
    errors: int = 0
    sequence: SequenceTerms | None = None
    error_rows: list[int] = []
    """The rows (their indices) the engine failed on: a retry runs just these again."""


# Upper bounds (inclusive, ms) of `ShardStats.latency_ms_buckets`: bucket i counts the rows with
# LATENCY_BUCKETS_MS[i-1] < latency <= LATENCY_BUCKETS_MS[i]; one last bucket counts the rest.
# Counts, not cumulative, so merging shards is an element-wise sum. Changing the bounds changes
# what stored stats mean: add a new field instead.
LATENCY_BUCKETS_MS: tuple[int, ...] = (
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
)  # fmt: skip


def merge_metrics(
    into: dict[str, MetricStats], more: dict[str, MetricStats]
) -> dict[str, MetricStats]:
    merged = dict(into)
    for name, stats in more.items():
        current = merged.get(name)
        merged[name] = stats if current is None else current.merged(stats)
    return merged


class PrunePolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Stop pipelines that lose (`inferno.events.policy`): `dominated`, once a pipeline's upper
    confidence bound is below the best pipeline's lower bound; `median_of_peers` (RapidFire's
    rule, for comparison), once its value is below the median of its running peers'. Both wait
    until a pipeline has `min_rows` rows in its confidence sequence."""

    rule: Literal["dominated", "median_of_peers"]
    metric: str
    min_rows: Annotated[int, msgspec.Meta(ge=1)] = 100


class Policy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    prune: PrunePolicy | None = None


PERMUTATION = "feistel-v1"  # inferno.events.rows defines it


class RowOrder(msgspec.Struct, frozen=True, kw_only=True):
    """Rows in a seeded random order (`inferno.events.rows`); an experiment without one runs
    them in file order."""

    seed: int
    permutation: str = PERMUTATION


class Segment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A run's rows, cut into shards: an experiment's own (segment 0), or rows an extension
    added (`ExtendExperiment`), with their own dataset, shards and random order. Its row i is
    the experiment's row `first_row + i`, its shard j the pipelines' shard `first_shard + j`."""

    dataset_ref: str
    row_count: int
    num_shards: int
    first_row: int = 0
    first_shard: int = 0
    row_order: RowOrder | None = None
    prompt_tokens: int | None = None  # estimated, for budgets' reservations


class Rows(Protocol):
    """An experiment as the decider's state and the read model both hold it."""

    @property
    def dataset_ref(self) -> str: ...
    @property
    def row_count(self) -> int: ...
    @property
    def num_shards(self) -> int: ...
    @property
    def row_order(self) -> RowOrder | None: ...
    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def segments(self) -> list[Segment]: ...


def own_rows(e: Rows) -> Segment:
    """The rows the experiment was created with, as segment 0."""
    return Segment(
        dataset_ref=e.dataset_ref,
        row_count=e.row_count,
        num_shards=e.num_shards,
        row_order=e.row_order,
        prompt_tokens=e.prompt_tokens,
    )


def segment_of(e: Rows, shard: int) -> tuple[int, Segment]:
    """The segment shard `shard` is in, and its index (0: the experiment's own rows)."""
    for index in range(len(e.segments), 0, -1):
        if shard >= e.segments[index - 1].first_shard:
            return index, e.segments[index - 1]
    return 0, own_rows(e)


def all_segments(e: Rows) -> list[Segment]:
    return [own_rows(e), *e.segments]


def total_rows(e: Rows) -> int:
    return e.row_count + sum(s.row_count for s in e.segments)


def total_shards(e: Rows) -> int:
    return e.num_shards + sum(s.num_shards for s in e.segments)


def extended(e: Rows, more: Segment) -> Segment:
    """`more` placed after the experiment's last segment: where its rows and shards begin."""
    last = e.segments[-1] if e.segments else own_rows(e)
    return msgspec.structs.replace(
        more,
        first_row=last.first_row + last.row_count,
        first_shard=last.first_shard + last.num_shards,
    )


def shard_bounds(row_count: int, num_shards: int, shard: int) -> tuple[int, int]:
    """Contiguous, near-equal row ranges: the first `row_count % num_shards` shards get one more."""
    base, extra = divmod(row_count, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)

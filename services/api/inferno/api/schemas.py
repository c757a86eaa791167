"""Request bodies, and the checks that need more than one field (pure).

Bodies are strict (a JSON string is not an int) and, under /api/v1, closed (a misspelt field is
an error, not silently ignored). The dispatcher's bodies accept extra fields, as the seed did.
Everything a request names that cannot work is refused here with a 400 naming the field, so it
never reaches the log.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Collection
from typing import Annotated, Any, Literal

import msgspec
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from inferno.api.errors import ApiError, bad_field
from inferno.api.identity import Reason
from inferno.events.budgets import priced
from inferno.events.model import (
    MAX_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_RATE_LIMIT,
    MAX_RETRY_BACKOFF_S,
    Budget,
    EndpointLimit,
    EvalSpec,
    PipelineChanges,
    PipelineSpec,
    PipelineType,
    Policy,
    PrunePolicy,
    RowOrder,
    Scorer,
)
from inferno.events.resources import MAX_RESOURCE_AMOUNT, RESOURCE_NAME, check_needs
from inferno.events.scorers import (
    BINARY_SCORERS,
    BUILTIN_SCORERS,
    ScorerError,
    check_scorer,
    user_scorer,
)
from inferno.events.templates import check_format_spec


class _Closed(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


def _integral(value: Any) -> Any:
    """JSON Schema's integer includes 8331.0, so a whole float is an int; 1.5 stays an error."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Int fields as the OpenAPI document describes them (`type: integer`). Bounds go before the
# validator, or pydantic writes them into the schema as `ge` / `le`, which JSON Schema ignores.
Integer = Annotated[int, BeforeValidator(_integral)]
Positive = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS), BeforeValidator(_integral)]
RateLimit = Annotated[int, Field(ge=1, le=MAX_RATE_LIMIT), BeforeValidator(_integral)]

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
Needs = Annotated[
    dict[
        Annotated[str, Field(pattern=RESOURCE_NAME)],
        Annotated[float, Field(ge=0, le=MAX_RESOURCE_AMOUNT)],
    ],
    AfterValidator(check_needs),
    Field(
        description="What one shard needs of its executor's declared resources, e.g."
        ' {"gpu_mem_gb": 40} (docs/operations.md, "Resources and admission")'
    ),
]


PRICE_KEYS = ("price_per_1k_prompt_tokens", "price_per_1k_completion_tokens")
"""client_config keys the estimated cost is computed from (docs/evaluation.md)."""


def check_prices(config: dict[str, Any]) -> dict[str, Any]:
    for key in PRICE_KEYS:
        value = config.get(key)
        if value is not None and (
            not isinstance(value, int | float) or isinstance(value, bool) or value < 0
        ):
            raise ValueError(f"{key} must be a number >= 0 (per 1,000 tokens), not {value!r}")
    return config


class EndpointLimitBody(_Closed):
    """A limit pipelines share by name (one account or base_url), held across the fleet."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    rpm_limit: RateLimit | None = None
    tpm_limit: RateLimit | None = None

    @model_validator(mode="after")
    def _limits_something(self) -> EndpointLimitBody:
        if self.rpm_limit is None and self.tpm_limit is None:
            raise ValueError("give rpm_limit, tpm_limit or both")
        return self

    def limit(self) -> EndpointLimit:
        return EndpointLimit(name=self.name, rpm_limit=self.rpm_limit, tpm_limit=self.tpm_limit)


class BudgetBody(_Closed):
    """The most a run may spend: dollars (with the pipelines' prices), tokens, or both."""

    usd: float | None = Field(default=None, ge=0, le=1e9)
    tokens: Annotated[int, Field(ge=0, le=10**15), BeforeValidator(_integral)] | None = None

    @model_validator(mode="after")
    def _limits_something(self) -> BudgetBody:
        if self.usd is None and self.tokens is None:
            raise ValueError("give usd, tokens or both")
        return self

    def budget(self) -> Budget:
        return Budget(usd=self.usd, tokens=self.tokens)


class BudgetChangeBody(BudgetBody):
    """A new budget: the fields given replace the current ones. `reason` says why."""

    reason: Reason = None


class _Knobs(BaseModel):
    """What a pipeline can set; `model_config` is pydantic's own name, hence the alias."""

    pipeline_name: Name
    pipeline_type: PipelineType
    model_settings: dict[str, Any] = Field(default_factory=dict, alias="model_config")
    sampling_params: dict[str, Any] = Field(default_factory=dict)
    client_config: dict[str, Any] = Field(default_factory=dict)
    rpm_limit: RateLimit | None = None
    tpm_limit: RateLimit | None = None
    resources: Needs = Field(default_factory=dict)
    endpoint_limit: EndpointLimitBody | None = None
    budget: BudgetBody | None = None

    @field_validator("client_config")
    @classmethod
    def _prices(cls, config: dict[str, Any]) -> dict[str, Any]:
        return check_prices(config)

    def spec(self) -> PipelineSpec:
        return PipelineSpec(
            pipeline_name=self.pipeline_name,
            pipeline_type=self.pipeline_type,
            model_config=self.model_settings,
            sampling_params=self.sampling_params,
            client_config=self.client_config,
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            resources=self.resources,
            endpoint_limit=self.endpoint_limit.limit() if self.endpoint_limit else None,
            budget=self.budget.budget() if self.budget else None,
        )


# dispatcher


class CloneIntoContextBody(_Knobs, _Open):
    context_id: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="a subject token")


# /api/v1


class PipelineBody(_Knobs, _Closed):
    pass


class ReasonBody(_Closed):
    """The optional body of stop, resume and delete: why, for the audit trail."""

    reason: Reason = None


class CloneBody(_Closed):
    """Changes for a clone; what is left out is inherited, dicts are merged key by key.
    `reason` is not a change: it says why, for the audit trail."""

    reason: Reason = None
    pipeline_name: Name | None = None
    pipeline_type: PipelineType | None = None
    model_settings: dict[str, Any] | None = Field(default=None, alias="model_config")
    sampling_params: dict[str, Any] | None = None
    client_config: dict[str, Any] | None = None
    rpm_limit: RateLimit | None = None
    tpm_limit: RateLimit | None = None
    resources: Needs | None = None
    endpoint_limit: EndpointLimitBody | None = None
    budget: BudgetBody | None = None

    @field_validator("client_config")
    @classmethod
    def _prices(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if config is None else check_prices(config)

    def changes(self) -> PipelineChanges:
        return PipelineChanges(
            pipeline_name=self.pipeline_name,
            pipeline_type=self.pipeline_type,
            model_config=self.model_settings,
            sampling_params=self.sampling_params,
            client_config=self.client_config,
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            resources=self.resources,
            endpoint_limit=self.endpoint_limit.limit() if self.endpoint_limit else None,
            budget=self.budget.budget() if self.budget else None,
        )


def _rows_xor_ref(schema: dict[str, Any]) -> None:
    """What `_one_source` checks, said in the schema: exactly one of them, neither null."""
    for name in ("rows", "ref"):
        schema["properties"][name].pop("default", None)
    schema["oneOf"] = [{"required": ["rows"]}, {"required": ["ref"]}]


class DatasetBody(_Closed):
    model_config = ConfigDict(json_schema_extra=_rows_xor_ref)

    # not Optional: a null is refused like any other wrong type; absent is the None default
    # (mypy: a None default on a non-Optional field, on purpose, hence the ignores)
    rows: list[dict[str, Any]] = Field(default=None, min_length=1)  # type: ignore[arg-type]
    ref: str = Field(default=None, pattern=r"^sha256-[0-9a-f]{64}$")  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _one_source(cls, data: Any) -> Any:
        if isinstance(data, dict):
            if "path" in data:
                raise ValueError(
                    "'path' is read by the CLI, which uploads the file;"
                    " the API takes 'rows' or 'ref'"
                )
            if ("rows" in data) == ("ref" in data):
                raise ValueError("give exactly one of 'rows' (inline) or 'ref' (a stored dataset)")
        return data


class RowsBody(_Closed):
    rows: list[dict[str, Any]] = Field(min_length=1)


class ScorerBody(_Closed):
    name: str
    target: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in BUILTIN_SCORERS and user_scorer(name) is None:
            raise ValueError(
                f"unknown scorer {name!r} (known: {', '.join(BUILTIN_SCORERS)},"
                " or module:function from INFERNO_SCORER_MODULES)"
            )
        return name

    @model_validator(mode="after")
    def _usable(self) -> ScorerBody:
        """Target and options of a built-in; a user scorer's allow-list is checked by
        `check_user_scorers`, which knows the settings."""
        if user_scorer(self.name) is None:
            try:
                check_scorer(self.scorer(), ())
            except ScorerError as error:
                raise ValueError(str(error)) from None
        return self

    def scorer(self) -> Scorer:
        return msgspec.convert(self.model_dump(), Scorer)


class Message(_Closed):
    role: str
    content: str


class EvalBody(_Closed):
    prompt: str | list[Message] = "{prompt}"
    scorers: list[ScorerBody] = Field(default_factory=list)
    ci_method: Literal["normal", "wilson", "hoeffding", "confidence_sequence"] | None = None
    confidence_level: float = Field(default=0.95, gt=0, lt=1)

    @field_validator("scorers")
    @classmethod
    def _distinct(cls, scorers: list[ScorerBody]) -> list[ScorerBody]:
        names = [s.name for s in scorers]
        if twice := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"{', '.join(twice)} appears twice; metrics are named by scorer")
        return scorers

    def spec(self) -> EvalSpec:
        prompt: str | list[dict[str, str]] = (
            self.prompt if isinstance(self.prompt, str) else [m.model_dump() for m in self.prompt]
        )
        return EvalSpec(
            prompt=prompt,
            scorers=[s.scorer() for s in self.scorers],
            ci_method=self.ci_method,
            confidence_level=self.confidence_level,
        )


class PruneBody(_Closed):
    rule: Literal["dominated", "median_of_peers"]
    metric: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    min_rows: int = Field(default=100, ge=1, le=10**9)


class PolicyBody(_Closed):
    prune: PruneBody | None = None

    def policy(self) -> Policy:
        if self.prune is None:
            return Policy()
        return Policy(prune=PrunePolicy(**self.prune.model_dump()))


class ExperimentBody(_Closed):
    experiment_name: Name
    num_shards: Positive
    dataset: DatasetBody
    eval: EvalBody = Field(default_factory=EvalBody)
    pipelines: list[PipelineBody] = Field(min_length=1)
    max_attempts: Attempts = 3
    retry_backoff_s: float = Field(default=1.0, ge=0, le=MAX_RETRY_BACKOFF_S)
    shuffle: bool = True  # rows in a seeded random order (unbiased early metrics)
    shuffle_seed: int | None = Field(default=None, ge=0, lt=2**63)  # drawn when not given
    policy: PolicyBody = Field(default_factory=PolicyBody)
    budget: BudgetBody | None = None  # all pipelines together
    reason: Reason = None

    @property
    def budgeted(self) -> bool:
        return self.budget is not None or any(p.budget is not None for p in self.pipelines)

    def row_order(self, idempotency_key: str | None) -> RowOrder | None:
        return draw_row_order(self.shuffle_seed, idempotency_key) if self.shuffle else None


def draw_row_order(seed: int | None, idempotency_key: str | None) -> RowOrder:
    """Where the seed is drawn: the command carries it, so replaying decides the same. A retry
    under the same Idempotency-Key draws the same seed, so it is the same request."""
    if seed is not None:
        return RowOrder(seed=seed)
    if idempotency_key is None:
        return RowOrder(seed=secrets.randbits(63))
    digest = hashlib.sha256(b"inferno-row-order:" + idempotency_key.encode()).digest()
    return RowOrder(seed=int.from_bytes(digest[:8], "big") >> 1)


class ExtendBody(_Closed):
    """Rows to add to an experiment, cut into `num_shards` new shards of every pipeline; in a
    shuffled experiment they run in their own random order (`shuffle_seed`, else drawn)."""

    dataset: DatasetBody
    num_shards: Positive
    shuffle_seed: int | None = Field(default=None, ge=0, lt=2**63)
    reason: Reason = None


def template_fields(template: str, field: str) -> set[str]:
    """The row fields a `str.format` template uses: `{question}`, `{row[a]}` -> question, row,
    and those its format specs use (`{question:>{width}}` -> width too). A literal spec's
    widths are bounded here; one built from a row is bounded by the executor's renderer."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise bad_field(field, f"invalid template: {error}") from None
    names = set()
    for _text, name, spec, _conversion in parsed:
        if name is None:
            continue
        if spec and "{" in spec:
            names |= template_fields(spec, field)
        elif spec:
            try:
                check_format_spec(spec)
            except ValueError as error:
                raise bad_field(field, f"{{{name}:{spec}}}: {error}") from None
        base, *attributes = name.split(".")
        base = base.split("[", 1)[0]
        if not base or base.isdigit():
            raise bad_field(field, "use named fields such as {question}, not {} or {0}")
        if any(a.startswith("_") for a in attributes):
            raise bad_field(field, f"{{{name}}}: private attributes are not allowed")
        names.add(base)
    return names


def check_unique_names(body: ExperimentBody) -> None:
    """Pipeline names are unique in an experiment: the CLI picks pipelines by name prefix."""
    first: dict[str, int] = {}
    for i, pipeline in enumerate(body.pipelines):
        name = pipeline.pipeline_name
        if name in first:
            raise bad_field(
                f"pipelines.{i}.pipeline_name",
                f"{name!r} is already the name of pipelines.{first[name]}; names are unique"
                " in an experiment",
            )
        first[name] = i


def check_user_scorers(body: EvalBody, allowed_modules: Collection[str]) -> None:
    """A `module:function` scorer runs only from a module in INFERNO_SCORER_MODULES: the api
    refuses any other with a 400 naming it (executors check their own list again)."""
    for i, scorer in enumerate(body.scorers):
        if user_scorer(scorer.name) is not None:
            try:
                check_scorer(scorer.scorer(), allowed_modules)
            except ScorerError as error:
                raise bad_field(f"eval.scorers.{i}.name", str(error)) from None


def check_policy(body: ExperimentBody) -> None:
    """A prune policy's metric is one of the experiment's; `dominated` reads confidence
    sequences, which need a 0/1 scorer and rows in a random order."""
    prune = body.policy.prune
    if prune is None:
        return
    names = [s.name for s in body.eval.scorers]
    if prune.metric not in names:
        raise bad_field(
            "policy.prune.metric",
            f"{prune.metric!r} is not one of the experiment's metrics"
            f" ({', '.join(names) or 'none'})",
        )
    if prune.rule == "dominated" and prune.metric not in BINARY_SCORERS:
        raise bad_field(
            "policy.prune.metric",
            "the dominated rule needs a 0/1 scorer for its confidence sequence,"
            f" not {prune.metric!r}",
        )
    if prune.rule == "dominated" and not body.shuffle:
        raise bad_field("policy.prune", "the dominated rule needs shuffled rows (shuffle: true)")


def check_budgets(body: ExperimentBody) -> None:
    """A budget in dollars needs the prices of every pipeline it covers."""
    for i, pipeline in enumerate(body.pipelines):
        for field, budget in (
            ("budget.usd", body.budget),
            (f"pipelines.{i}.budget.usd", pipeline.budget),
        ):
            if budget is not None and budget.usd is not None and not priced(pipeline.spec()):
                raise bad_field(
                    field,
                    f"pipeline {pipeline.pipeline_name!r} has no prices: set client_config"
                    f" {' or '.join(PRICE_KEYS)} (per 1,000 tokens)",
                )


def check_experiment(body: ExperimentBody, row_count: int, columns: Collection[str]) -> None:
    """What needs the dataset: enough rows for the shards, and every field the prompt and the
    scorers use among its `columns` (the first row's fields, which stand for all rows')."""
    check_rows(body.eval.spec(), body.num_shards, row_count, columns)
    check_policy(body)
    check_budgets(body)


def check_rows(
    spec: EvalSpec,
    num_shards: int,
    row_count: int,
    columns: Collection[str],
    where: str | None = None,
) -> None:
    """Rows fit an evaluation: enough of them for the shards, with every field its prompt and
    scorers use. Errors name the spec's field, or `where` (`dataset`: rows an extension adds,
    for the experiment's spec) with the spec's field in the message."""
    if num_shards > row_count:
        raise bad_field("num_shards", f"{num_shards} shards exceed the dataset's {row_count} rows")
    have = ", ".join(sorted(columns)) or "none"
    prompt = spec.prompt
    templates = (
        [("eval.prompt", prompt)]
        if isinstance(prompt, str)
        else [(f"eval.prompt.{i}.content", m.get("content", "")) for i, m in enumerate(prompt)]
    )

    def refuse(field: str, problem: str) -> ApiError:
        if where is None:
            return bad_field(field, problem)
        return bad_field(where, f"the experiment's {field} {problem}")

    for field, template in templates:
        for name in sorted(template_fields(template, field)):
            if name not in columns:
                raise refuse(field, f"uses {{{name}}}, which the rows lack (they have: {have})")
    for i, scorer in enumerate(spec.scorers):
        if scorer.target is not None and scorer.target not in columns:
            raise refuse(
                f"eval.scorers.{i}.target",
                f"{scorer.target!r} is not a field of the rows (they have: {have})",
            )

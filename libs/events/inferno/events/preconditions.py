"""Would `decide` refuse this command? One pure answer, for `decide` itself and for the api's 409.

The check reads only what both the scheduler's decision state and the api's read model hold
(`Facts`: pipelines with their status, experiment and name; experiments with their pipelines;
contexts), so the api judges a command by the decider's own rules, in the decider's words,
before anything is appended. The decider still has the last word: a command that races another
fails its operation with the same reason.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import NamedTuple, Protocol

from inferno.events.budgets import priced
from inferno.events.commands import (
    MAX_REASON_LENGTH,
    AnyCommand,
    CloneIntoContext,
    ClonePipeline,
    CreateExperiment,
    DeletePipeline,
    ExtendExperiment,
    ResumePipeline,
    RetryPipeline,
    SetBudget,
    StopPipeline,
)
from inferno.events.model import (
    MAX_ATTEMPTS,
    MAX_NAME_LENGTH,
    MAX_RETRY_BACKOFF_S,
    Budget,
    PipelineSpec,
    Policy,
)


class PipelineFacts(Protocol):
    @property
    def status(self) -> str: ...
    @property
    def experiment_id(self) -> str: ...
    @property
    def spec(self) -> PipelineSpec: ...
    @property
    def repairable(self) -> bool: ...


class ExperimentFacts(Protocol):
    @property
    def pipeline_ids(self) -> list[int]: ...
    @property
    def budget(self) -> Budget | None: ...
    @property
    def policy(self) -> Policy: ...


class Facts(Protocol):
    """What a precondition reads; `inferno.events.state.State` and the read model both have it."""

    @property
    def pipelines(self) -> Mapping[int, PipelineFacts]: ...
    @property
    def experiments(self) -> Mapping[str, ExperimentFacts]: ...
    @property
    def contexts(self) -> Mapping[str, str]: ...


class Refusal(NamedTuple):
    """Why a command cannot work: `reason` is the operation's error; `missing` names what it
    targets when that does not exist (the api's 404), else it is None (a 409)."""

    reason: str
    missing: str | None = None


class Rejected(Exception):
    """Raised inside the checks; its message becomes the refusal's reason."""


def refusal(facts: Facts, command: AnyCommand) -> Refusal | None:
    """None when `decide` would accept `command` in `facts`' state."""
    if command.reason is not None and len(command.reason) > MAX_REASON_LENGTH:
        return Refusal(f"reason is {len(command.reason)} characters; at most {MAX_REASON_LENGTH}")
    if isinstance(command, CloneIntoContext) and command.context_id not in facts.contexts:
        what = f"context {command.context_id}"
        return Refusal(f"{what} does not exist", what)
    if (
        isinstance(command, SetBudget | ExtendExperiment)
        and command.experiment_id not in facts.experiments
    ):
        what = f"experiment {command.experiment_id}"
        return Refusal(f"{what} does not exist", what)
    if isinstance(command, SetBudget) and command.pipeline_id is not None:
        pipeline = facts.pipelines.get(command.pipeline_id)
        if pipeline is None or pipeline.experiment_id != command.experiment_id:
            what = f"pipeline {command.pipeline_id}"
            return Refusal(f"{what} does not exist in experiment {command.experiment_id}", what)
    pipeline_commands = (
        StopPipeline | ResumePipeline | RetryPipeline | DeletePipeline | ClonePipeline
    )
    if isinstance(command, pipeline_commands) and (command.pipeline_id not in facts.pipelines):
        what = f"pipeline {command.pipeline_id}"
        return Refusal(f"{what} does not exist", what)
    try:
        _check(facts, command)
    except Rejected as rejection:
        return Refusal(str(rejection))
    return None


def _check(facts: Facts, command: AnyCommand) -> None:
    if isinstance(command, CreateExperiment):
        _check_create(facts, command)
    elif isinstance(command, CloneIntoContext):
        experiment_id = facts.contexts[command.context_id]
        check_pipeline_names([command.spec.pipeline_name], live_names(facts, experiment_id))
        check_priced([command.spec], facts.experiments[experiment_id].budget)
    elif isinstance(command, SetBudget):
        _check_budget(facts, command)
    elif isinstance(command, ExtendExperiment):
        _check_extend(facts, command)
    else:
        pipeline = facts.pipelines[command.pipeline_id]
        status, pid = pipeline.status, command.pipeline_id
        if isinstance(command, StopPipeline) and status not in ("new", "ongoing"):
            raise Rejected(
                f"cannot stop pipeline {pid}: it is {status}; "
                "only new or ongoing pipelines can be stopped"
            )
        if isinstance(command, ResumePipeline) and status != "stopped":
            raise Rejected(
                f"cannot resume pipeline {pid}: it is {status}; "
                "only stopped pipelines can be resumed"
            )
        if isinstance(command, RetryPipeline) and not (
            status == "failed" or (status == "completed" and pipeline.repairable)
        ):
            every = " with every row answered" if status == "completed" else ""
            raise Rejected(
                f"cannot retry pipeline {pid}: it is {status}{every}; only failed pipelines and"
                " completed ones with row errors can be retried"
            )
        if isinstance(command, DeletePipeline) and status == "deleted":
            raise Rejected(f"pipeline {pid} is already deleted")
        if isinstance(command, ClonePipeline) and command.changes.pipeline_name is not None:
            taken = live_names(facts, pipeline.experiment_id)
            check_pipeline_names([command.changes.pipeline_name], taken)
        if isinstance(command, ClonePipeline) and command.changes.client_config is not None:
            spec = PipelineSpec(
                pipeline_name=pipeline.spec.pipeline_name,
                pipeline_type=pipeline.spec.pipeline_type,
                client_config={**pipeline.spec.client_config, **command.changes.client_config},
                budget=command.changes.budget or pipeline.spec.budget,
            )
            check_priced([spec], facts.experiments[pipeline.experiment_id].budget)


def _check_extend(facts: Facts, cmd: ExtendExperiment) -> None:
    if facts.experiments[cmd.experiment_id].policy.prune is not None:
        raise Rejected(
            f"experiment {cmd.experiment_id} has a prune policy, whose bounds are over its own"
            " rows: extending it would change what its decisions meant"
        )
    if not 1 <= cmd.rows.num_shards <= cmd.rows.row_count:
        raise Rejected(
            f"num_shards must be between 1 and the {cmd.rows.row_count} rows added,"
            f" not {cmd.rows.num_shards}"
        )


def _check_budget(facts: Facts, cmd: SetBudget) -> None:
    if cmd.budget.usd is None and cmd.budget.tokens is None:
        raise Rejected("a budget needs usd, tokens or both")
    experiment = facts.experiments[cmd.experiment_id]
    if cmd.pipeline_id is None:
        live = [facts.pipelines[pid] for pid in experiment.pipeline_ids]
        check_priced([p.spec for p in live if p.status != "deleted"], cmd.budget)
        return
    pipeline = facts.pipelines[cmd.pipeline_id]
    if pipeline.status == "deleted":
        raise Rejected(f"pipeline {cmd.pipeline_id} is deleted")
    check_priced([pipeline.spec], cmd.budget)


def check_priced(specs: Iterable[PipelineSpec], budget: Budget | None) -> None:
    """A budget in dollars holds only pipelines with prices: each one it covers has them, and
    so does each pipeline with its own."""
    for spec in specs:
        for over in (budget, spec.budget):
            if over is not None and over.usd is not None and not priced(spec):
                raise Rejected(
                    f"a budget in usd needs prices: pipeline {spec.pipeline_name!r} sets no"
                    " client_config price_per_1k_prompt_tokens / price_per_1k_completion_tokens"
                )


def _check_create(facts: Facts, cmd: CreateExperiment) -> None:
    if cmd.experiment_id in facts.experiments:
        raise Rejected(f"experiment {cmd.experiment_id} already exists")
    if cmd.context_id in facts.contexts:
        raise Rejected(f"context {cmd.context_id} already exists")
    if cmd.num_shards < 1:
        raise Rejected("num_shards must be at least 1")
    if cmd.row_count < cmd.num_shards:
        raise Rejected(f"num_shards ({cmd.num_shards}) exceeds the dataset's {cmd.row_count} rows")
    if not cmd.pipelines:
        raise Rejected("an experiment needs at least one pipeline")
    if not 1 <= cmd.max_attempts <= MAX_ATTEMPTS:
        raise Rejected(f"max_attempts must be between 1 and {MAX_ATTEMPTS}")
    if not 0 <= cmd.retry_backoff_s <= MAX_RETRY_BACKOFF_S:
        raise Rejected(f"retry_backoff_s must be between 0 and {MAX_RETRY_BACKOFF_S:g} seconds")
    if len(cmd.experiment_name) > MAX_NAME_LENGTH:
        raise Rejected(f"experiment name is longer than {MAX_NAME_LENGTH} characters")
    check_pipeline_names((p.pipeline_name for p in cmd.pipelines), {})
    check_priced(cmd.pipelines, cmd.budget)


def live_names(facts: Facts, experiment_id: str) -> dict[str, int]:
    """The names of the experiment's pipelines that are not deleted, each with its id: the
    CLI resolves names and their prefixes among these, so they must stay unique."""
    return {
        p.spec.pipeline_name: pid
        for pid in facts.experiments[experiment_id].pipeline_ids
        if (p := facts.pipelines[pid]).status != "deleted"
    }


def clone_name(parent: str, taken: Collection[str]) -> str:
    """A clone's name when none is given: `<parent>-clone`, else the first free of `-clone-2`,
    `-clone-3`, ...; the parent's part is cut so the name stays within MAX_NAME_LENGTH."""
    n = 1
    while True:
        suffix = "-clone" if n == 1 else f"-clone-{n}"
        name = parent[: MAX_NAME_LENGTH - len(suffix)] + suffix
        if name not in taken:
            return name
        n += 1


def check_pipeline_names(names: Iterable[str], taken: Mapping[str, int]) -> None:
    """Every new pipeline's name fits, and is unique among the experiment's live pipelines
    (`taken`, see `live_names`) and among the names given with it."""
    seen: set[str] = set()
    for name in names:
        if len(name) > MAX_NAME_LENGTH:
            raise Rejected(f"pipeline name is {len(name)} characters; at most {MAX_NAME_LENGTH}")
        if name in taken:
            raise Rejected(
                f"pipeline name {name!r} is taken in this experiment by pipeline {taken[name]};"
                " names are unique there, so that a name or its prefix picks one pipeline"
            )
        if name in seen:
            raise Rejected(f"pipeline name {name!r} is given twice; names are unique there")
        seen.add(name)

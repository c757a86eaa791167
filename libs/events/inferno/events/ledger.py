"""What each budget has committed while the decider plans (`inferno.events.budgets`): the
spend of completed shards plus the reservations of shards in flight, and of those this plan
places."""

from __future__ import annotations

from inferno.events.budgets import Spend, over, reservation, spent
from inferno.events.model import Budget, segment_of
from inferno.events.state import Pipeline, State


def budgeted(state: State) -> bool:
    """Whether any budget applies: only then does planning keep a ledger."""
    return any(e.budget is not None for e in state.experiments.values()) or any(
        p.spec.budget is not None for p in state.pipelines.values() if p.runnable
    )


class Ledger:
    def __init__(self, state: State) -> None:
        self._state = state
        self._committed: dict[int | str, Spend] = {}  # a pipeline's id or an experiment's

    def covers(self, pipeline: Pipeline) -> bool:
        """Whether any budget is over this pipeline (its own, its experiment's)."""
        return bool(self._budgets(pipeline))

    def blocked(self, pipeline: Pipeline, shard: int, *, held: bool = True) -> str | None:
        """Why `shard` may not start: the first budget over it that it would exceed, with the
        numbers. `held=False` counts the spend alone, without what shards in flight hold."""
        budgets = self._budgets(pipeline)
        if not budgets:
            return None
        more = self._reservation(pipeline, shard)
        for key, budget, scope in budgets:
            committed = self._committed_by(key, held)
            if (why := over(budget, committed, more, scope)) is not None:
                return why
        return None

    def reserve(self, pipeline: Pipeline, shard: int) -> None:
        budgets = self._budgets(pipeline)
        if not budgets:
            return
        more = self._reservation(pipeline, shard)
        for key, _, _ in budgets:
            self._committed[key] = self._committed_by(key, True).plus(more)

    def _budgets(self, pipeline: Pipeline) -> list[tuple[int | str, Budget, str]]:
        experiment = self._state.experiments[pipeline.experiment_id]
        budgets: list[tuple[int | str, Budget, str]] = []
        if pipeline.spec.budget is not None:
            budgets.append((pipeline.pipeline_id, pipeline.spec.budget, "pipeline"))
        if experiment.budget is not None:
            budgets.append((experiment.experiment_id, experiment.budget, "experiment"))
        return budgets

    def _committed_by(self, key: int | str, held: bool) -> Spend:
        if held and key in self._committed:
            return self._committed[key]
        if isinstance(key, int):
            members = [self._state.pipelines[key]]
        else:
            experiment = self._state.experiments[key]
            members = [self._state.pipelines[pid] for pid in experiment.pipeline_ids]
        total = Spend()
        for member in members:
            prompt, completion = member.spent_prompt_tokens, member.spent_completion_tokens
            total = total.plus(spent(member.spec, prompt, completion))
            if held:
                for shard in member.in_flight:
                    total = total.plus(self._reservation(member, shard))
        if held:
            self._committed[key] = total
        return total

    def _reservation(self, pipeline: Pipeline, shard: int) -> Spend:
        _, rows = segment_of(self._state.experiments[pipeline.experiment_id], shard)
        return reservation(
            pipeline.spec,
            rows.row_count,
            rows.num_shards,
            rows.prompt_tokens or 0,
            shard - rows.first_shard,
        )

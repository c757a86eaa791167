"""The bodies RapidFire's clients send (pure): open, as its dispatcher's are, with its ids taken
as a number or a numeric string (its notebook panel sends a string after its first refresh)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from inferno.api.rapidfire import inferno_type, unmasked
from inferno.api.schemas import Name, Needs, RateLimit, _integral, _Open, check_prices
from inferno.events.model import PIPELINE_TYPES, PipelineChanges


def _numeric(value: Any) -> Any:
    """`"7"` is 7, as for RapidFire's sqlite; `"seven"` stays an error naming the field."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return _integral(value)


NumericId = Annotated[int, BeforeValidator(_numeric)]


class PipelineIdBody(_Open):
    pipeline_id: NumericId


class RunIdBody(_Open):
    run_id: NumericId


class ExperimentNameBody(_Open):
    experiment_name: str


class LogsBody(_Open):
    experiment_name: str | None = None


class RapidFireConfig(_Open):
    """RapidFire's `config_json`: the knobs of the clone; what is left out is the parent's.
    Its other keys (batch_size, online_strategy_kwargs, ...) have no meaning here and are
    ignored, as extra fields are on every dispatcher body."""

    pipeline_name: Name | None = None
    pipeline_type: str | None = None
    model_settings: dict[str, Any] | None = Field(default=None, alias="model_config")
    sampling_params: dict[str, Any] | None = None
    client_config: dict[str, Any] | None = None
    rpm_limit: RateLimit | None = None
    tpm_limit: RateLimit | None = None
    resources: Needs | None = None

    @field_validator("pipeline_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is None:
            return None
        ours = inferno_type(value)
        if ours not in PIPELINE_TYPES:
            known = ", ".join(("api", *PIPELINE_TYPES))
            raise ValueError(f"pipeline_type must be one of {known}, not {value!r}")
        return ours

    @field_validator("client_config")
    @classmethod
    def _prices(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if config is None else check_prices(config)

    def changes(self) -> PipelineChanges:
        def kept(value: dict[str, Any] | None) -> dict[str, Any] | None:
            return None if value is None else unmasked(value)

        return PipelineChanges(
            pipeline_name=self.pipeline_name,
            pipeline_type=self.pipeline_type,  # type: ignore[arg-type]  # checked above
            model_config=kept(self.model_settings),
            sampling_params=kept(self.sampling_params),
            client_config=kept(self.client_config),
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            resources=self.resources,
        )


class ParentCloneBody(_Open):
    """The notebook panel's clone: `{"parent_pipeline_id", "config_json": {...}}`."""

    parent_pipeline_id: NumericId
    config_json: RapidFireConfig


class CloneModifyRunBody(_Open):
    """The fit controller's clone: an empty `config` clones the run as it is."""

    run_id: NumericId
    config: RapidFireConfig = Field(default_factory=RapidFireConfig)
    warm_start: bool = False

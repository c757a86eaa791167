"""The one engine interface every backend implements (DESIGN §5), and the backend registry.

An engine is what a loaded model looks like to the executor: it generates completions for a
batch of requests and can be told to drop everything it is doing. Loading and unloading are the
two halves of an async context manager, `Backend.open(spec)`, so a backend cannot forget to free
a GPU: whatever `__aenter__` loads, `__aexit__` releases.

Cancellation contract: cancelling the task awaiting `generate` must stop that call's work (the
executor does so when a pipeline is deleted mid-shard). `abort()` stops every call in flight; the
interrupted calls raise `EngineAborted`. An engine that runs work outside the event loop (a
thread, a GPU) must make both true, since cancelling an `asyncio.to_thread` stops nothing.

`GenerationRequest.reference` is the answer the eval spec expects for the row. Only the simulator
reads it (to be right with probability `accuracy`); real engines must ignore it. It is passed
explicitly, rather than the whole row, so an engine never sees dataset fields it has no use for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from inferno.events.backend_options import unknown_keys, unknown_keys_reason
from inferno.events.model import PipelineSpec, Prompt

if TYPE_CHECKING:
    from inferno.executor.fleet_limits import FleetRates


class GenerationRequest(msgspec.Struct, frozen=True, kw_only=True):
    prompt: Prompt
    key: str  # stable identity of the row (its index in the dataset), for deterministic engines
    reference: str | None = None  # the expected answer; for the simulator only (module docs)


class Generation(msgspec.Struct, kw_only=True):
    """One completion. `error`: this row failed inside the engine (the others still count).
    `endpoint_error`: the error is the endpoint's, not the row's (no answer came: down,
    unreachable, 5xx until out of retries); a shard whose every row failed so fails itself."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    simulated: bool = False
    error: str | None = None
    endpoint_error: bool = False


class EngineConfigError(ValueError):
    """The pipeline's model_config cannot work; retrying the shard would fail the same way."""


def reject_unknown_keys(where: str, config: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """A typo in a config (`acuracy`) fails the pipeline with the key named, instead of being
    silently ignored (the api's check, `inferno.events.backend_options`, again)."""
    allowed = list(allowed)
    if unknown := unknown_keys(config, allowed):
        raise EngineConfigError(f"{where}: {unknown_keys_reason(unknown, allowed)}")


class EndpointUnavailable(RuntimeError):
    """The endpoint gives no answer: the shard fails (retryable, the scheduler tries it again
    later) instead of completing with every row an error."""


class EngineAborted(RuntimeError):
    """`abort()` interrupted this generate call."""


class Engine(Protocol):
    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        """One completion per request, in order. `sampling` is the pipeline's sampling_params:
        pipelines that share a model share the engine, so sampling comes with every call."""
        ...

    async def abort(self) -> None:
        """Stop every generate call in flight; they raise `EngineAborted`."""
        ...


EngineFactory = Callable[[PipelineSpec], AbstractAsyncContextManager[Engine]]
FleetEngineFactory = Callable[[PipelineSpec, "FleetRates"], AbstractAsyncContextManager[Engine]]


@dataclass(frozen=True, slots=True)
class Backend:
    """A pipeline_type the executor can run. `available()` says whether this host can (its
    libraries import, a GPU is there): only available backends are advertised to the scheduler."""

    pipeline_type: str
    open: EngineFactory
    available: Callable[[], bool] = lambda: True
    # opens the engine with state it shares with the fleet (rate limits), where the executor
    # keeps it (INFERNO_RATE_LIMITS=fleet); None: `open` in any case
    open_in_fleet: FleetEngineFactory | None = None


Backends = Mapping[str, Backend]  # pipeline_type -> Backend

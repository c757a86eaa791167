"""Keep one loaded engine per executor across shards and pipelines (DESIGN §1, §4).

Loading a model costs minutes on a GPU, so the engine stays loaded while shards keep asking for
the same `engine_key` (type, model_config, client_config, limits); sampling params differ per
call and never force a reload. A shard that needs another model waits until no shard uses the
loaded one, then the old engine is torn down before the new one loads (one model in GPU memory
at a time). While such a swap waits, new users of the loaded engine wait too, so a stream of
shards for one model cannot starve the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import msgspec

from inferno.events.model import PipelineSpec
from inferno.executor.backends.base import Backends, Engine, EngineConfigError

if TYPE_CHECKING:
    from inferno.executor.fleet_limits import FleetRates


def engine_key(spec: PipelineSpec) -> tuple[str, bytes]:
    """Two specs share an engine exactly when their type, model_config, client_config and rate
    limits are equal: an `openai` engine is its endpoint, key (by ref) and limiter, so pipelines
    with other endpoints or keys must never be sent through it."""
    config: tuple[Any, ...] = (
        spec.model_config,
        spec.client_config,
        spec.rpm_limit,
        spec.tpm_limit,
    )
    if spec.endpoint_limit is not None:  # appended only when set: older keys stay as they were
        config += (spec.endpoint_limit,)
    return spec.pipeline_type, msgspec.json.encode(config, order="sorted")


def loaded_model(spec: PipelineSpec) -> str:
    """How the scheduler names a loaded model (`inferno.events.scheduling.model_key`)."""
    return f"{spec.pipeline_type}:{spec.model_config.get('model', '')}"


class EngineCache:
    def __init__(self, backends: Backends, fleet: FleetRates | None = None) -> None:
        self._backends = backends
        self._fleet = fleet  # rate limits held across the fleet; None: per engine
        self._changed = asyncio.Condition()
        self._key: tuple[str, bytes] | None = None
        self._model: str | None = None
        self._engine: Engine | None = None
        self._stack = AsyncExitStack()
        self._users = 0
        self._swaps_waiting = 0

    @property
    def loaded_models(self) -> list[str]:
        return [self._model] if self._model is not None else []

    @asynccontextmanager
    async def use(
        self, spec: PipelineSpec, *, resolved: PipelineSpec | None = None
    ) -> AsyncIterator[Engine]:
        """The engine for `spec`, loaded if need be; it stays loaded after the block. A new
        engine opens with `resolved` (`spec` with its secret refs resolved) when given, while
        the key it is kept under is `spec`'s: it holds refs, never secret values."""
        key = engine_key(spec)
        async with self._changed:
            swap = key != self._key
            self._swaps_waiting += swap
            try:
                await self._changed.wait_for(
                    lambda: self._users == 0 or (key == self._key and not self._swaps_waiting)
                )
            finally:
                self._swaps_waiting -= swap
            if key != self._key:
                await self._unload()
                await self._load(resolved or spec, key)
            self._users += 1
            engine = self._engine
        assert engine is not None
        try:
            yield engine
        finally:
            async with self._changed:
                self._users -= 1
                self._changed.notify_all()

    async def abort(self) -> None:
        """Stop all work of the loaded engine (shutdown): its generate calls raise."""
        if self._engine is not None:
            await self._engine.abort()

    async def aclose(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._users == 0)
            await self._unload()

    async def _load(self, spec: PipelineSpec, key: tuple[str, bytes]) -> None:
        backend = self._backends.get(spec.pipeline_type)
        if backend is None or not backend.available():
            raise EngineConfigError(
                f"this executor cannot run pipeline_type {spec.pipeline_type!r} "
                f"(it has {', '.join(sorted(self._backends)) or 'no backends'})"
            )
        if self._fleet is not None and backend.open_in_fleet is not None:
            opened = backend.open_in_fleet(spec, self._fleet)
        else:
            opened = backend.open(spec)
        self._engine = await self._stack.enter_async_context(opened)
        self._key, self._model = key, loaded_model(spec)

    async def _unload(self) -> None:
        self._key = self._model = self._engine = None
        stack, self._stack = self._stack, AsyncExitStack()
        await stack.aclose()

"""The engine cache: one loaded engine, kept while (type, model_config) stays, swapped cleanly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from inferno.events.model import PipelineSpec
from inferno.events.scheduling import model_key
from inferno.events.state import Pipeline
from inferno.executor.backends import default_backends
from inferno.executor.backends.base import (
    Backend,
    EngineConfigError,
    Generation,
    GenerationRequest,
)
from inferno.executor.engines import EngineCache, engine_key, loaded_model


class EchoEngine:
    """A tiny real engine: echoes prompts, records its lifecycle in `log`."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        return [Generation(text=str(r.prompt)) for r in requests]

    async def abort(self) -> None:
        self.log.append(f"abort {self.name}")


def echo_backend(log: list[str], *, fail: bool = False, available: bool = True) -> Backend:
    @asynccontextmanager
    async def open_echo(spec: PipelineSpec) -> AsyncIterator[EchoEngine]:
        name = spec.model_config["model"]
        log.append(f"open {name}")
        if fail:
            raise RuntimeError("out of GPU memory")
        try:
            yield EchoEngine(name, log)
        finally:
            log.append(f"close {name}")

    return Backend("hf", open_echo, available=lambda: available)


def hf(model: str, **extra: Any) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name=extra.pop("name", "p"),
        pipeline_type="hf",
        model_config={"model": model, **extra.pop("model_config", {})},
        sampling_params=extra.pop("sampling_params", {}),
    )


async def test_engine_is_reused_while_model_config_is_unchanged():
    log: list[str] = []
    cache = EngineCache({"hf": echo_backend(log)})
    async with cache.use(hf("a", name="p1", sampling_params={"temperature": 0})) as first:
        pass
    async with cache.use(hf("a", name="p2", sampling_params={"temperature": 1})) as second:
        assert second is first
    assert log == ["open a"]
    assert cache.loaded_models == ["hf:a"]
    await cache.aclose()
    assert log == ["open a", "close a"]
    assert cache.loaded_models == []


async def test_a_model_config_change_tears_down_the_old_engine_first():
    log: list[str] = []
    cache = EngineCache({"hf": echo_backend(log)})
    async with cache.use(hf("a")):
        pass
    async with cache.use(hf("a", model_config={"dtype": "bf16"})):
        pass
    async with cache.use(hf("b")) as engine:
        assert await engine.generate([GenerationRequest(prompt="x", key="0")], {}) == [
            Generation(text="x")
        ]
    assert log == ["open a", "close a", "open a", "close a", "open b"]
    await cache.aclose()


async def test_a_swap_waits_for_the_shards_using_the_loaded_engine():
    log: list[str] = []
    cache = EngineCache({"hf": echo_backend(log)})
    release = asyncio.Event()

    async def hold(model: str) -> None:
        async with cache.use(hf(model)):
            log.append(f"use {model}")
            await release.wait()

    a1 = asyncio.create_task(hold("a"))
    a2 = asyncio.create_task(hold("a"))
    await asyncio.sleep(0.01)
    b = asyncio.create_task(hold("b"))
    await asyncio.sleep(0.01)
    late_a = asyncio.create_task(hold("a"))  # must not jump the queue ahead of the swap
    await asyncio.sleep(0.01)
    assert log == ["open a", "use a", "use a"]
    release.set()
    await asyncio.gather(a1, a2, b, late_a)
    assert log[:6] == ["open a", "use a", "use a", "close a", "open b", "use b"]
    await cache.aclose()


async def test_a_failed_load_leaves_nothing_loaded():
    log: list[str] = []
    cache = EngineCache({"hf": echo_backend(log, fail=True)})
    with pytest.raises(RuntimeError, match="out of GPU memory"):
        async with cache.use(hf("a")):
            pass
    assert cache.loaded_models == []
    await cache.aclose()


@pytest.mark.parametrize("available", [True, False])
async def test_a_backend_this_executor_lacks_is_a_config_error(available):
    backends = {"sim": default_backends()["sim"]}
    if not available:
        backends["hf"] = echo_backend([], available=False)
    cache = EngineCache(backends)
    with pytest.raises(EngineConfigError, match="cannot run pipeline_type 'hf'"):
        async with cache.use(hf("a")):
            pass


async def test_abort_reaches_the_loaded_engine():
    log: list[str] = []
    cache = EngineCache({"hf": echo_backend(log)})
    await cache.abort()  # nothing loaded: nothing to do
    async with cache.use(hf("a")):
        await cache.abort()
    assert log == ["open a", "abort a"]
    await cache.aclose()


def test_keys_and_loaded_model_names():
    assert engine_key(hf("a", model_config={"x": 1, "y": 2})) == engine_key(
        PipelineSpec(
            pipeline_name="q", pipeline_type="hf", model_config={"y": 2, "x": 1, "model": "a"}
        )
    )
    spec = hf("m", model_config={"x": 1})
    pipeline = Pipeline(pipeline_id=1, experiment_id="e", spec=spec, num_shards=1)
    assert loaded_model(spec) == model_key(pipeline)  # the scheduler's name for it

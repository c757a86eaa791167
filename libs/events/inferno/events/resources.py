"""Declared resources: what executors have, what a pipeline's shard needs, and why it cannot go
anywhere (DESIGN §4, admission control). Pure.

Resources are named amounts (`{"gpus": 2, "gpu_mem_gb": 160}`), an open set like Ray's custom
resources, so a fleet can declare `a100: 1` or `cpu_mem_gb: 64` without a code change. Only what
a pipeline names is enforced: each key it needs must be declared by the executor with at least
that much free; keys an executor declares that the pipeline does not mention pass through. A
shard also takes one slot, as it always has. A *GPU pipeline* (a backend that needs one, an hf
model placed on `cuda`, or a need for `gpus` / `gpu_mem_gb`) goes only to an executor that has a
GPU, detected or declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Protocol

import msgspec

from inferno.events.model import PipelineSpec

MAX_RESOURCE_AMOUNT = 1_000_000.0
RESOURCE_NAME = r"^[a-z][a-z0-9_]{0,31}$"
ResourceName = Annotated[str, msgspec.Meta(pattern=RESOURCE_NAME)]
ResourceAmount = Annotated[float, msgspec.Meta(ge=0, le=MAX_RESOURCE_AMOUNT)]
"""The bounds of what `INFERNO_EXECUTOR_RESOURCES` and a pipeline's `resources` hold."""

SLOTS = "slots"
"""Not a resource a pipeline asks for: every shard takes one slot; executors declare how many."""
GPU_KEYS = frozenset({"gpus", "gpu_mem_gb"})
GPU_BACKENDS = frozenset({"vllm"})


def parse_resources(raw: str | bytes) -> dict[str, float]:
    """A JSON object of resource names to amounts; ValueError naming the key that is wrong."""
    try:
        given = msgspec.json.decode(raw, type=dict[str, object])
    except msgspec.ValidationError as error:
        raise ValueError(f"{error} (a JSON object of names to amounts >= 0)") from None
    except msgspec.DecodeError as error:
        raise ValueError(f"not JSON: {error}") from None
    resources: dict[str, float] = {}
    for key, value in given.items():
        try:
            msgspec.convert(key, ResourceName)
        except msgspec.ValidationError:
            raise ValueError(f"{key!r}: a name is a-z, 0-9 and _, starting with a letter") from None
        try:
            resources[key] = msgspec.convert(value, ResourceAmount)
        except msgspec.ValidationError:
            raise ValueError(
                f"{key!r}: {value!r} is not a number from 0 to {MAX_RESOURCE_AMOUNT:g}"
            ) from None
    return resources


def check_needs(resources: Mapping[str, float]) -> Mapping[str, float]:
    """A pipeline's `resources`: slots are the executor's to declare, not a pipeline's to ask."""
    if SLOTS in resources:
        raise ValueError("'slots' is not a need: every shard takes one slot of its executor")
    return resources


def needs(spec: PipelineSpec) -> dict[str, float]:
    """What one shard of the pipeline needs, beside its slot; zero amounts need nothing."""
    return {key: amount for key, amount in sorted(spec.resources.items()) if amount > 0}


def needs_gpu(spec: PipelineSpec) -> bool:
    if spec.pipeline_type in GPU_BACKENDS or not GPU_KEYS.isdisjoint(needs(spec)):
        return True
    device = spec.model_config.get("device")
    return spec.pipeline_type == "hf" and isinstance(device, str) and device.startswith("cuda")


def fits(need: Mapping[str, float], free: Mapping[str, float]) -> bool:
    return all(free.get(key, 0.0) >= amount for key, amount in need.items())


class _InFlight(Protocol):
    executor_id: str


class _Running(Protocol):
    """A pipeline as both the decision state and the read models hold it."""

    @property
    def spec(self) -> PipelineSpec: ...
    @property
    def in_flight(self) -> Mapping[int, _InFlight]: ...


def in_use(pipelines: Iterable[_Running]) -> dict[str, dict[str, float]]:
    """Per executor, what its in-flight shards take: `slots` (one each) and their needs."""
    used: dict[str, dict[str, float]] = {}
    for pipeline in pipelines:
        if not pipeline.in_flight:
            continue
        need = needs(pipeline.spec)
        for assignment in pipeline.in_flight.values():
            mine = used.setdefault(assignment.executor_id, {})
            mine[SLOTS] = mine.get(SLOTS, 0.0) + 1
            for key, amount in need.items():
                mine[key] = mine.get(key, 0.0) + amount
    return used


class Capacity(msgspec.Struct, kw_only=True, frozen=True):
    """An executor as placement judges it: what it runs and what it declares in total."""

    executor_id: str
    backends: frozenset[str]
    has_gpu: bool = False
    resources: dict[str, float] = {}


def unplaceable(spec: PipelineSpec, executors: Iterable[Capacity]) -> str | None:
    """Why no executor could ever run a shard of this pipeline, even idle; None if one could.
    Readers show it on the pipeline instead of leaving it `new` without a word."""
    fleet = list(executors)
    if not fleet:
        return "no executor is registered"
    kind = spec.pipeline_type
    able = [e for e in fleet if kind in e.backends]
    if not able:
        offered = sorted({b for e in fleet for b in e.backends})
        return f"no executor runs {kind} pipelines (they run: {', '.join(offered) or 'none'})"
    if needs_gpu(spec):
        able = [e for e in able if e.has_gpu]
        if not able:
            return f"needs a GPU; every executor that runs {kind} is CPU-only"
    need = needs(spec)
    for key, amount in need.items():
        largest = max(e.resources.get(key, 0.0) for e in able)
        if largest < amount:
            has = (
                f"the largest executor has {_amount(largest)}"
                if any(key in e.resources for e in able)
                else f"no executor declares {key}"
            )
            return f"needs {key} {_amount(amount)}; {has}"
    if not any(fits(need, e.resources) for e in able):
        wanted = ", ".join(f"{k} {_amount(v)}" for k, v in need.items())
        return f"needs {wanted} on one executor; none has all of it"
    return None


def _amount(value: float) -> str:
    return f"{value:g}"

"""What an executor declares in its heartbeat beside its backends: its resources.

Detected first (`gpus` and `gpu_mem_gb`, the total of every GPU's memory, from the GPU probe),
then INFERNO_EXECUTOR_RESOURCES key by key on top: a declaration wins, so a host whose probe
cannot see its devices (a container without them mapped, no torch) can still say what it has,
and `gpus: 0` keeps a host's GPUs back from Inferno. `has_gpu` follows `gpus`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

GIB_PER_MIB = 1 / 1024


def declared_resources(
    declared: Mapping[str, float], gpus: Sequence[Mapping[str, object]]
) -> dict[str, float]:
    memory_mb = sum(_number(gpu.get("memory_mb")) for gpu in gpus)
    detected = {"gpus": float(len(gpus)), "gpu_mem_gb": round(memory_mb * GIB_PER_MIB, 1)}
    return {**detected, **declared}


def has_gpu(resources: Mapping[str, float]) -> bool:
    return resources.get("gpus", 0.0) > 0


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0

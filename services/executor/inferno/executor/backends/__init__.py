"""Inference engines behind one Protocol (`base.Engine`); one module per engine.

A new backend is a module that defines a `base.Backend` and one line in `default_backends`; the
executor loop never changes.
"""

from __future__ import annotations

from inferno.executor.backends import hf, openai, sim, vllm
from inferno.executor.backends.base import Backend, Backends


def default_backends() -> dict[str, Backend]:
    """Every backend this build knows, by pipeline_type (advertised only where available)."""
    backends = (sim.BACKEND, hf.BACKEND, openai.BACKEND, vllm.BACKEND)
    return {backend.pipeline_type: backend for backend in backends}


__all__ = ["Backend", "Backends", "default_backends"]

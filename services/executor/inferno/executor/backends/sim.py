"""The `sim` backend (DESIGN §5): a simulated engine for dry runs and control-plane load tests.

model_config: `{"model": name, "accuracy": 0..1, "latency_ms_per_row": ms, "tokens_per_row": n}`
(defaults "sim", 1.0, 0, 8). sampling_params: the keys real backends take
(`SIM_SAMPLING_KEYS`: temperature, top_p, max_tokens, seed, stop, ...), of which only
`max_tokens` (an integer >= 0) is read, so a dry run checks a spec meant for a real engine. Any
other key is an error, so a typo (`temprature`) does not go unnoticed; the api refuses it first
(`inferno.events.backend_options`).

Each row's answer is a pure function of (model, accuracy, row key): a SHA-256 of the three gives
a uniform u in [0, 1), and the engine answers the row's reference when u < accuracy, otherwise a
wrong answer that does not contain it. The same pipeline therefore scores the same on every
run, retry and executor, and over many rows its exact_match mean approaches `accuracy`. A batch
sleeps `latency_ms_per_row` per row (0: no sleep). Completion tokens are `tokens_per_row` (capped
by `max_tokens`), prompt tokens about one per four characters. Every generation is labelled
`simulated`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from inferno.events.backend_options import CHARS_PER_TOKEN, SIM_MODEL_DEFAULTS, SIM_SAMPLING_KEYS
from inferno.events.model import PipelineSpec
from inferno.executor.backends.base import (
    Backend,
    EngineAborted,
    EngineConfigError,
    Generation,
    GenerationRequest,
    reject_unknown_keys,
)

_DEFAULTS: dict[str, Any] = dict(SIM_MODEL_DEFAULTS)


@dataclass(frozen=True, slots=True)
class SimConfig:
    model: str
    accuracy: float
    latency_ms_per_row: float
    tokens_per_row: int
    hash_prefix: bytes = field(init=False, repr=False, compare=False)  # `draw` hashes it + key

    def __post_init__(self) -> None:  # once per engine: formatting the float cost a row 0.3 µs
        object.__setattr__(self, "hash_prefix", f"{self.model}\0{self.accuracy!r}\0".encode())

    @classmethod
    def parse(cls, model_config: Mapping[str, Any]) -> SimConfig:
        """Validate a sim model_config; `EngineConfigError` names the offending key."""
        reject_unknown_keys("sim model_config", model_config, _DEFAULTS)
        values = {**_DEFAULTS, **model_config}
        model, accuracy = values["model"], values["accuracy"]
        latency, tokens = values["latency_ms_per_row"], values["tokens_per_row"]
        if not isinstance(model, str) or not model:
            raise EngineConfigError("sim model_config.model must be a non-empty string")
        if not _number(accuracy) or not 0 <= accuracy <= 1:
            raise EngineConfigError(
                f"sim model_config.accuracy must be in [0, 1], not {accuracy!r}"
            )
        if not _number(latency) or not 0 <= latency < math.inf:
            raise EngineConfigError(
                f"sim model_config.latency_ms_per_row must be a number >= 0, not {latency!r}"
            )
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise EngineConfigError(
                f"sim model_config.tokens_per_row must be an integer >= 0, not {tokens!r}"
            )
        return cls(model, float(accuracy), float(latency), tokens)


def _max_tokens(sampling: Mapping[str, Any]) -> int | None:
    """Validate sampling_params for sim (they come with each batch); its `max_tokens`."""
    reject_unknown_keys("sim sampling_params", sampling, SIM_SAMPLING_KEYS)
    max_tokens = sampling.get("max_tokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0
    ):
        raise EngineConfigError(
            f"sim sampling_params.max_tokens must be an integer >= 0, not {max_tokens!r}"
        )
    return max_tokens


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def draw(config: SimConfig, key: str) -> tuple[float, str]:
    """(u, hex digest) for one row: stable across processes, unlike Python's `hash`."""
    digest = hashlib.sha256(config.hash_prefix + key.encode()).digest()  # model \0 accuracy \0 key
    return int.from_bytes(digest[:8], "big") / 2**64, digest[8:12].hex()


def answer(config: SimConfig, request: GenerationRequest) -> str:
    u, tag = draw(config, request.key)
    ref = request.reference
    if ref is not None and u < config.accuracy:
        return ref
    wrong = f"[simulated wrong answer {tag}]"
    return "" if ref and ref in wrong else wrong  # so `contains` scorers give no credit either


def _prompt_tokens(request: GenerationRequest) -> int:
    prompt = request.prompt
    text = prompt if isinstance(prompt, str) else "".join(m.get("content", "") for m in prompt)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class SimEngine:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._aborted = asyncio.Event()  # replaced after each abort, so later calls run

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        config = self.config
        max_tokens = _max_tokens(sampling)
        delay_s = config.latency_ms_per_row * len(requests) / 1000
        if delay_s > 0:
            aborted = self._aborted
            try:
                await asyncio.wait_for(aborted.wait(), delay_s)
            except TimeoutError:
                pass
            else:
                raise EngineAborted("sim engine aborted")
        completion = config.tokens_per_row
        if max_tokens is not None and max_tokens < completion:
            completion = max_tokens
        return [
            Generation(
                text=answer(config, request),
                prompt_tokens=_prompt_tokens(request),
                completion_tokens=completion,
                latency_ms=config.latency_ms_per_row,
                simulated=True,
            )
            for request in requests
        ]

    async def abort(self) -> None:
        self._aborted.set()
        self._aborted = asyncio.Event()


@asynccontextmanager
async def open_sim(spec: PipelineSpec) -> AsyncIterator[SimEngine]:
    yield SimEngine(SimConfig.parse(spec.model_config))  # nothing to load or free


BACKEND = Backend("sim", open_sim)

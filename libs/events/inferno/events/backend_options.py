"""The config keys the `sim` and `openai` backends read, and the one check for unknown keys (pure).

The api runs `unknown_option` on every pipeline a command would create (a clone: its parent's
spec with the changes), so a typo (`temprature`) or a setting meant for another backend is a
400 naming the key before anything is appended; the backends run the same check when a shard
runs. `hf` and `vllm` keep their key lists beside the checks that need their libraries
(`inferno.executor.backends.hf` / `vllm`), so only the executor judges those. `openai`'s
model_config (only `model` is read; RapidFire's clone bodies put sampling there) and
sampling_params (sent to the server as they are) are open; `sim` ignores client_config.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Any

from inferno.events.model import PipelineSpec

REF_SUFFIX = "_ref"  # `api_key_ref`: a secret of `api_key` moved to INFERNO_SECRETS

SIM_MODEL_DEFAULTS: Mapping[str, Any] = {
    "model": "sim",
    "accuracy": 1.0,
    "latency_ms_per_row": 0.0,
    "tokens_per_row": 8,
}
SIM_MODEL_KEYS = tuple(SIM_MODEL_DEFAULTS)
DEFAULT_MAX_TOKENS = 256
"""Completion tokens when sampling sets no maximum: what `hf` and `vllm` generate, what the
`openai` limiter reserves, and what a dry run counts."""
CHARS_PER_TOKEN = 4  # prompt tokens where no tokenizer counts them (limiter, sim, dry runs)
SIM_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "max_tokens",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "n",
)
"""What the real backends take, so a sim dry run checks a spec meant for them; sim reads only
`max_tokens`."""
OPENAI_TUNING_KEYS = (
    "max_concurrency",
    "max_attempts",
    "timeout_s",
    "backoff_s",
    "backoff_max_s",
    "down_after",
    "rate_window_s",
)
OPENAI_CLIENT_KEYS = (
    "base_url",
    "api_key",
    "api_key_env",
    "endpoint",
    "default_headers",
    *OPENAI_TUNING_KEYS,
    "price_per_1k_prompt_tokens",  # read by the metrics (estimated_cost), not by the engine
    "price_per_1k_completion_tokens",
)


def unknown_keys(config: Mapping[str, Any], allowed: Collection[str]) -> list[str]:
    """The keys of `config` that `allowed` lacks, sorted; `<key>_ref` counts as `<key>`."""
    return sorted(
        key
        for key in config
        if key not in allowed
        and not (key.endswith(REF_SUFFIX) and key[: -len(REF_SUFFIX)] in allowed)
    )


def unknown_keys_reason(unknown: Collection[str], allowed: Collection[str]) -> str:
    return f"unknown key(s) {', '.join(unknown)}; expected {', '.join(allowed)}"


def _checked(spec: PipelineSpec) -> Iterator[tuple[str, Mapping[str, Any], tuple[str, ...]]]:
    if spec.pipeline_type == "sim":
        yield "model_config", spec.model_config, SIM_MODEL_KEYS
        yield "sampling_params", spec.sampling_params, SIM_SAMPLING_KEYS
    elif spec.pipeline_type == "openai":
        yield "client_config", spec.client_config, OPENAI_CLIENT_KEYS


def unknown_option(spec: PipelineSpec) -> tuple[str, str] | None:
    """(field, reason) for a config key `spec`'s backend does not read (the field names the
    first such key: `sampling_params.temprature`); None when every key is known here."""
    for knob, config, allowed in _checked(spec):
        if unknown := unknown_keys(config, allowed):
            reason = f"{spec.pipeline_type} {knob}: {unknown_keys_reason(unknown, allowed)}"
            return f"{knob}.{unknown[0]}", reason
    return None

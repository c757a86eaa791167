"""The `vllm` backend (DESIGN §5): vLLM's offline `LLM` in the executor process, on its GPUs.

model_config: `{"model", "dtype", "gpu_memory_utilization", ...}`: the keys in `LLM_KEYS`, passed
to `vllm.LLM` as they are (vLLM's defaults for the rest). Keys that would let a request run code
or reach the host's files or credentials are refused with the reason (`REJECTED`); any other
key is an error naming the ones accepted.

sampling_params: the keys in `SAMPLING_KEYS`, passed to `vllm.SamplingParams` (`n` must be 1;
`max_tokens` defaults to 256 as in the hf backend, not to vLLM's 16; `top_k` 0 means off, as -1
does). Prompts that are chat messages go through `LLM.chat` (the model's chat template); strings
through `LLM.generate`. Token counts are vLLM's own (prompt and output token ids).

The engine lives as long as the executor's `EngineCache` keeps it: across shards and pipelines
while `model_config` is unchanged. Before another model loads it is torn down: the `LLM` is
dropped, vLLM's model-parallel and distributed state destroyed where that vLLM has them, and
CUDA's cached memory returned (`release_gpu`).

One batch runs at a time, in a worker thread. vLLM's offline `LLM` cannot cancel requests, so:
- `abort()` (executor shutdown) makes calls still waiting raise `EngineAborted` at once, and the
  call whose batch is on the GPU raise it when that batch ends; nothing further is fed.
- cancelling a call (a deleted pipeline) returns at once; its batch runs to the end in the
  background, holding the engine, so the next batch waits for it and unloading waits for it too.
So after an abort or delete the GPU is busy for at most one more batch.

Available only where `vllm` is installed and torch sees a GPU.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeGuard

from inferno.events.backend_options import DEFAULT_MAX_TOKENS
from inferno.events.model import PipelineSpec
from inferno.executor.backends.base import (
    Backend,
    EngineAborted,
    EngineConfigError,
    Generation,
    GenerationRequest,
    Prompt,
)

INSTALL_HINT = "pip install 'inferno[vllm]'"
DTYPES = ("auto", "float16", "bfloat16", "float32", "half", "float")


def has_gpu() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def available() -> bool:
    """vllm is installed (found, not imported: that takes seconds) and torch sees a GPU."""
    return importlib.util.find_spec("vllm") is not None and has_gpu()


# translation (pure)


def _text(value: object) -> bool:
    return isinstance(value, str) and bool(value)


def _integer(value: object, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: object, low: float = 0.0, high: float = math.inf) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _flag(value: object) -> bool:
    return isinstance(value, bool)


LLM_KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "model": (_text, "a model directory or hub id"),
    "tokenizer": (_text, "a tokenizer directory or hub id"),
    "revision": (_text, "a string"),
    "tokenizer_revision": (_text, "a string"),
    "tokenizer_mode": (_text, "a string"),
    "dtype": (lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}"),
    "quantization": (_text, "a string"),
    "gpu_memory_utilization": (lambda v: _number(v, 0.0, 1.0) and v > 0, "a number in (0, 1]"),
    "max_model_len": (_integer, "an integer >= 1"),
    "tensor_parallel_size": (_integer, "an integer >= 1"),
    "pipeline_parallel_size": (_integer, "an integer >= 1"),
    "max_num_seqs": (_integer, "an integer >= 1"),
    "max_num_batched_tokens": (_integer, "an integer >= 1"),
    "kv_cache_dtype": (_text, "a string"),
    "enable_prefix_caching": (_flag, "true or false"),
    "enable_chunked_prefill": (_flag, "true or false"),
    "enforce_eager": (_flag, "true or false"),
    "seed": (lambda v: _integer(v, 0), "an integer >= 0"),
    "swap_space": (_number, "a number >= 0"),
    "cpu_offload_gb": (_number, "a number >= 0"),
}
"""model_config keys passed to `vllm.LLM`, each with its check and what it must be."""

REJECTED: dict[str, str] = {
    "trust_remote_code": "it runs Python code shipped with the model, chosen by a request",
    "download_dir": "where weights are stored is the host's choice (HF_HOME), not a pipeline's",
    "hf_token": "credentials come from the executor's environment, not from a pipeline",
    "allowed_local_media_path": "it lets a request read the executor's files",
    "worker_cls": "it loads code named by a request",
    "worker_extension_cls": "it loads code named by a request",
}
"""vLLM arguments a pipeline may not set, with the reason given in the error."""


def llm_kwargs(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """`vllm.LLM(**llm_kwargs(model_config))`; `EngineConfigError` names the offending key."""
    for key in sorted(model_config):
        if key in REJECTED:
            raise EngineConfigError(f"vllm model_config.{key} is not allowed: {REJECTED[key]}")
        if key not in LLM_KEYS:
            raise EngineConfigError(
                f"vllm model_config: unknown key {key!r}; supported: {', '.join(LLM_KEYS)}"
            )
        check, expected = LLM_KEYS[key]
        if not check(model_config[key]):
            raise EngineConfigError(
                f"vllm model_config.{key} must be {expected}, not {model_config[key]!r}"
            )
    if "model" not in model_config:
        raise EngineConfigError("vllm model_config.model is required")
    return dict(model_config)


SAMPLING_KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "temperature": (_number, "a number >= 0"),
    "top_p": (lambda v: _number(v, 0.0, 1.0) and v > 0, "a number in (0, 1]"),
    "top_k": (lambda v: _integer(v, -1), "an integer (0 or -1: off)"),
    "min_p": (lambda v: _number(v, 0.0, 1.0), "a number in [0, 1]"),
    "max_tokens": (_integer, "an integer >= 1"),
    "seed": (lambda v: _integer(v, 0), "an integer >= 0"),
    "stop": (
        lambda v: _text(v) or (isinstance(v, list) and all(map(_text, v))),
        "a string or a list of strings",
    ),
    "presence_penalty": (lambda v: _number(v, -2.0, 2.0), "a number in [-2, 2]"),
    "frequency_penalty": (lambda v: _number(v, -2.0, 2.0), "a number in [-2, 2]"),
    "repetition_penalty": (lambda v: _number(v) and v > 0, "a number > 0"),
    "n": (lambda v: v == 1, "1 (one completion per row)"),
}
"""sampling_params keys passed to `vllm.SamplingParams`."""


def sampling_kwargs(sampling: Mapping[str, Any]) -> dict[str, Any]:
    """`vllm.SamplingParams(**sampling_kwargs(sampling))`; `EngineConfigError` names the key."""
    for key in sorted(sampling):
        if key not in SAMPLING_KEYS:
            raise EngineConfigError(
                f"vllm sampling_params: unsupported key {key!r}; "
                f"supported: {', '.join(SAMPLING_KEYS)}"
            )
        check, expected = SAMPLING_KEYS[key]
        if not check(sampling[key]):
            raise EngineConfigError(
                f"sampling_params.{key} must be {expected}, not {sampling[key]!r}"
            )
    kwargs = {"n": 1, "max_tokens": DEFAULT_MAX_TOKENS, **sampling}
    if kwargs.get("top_k") == 0:
        kwargs["top_k"] = -1  # off, in every vLLM version
    return kwargs


def run_batch(llm: Any, prompts: Sequence[Prompt], params: Any) -> list[Generation]:
    """One batch through `llm` (blocking): strings through `generate`, chats through `chat`,
    results in the prompts' order."""
    started = time.perf_counter()
    outputs: list[Any] = [None] * len(prompts)
    texts = [i for i, prompt in enumerate(prompts) if isinstance(prompt, str)]
    chats = [i for i, prompt in enumerate(prompts) if not isinstance(prompt, str)]
    if texts:
        done = llm.generate([prompts[i] for i in texts], params, use_tqdm=False)
        for i, output in zip(texts, done, strict=True):
            outputs[i] = output
    if chats:
        done = llm.chat([prompts[i] for i in chats], params, use_tqdm=False)
        for i, output in zip(chats, done, strict=True):
            outputs[i] = output
    latency_ms = (time.perf_counter() - started) * 1000
    return [
        Generation(
            text=output.outputs[0].text,
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(output.outputs[0].token_ids),
            latency_ms=latency_ms,
        )
        for output in outputs
    ]


# the engine


class VllmEngine:
    """`llm` is a `vllm.LLM` (or anything with its `generate` and `chat`); `make_params` builds
    sampling params from `sampling_kwargs` (`vllm.SamplingParams`)."""

    def __init__(self, llm: Any, make_params: Callable[..., Any]) -> None:
        self.llm = llm
        self._make_params = make_params
        self._idle = asyncio.Event()  # no batch on the GPU, even one whose caller has left
        self._idle.set()
        self._aborted = asyncio.Event()  # replaced after each abort, so later calls run

    async def _claim(self, aborted: asyncio.Event) -> None:
        """Wait until no batch runs (or `aborted`), then mark one running."""
        while not (self._idle.is_set() or aborted.is_set()):
            waits = [
                asyncio.ensure_future(self._idle.wait()),
                asyncio.ensure_future(aborted.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
        if aborted.is_set() or self.llm is None:
            raise EngineAborted("vllm engine aborted")
        self._idle.clear()  # no await since the check: no other call can claim in between

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        params = self._make_params(**sampling_kwargs(sampling))
        aborted = self._aborted
        await self._claim(aborted)
        prompts = [request.prompt for request in requests]
        work = asyncio.ensure_future(asyncio.to_thread(run_batch, self.llm, prompts, params))
        work.add_done_callback(lambda _: self._idle.set())
        try:
            generations = await asyncio.shield(work)
        except asyncio.CancelledError:
            # the batch cannot be stopped: it ends in the background, and the GPU stays claimed
            work.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise
        if aborted.is_set():
            raise EngineAborted("vllm engine aborted (its last batch ran to the end)")
        return generations

    async def abort(self) -> None:
        self._aborted.set()
        self._aborted = asyncio.Event()

    async def close(self) -> None:
        """Wait for a batch still running, then drop the LLM and free its GPU memory."""
        await self._claim(asyncio.Event())
        self.llm = None
        try:
            await asyncio.to_thread(release_gpu)
        finally:
            self._idle.set()  # calls still waiting find no LLM: EngineAborted


def release_gpu() -> None:
    """After the last reference to an `LLM` is gone: vLLM's parallel state and CUDA's cache."""
    try:
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )
    except ImportError:
        pass
    else:
        destroy_model_parallel()
        destroy_distributed_environment()
    gc.collect()
    torch = sys.modules.get("torch")  # vLLM imported it; if nothing did, there is no cache
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as error:
        raise EngineConfigError(
            f"the vllm backend needs the vllm package, which this executor lacks ({error}): "
            f"{INSTALL_HINT}"
        ) from None
    return vllm


@asynccontextmanager
async def open_vllm(spec: PipelineSpec) -> AsyncIterator[VllmEngine]:
    kwargs = llm_kwargs(spec.model_config)
    vllm = await asyncio.to_thread(import_vllm)
    if not has_gpu():
        raise EngineConfigError("the vllm backend needs a GPU, and torch sees none here")
    engine = VllmEngine(await asyncio.to_thread(lambda: vllm.LLM(**kwargs)), vllm.SamplingParams)
    try:
        yield engine
    finally:
        await engine.close()


BACKEND = Backend("vllm", open_vllm, available)

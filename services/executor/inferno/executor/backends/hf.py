"""The `hf` backend (DESIGN §5): a transformers causal LM on the CPU or a GPU.

model_config: `{"model": path or hub id, "dtype": "auto" | "float32" | "float16" | "bfloat16",
"device": "auto" | "cpu" | "cuda" | "cuda:N"}` (defaults "auto", "auto"; any other key is an
error). `device` "auto" is CUDA when torch sees a GPU. `dtype` "auto" is the checkpoint's own.
Remote code is never trusted: a model_config comes from a request, not from the host's owner.

sampling_params: `temperature` (default 1.0; 0 is greedy), `top_p`, `top_k` (0 or absent: off),
`max_tokens` (default 256, `max_new_tokens`), `seed`, `stop` (a string or a list: a row stops once
its completion contains one, and its text is cut before it), `repetition_penalty`, `n` (1 only).
Any other key is an error, so a setting meant for another backend does not pass unnoticed. A seed
makes a batch repeatable; a row's sample still depends on the rows batched with it.

One `generate` runs at a time per engine, in the engine's one worker thread, so the event loop
(heartbeats, reports) stays responsive; calls queue there in order, so a batch waiting behind
another (a second slot's shard) starts the moment it ends. A batch is tokenized with left
padding, in one tokenizer call; chat prompts go through the tokenizer's chat template.
Stopping: a `StoppingCriteria` polls the call's cancel flag and the engine's abort flag after
every token, so a cancelled or aborted call ends within one decoding step, and one still queued
never starts; the caller of a running one waits for it to end, so the model is never used by two
batches at once and never unloaded under a running one. Token counts come from the tokenizer:
the prompt's ids, and the completion's up to and including its end-of-sequence token. Every row
of a batch gets the batch's wall time as its latency. A prompt that, with `max_tokens` more,
exceeds the model's context fails its own row (`Generation.error`), not the batch.

`tiny_model` saves a random-weight model with a tokenizer trained on a corpus: a real engine to
run the whole path with, on any machine, with nothing downloaded.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferno.events.backend_options import DEFAULT_MAX_TOKENS
from inferno.events.model import PipelineSpec
from inferno.executor.backends.base import (
    Backend,
    EngineAborted,
    EngineConfigError,
    Generation,
    GenerationRequest,
    Prompt,
    reject_unknown_keys,
)

INSTALL_HINT = "pip install 'inferno[hf]'"
DTYPES = ("auto", "float32", "float16", "bfloat16")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_CONFIG_KEYS = ("model", "dtype", "device")
_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "seed",
    "stop",
    "repetition_penalty",
    "n",
)


def available() -> bool:
    """torch and transformers are installed. Found, not imported: importing them takes seconds,
    and every executor asks at startup."""
    return all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers"))


# configuration (pure)


@dataclass(frozen=True, slots=True)
class HfConfig:
    model: str
    dtype: str = "auto"
    device: str = "auto"

    @classmethod
    def parse(cls, model_config: Mapping[str, Any]) -> HfConfig:
        """Validate an hf model_config; `EngineConfigError` names the offending key."""
        reject_unknown_keys("hf model_config", model_config, _CONFIG_KEYS)
        model = model_config.get("model")
        dtype = model_config.get("dtype", "auto")
        device = model_config.get("device", "auto")
        if not isinstance(model, str) or not model:
            raise EngineConfigError("hf model_config.model must be a model directory or hub id")
        if dtype not in DTYPES:
            raise EngineConfigError(
                f"hf model_config.dtype must be one of {', '.join(DTYPES)}, not {dtype!r}"
            )
        if not isinstance(device, str) or not _DEVICE.match(device):
            raise EngineConfigError(
                f"hf model_config.device must be auto, cpu, cuda or cuda:N, not {device!r}"
            )
        return cls(model, dtype, device)


@dataclass(frozen=True, slots=True)
class HfSampling:
    max_new_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float | None = None

    @classmethod
    def parse(cls, sampling: Mapping[str, Any]) -> HfSampling:
        """Validate sampling_params for hf; `EngineConfigError` names the offending key."""
        unknown = sorted(set(sampling) - set(_SAMPLING_KEYS))
        if unknown:
            raise EngineConfigError(
                f"hf sampling_params: unsupported key(s) {', '.join(unknown)}; "
                f"supported: {', '.join(_SAMPLING_KEYS)}"
            )
        if sampling.get("n", 1) != 1:
            raise EngineConfigError("hf sampling_params.n: only 1 completion per row is supported")
        max_tokens = sampling.get("max_tokens", DEFAULT_MAX_TOKENS)
        if not _integer(max_tokens) or max_tokens < 1:
            raise EngineConfigError(
                f"sampling_params.max_tokens must be an integer >= 1, not {max_tokens!r}"
            )
        temperature = _real(sampling, "temperature", 1.0, low=0.0)
        top_p = _real(sampling, "top_p", 1.0, low=0.0, high=1.0)
        if top_p == 0:
            raise EngineConfigError("sampling_params.top_p must be in (0, 1]")
        top_k = sampling.get("top_k", 0)
        if not _integer(top_k) or top_k < -1:
            raise EngineConfigError(f"sampling_params.top_k must be an integer, not {top_k!r}")
        seed = sampling.get("seed")
        if seed is not None and not _integer(seed):
            raise EngineConfigError(f"sampling_params.seed must be an integer, not {seed!r}")
        penalty = sampling.get("repetition_penalty")
        if penalty is not None:
            penalty = _real(sampling, "repetition_penalty", 1.0, low=0.0)
            if penalty == 0:
                raise EngineConfigError("sampling_params.repetition_penalty must be > 0")
        return cls(
            max_new_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=max(top_k, 0),  # -1 (vLLM's "off") is 0 here
            seed=seed,
            stop=stop_strings(sampling.get("stop")),
            repetition_penalty=penalty,
        )

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.generate`. Every knob is explicit, so a checkpoint's
        generation_config (often top_k=50) cannot change what a pipeline asked for."""
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.temperature == 0:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(
                do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k
            )
        if self.repetition_penalty is not None:
            kwargs["repetition_penalty"] = self.repetition_penalty
        return kwargs


def stop_strings(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise EngineConfigError("sampling_params.stop must be a string or a list of strings")
    return tuple(stop)


def cut_at_stop(text: str, stop: Iterable[str]) -> str:
    """The text before the first stop string (OpenAI and vLLM leave the stop string out)."""
    cut = min((i for s in stop if (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def completion_length(tokens: Sequence[int], eos_ids: frozenset[int], pad_id: int | None) -> int:
    """How many generated tokens count: up to and including the first end-of-sequence token; a
    row that finished before the others was padded after its end."""
    for i, token in enumerate(tokens):
        if token in eos_ids:
            return i + 1
        if token == pad_id:
            return i
    return len(tokens)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(
    sampling: Mapping[str, Any], key: str, default: float, *, low: float, high: float = math.inf
) -> float:
    value = sampling.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        bounds = f"in [{low}, {high}]" if high < math.inf else f">= {low}"
        raise EngineConfigError(f"sampling_params.{key} must be a number {bounds}, not {value!r}")
    return float(value)


# the model (blocking: runs in worker threads)


def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as error:
        raise EngineConfigError(
            f"the hf backend needs torch and transformers ({error}): {INSTALL_HINT}"
        ) from None
    return torch, transformers


class HfModel:
    """A loaded model and tokenizer; `release()` frees them (GPU memory included)."""

    def __init__(self, model: Any, tokenizer: Any, device: str) -> None:
        self.model, self.tokenizer, self.device = model, tokenizer, device
        config_eos = model.generation_config.eos_token_id
        eos = config_eos if isinstance(config_eos, list) else [config_eos, tokenizer.eos_token_id]
        self.eos_ids = frozenset(i for i in eos if i is not None)

    @classmethod
    def load(cls, config: HfConfig) -> HfModel:
        torch, transformers = _imports()
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineConfigError(f"hf model_config.device is {device!r}, but torch sees no GPU")
        local = Path(config.model).expanduser()
        if local.is_absolute() or config.model.startswith((".", "~")) or local.exists():
            if not (local / "config.json").is_file():
                raise EngineConfigError(f"hf model {config.model!r}: no config.json there")
            source = str(local)
        else:
            source = config.model  # a hub id; downloaded into the host's hub cache
        dtype = config.dtype if config.dtype == "auto" else getattr(torch, config.dtype)
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as error:
            if source != str(local):
                raise  # a hub outage is worth a retry
            raise EngineConfigError(
                f"hf model {config.model!r} cannot be loaded: {error}"
            ) from None
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise EngineConfigError(f"hf model {config.model!r}: tokenizer has no pad or eos")
            tokenizer.pad_token = tokenizer.eos_token
        model.to(device)
        model.eval()
        return cls(model, tokenizer, device)

    def release(self) -> None:
        cuda = self.device.startswith("cuda")
        self.model = self.tokenizer = None
        gc.collect()
        if cuda:
            import torch

            torch.cuda.empty_cache()

    def encode(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Every prompt's token ids, from one tokenizer call per kind of prompt: a fast
        tokenizer encodes a list in one go, ~8x cheaper than a call per prompt."""
        tokenizer = self.tokenizer
        texts = [prompt for prompt in prompts if isinstance(prompt, str)]
        chats = [self._chat_text(prompt) for prompt in prompts if not isinstance(prompt, str)]
        plain = iter(tokenizer(texts)["input_ids"] if texts else [])
        # the template has the special tokens already
        templated = iter(tokenizer(chats, add_special_tokens=False)["input_ids"] if chats else [])
        return [next(plain if isinstance(prompt, str) else templated) for prompt in prompts]

    def _chat_text(self, messages: Prompt) -> str:
        tokenizer = self.tokenizer
        if not tokenizer.chat_template:
            raise EngineConfigError(
                "the prompt is a list of chat messages, but this model's tokenizer has no chat "
                "template: use a string prompt"
            )
        text: str = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text

    def generate(
        self, prompts: Sequence[Prompt], sampling: HfSampling, interrupted: Callable[[], bool]
    ) -> list[Generation]:
        """One generation per prompt. A prompt too long for the model's context (with
        `max_tokens` more) fails its row, not the batch."""
        ids = self.encode(prompts)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        out = [
            Generation(
                text="",
                prompt_tokens=len(row),
                error=f"the prompt has {len(row)} tokens: with max_tokens "
                f"{sampling.max_new_tokens} that exceeds the model's context of {limit}",
            )
            for row in ids
        ]
        fits = [
            i
            for i, row in enumerate(ids)
            if not limit or len(row) + sampling.max_new_tokens <= limit
        ]
        if fits:
            done = self._batch([ids[i] for i in fits], sampling, interrupted)
            for i, generation in zip(fits, done, strict=True):
                out[i] = generation
        return out

    def _batch(
        self, ids: list[list[int]], sampling: HfSampling, interrupted: Callable[[], bool]
    ) -> list[Generation]:
        torch, transformers = _imports()
        started = time.perf_counter()
        tokenizer = self.tokenizer
        start = tokenizer.bos_token_id
        start = tokenizer.eos_token_id if start is None else start
        inputs = [row or [start] for row in ids]  # an empty prompt starts from <bos>
        width = max(map(len, inputs))
        pad = [tokenizer.pad_token_id]
        padded = {  # left padding: generated tokens follow every prompt's last token
            "input_ids": [pad * (width - len(row)) + row for row in inputs],
            "attention_mask": [[0] * (width - len(row)) + [1] * len(row) for row in inputs],
        }
        batch = {name: torch.tensor(rows, device=self.device) for name, rows in padded.items()}
        kwargs = sampling.generate_kwargs()
        finish = _finish_criteria(width, sampling.stop, tokenizer, interrupted)
        stopping = transformers.StoppingCriteriaList([finish])
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        seeded = torch.random.fork_rng(devices=devices) if sampling.seed is not None else None
        with torch.inference_mode(), seeded or nullcontext():
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
            output = self.model.generate(
                **batch, **kwargs, stopping_criteria=stopping, pad_token_id=tokenizer.pad_token_id
            )
        latency_ms = (time.perf_counter() - started) * 1000
        new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
        generations = []
        for prompt_ids, tokens in zip(ids, new_tokens, strict=True):
            length = completion_length(tokens, self.eos_ids, tokenizer.pad_token_id)
            text = tokenizer.decode(tokens[:length], skip_special_tokens=True)
            generations.append(
                Generation(
                    text=cut_at_stop(text, sampling.stop),
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=length,
                    latency_ms=latency_ms,
                )
            )
        return generations


def _finish_criteria(
    prompt_width: int, stop: Sequence[str], tokenizer: Any, interrupted: Callable[[], bool]
) -> Any:
    """A StoppingCriteria checked after every token: all rows end once `interrupted()`; a row
    ends when its completion (not its prompt, unlike transformers' `stop_strings`) contains a
    stop string. Only the newest tokens are decoded: a stop string that ends in the newest token
    lies within the last len(stop) + 1 tokens, each of which decodes to a character at least."""
    import torch
    from transformers import StoppingCriteria

    window = max(map(len, stop), default=0) + 1

    class Finish(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            rows, device = input_ids.shape[0], input_ids.device
            everyone = interrupted()
            if everyone or not stop:
                return torch.full((rows,), everyone, dtype=torch.bool, device=device)
            tails = input_ids[:, max(prompt_width, input_ids.shape[1] - window) :].tolist()
            texts = tokenizer.batch_decode(tails, skip_special_tokens=True)
            done = [any(s in text for s in stop) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=device)

    return Finish()


# the engine (the event loop's side)


class HfEngine:
    def __init__(self, model: HfModel) -> None:
        self.model = model
        # one thread runs every batch in turn, so batches never share the model, and a batch
        # queued behind another (a second slot's) starts the moment it ends, without a hop
        # through the event loop: on a busy host each hop waits for the loop to be scheduled
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-generate")
        self._aborted = threading.Event()  # replaced after each abort, so later calls run

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        params = HfSampling.parse(sampling)
        if not requests:
            return []
        aborted, cancelled = self._aborted, threading.Event()
        prompts = [request.prompt for request in requests]

        def interrupted() -> bool:
            return cancelled.is_set() or aborted.is_set()

        def run() -> list[Generation]:
            if interrupted():  # while it was queued: the caller raises or is gone
                return []
            return self.model.generate(prompts, params, interrupted)

        job = self._worker.submit(run)
        work = asyncio.wrap_future(job)
        try:
            generations = await asyncio.shield(work)
        except asyncio.CancelledError:
            cancelled.set()  # a queued batch never starts, a running one ends at its next token
            if not job.cancel():  # running: wait, so the model is never unloaded under it
                await asyncio.wait([work])
                if not work.cancelled():
                    work.exception()  # seen: the caller is gone
            raise
        if aborted.is_set():
            raise EngineAborted("hf engine aborted")
        return generations

    async def abort(self) -> None:
        self._aborted.set()
        self._aborted = threading.Event()

    def close(self) -> None:
        """Blocking: once no call runs (the engine cache sees to that), free the model."""
        self._worker.shutdown(wait=True)
        self.model.release()


@asynccontextmanager
async def open_hf(spec: PipelineSpec) -> AsyncIterator[HfEngine]:
    config = HfConfig.parse(spec.model_config)
    model = await asyncio.to_thread(HfModel.load, config)
    engine = HfEngine(model)
    try:
        yield engine
    finally:
        await asyncio.to_thread(engine.close)


BACKEND = Backend("hf", open_hf, available)


# a model for smoke tests and dry runs

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def tiny_model(
    directory: str | Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 512,
    layers: int = 2,
    width: int = 64,
    chat_template: str | None = CHAT_TEMPLATE,
    seed: int = 0,
) -> Path:
    """Save a GPT-2 shaped model with random weights and a byte-level BPE tokenizer trained on
    `corpus` into `directory` (`model_config.model` can name it). Its answers are noise; its
    path through tokenizer, batching, generation and counting is the real one."""
    torch, transformers = _imports()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    config = transformers.GPT2Config(
        vocab_size=len(fast),
        n_positions=1024,
        n_embd=width,
        n_layer=layers,
        n_head=2,
        bos_token_id=fast.eos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.GPT2LMHeadModel(config)
    path = Path(directory)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path

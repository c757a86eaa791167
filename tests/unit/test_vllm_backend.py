"""The vllm backend at the engine boundary, without vLLM or a GPU (neither is on CI machines).

What vLLM itself would do is not simulated: the translation of model_config and sampling_params
into vLLM's arguments is pure and checked here; the engine is driven with a stand-in that has
`LLM.generate` / `LLM.chat`'s shape, to check batching, ordering, token counts, abort, cancel and
teardown. Reuse and swapping belong to the `EngineCache` (tests/unit/test_executor_engines.py).
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from typing import Any

import pytest

from inferno.events.model import PipelineSpec
from inferno.executor.backends import default_backends, vllm
from inferno.executor.backends.base import EngineAborted, EngineConfigError, GenerationRequest
from inferno.executor.engines import EngineCache

# translation


def test_llm_kwargs_pass_the_seed_shape_through() -> None:
    config = {"model": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "bfloat16"}
    config |= {"gpu_memory_utilization": 0.85, "max_model_len": 4096, "enforce_eager": True}
    assert vllm.llm_kwargs(config) == config


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"dtype": "auto"}, "model is required"),
        ({"model": "m", "trust_remote_code": True}, "trust_remote_code is not allowed: it runs"),
        ({"model": "m", "download_dir": "/etc"}, "download_dir is not allowed"),
        ({"model": "m", "hf_token": "hf_x"}, "hf_token is not allowed"),
        ({"model": "m", "worker_extension_cls": "x.Y"}, "worker_extension_cls is not allowed"),
        ({"model": "m", "gpu_mem": 0.5}, "unknown key 'gpu_mem'; supported: model, tokenizer"),
        ({"model": "m", "gpu_memory_utilization": 0}, r"must be a number in \(0, 1\]"),
        ({"model": "m", "gpu_memory_utilization": 1.5}, r"must be a number in \(0, 1\]"),
        ({"model": "m", "dtype": "int4"}, "dtype must be one of auto"),
        ({"model": "m", "tensor_parallel_size": 0}, "must be an integer >= 1"),
        ({"model": "m", "max_model_len": True}, "must be an integer >= 1"),
        ({"model": "m", "enforce_eager": "yes"}, "must be true or false"),
        ({"model": ""}, "must be a model directory or hub id"),
    ],
)
def test_llm_kwargs_refuse_what_vllm_should_not_get(config: dict, error: str) -> None:
    with pytest.raises(EngineConfigError, match=error):
        vllm.llm_kwargs(config)


def test_sampling_kwargs_defaults_and_mapping() -> None:
    assert vllm.sampling_kwargs({}) == {"n": 1, "max_tokens": vllm.DEFAULT_MAX_TOKENS}
    sampling = {"temperature": 0, "top_p": 0.9, "top_k": 0, "max_tokens": 16, "seed": 3}
    sampling |= {"stop": ["\n"], "presence_penalty": 0.5, "repetition_penalty": 1.1}
    assert vllm.sampling_kwargs(sampling) == {**sampling, "n": 1, "top_k": -1}
    assert vllm.sampling_kwargs({"stop": "###"})["stop"] == "###"


@pytest.mark.parametrize(
    ("sampling", "error"),
    [
        ({"logit_bias": {}}, "unsupported key 'logit_bias'; supported: temperature"),
        ({"n": 2}, r"n must be 1 \(one completion per row\)"),
        ({"best_of": 2}, "unsupported key 'best_of'"),
        ({"temperature": -0.1}, "temperature must be a number >= 0"),
        ({"top_p": 0}, r"top_p must be a number in \(0, 1\]"),
        ({"top_k": -2}, "top_k must be an integer"),
        ({"max_tokens": 0}, "max_tokens must be an integer >= 1"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
        ({"stop": ["ok", 3]}, "stop must be a string or a list of strings"),
        ({"presence_penalty": 3}, r"presence_penalty must be a number in \[-2, 2\]"),
    ],
)
def test_sampling_kwargs_refuse_what_vllm_would_not_take(sampling: dict, error: str) -> None:
    with pytest.raises(EngineConfigError, match=error):
        vllm.sampling_kwargs(sampling)


# availability and loading without vLLM


def test_advertised_only_with_vllm_and_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    installed = {"vllm": False}

    def find(name: str, *args: Any) -> Any:
        if name == "vllm":
            return ModuleSpec("vllm", None) if installed["vllm"] else None
        return find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find)
    monkeypatch.setattr(vllm, "has_gpu", lambda: True)
    assert not vllm.available()  # a GPU host without vllm (this one has neither)
    installed["vllm"] = True
    assert vllm.available()
    monkeypatch.setattr(vllm, "has_gpu", lambda: False)
    assert not vllm.available()  # vllm installed on a CPU host
    assert default_backends()["vllm"] is vllm.BACKEND


async def test_opening_without_vllm_names_the_missing_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, as where it is absent
    spec = PipelineSpec(pipeline_name="p", pipeline_type="vllm", model_config={"model": "m"})
    with pytest.raises(EngineConfigError, match=r"needs the vllm package.*inferno\[vllm\]"):
        async with vllm.open_vllm(spec):
            pass
    # the executor's cache refuses it before trying where the backend is not available
    monkeypatch.setattr(vllm, "has_gpu", lambda: False)
    cache = EngineCache(default_backends())
    with pytest.raises(EngineConfigError, match="cannot run pipeline_type 'vllm'"):
        async with cache.use(spec):
            pass


async def test_a_bad_model_config_fails_before_vllm_is_imported() -> None:
    spec = PipelineSpec(
        pipeline_name="p", pipeline_type="vllm", model_config={"model": "m", "typo": 1}
    )
    with pytest.raises(EngineConfigError, match="unknown key 'typo'"):
        async with vllm.open_vllm(spec):
            pass


# the engine, with a stand-in for vllm.LLM


@dataclass
class Completion:
    text: str
    token_ids: list[int]


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[Completion]


@dataclass
class StandInLLM:
    """`generate` and `chat` with vllm.LLM's signatures; `gate` holds batches until set."""

    gate: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, list[Any], Any]] = field(default_factory=list)
    running: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def _run(self, kind: str, prompts: list[Any], params: Any) -> list[RequestOutput]:
        self.calls.append((kind, prompts, params))
        self.running.set()
        self.gate.wait(10)
        self.running.clear()
        return [
            RequestOutput(
                prompt_token_ids=list(range(len(str(p)))),
                outputs=[Completion(f"{kind}:{p}"[:20], [1] * (i + 1))],
            )
            for i, p in enumerate(prompts)
        ]

    def generate(self, prompts: list[str], params: Any, use_tqdm: bool = True) -> Any:
        return self._run("text", prompts, params)

    def chat(self, messages: list[list[dict]], params: Any, use_tqdm: bool = True) -> Any:
        return self._run("chat", messages, params)


def params(**kwargs: Any) -> dict[str, Any]:
    return kwargs  # stands in for vllm.SamplingParams


def request(prompt: Any, key: int) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, key=str(key))


async def test_batches_keep_order_across_text_and_chat_prompts() -> None:
    llm = StandInLLM()
    engine = vllm.VllmEngine(llm, params)
    chat = [{"role": "user", "content": "hi"}]
    out = await engine.generate(
        [request("a", 0), request(chat, 1), request("bcd", 2)], {"temperature": 0, "top_k": 0}
    )
    assert [g.text for g in out] == ["text:a", f"chat:{chat}"[:20], "text:bcd"]
    assert [g.prompt_tokens for g in out] == [1, len(str(chat)), 3]
    assert [g.completion_tokens for g in out] == [1, 1, 2]
    assert all(not g.simulated and g.latency_ms >= 0 for g in out)
    (_, texts, sent), (_, chats, _) = llm.calls
    assert (texts, chats) == (["a", "bcd"], [chat])
    assert sent == {"temperature": 0, "top_k": -1, "n": 1, "max_tokens": vllm.DEFAULT_MAX_TOKENS}


async def test_bad_sampling_fails_before_the_gpu_is_used() -> None:
    llm = StandInLLM()
    with pytest.raises(EngineConfigError, match="unsupported key 'beam_width'"):
        await vllm.VllmEngine(llm, params).generate([request("a", 0)], {"beam_width": 4})
    assert llm.calls == []


async def test_abort_lets_the_running_batch_end_and_feeds_nothing_more() -> None:
    llm = StandInLLM()
    engine = vllm.VllmEngine(llm, params)
    llm.gate.clear()
    running = asyncio.create_task(engine.generate([request("a", 0)], {}))
    waiting = asyncio.create_task(engine.generate([request("b", 1)], {}))
    await asyncio.to_thread(llm.running.wait, 5)
    await engine.abort()
    with pytest.raises(EngineAborted):
        await waiting  # never reached the GPU
    assert not running.done()  # vLLM's offline LLM cannot stop a batch...
    llm.gate.set()
    with pytest.raises(EngineAborted, match="ran to the end"):
        await running  # ...so it ends, and its result is dropped
    assert [prompts for _, prompts, _ in llm.calls] == [["a"]]
    assert (await engine.generate([request("c", 2)], {}))[0].text == "text:c"  # later calls run


async def test_cancel_returns_at_once_and_the_next_batch_waits_for_the_gpu() -> None:
    llm = StandInLLM()
    engine = vllm.VllmEngine(llm, params)
    llm.gate.clear()
    first = asyncio.create_task(engine.generate([request("a", 0)], {}))
    await asyncio.to_thread(llm.running.wait, 5)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert llm.running.is_set()  # the shard is aborted while vLLM still runs its batch
    second = asyncio.create_task(engine.generate([request("b", 1)], {}))
    await asyncio.sleep(0.1)
    assert [prompts for _, prompts, _ in llm.calls] == [["a"]]  # not two batches at once
    llm.gate.set()
    assert (await second)[0].text == "text:b"


async def test_close_waits_for_a_running_batch_then_drops_the_llm() -> None:
    llm = StandInLLM()
    engine = vllm.VllmEngine(llm, params)
    llm.gate.clear()
    running = asyncio.create_task(engine.generate([request("a", 0)], {}))
    await asyncio.to_thread(llm.running.wait, 5)
    running.cancel()  # a deleted pipeline, then a swap to another model
    closing = asyncio.create_task(engine.close())
    await asyncio.sleep(0.1)
    assert not closing.done()
    assert engine.llm is llm  # never freed under a running batch
    llm.gate.set()
    await closing
    assert engine.llm is None
    with pytest.raises(EngineAborted):
        await engine.generate([request("b", 1)], {})

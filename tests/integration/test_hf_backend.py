"""The hf backend's engine on the CPU, on a tiny random model built here (nothing downloaded).

The model's answers are noise; what is checked is the engine's side of the contract: batches with
left padding, token counts, greedy and seeded determinism, chat templates, stop strings, abort and
cancel mid-generation, and that unloading frees the model.
"""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inferno.events.model import PipelineSpec
from inferno.executor.backends import default_backends, hf
from inferno.executor.backends.base import EngineAborted, EngineConfigError, GenerationRequest
from inferno.executor.engines import EngineCache
from tests.waiting import until

ROWS = [
    json.loads(line)
    for line in (Path(__file__).resolve().parents[2] / "examples" / "arith.jsonl").open()
]
GREEDY = {"temperature": 0, "max_tokens": 12}


def spec(model: Path, **config: str) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name="tiny",
        pipeline_type="hf",
        model_config={"model": str(model), "dtype": "float32", **config},
    )


def requests(n: int, start: int = 0) -> list[GenerationRequest]:
    return [
        GenerationRequest(prompt=f"Q: {row['question']}\nA:", key=str(start + i))
        for i, row in enumerate(ROWS[start : start + n])
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = [f"Q: {row['question']}\nA: {row['answer']}" for row in ROWS]
    return hf.tiny_model(tmp_path_factory.mktemp("tiny-lm"), corpus)


@pytest.fixture(scope="module")
async def engine(model_dir: Path) -> AsyncIterator[hf.HfEngine]:
    async with hf.open_hf(spec(model_dir)) as opened:
        yield opened


def test_advertised_where_torch_and_transformers_are_installed() -> None:
    assert hf.available()
    assert default_backends()["hf"] is hf.BACKEND


async def test_batch_counts_tokens_with_the_tokenizer(engine: hf.HfEngine) -> None:
    batch = [
        GenerationRequest(prompt=f"Q: {row['question']}" + " Think." * i + "\nA:", key=str(i))
        for i, row in enumerate(ROWS[:5])
    ]
    out = await engine.generate(batch, GREEDY)
    tokenizer = engine.model.tokenizer
    assert [g.prompt_tokens for g in out] == [len(tokenizer(r.prompt)["input_ids"]) for r in batch]
    assert len({g.prompt_tokens for g in out}) > 1  # different lengths: padding was needed
    for g in out:
        assert 1 <= g.completion_tokens <= GREEDY["max_tokens"]
        assert g.latency_ms > 0
        assert not g.simulated
        assert g.error is None


async def test_a_prompt_too_long_for_the_context_fails_its_row_only(engine: hf.HfEngine) -> None:
    context = engine.model.model.config.max_position_embeddings
    long = GenerationRequest(prompt="What is 1 + 2? " * context, key="1")
    empty = GenerationRequest(prompt="", key="2")
    out = await engine.generate([requests(1)[0], long, empty], GREEDY)
    assert out[0].error is None
    assert out[0].completion_tokens >= 1
    assert out[1].error is not None
    assert f"exceeds the model's context of {context}" in out[1].error
    assert out[1].prompt_tokens > context
    assert (out[2].error, out[2].prompt_tokens) == (None, 0)  # an empty prompt starts at <bos>
    assert out[2].completion_tokens >= 1
    assert await engine.generate([], GREEDY) == []


async def test_greedy_is_deterministic_and_independent_of_padding(engine: hf.HfEngine) -> None:
    batch = requests(6, start=10)
    first = [g.text for g in await engine.generate(batch, GREEDY)]
    assert [g.text for g in await engine.generate(batch, GREEDY)] == first
    alone = [(await engine.generate([r], GREEDY))[0].text for r in batch]
    assert alone == first  # left padding and the attention mask leave each row as it was


async def test_seeded_sampling_repeats(engine: hf.HfEngine) -> None:
    batch = requests(4, start=20)
    sampled = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 12, "seed": 7}
    first = [g.text for g in await engine.generate(batch, sampled)]
    assert [g.text for g in await engine.generate(batch, sampled)] == first
    other = [g.text for g in await engine.generate(batch, {**sampled, "seed": 8})]
    assert other != first


async def test_chat_prompts_go_through_the_chat_template(engine: hf.HfEngine) -> None:
    messages = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "2 + 2?"}]
    (out,) = await engine.generate([GenerationRequest(prompt=messages, key="0")], GREEDY)
    text = "system: Answer.\nuser: 2 + 2?\nassistant:"  # what hf.CHAT_TEMPLATE renders
    assert out.prompt_tokens == len(engine.model.tokenizer(text)["input_ids"])


async def test_a_batch_mixing_chat_and_string_prompts_keeps_each_row(engine: hf.HfEngine) -> None:
    """A batch is tokenized in one call per kind of prompt: each row still gets its own ids."""
    chat = [{"role": "user", "content": "What is 3 + 4?"}]
    batch = [
        GenerationRequest(prompt=prompt, key=str(i))
        for i, prompt in enumerate(["Q: 1 + 1?\nA:", chat, "Q: What is 12 * 3?\nA:", chat])
    ]
    together = await engine.generate(batch, GREEDY)
    alone = [(await engine.generate([r], GREEDY))[0] for r in batch]
    assert [(g.text, g.prompt_tokens) for g in together] == [
        (g.text, g.prompt_tokens) for g in alone
    ]
    tokenizer = engine.model.tokenizer
    assert together[0].prompt_tokens == len(tokenizer("Q: 1 + 1?\nA:")["input_ids"])
    assert together[1].prompt_tokens == len(
        tokenizer("user: What is 3 + 4?\nassistant:")["input_ids"]
    )


async def test_chat_prompt_without_a_template_is_a_config_error(tmp_path: Path) -> None:
    bare = hf.tiny_model(tmp_path, ["just some text"], vocab_size=300, chat_template=None)
    async with hf.open_hf(spec(bare)) as engine:
        chat = GenerationRequest(prompt=[{"role": "user", "content": "hi"}], key="0")
        with pytest.raises(EngineConfigError, match="no chat template"):
            await engine.generate([chat], GREEDY)
        (plain,) = await engine.generate([GenerationRequest(prompt="hi", key="0")], GREEDY)
        assert plain.completion_tokens >= 1


async def test_stop_strings_end_generation_early(engine: hf.HfEngine) -> None:
    batch = requests(3)
    sampled = {"temperature": 1.0, "max_tokens": 40, "seed": 1}  # varied text, repeatably
    free = await engine.generate(batch, sampled)
    text = free[0].text
    assert len(text) > 8, text
    stop = text[6:8]  # something the model is about to write
    stopped = await engine.generate(batch, {**sampled, "stop": [stop]})
    assert stopped[0].text == text[: text.find(stop)]
    assert stopped[0].completion_tokens < free[0].completion_tokens
    for before, after in zip(free, stopped, strict=True):  # each row stops on its own
        cut = before.text.find(stop)
        assert after.text == (before.text if cut < 0 else before.text[:cut])


class StepCounter:
    """Wraps the engine's model to count decoding steps: the stopping criteria ask
    `interrupted()` once per generated token, so a batch that ends early asks few times."""

    def __init__(self, engine: hf.HfEngine, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps = 0
        self.finished = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        generate = engine.model.generate

        def counted(prompts, sampling, interrupted):  # type: ignore[no-untyped-def]
            def counting() -> bool:
                self.steps += 1
                return interrupted()

            try:
                return generate(prompts, sampling, counting)
            finally:
                self._loop.call_soon_threadsafe(self.finished.set)

        monkeypatch.setattr(engine.model, "generate", counted)

    async def started(self) -> None:
        await until(lambda: self.steps > 0, "the first decoding step", interval=0.01)


LONG = {"temperature": 0, "max_tokens": 900}  # every row runs to 900 tokens on the tiny model


async def test_abort_ends_a_long_generation_at_once(
    engine: hf.HfEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = StepCounter(engine, monkeypatch)
    call = asyncio.create_task(engine.generate(requests(8), LONG))
    await counter.started()
    await engine.abort()
    with pytest.raises(EngineAborted):
        await call
    assert counter.finished.is_set()
    assert counter.steps < 450  # it stopped at a token soon after the abort, not at 900
    monkeypatch.undo()
    (after,) = await engine.generate(requests(1), GREEDY)  # the engine still works
    assert after.completion_tokens >= 1


async def test_cancel_stops_the_worker_thread(
    engine: hf.HfEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = StepCounter(engine, monkeypatch)
    call = asyncio.create_task(engine.generate(requests(8), LONG))
    await counter.started()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # the cancel waited for the thread (its end was signalled before the call's result), and
    # the thread stopped at a token soon after the cancel: the next batch has the model at once
    assert counter.finished.is_set()
    assert counter.steps < 450


async def test_a_call_cancelled_while_queued_never_runs(engine: hf.HfEngine) -> None:
    """Calls queue on the engine's one thread; cancelling a queued one does not wait for the
    batch ahead of it, and that batch runs on undisturbed."""
    ahead = asyncio.create_task(engine.generate(requests(8), LONG))
    queued = asyncio.create_task(engine.generate(requests(2), GREEDY))
    await asyncio.sleep(0)  # both submitted to the worker
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert not ahead.done()  # 900 tokens × 8 rows: seconds
    ahead.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ahead
    two = await asyncio.gather(*(engine.generate(requests(2, start=i), GREEDY) for i in (0, 2)))
    assert [g.text for batch in two for g in batch] == [
        g.text for g in await engine.generate(requests(4), GREEDY)
    ]  # queued calls keep their own rows


async def test_unload_releases_the_model(model_dir: Path) -> None:
    async with hf.open_hf(spec(model_dir)) as engine:
        model = weakref.ref(engine.model.model)
        await engine.generate(requests(2), GREEDY)
    gc.collect()
    assert model() is None
    assert engine.model.model is None


async def test_the_engine_cache_keeps_and_swaps_hf_engines(model_dir: Path) -> None:
    cache = EngineCache({"hf": hf.BACKEND})
    first = spec(model_dir)
    async with cache.use(first) as a:
        loaded = weakref.ref(a.model.model)  # type: ignore[attr-defined]
    async with cache.use(first) as b:
        assert b is a  # same model_config: no reload between shards
    async with cache.use(spec(model_dir, device="cpu")) as c:  # another config: a swap
        assert c is not a
        gc.collect()
        assert loaded() is None  # the old model was freed before the new one loaded
    await cache.aclose()


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"model": "m", "trust_remote_code": True}, "unknown key"),
        ({"model": ""}, "model directory or hub id"),
        ({"model": "m", "dtype": "int3"}, "dtype must be one of"),
        ({"model": "m", "device": "tpu"}, "device must be auto"),
    ],
)
def test_model_config_errors(config: dict, error: str) -> None:
    with pytest.raises(EngineConfigError, match=error):
        hf.HfConfig.parse(config)


@pytest.mark.parametrize(
    ("sampling", "error"),
    [
        ({"presence_penalty": 0.5}, "unsupported key"),
        ({"n": 2}, "only 1 completion"),
        ({"max_tokens": 0}, "max_tokens must be"),
        ({"temperature": -1}, "temperature must be"),
        ({"top_p": 0}, "top_p must be"),
        ({"seed": "x"}, "seed must be"),
        ({"stop": [""]}, "stop must be"),
    ],
)
def test_sampling_errors(sampling: dict, error: str) -> None:
    with pytest.raises(EngineConfigError, match=error):
        hf.HfSampling.parse(sampling)


def test_sampling_maps_onto_generate() -> None:
    assert hf.HfSampling.parse({"temperature": 0, "max_tokens": 5}).generate_kwargs() == {
        "max_new_tokens": 5,
        "do_sample": False,
        "temperature": None,
        "top_p": None,
        "top_k": None,
    }
    sampled = hf.HfSampling.parse({"temperature": 0.7, "top_p": 0.9, "top_k": -1, "stop": "\n"})
    assert sampled.stop == ("\n",)
    assert sampled.generate_kwargs() == {
        "max_new_tokens": hf.DEFAULT_MAX_TOKENS,
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
    }


async def test_missing_model_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(EngineConfigError, match=r"no config\.json"):
        async with hf.open_hf(spec(tmp_path / "absent")):
            pass

"""The `sim` backend: deterministic, as accurate as configured, always labelled simulated."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferno.events.model import PipelineSpec
from inferno.executor.backends import default_backends
from inferno.executor.backends.base import EngineAborted, EngineConfigError, GenerationRequest
from inferno.executor.backends.sim import SimConfig, SimEngine, answer, open_sim


def _requests(n: int, reference: str | None = "42") -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"Q{i}?", key=str(i), reference=reference) for i in range(n)]


def _engine(**config: object) -> SimEngine:
    return SimEngine(SimConfig.parse(config))


async def test_answers_are_deterministic_across_engines():
    requests = _requests(200)
    first = await _engine(model="m", accuracy=0.5).generate(requests, {})
    second = await _engine(model="m", accuracy=0.5).generate(requests, {})
    assert [g.text for g in first] == [g.text for g in second]
    other = await _engine(model="other", accuracy=0.5).generate(requests, {})
    assert [g.text for g in first] != [g.text for g in other]


@pytest.mark.parametrize("accuracy", [0.0, 0.3, 0.8, 1.0])
async def test_accuracy_is_close_to_the_configured_one(accuracy):
    n = 4000
    generations = await _engine(model="m", accuracy=accuracy).generate(_requests(n), {})
    right = sum(g.text == "42" for g in generations) / n
    assert abs(right - accuracy) < 0.03
    wrong = [g.text for g in generations if g.text != "42"]
    assert all("42" not in text for text in wrong)  # no partial credit for `contains` scorers


async def test_every_generation_is_labelled_simulated_with_configured_tokens():
    engine = _engine(model="m", tokens_per_row=12)
    generations = await engine.generate(_requests(3), {"temperature": 0})
    assert all(g.simulated for g in generations)
    assert [g.completion_tokens for g in generations] == [12, 12, 12]
    assert all(g.prompt_tokens == 1 for g in generations)  # "Qi?": 3 chars, ~4 per token
    capped = await engine.generate(_requests(1), {"max_tokens": 5})
    assert capped[0].completion_tokens == 5


async def test_without_a_reference_the_answer_is_still_deterministic():
    config = SimConfig.parse({"model": "m"})
    request = GenerationRequest(prompt="p", key="7")
    assert answer(config, request) == answer(config, request)
    assert answer(config, request).startswith("[simulated")


async def test_zero_latency_does_not_sleep_and_latency_sleeps_per_batch():
    call = _engine(latency_ms_per_row=0).generate(_requests(1000), {})
    with pytest.raises(StopIteration) as finished:
        call.send(None)  # it answers without ever waiting on the event loop
    assert len(finished.value.value) == 1000
    started = time.monotonic()
    generations = await _engine(latency_ms_per_row=10).generate(_requests(10), {})
    assert time.monotonic() - started >= 0.1  # 10 rows × 10 ms, in one sleep per batch
    assert all(g.latency_ms == 10 for g in generations)


async def test_abort_interrupts_generate_and_later_calls_run():
    engine = _engine(latency_ms_per_row=1000)
    call = asyncio.create_task(engine.generate(_requests(5), {}))
    await asyncio.sleep(0.05)
    await engine.abort()
    with pytest.raises(EngineAborted):
        await call
    fast = SimEngine(SimConfig.parse({"latency_ms_per_row": 1}))
    await fast.abort()
    assert len(await fast.generate(_requests(2), {})) == 2


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"accuracy": 1.5}, "accuracy"),
        ({"accuracy": "high"}, "accuracy"),
        ({"latency_ms_per_row": -1}, "latency_ms_per_row"),
        ({"tokens_per_row": 2.5}, "tokens_per_row"),
        ({"model": ""}, "model"),
        ({"acuracy": 0.5}, "acuracy"),
    ],
)
def test_bad_config_names_the_field(config, field):
    with pytest.raises(EngineConfigError, match=field):
        SimConfig.parse(config)


async def test_the_registry_opens_sim_engines():
    backend = default_backends()["sim"]
    assert backend.available()
    spec = PipelineSpec(pipeline_name="a", pipeline_type="sim", model_config={"model": "x"})
    async with backend.open(spec) as engine:
        assert isinstance(engine, SimEngine)
    async with open_sim(spec) as engine:
        assert engine.config.model == "x"


async def test_a_wrong_answer_never_contains_even_a_short_reference():
    generations = await _engine(accuracy=0.0).generate(_requests(50, reference="a"), {})
    assert all("a" not in g.text for g in generations)


@pytest.mark.parametrize(
    ("sampling", "words"),
    [
        ({"temprature": 0.2}, "sim sampling_params: unknown key(s) temprature; expected"),
        ({"max_tokens": "8"}, "sim sampling_params.max_tokens must be an integer >= 0"),
        ({"max_tokens": -1}, "sim sampling_params.max_tokens must be an integer >= 0"),
    ],
)
async def test_sampling_params_a_real_backend_would_not_take_are_refused(sampling, words):
    with pytest.raises(EngineConfigError) as refused:
        await _engine().generate(_requests(1), sampling)
    assert str(refused.value).startswith(words)


async def test_the_sampling_params_of_real_backends_are_taken():
    sampling = {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "max_tokens": 3,
        "seed": 1,
        "stop": ["\n"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.1,
        "repetition_penalty": 1.1,
        "n": 1,
    }
    [generation] = await _engine().generate(_requests(1), sampling)
    assert generation.completion_tokens == 3  # max_tokens is the one sim reads

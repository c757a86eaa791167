"""The `openai` backend through the real executor, against the OpenAI-compatible test server on
loopback (bench/openai_server.py): answers and scores, rate limits without 429s, retried 5xx, a
row that never works, chat and completions, keys, and an endpoint that is down."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import msgspec
import pytest
from nats.js import JetStreamContext

from bench import openai_server as fake
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events.backend_options import OPENAI_TUNING_KEYS
from inferno.events.batches import members
from inferno.events.codec import decode_report, encode
from inferno.events.commands import AnyReport, ShardErrored, ShardFinished
from inferno.events.model import EvalSpec, PipelineSpec, Scorer
from inferno.events.names import Names
from inferno.events.work import WorkOrder
from inferno.executor.backends import openai as openai_backend
from inferno.executor.backends.base import EngineAborted, EngineConfigError, GenerationRequest
from inferno.executor.service import run
from inferno.jetstream import ensure_log, replay
from inferno.runtime.settings import Settings
from tests.results import results_rows

POISON = 13  # the server can never answer this row
ROWS = [
    {"id": f"r{i}", "question": f"What is {i} + {3 * i}?", "answer": str(4 * i)} for i in range(40)
]
ROWS[POISON]["question"] = "What is POISON + 1?"
EVAL = EvalSpec(prompt="Q: {question}\nA:", scorers=[Scorer(name="exact_match", target="answer")])
HEARTBEAT_TTL_S = 3.0
FAST_RETRIES = {"backoff_s": 0.02, "backoff_max_s": 0.1}


def answer_or_fail(prompt: str) -> str:
    if "POISON" in prompt:
        raise ValueError("this prompt always fails")
    return fake.arithmetic(prompt)


@pytest.fixture
def server() -> Iterator[Any]:
    with fake.OpenAIServer(answer_or_fail) as s:
        yield s


@pytest.fixture
async def log(js: JetStreamContext, names: Names) -> JetStreamContext:
    await ensure_log(js, names, heartbeat_ttl_s=HEARTBEAT_TTL_S)
    data = to_jsonl(ROWS)
    await (await js.object_store(names.data_store)).put(dataset_ref(data), data)
    return js


@pytest.fixture
async def executor(log: JetStreamContext, nats_url: str, names: Names) -> AsyncIterator[None]:
    settings = Settings(
        nats_url=nats_url, namespace=names.namespace, heartbeat_ttl_s=HEARTBEAT_TTL_S
    )
    stop = asyncio.Event()
    task = asyncio.create_task(
        run(
            settings,
            executor_id="ex1",
            slots=2,
            stop=stop,
            backends={"openai": openai_backend.BACKEND},
            poll_s=0.1,
        )
    )
    yield
    stop.set()
    await asyncio.wait_for(task, 15)


def order(pipeline_id: int, eval: EvalSpec = EVAL, **spec: Any) -> WorkOrder:
    data = to_jsonl(ROWS)
    return WorkOrder(
        experiment_id="exp1",
        pipeline_id=pipeline_id,
        shard=0,
        attempt=1,
        executor_id="ex1",
        dataset_ref=dataset_ref(data),
        row_start=0,
        row_end=len(ROWS),
        spec=PipelineSpec(pipeline_name=f"p{pipeline_id}", pipeline_type="openai", **spec),
        eval=eval,
    )


async def send(js: JetStreamContext, names: Names, work: WorkOrder) -> None:
    await js.publish(
        names.work("ex1"),
        encode(work),
        stream=names.work_stream,
        headers={"Nats-Msg-Id": work.msg_id},
    )


async def final_report(
    js: JetStreamContext, names: Names, pipeline_id: int, timeout: float = 15.0
) -> ShardFinished | ShardErrored:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found: list[AnyReport] = []
        await replay(
            js,
            names.exec_stream,
            lambda data, _seq, into=found: into.extend(members(decode_report(data))),
        )
        final = [
            r
            for r in found
            if isinstance(r, ShardFinished | ShardErrored) and r.pipeline_id == pipeline_id
        ]
        if final:
            return final[0]
        assert asyncio.get_running_loop().time() < deadline, f"pipeline {pipeline_id}: no report"
        await asyncio.sleep(0.1)


async def results(js: JetStreamContext, names: Names, pipeline_id: int) -> list[dict[str, Any]]:
    return await results_rows(js, names, "exp1", pipeline_id)


async def test_rows_are_answered_within_limits_retried_and_failed_alone(
    server: Any, executor: None, log: JetStreamContext, names: Names
) -> None:
    server.rpm, server.tpm, server.window_s = 30, 900, 2.0
    server.error_rate, server.seed = 0.25, 7
    work = order(
        1,
        model_config={"model": "test-model"},
        client_config={
            "base_url": server.base_url,
            "api_key": "sk-test",
            "rate_window_s": 2.0,
            "max_attempts": 4,
            **FAST_RETRIES,
        },
        sampling_params={"max_tokens": 8, "temperature": 0.0, "seed": 3, "top_k": 5},
        rpm_limit=28,
        tpm_limit=850,
    )
    await send(log, names, work)
    done = await final_report(log, names, 1)
    assert isinstance(done, ShardFinished), done

    lines = await results(log, names, 1)
    assert [line["row_index"] for line in lines] == list(range(40))
    good = [line for line in lines if line["row_index"] != POISON]
    assert [line["output"] for line in good] == [r["answer"] for r in ROWS if r["id"] != "r13"]
    assert all(line["scores"] == {"exact_match": 1.0} and "error" not in line for line in good)
    assert all(not line.get("simulated") and line["completion_tokens"] >= 1 for line in good)
    poison = lines[POISON]
    assert "scores" not in poison  # a failed row is not scored
    assert poison["error"].startswith("failed after 4 attempts: HTTP 500")
    # (its last attempt may have met an injected error before the answer failed)

    stats = done.stats
    assert (stats.rows, stats.errors) == (40, 1)
    assert (stats.metrics["exact_match"].count, stats.metrics["exact_match"].total) == (39, 39)
    seen = server.stats()
    assert stats.prompt_tokens + stats.completion_tokens == sum(t for _, t in seen.admitted)
    assert seen.injected_errors > 0  # retried: every other row still has its answer
    assert 1 <= seen.failed_answers <= 4  # the poison row's attempts that were not injected
    assert seen.rate_limited == []  # the limiter kept under the server's limits
    assert len(seen.admitted) == 39
    sent = server.last_body
    assert (sent["max_tokens"], sent["temperature"], sent["seed"], sent["top_k"]) == (8, 0, 3, 5)
    assert sent["model"] == "test-model"


async def test_chat_messages_completions_and_keys_from_the_environment(
    server: Any,
    executor: None,
    log: JetStreamContext,
    names: Names,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.api_key = "sk-from-env"
    monkeypatch.setenv("INFERNO_TEST_OPENAI_KEY", "sk-from-env")
    client = {"base_url": server.base_url, "api_key_env": "INFERNO_TEST_OPENAI_KEY", **FAST_RETRIES}
    chat = EvalSpec(
        prompt=[
            {"role": "system", "content": "Answer with a number."},
            {"role": "user", "content": "{question}"},
        ],
        scorers=EVAL.scorers,
    )
    await send(log, names, order(1, chat, model_config={"model": "m"}, client_config=client))
    completions = {**client, "endpoint": "completions"}  # another engine: the key differs
    await send(log, names, order(2, model_config={"model": "m"}, client_config=completions))

    for pipeline_id in (1, 2):
        done = await final_report(log, names, pipeline_id)
        assert isinstance(done, ShardFinished), done
        assert (done.stats.rows, done.stats.errors) == (40, 1)
        assert done.stats.metrics["exact_match"].total == 39
    # two engines: pipelines with another client_config never share one (nor its key)
    assert server.stats().answered == {"chat": 39, "completions": 39}
    assert server.stats().unauthorized == 0


async def test_a_down_endpoint_fails_the_shard_and_a_bad_key_the_pipeline(
    server: Any, executor: None, log: JetStreamContext, names: Names
) -> None:
    server.api_key = "sk-right"
    client = {"base_url": server.base_url, "down_after": 4, **FAST_RETRIES}
    spec = {"model_config": {"model": "m"}, "rpm_limit": 1000}
    await send(log, names, order(1, client_config={**client, "api_key": "sk-wrong"}, **spec))
    bad_key = await final_report(log, names, 1)
    assert isinstance(bad_key, ShardErrored)
    assert not bad_key.retryable  # retrying cannot fix a key
    assert "HTTP 401" in bad_key.error
    assert "sk-wrong" not in bad_key.error

    server.down = True
    await send(log, names, order(2, client_config={**client, "api_key": "sk-right"}, **spec))
    down = await final_report(log, names, 2)
    assert isinstance(down, ShardErrored)
    assert down.retryable  # the scheduler tries the shard again later
    assert "EndpointDown" in down.error
    assert "HTTP 503" in down.error


async def test_credentials_in_the_url_and_a_secret_header_reach_the_endpoint(
    server: Any, executor: None, log: JetStreamContext, names: Names
) -> None:
    """Specs as the api stores them (placeholders and refs, values in INFERNO_SECRETS): the
    executor resolves them and the requests carry the userinfo as Basic auth, the query
    parameters, and the header."""
    kv = await log.key_value(names.secrets_bucket)
    userinfo, query_key, gateway_token = "svc:pa%40ss-0a1b2c", "qk-3d4e5f6a7b8c", "gw-9d8c7b6a5f"
    header = f"Bearer {gateway_token}"  # the whole header value is the secret
    refs = {f"sec-{n:032x}": value for n, value in enumerate([userinfo, query_key, header])}
    for ref, value in refs.items():
        await kv.create(ref, msgspec.json.encode(value))
    userinfo_ref, key_ref, token_ref = refs
    base = (
        f"http://{{{{{userinfo_ref}}}}}@127.0.0.1:{server.port}/v1"
        f"?api-version=2024-06-01&api-key={{{{{key_ref}}}}}"
    )
    spec = {"model_config": {"model": "m"}}
    await send(log, names, order(1, **spec, client_config={"base_url": base, **FAST_RETRIES}))
    in_url = await final_report(log, names, 1)
    assert isinstance(in_url, ShardFinished), in_url
    assert in_url.stats.metrics["exact_match"].total == 39
    basic = base64.b64encode(b"svc:pa@ss-0a1b2c").decode()  # userinfo is percent-decoded
    assert server.last_headers["authorization"] == f"Basic {basic}"
    assert parse_qs(server.last_query) == {"api-version": ["2024-06-01"], "api-key": [query_key]}

    server.api_key = gateway_token  # any other bearer token gets a 401
    headers = {"Authorization_ref": token_ref, "X-Team": "evals"}
    config = {"base_url": server.base_url, "default_headers": headers, **FAST_RETRIES}
    await send(log, names, order(2, **spec, client_config=config))
    in_header = await final_report(log, names, 2)
    assert isinstance(in_header, ShardFinished), in_header
    assert server.last_headers["x-team"] == "evals"
    assert server.stats().unauthorized == 0


async def test_abort_stops_requests_in_flight(server: Any) -> None:
    server.latency_s = 5.0
    spec = PipelineSpec(
        pipeline_name="p",
        pipeline_type="openai",
        model_config={"model": "m"},
        client_config={"base_url": server.base_url},
    )
    async with openai_backend.open_openai(spec) as engine:
        requests = [GenerationRequest(prompt=f"{i} + 1", key=str(i)) for i in range(3)]
        call = asyncio.ensure_future(engine.generate(requests, {}))
        await asyncio.sleep(0.3)
        await engine.abort()
        with pytest.raises(EngineAborted):
            await asyncio.wait_for(call, 2)
        server.latency_s = 0.0
        [again] = await engine.generate(requests[:1], {"max_tokens": 4})  # later calls run
        assert again.text == "1"


def spec_with(**client: Any) -> PipelineSpec:
    return PipelineSpec(
        pipeline_name="p",
        pipeline_type="openai",
        model_config={"model": "m"},
        client_config=client,
        rpm_limit=60,
    )


def test_config_is_validated_and_keys_resolved() -> None:
    config = openai_backend.OpenAIConfig.parse(spec_with(api_key_env="K"), {"K": "sk-env"})
    assert (config.api_key, config.endpoint, config.max_concurrency, config.rpm) == (
        "sk-env",
        "chat",
        8,
        60,
    )
    assert "sk-env" not in repr(config)
    assert openai_backend.resolve_api_key({}, {"OPENAI_API_KEY": "sk-host"}) == "no-key"
    for client, error in [
        ({"max_concurency": 4}, "unknown key"),
        ({"endpoint": "embeddings"}, "chat or completions"),
        ({"max_attempts": 0}, "positive int"),
        ({"timeout_s": "fast"}, "positive float"),
        ({"api_key_env": "UNSET_FOR_SURE"}, "not set on this executor"),
        ({"api_key": "a", "api_key_env": "B"}, "not both"),
        ({"default_headers": {"X-Retries": 3}}, "map header names to strings"),
    ]:
        with pytest.raises(EngineConfigError, match=error):
            openai_backend.OpenAIConfig.parse(spec_with(**client), {})
    no_model = msgspec.structs.replace(spec_with(), model_config={})
    with pytest.raises(EngineConfigError, match="model"):
        openai_backend.OpenAIConfig.parse(no_model, {})


def test_a_base_urls_query_goes_with_every_request_and_prices_are_allowed() -> None:
    url = "http://u:p@h:8/v1?api-version=1&key=a&key=b#frag"
    assert openai_backend.split_base_url(url) == (
        "http://u:p@h:8/v1",
        {"api-version": "1", "key": ["a", "b"]},  # a repeated name is sent repeated
    )
    priced = spec_with(base_url=url, price_per_1k_prompt_tokens=0.5)
    config = openai_backend.OpenAIConfig.parse(priced, {})
    assert (config.base_url, config.default_query["api-version"]) == ("http://u:p@h:8/v1", "1")
    assert config.shown_url == "http://***@h:8/v1"
    assert "u:p" not in repr(config)
    assert set(openai_backend._OPTIONS) == set(OPENAI_TUNING_KEYS)  # one list of the keys


def test_reservations_cover_prompt_and_answer() -> None:
    assert openai_backend.reserve_tokens("x" * 40, {"max_tokens": 16}) == 26
    assert openai_backend.reserve_tokens("x" * 40, {"max_completion_tokens": 6}) == 16
    messages = [{"role": "user", "content": "x" * 7}]
    assert openai_backend.reserve_tokens(messages, {}) == 2 + openai_backend.DEFAULT_MAX_TOKENS


async def test_rows_the_endpoint_never_answered_are_marked_as_its_errors(server: Any) -> None:
    """What makes a shard whose every row failed so a failed shard (services/executor/shard.py)."""
    requests = [GenerationRequest(prompt=p, key=str(i)) for i, p in enumerate(["1 + 2", "POISON"])]
    for base_url, marked in (
        (server.base_url, [False, True]),
        ("http://127.0.0.1:1/v1", [True] * 2),
    ):
        spec = msgspec.structs.replace(
            spec_with(base_url=base_url, max_attempts=2, **FAST_RETRIES), rpm_limit=None
        )
        async with openai_backend.open_openai(spec) as engine:
            generations = await engine.generate(requests, {"max_tokens": 4})
        assert [g.endpoint_error for g in generations] == marked, generations
        for generation in generations:
            assert (generation.error is not None) == generation.endpoint_error
            if generation.endpoint_error:
                assert generation.error.startswith("failed after 2 attempts: "), generation

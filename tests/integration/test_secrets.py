"""Secrets against a real nats-server: the api moves keys into INFERNO_SECRETS and appends refs;
the executor resolves refs for its engine only, fails clearly on an unknown ref, and masks a
resolved key wherever an error quotes it."""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest
from fastapi import FastAPI
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.api.app import create_app
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events import Names, State, decide, decode_command, encode, evolve, subject_for
from inferno.events.batches import members
from inferno.events.codec import decode_report
from inferno.events.commands import AnyReport, ShardErrored, ShardFinished
from inferno.events.model import EvalSpec, PipelineSpec, Scorer
from inferno.events.work import WorkOrder
from inferno.executor.backends import default_backends
from inferno.executor.backends.base import Backend, Generation, GenerationRequest
from inferno.executor.secrets import SecretError, Secrets, resolve_secrets
from inferno.executor.service import run
from inferno.jetstream import Appender, Outgoing, ensure_log, replay
from inferno.runtime.settings import Settings
from tests import waiting
from tests.results import results_jsonl

ROWS = [{"id": i, "question": f"{i}+1?", "answer": str(i + 1)} for i in range(6)]


def new_key() -> str:
    alphabet = string.ascii_letters + string.digits
    return "sk-test-" + "".join(secrets.choice(alphabet) for _ in range(24))


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    return await waiting.until(check, check.__name__, timeout, interval=0.02)


async def stored(js: JetStreamContext, stream: str) -> bytes:
    """Every message of `stream`, subjects and headers included, as one blob to search."""
    info = await js.stream_info(stream)
    blob = bytearray()
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        blob += f"{msg.subject} {msg.headers}\n".encode() + (msg.data or b"") + b"\n"
    return bytes(blob)


async def secret_value(js: JetStreamContext, names: Names, ref: str) -> Any:
    kv = await js.key_value(names.secrets_bucket)
    return msgspec.json.decode((await kv.get(ref)).value)


# the api


class Harness:
    """The api in-process over ASGI, and the scheduler's part played through the real log."""

    def __init__(self, nc: NATS, js: JetStreamContext, names: Names, app: FastAPI) -> None:
        self.js, self.names, self.app = js, names, app
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://127.0.0.1",  # a name the api serves
        )
        self.appender = Appender(nc)
        self.state = State()
        self.evt_seq = 0

    async def decide(self, ic_id: int) -> None:
        command = decode_command((await self.js.get_msg(self.names.cmd_stream, ic_id)).data)
        events = decide(self.state, command, now=time.time(), seq=ic_id)
        outgoing = [
            Outgoing(subject_for(self.names, e), encode(e), f"cmd-{ic_id}-{i}")
            for i, e in enumerate(events)
        ]
        result = await self.appender.append(
            self.names.evt_stream, outgoing, expected_last_seq=self.evt_seq
        )
        self.evt_seq = result.last_seq
        for event in events:
            evolve(self.state, event)
        projection = self.app.state.gateway.projection

        async def folded() -> bool:
            return projection.model.evt_seq >= result.last_seq

        await until(folded)

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        await self.decide(response.json()["ic_id"])
        return (await self.client.get(f"/api/v1/operations/{response.json()['ic_id']}")).json()


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Harness]:
    app = create_app(Settings(namespace=names.namespace), nc=nc)
    async with app.router.lifespan_context(app):
        harness = Harness(nc, js, names, app)
        async with harness.client:
            yield harness


def experiment(*pipelines: dict[str, Any]) -> dict[str, Any]:
    return {
        "experiment_name": "keys",
        "num_shards": 2,
        "dataset": {"rows": ROWS},
        "eval": {"prompt": "{question}", "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": list(pipelines),
    }


def openai(name: str, **client_config: Any) -> dict[str, Any]:
    return {
        "pipeline_name": name,
        "pipeline_type": "openai",
        "model_config": {"model": "gpt-x"},
        "client_config": {"base_url": "http://llm", **client_config},
    }


async def test_keys_go_to_the_secrets_bucket_and_only_refs_reach_the_log(
    api: Harness, js: JetStreamContext, names: Names
):
    create_key, clone_key, dispatcher_key, header = new_key(), new_key(), new_key(), new_key()
    body = experiment(openai("a", api_key=create_key), openai("b", api_key_env="OPENAI_API_KEY"))
    created = await api.post("/api/v1/experiments", body)
    assert created["status"] == "completed", created
    a, b = created["result"]["pipeline_ids"]

    pipeline_a = (await api.client.get(f"/api/v1/pipelines/{a}")).json()
    ref_a = pipeline_a["client_config"]["api_key_ref"]
    assert pipeline_a["client_config"] == {"base_url": "http://llm", "api_key_ref": ref_a}
    assert await secret_value(js, names, ref_a) == create_key
    pipeline_b = (await api.client.get(f"/api/v1/pipelines/{b}")).json()
    assert pipeline_b["client_config"] == {
        "base_url": "http://llm",
        "api_key_env": "OPENAI_API_KEY",
    }

    # a clone with a new key gets a new ref; its other knobs are inherited
    clone = await api.post(
        f"/api/v1/pipelines/{a}/clone", {"client_config": {"api_key": clone_key}}
    )
    cloned = (await api.client.get(f"/api/v1/pipelines/{clone['result']['pipeline_id']}")).json()
    ref_clone = cloned["client_config"]["api_key_ref"]
    assert ref_clone != ref_a
    assert cloned["client_config"] == {"base_url": "http://llm", "api_key_ref": ref_clone}
    assert await secret_value(js, names, ref_clone) == clone_key

    # the dispatcher's clone, with a secret header nested deeper
    context_id = pipeline_a["context_id"]
    into = await api.post(
        "/dispatcher/clone-pipeline",
        {
            "context_id": context_id,
            "pipeline_name": "c",
            "pipeline_type": "openai",
            "model_config": {"model": "gpt-y"},
            "client_config": {"api_key": dispatcher_key, "default_headers": {"X-Api-Key": header}},
        },
    )
    spec = api.state.pipelines[into["result"]["pipeline_id"]].spec
    config = spec.client_config
    assert set(config) == {"api_key_ref", "default_headers"}
    assert await secret_value(js, names, config["api_key_ref"]) == dispatcher_key
    assert await secret_value(js, names, config["default_headers"]["X-Api-Key_ref"]) == header

    every = [create_key, clone_key, dispatcher_key, header]
    logged = await stored(js, names.cmd_stream) + await stored(js, names.evt_stream)
    responses = b"".join(
        [
            (await api.client.get(path)).content
            for path in ("/api/v1/pipelines", "/api/v1/operations", "/dispatcher/all-operations")
        ]
    )
    for key in every:
        assert key.encode() not in logged
        assert key.encode() not in responses
    assert ref_a.encode() in logged  # the refs are what the log holds
    assert (await secret_value(js, names, ref_a)) in every


async def test_a_ref_in_a_request_must_name_a_stored_secret(
    api: Harness, js: JetStreamContext, names: Names
):
    created = await api.post("/api/v1/experiments", experiment(openai("a", api_key=new_key())))
    [a] = created["result"]["pipeline_ids"]
    ref = api.state.pipelines[a].spec.client_config["api_key_ref"]
    appended = (await js.stream_info(names.cmd_stream)).state.messages

    unknown = "sec-" + "0" * 32
    for config, field, words in [
        ({"api_key_ref": unknown}, "client_config.api_key_ref", f"no secret {unknown} is stored"),
        ({"api_key_ref": "sk-raw-key-here"}, "client_config.api_key_ref", "must be a secret ref"),
        ({"api_key": "k", "api_key_ref": ref}, "client_config.api_key", "give api_key or"),
    ]:
        response = await api.client.post(
            f"/api/v1/pipelines/{a}/clone", json={"client_config": config}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(f"field '{field}': {words}")
        assert "sk-raw-key-here" not in response.text
    assert (await js.stream_info(names.cmd_stream)).state.messages == appended

    # a ref a pipeline shows is reusable (cloning would inherit it anyway)
    reused = await api.post(f"/api/v1/pipelines/{a}/clone", {"client_config": {"api_key_ref": ref}})
    assert api.state.pipelines[reused["result"]["pipeline_id"]].spec.client_config == {
        "base_url": "http://llm",
        "api_key_ref": ref,
    }


async def test_a_null_key_in_a_clone_drops_the_parents_ref(
    api: Harness, js: JetStreamContext, names: Names
):
    created = await api.post("/api/v1/experiments", experiment(openai("a", api_key=new_key())))
    [a] = created["result"]["pipeline_ids"]
    clone = await api.post(
        f"/api/v1/pipelines/{a}/clone",
        {"client_config": {"api_key": None, "api_key_env": "TEAM_KEY"}},
    )
    config = api.state.pipelines[clone["result"]["pipeline_id"]].spec.client_config
    assert config == {"base_url": "http://llm", "api_key_ref": None, "api_key_env": "TEAM_KEY"}
    kv = await js.key_value(names.secrets_bucket)
    assert await resolve_secrets(config, kv) == {
        "base_url": "http://llm",
        "api_key_env": "TEAM_KEY",
    }


def placeholder_pattern(template: str) -> str:
    """A regex for `template` in which each `{}` is a secret placeholder."""
    return re.escape(template).replace(r"\{\}", r"\{\{(sec-[0-9a-f]{32})\}\}")


async def test_credentials_inside_urls_go_to_the_secrets_bucket(
    api: Harness, js: JetStreamContext, names: Names
):
    password, query_key, signature, token = (new_key() for _ in range(4))
    given = f"http://svc:{password}@llm.example/v1?api-version=2024-06-01&api-key={query_key}"
    created = await api.post("/api/v1/experiments", experiment(openai("a", base_url=given)))
    [a] = created["result"]["pipeline_ids"]
    shown = (await api.client.get(f"/api/v1/pipelines/{a}")).json()["client_config"]["base_url"]
    pattern = placeholder_pattern("http://{}@llm.example/v1?api-version=2024-06-01&api-key={}")
    userinfo_ref, key_ref = re.fullmatch(pattern, shown).groups()  # type: ignore[union-attr]
    assert await secret_value(js, names, userinfo_ref) == f"svc:{password}"
    assert await secret_value(js, names, key_ref) == query_key
    kv = await js.key_value(names.secrets_bucket)
    stored_config = api.state.pipelines[a].spec.client_config
    assert (await resolve_secrets(stored_config, kv))["base_url"] == given  # byte for byte

    # a clone with a new URL: its credentials move too (sig= and access_token= look secret)
    new_url = f"https://gw.example/v1?sig={signature}&access_token={token}&region=eu"
    clone = await api.post(f"/api/v1/pipelines/{a}/clone", {"client_config": {"base_url": new_url}})
    cloned = api.state.pipelines[clone["result"]["pipeline_id"]].spec.client_config["base_url"]
    sig_ref, token_ref = re.fullmatch(  # type: ignore[union-attr]
        placeholder_pattern("https://gw.example/v1?sig={}&access_token={}&region=eu"), cloned
    ).groups()
    assert [await secret_value(js, names, r) for r in (sig_ref, token_ref)] == [signature, token]

    # the dispatcher's clone too; and a URL copied from a response reuses its refs
    into = await api.post(
        "/dispatcher/clone-pipeline",
        {
            "context_id": api.state.experiments[api.state.pipelines[a].experiment_id].context_id,
            "pipeline_name": "c",
            "pipeline_type": "openai",
            "model_config": {"model": "gpt-y"},
            "client_config": {"base_url": given},
        },
    )
    into_url = api.state.pipelines[into["result"]["pipeline_id"]].spec.client_config["base_url"]
    assert re.fullmatch(pattern, into_url)
    assert into_url != shown  # fresh refs
    copied = await api.post(f"/api/v1/pipelines/{a}/clone", {"client_config": {"base_url": shown}})
    assert api.state.pipelines[copied["result"]["pipeline_id"]].spec.client_config == {
        "base_url": shown
    }

    # a placeholder must name a stored secret
    appended = (await js.stream_info(names.cmd_stream)).state.messages
    unknown = "sec-" + "0" * 32
    response = await api.client.post(
        f"/api/v1/pipelines/{a}/clone",
        json={"client_config": {"base_url": f"http://{{{{{unknown}}}}}@llm.example/v1"}},
    )
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": f"field 'client_config.base_url': no secret {unknown} is stored"
    }
    assert (await js.stream_info(names.cmd_stream)).state.messages == appended

    logged = b"".join([await stored(js, s) for s in (names.cmd_stream, names.evt_stream)])
    responses = b"".join(
        [
            (await api.client.get(path)).content
            for path in ("/api/v1/pipelines", "/api/v1/operations", "/dispatcher/all-operations")
        ]
    )
    for secret in (password, query_key, signature, token):
        assert secret.encode() not in logged
        assert secret.encode() not in responses
    assert shown.encode() in logged  # the placeholders are what the log holds


def sim(name: str, **knobs: Any) -> dict[str, Any]:
    return {"pipeline_name": name, "pipeline_type": "sim", "model_config": {"model": "s"}, **knobs}


async def test_config_keys_a_backend_does_not_read_are_refused_before_the_log(
    api: Harness, js: JetStreamContext, names: Names
):
    created = await api.post(
        "/api/v1/experiments",
        experiment(
            sim("s", sampling_params={"temperature": 0.2, "max_tokens": 4, "stop": ["\n"]}),
            openai(
                "o",
                api_key=new_key(),
                default_headers={"Authorization": f"Bearer {new_key()}"},
                price_per_1k_prompt_tokens=0.5,
                max_attempts=2,
            ),
        ),
    )
    assert created["status"] == "completed", created
    s, o = created["result"]["pipeline_ids"]
    appended = (await js.stream_info(names.cmd_stream)).state.messages

    sim_sampling = "expected temperature, top_p, top_k, min_p, max_tokens, seed, stop"
    for path, body, field, words in [
        (
            "/api/v1/experiments",
            experiment(sim("s", sampling_params={"temprature": 0.2})),
            "pipelines.0.sampling_params.temprature",
            f"sim sampling_params: unknown key(s) temprature; {sim_sampling}",
        ),
        (
            "/api/v1/experiments",
            experiment(sim("ok"), sim("s", model_config={"model": "s", "acuracy": 1})),
            "pipelines.1.model_config.acuracy",
            "sim model_config: unknown key(s) acuracy; expected model, accuracy,",
        ),
        (
            "/api/v1/experiments",
            experiment(openai("o", max_retries=3)),
            "pipelines.0.client_config.max_retries",
            "openai client_config: unknown key(s) max_retries; expected base_url,",
        ),
        (
            f"/api/v1/pipelines/{s}/clone",
            {"sampling_params": {"temprature": 0.2}},
            "sampling_params.temprature",
            "sim sampling_params: unknown key(s) temprature",
        ),
        (  # an inherited key the new type does not read: the clone's config is the merge
            f"/api/v1/pipelines/{o}/clone",
            {"pipeline_type": "sim", "model_config": {"model": "s", "top_k": 5}},
            "model_config.top_k",
            "sim model_config: unknown key(s) top_k",
        ),
        (
            "/dispatcher/clone-pipeline",
            {
                "context_id": api.state.experiments[
                    api.state.pipelines[s].experiment_id
                ].context_id,
                **sim("d", sampling_params={"tmp": 1}),
            },
            "sampling_params.tmp",
            "sim sampling_params: unknown key(s) tmp",
        ),
    ]:
        response = await api.client.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith(f"field '{field}': {words}"), response.text
    assert (await js.stream_info(names.cmd_stream)).state.messages == appended

    # what the backends read is accepted: a clone into sim keeps openai's client_config, which
    # sim ignores; openai's model_config is open (RapidFire's clone bodies put sampling there)
    into_sim = await api.post(f"/api/v1/pipelines/{o}/clone", {"pipeline_type": "sim"})
    assert into_sim["status"] == "completed", into_sim
    into_openai = await api.post(
        f"/api/v1/pipelines/{s}/clone",
        {"pipeline_type": "openai", "model_config": {"model": "gpt-x", "temperature": 0.7}},
    )
    assert into_openai["status"] == "completed", into_openai


# the executor


async def test_resolve_secrets_reads_the_bucket_once_per_ref(js: JetStreamContext, names: Names):
    await ensure_log(js, names)
    kv = await js.key_value(names.secrets_bucket)
    key, ref = new_key(), "sec-" + "1" * 32
    await kv.create(ref, msgspec.json.encode(key))
    config = {"base_url": "http://llm", "api_key_ref": ref, "api_key_env": "IGNORED_HERE"}
    cache = Secrets(kv)
    resolved = await resolve_secrets(config, cache)
    assert resolved == {"base_url": "http://llm", "api_key": key, "api_key_env": "IGNORED_HERE"}
    assert config["api_key_ref"] == ref  # the input is left as it was
    await kv.delete(ref)
    assert await resolve_secrets(config, cache) == resolved  # cached: no second read
    with pytest.raises(SecretError) as missing:
        await resolve_secrets(config, kv)  # a fresh cache sees the deletion
    assert str(missing.value).startswith(
        f"client_config.api_key_ref: no secret is stored under ref '{ref}'"
    )
    assert key not in str(missing.value)
    with pytest.raises(SecretError, match=r"sec-not/a\.key"):
        await resolve_secrets({"token_ref": "sec-not/a.key"}, kv)


class Recording:
    """An engine that keeps the spec it was opened with; with `fail`, it quotes the key in the
    errors a careless real backend might raise or record."""

    def __init__(self, spec: PipelineSpec) -> None:
        self.spec = spec

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        key = self.spec.client_config.get("api_key", "")
        if self.spec.model_config.get("fail") == "shard":
            raise RuntimeError(f"401 Unauthorized for key {key}")
        error = f"401 for key {key}" if self.spec.model_config.get("fail") == "rows" else None
        return [Generation(text=r.reference or "", error=error) for r in requests]

    async def abort(self) -> None:
        return None


async def test_the_executor_opens_engines_with_resolved_secrets_only(
    js: JetStreamContext, nats_url: str, names: Names
):
    await ensure_log(js, names, heartbeat_ttl_s=3.0)
    data = to_jsonl(ROWS)
    await (await js.object_store(names.data_store)).put(dataset_ref(data), data)
    kv = await js.key_value(names.secrets_bucket)
    key, ref = "plain-secret-without-a-pattern-0a1b2c", "sec-" + "2" * 32
    await kv.create(ref, msgspec.json.encode(key))
    opened: list[PipelineSpec] = []

    @asynccontextmanager
    async def open_recording(spec: PipelineSpec) -> AsyncIterator[Recording]:
        opened.append(spec)
        yield Recording(spec)

    backends = {**default_backends(), "openai": Backend("openai", open_recording)}
    stop = asyncio.Event()
    settings = Settings(nats_url=nats_url, namespace=names.namespace, heartbeat_ttl_s=3.0)
    task = asyncio.create_task(
        run(settings, executor_id="ex1", slots=1, stop=stop, backends=backends, poll_s=0.1)
    )

    def order(pipeline_id: int, model: str, client_config: dict[str, Any]) -> WorkOrder:
        return WorkOrder(
            experiment_id="exp1",
            pipeline_id=pipeline_id,
            shard=0,
            attempt=1,
            executor_id="ex1",
            dataset_ref=dataset_ref(data),
            row_start=0,
            row_end=len(ROWS),
            spec=PipelineSpec(
                pipeline_name=f"p{pipeline_id}",
                pipeline_type="openai",
                model_config={"model": "m", "fail": model},
                client_config=client_config,
            ),
            eval=EvalSpec(
                prompt="{question}", scorers=[Scorer(name="exact_match", target="answer")]
            ),
        )

    bogus = "sec-" + "9" * 32
    orders = [
        order(1, "no", {"api_key_ref": ref, "base_url": "http://llm"}),
        order(2, "rows", {"api_key_ref": ref}),
        order(3, "shard", {"api_key_ref": ref}),
        order(4, "no", {"api_key_ref": bogus}),
    ]
    for work in orders:
        await js.publish(
            names.work("ex1"),
            encode(work),
            stream=names.work_stream,
            headers={"Nats-Msg-Id": work.msg_id},
        )

    async def final_reports() -> dict[int, AnyReport]:
        found: dict[int, AnyReport] = {}

        def keep(data: bytes, _seq: int) -> None:
            for report in members(decode_report(data)):
                if isinstance(report, ShardFinished | ShardErrored):
                    found[report.pipeline_id] = report

        await replay(js, names.exec_stream, keep)
        return found if len(found) == len(orders) else {}

    try:
        done = await until(final_reports, timeout=10)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    assert isinstance(done[1], ShardFinished)
    assert done[1].stats.rows == len(ROWS)
    assert opened[0].client_config == {"api_key": key, "base_url": "http://llm"}
    assert isinstance(done[2], ShardFinished)
    assert done[2].stats.errors == len(ROWS)
    rows = await results_jsonl(js, names, "exp1", 2)
    assert b"401 for key ***" in rows
    assert key.encode() not in rows
    assert isinstance(done[3], ShardErrored)
    assert done[3].retryable
    assert done[3].error == "RuntimeError: 401 Unauthorized for key ***"
    assert isinstance(done[4], ShardErrored)
    assert not done[4].retryable
    assert done[4].error.startswith(
        f"client_config.api_key_ref: no secret is stored under ref '{bogus}'"
    )
    assert key.encode() not in await stored(js, names.exec_stream)

"""Who, why and which request on every command (issue 8 §2), against a real nats-server: the
actor from each token or from `X-Inferno-Actor`, the reason from a body or `?reason=`, and the
trace id in the answer, in the stored command (INFERNO_CMD) and in the api's log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.events import Names, decode_command
from inferno.events.commands import MAX_REASON_LENGTH, AnyCommand
from inferno.runtime.logs import configure_logging
from inferno.runtime.settings import Credential
from tests.integration.test_api import (
    Api,
    PlayScheduler,
    cmd_count,
    created,
    experiment_body,
    running_api,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Api]:
    async with running_api(nc, names) as running:
        yield running


@pytest.fixture
def scheduler(nc: NATS, js: JetStreamContext, names: Names, api: Api) -> PlayScheduler:
    return PlayScheduler(nc, js, names, api)


@pytest.fixture
def api_log() -> Iterator[io.StringIO]:
    """The api's log lines as JSON, as a service writes them (contextvars merged)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("info", "json", service="inferno-api", stream=out)
    yield out
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


async def stored(js: JetStreamContext, names: Names, ic_id: int) -> AnyCommand:
    """The command as INFERNO_CMD holds it."""
    data = (await js.get_msg(names.cmd_stream, seq=ic_id)).data
    assert data is not None
    return decode_command(data)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


# actor


async def test_the_actor_is_the_identity_behind_each_token(
    nc: NATS, js: JetStreamContext, names: Names
):
    tokens = (Credential("alice", "tok-alice-1"), Credential("bob", "tok-bob-2"))
    async with running_api(nc, names, token="tok-shared", tokens=tokens) as api:
        sent = [
            ("tok-alice-1", None, "alice"),
            ("tok-bob-2", None, "bob"),
            ("tok-bob-2", "bob", "bob"),  # the client says what the token says: once
            ("tok-alice-1", "mallory@laptop", "alice (mallory@laptop)"),  # the token comes first
            ("tok-shared", "carol@ci", "INFERNO_TOKEN (carol@ci)"),
            ("tok-shared", None, "INFERNO_TOKEN"),
        ]
        for token, claim, _actor in sent:
            headers = {"Authorization": f"Bearer {token}"}
            if claim is not None:
                headers["X-Inferno-Actor"] = claim
            response = await api.client.post(
                "/api/v1/experiments", json=experiment_body(), headers=headers
            )
            assert response.status_code == 200, response.text
        recorded = [(await stored(js, names, i)).actor for i in range(1, len(sent) + 1)]
        assert recorded == [actor for *_, actor in sent]

        for wrong in ("tok-alice-2", "tok-alice-1x", ""):
            refused = await api.client.post(
                "/api/v1/experiments",
                json=experiment_body(),
                headers={"Authorization": f"Bearer {wrong}", "X-Inferno-Actor": "alice"},
            )
            assert refused.status_code == 401
        assert await cmd_count(js, names) == len(sent)


async def test_without_a_token_the_actor_is_what_the_client_says(
    api: Api, js: JetStreamContext, names: Names
):
    said = await api.client.post(
        "/api/v1/experiments", json=experiment_body(), headers={"X-Inferno-Actor": " dev@box "}
    )
    silent = await api.client.post("/api/v1/experiments", json=experiment_body())
    blank = await api.client.post(
        "/api/v1/experiments", json=experiment_body(), headers={"X-Inferno-Actor": "  "}
    )
    assert (await stored(js, names, said.json()["ic_id"])).actor == "dev@box"
    assert (await stored(js, names, silent.json()["ic_id"])).actor is None
    assert (await stored(js, names, blank.json()["ic_id"])).actor is None

    refused: list[tuple[bytes, str]] = [
        (b"x" * 201, "must be at most 200 characters, not 201"),
        (b"dev\x1b[2J", "must be printable ASCII (no control characters)"),
        ("José".encode(), "must be printable ASCII (no control characters)"),  # UTF-8 bytes
    ]
    for bad, why in refused:
        response = await api.client.post(
            "/api/v1/experiments", json=experiment_body(), headers={b"X-Inferno-Actor": bad}
        )
        assert response.status_code == 400, bad
        assert response.json() == {"error": f"header 'X-Inferno-Actor': {why}"}
    assert await cmd_count(js, names) == 3


# reason


async def test_a_reason_comes_in_the_body_or_the_query_and_is_recorded(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    first = await api.client.post(
        "/api/v1/experiments", json=experiment_body(reason="baseline for the Q3 report")
    )
    await scheduler.command(first.json()["ic_id"])
    writes = [
        ("/api/v1/pipelines/1/stop", {"reason": "  diverging  "}, "diverging"),
        ("/api/v1/pipelines/1/resume", {"reason": "fixed the prompt"}, "fixed the prompt"),
        ("/api/v1/pipelines/1/clone", {"pipeline_name": "c", "reason": "hotter"}, "hotter"),
        (
            "/api/v1/pipelines/1/stop",
            {"reason": "red\x1b[31m\u202e and\r\n\tnext"},
            "red[31m and next",
        ),
        ("/api/v1/pipelines/2/stop", None, None),
        ("/api/v1/pipelines/2/resume", {}, None),
        ("/dispatcher/stop-pipeline?reason=too%20slow", {"pipeline_id": 2}, "too slow"),
        ("/dispatcher/resume-pipeline?reason=", {"pipeline_id": 2}, None),
        ("/dispatcher/stop-pipeline?reason=a%0Ab%07", {"pipeline_id": 2}, "a b"),
        ("/dispatcher/resume-pipeline?reason=%0A%09", {"pipeline_id": 2}, None),
        ("/dispatcher/delete-pipeline?reason=done%20it", {"pipeline_id": 2}, "done it"),
    ]
    reasons = [(await stored(js, names, 1)).reason]
    for path, body, _reason in writes:
        response = await api.client.post(path, json=body)
        assert response.status_code == 200, (path, response.text)
        ic_id = response.json()["ic_id"]
        reasons.append((await stored(js, names, ic_id)).reason)
        await scheduler.command(ic_id)
    assert reasons == ["baseline for the Q3 report", *(reason for *_, reason in writes)]
    clone = await stored(js, names, 4)
    assert clone.operation == "clone"
    assert clone.reason == "hotter"

    spec = {"context_id": first.json()["context_id"], "pipeline_name": "d", "pipeline_type": "sim"}
    seed = await api.client.post("/dispatcher/clone-pipeline?reason=a%20seed%20clone", json=spec)
    assert (await stored(js, names, seed.json()["ic_id"])).reason == "a seed clone"


async def test_a_reason_too_long_or_not_a_string_is_a_400_and_stores_nothing(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    await created(api, scheduler)
    before = (await api.client.get("/api/v1/pipelines/1")).json()
    long = "x" * (MAX_REASON_LENGTH + 1)
    limit = f"must be at most {MAX_REASON_LENGTH} characters, not {MAX_REASON_LENGTH + 1}"
    refused = [
        ("/api/v1/pipelines/1/stop", {"reason": long}, {}, f"field 'reason': {limit}"),
        ("/api/v1/pipelines/1/clone", {"reason": long}, {}, f"field 'reason': {limit}"),
        ("/api/v1/pipelines/1/delete", {"reason": 7}, {}, "field 'reason': Input should be"),
        ("/api/v1/experiments", experiment_body(reason=long), {}, f"field 'reason': {limit}"),
        (
            "/dispatcher/stop-pipeline",
            {"pipeline_id": 1},
            {"reason": long},
            f"query parameter 'reason': {limit}",
        ),
    ]
    for path, body, params, error in refused:
        response = await api.client.post(path, json=body, params=params)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith(error), response.json()
    assert await cmd_count(js, names) == 1  # the experiment only
    assert (await api.client.get("/api/v1/pipelines/1")).json()["status"] == before["status"]


# trace id


async def test_the_trace_id_is_answered_stored_and_on_the_requests_log_lines(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names, api_log: io.StringIO
):
    await created(api, scheduler)
    given = {"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01", "X-Inferno-Actor": "dev@box"}
    response = await api.client.post(
        "/api/v1/pipelines/1/stop", json={"reason": "diverging"}, headers=given
    )
    assert response.headers["Inferno-Trace-Id"] == TRACE
    command = await stored(js, names, response.json()["ic_id"])
    assert (command.trace_id, command.actor, command.reason) == (TRACE, "dev@box", "diverging")
    ic_id = response.json()["ic_id"]
    await scheduler.command(ic_id)
    shown = (await api.client.get(f"/api/v1/operations/{ic_id}")).json()
    [seed] = [
        o
        for o in (await api.client.get("/dispatcher/all-operations")).json()
        if o["ic_id"] == ic_id
    ]
    for op in (shown, seed):
        assert (op["trace_id"], op["actor"], op["reason"], op["status"]) == (
            TRACE,
            "dev@box",
            "diverging",
            "completed",
        )
    [received] = [line for line in lines(api_log) if line.get("operation") == "stop"]
    assert received["event"] == "command received"
    assert received["trace_id"] == TRACE
    assert (received["actor"], received["reason"], received["operation"]) == (
        "dev@box",
        "diverging",
        "stop",
    )
    assert received["service"] == "inferno-api"

    by_request_id = await api.client.post(
        "/dispatcher/stop-pipeline", json={"pipeline_id": 2}, headers={"X-Request-Id": "req-42"}
    )
    assert by_request_id.headers["Inferno-Trace-Id"] == "req-42"
    assert (await stored(js, names, by_request_id.json()["ic_id"])).trace_id == "req-42"

    made = await api.client.post("/api/v1/pipelines/2/delete", headers={"X-Request-Id": "a b"})
    trace_id = made.headers["Inferno-Trace-Id"]  # the invalid id is ignored: a new one
    assert len(trace_id) == 32
    assert trace_id != "a b"
    assert (await stored(js, names, made.json()["ic_id"])).trace_id == trace_id
    mine = [line for line in lines(api_log) if line.get("trace_id") == trace_id]
    assert [line["event"] for line in mine] == ["command received"]
    assert structlog.contextvars.get_contextvars() == {}  # unbound once the request is done

    # every answer has one, refusals included, and different requests different ones
    answers = [
        await api.client.get("/healthz"),
        await api.client.get("/api/v1/pipelines/99"),
        await api.client.post("/api/v1/pipelines/1/stop", json={"reason": 5}),
    ]
    ids = {answer.headers["Inferno-Trace-Id"] for answer in answers}
    assert len(ids) == 3


async def test_a_500_names_its_trace_id_in_the_answer_and_the_log_line(
    api: Api, api_log: io.StringIO
):
    async def boom() -> None:
        raise RuntimeError("internals")

    api.app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/boom", headers={"X-Request-Id": "req-500"})
    assert (response.status_code, response.json()) == (500, {"error": "internal error"})
    assert response.headers["Inferno-Trace-Id"] == "req-500"
    [logged] = [line for line in lines(api_log) if line["event"] == "unhandled error"]
    assert logged["trace_id"] == "req-500"
    assert "RuntimeError: internals" in logged["exception"]

"""The api's front door against a real nats-server (docs/security.md): what a hostile web page
can make a browser send is refused before anything reaches the log, request bodies and
commands are bounded, and an Idempotency-Key is bound to its whole request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.events import Names
from inferno.runtime.settings import ConfigError, Settings
from tests.integration.test_api import (
    Api,
    PlayScheduler,
    cmd_count,
    created,
    experiment_body,
    running_api,
)


@pytest.fixture
async def api(nc: NATS, js: JetStreamContext, names: Names) -> AsyncIterator[Api]:
    async with running_api(nc, names) as running:
        yield running


@pytest.fixture
def scheduler(nc: NATS, js: JetStreamContext, names: Names, api: Api) -> PlayScheduler:
    return PlayScheduler(nc, js, names, api)


EVIL = "http://evil.example"


def errors_logged(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["log_level"] in ("error", "critical")]


# 1. cross-site requests


async def test_a_write_whose_body_is_not_json_is_a_415_and_stores_nothing(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    await created(api, scheduler)
    body = b'{"pipeline_id": 2}'
    for media in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/csv",
        None,
    ):
        headers = {"Content-Type": media} if media else {}
        response = await api.client.post(
            "/dispatcher/delete-pipeline", content=body, headers=headers
        )
        assert response.status_code == 415, (media, response.text)
        named = repr(media.split(";")[0]) if media else "a body without a Content-Type"
        assert named in response.json()["error"]
        assert "send application/json" in response.json()["error"]
    clone = await api.client.post(
        "/api/v1/pipelines/2/clone", content=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert clone.status_code == 415
    csv = await api.client.post(  # files are for the upload route only
        "/api/v1/experiments", content=b"a\n1\n", headers={"Content-Type": "text/csv"}
    )
    assert (csv.status_code, "'text/csv'" in csv.json()["error"]) == (415, True)
    assert await cmd_count(js, names) == 1
    assert api.projection.model.pipelines[2].status != "deleted"

    json_with_charset = {"Content-Type": "application/json; charset=utf-8"}
    stop = await api.client.post(
        "/dispatcher/stop-pipeline", content=body, headers=json_with_charset
    )
    assert stop.status_code == 200, stop.text
    assert await cmd_count(js, names) == 2


async def test_a_foreign_origin_is_refused_on_every_request(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    await created(api, scheduler)
    form = {"Origin": EVIL, "Content-Type": "application/x-www-form-urlencoded"}
    delete = await api.client.post("/api/v1/pipelines/2/delete", headers=form)  # bodiless
    assert delete.status_code == 403
    assert delete.json() == {
        "error": "Origin 'http://evil.example' may not call this api; to let pages from it,"
        " list it in INFERNO_CORS_ORIGINS"
    }
    assert (await api.client.get("/api/v1/pipelines", headers={"Origin": EVIL})).status_code == 403
    sandboxed = await api.client.post("/api/v1/pipelines/2/stop", headers={"Origin": "null"})
    assert sandboxed.status_code == 403
    preflight = await api.client.options(
        "/api/v1/pipelines/2/delete",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert (preflight.status_code, preflight.headers["content-type"]) == (403, "application/json")
    assert "evil.example" in preflight.json()["error"]
    assert "access-control-allow-origin" not in preflight.headers
    assert await cmd_count(js, names) == 1
    assert api.projection.model.pipelines[2].status != "deleted"

    # the api's own pages, and clients that send no Origin (curl, the CLI), pass
    own = await api.client.post("/api/v1/pipelines/2/stop", headers={"Origin": "http://127.0.0.1"})
    assert own.status_code == 200, own.text
    assert (await api.client.post("/api/v1/pipelines/1/stop")).status_code == 200


async def test_listed_origins_get_cors_answers_even_from_the_guard(
    nc: NATS, js: JetStreamContext, names: Names
):
    dash = "https://dash.example"
    async with running_api(nc, names, cors_origins=(dash,)) as api:
        preflight = await api.client.options(
            "/api/v1/pipelines/1/stop",
            headers={"Origin": dash, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == dash
        read = await api.client.get("/api/v1/pipelines", headers={"Origin": dash})
        assert (read.status_code, read.headers["access-control-allow-origin"]) == (200, dash)
        # a refusal the page can read: without the CORS header it would see a network error
        plain = await api.client.post(
            "/dispatcher/stop-pipeline",
            content=b'{"pipeline_id": 1}',
            headers={"Origin": dash, "Content-Type": "text/plain"},
        )
        assert (plain.status_code, plain.headers["access-control-allow-origin"]) == (415, dash)
        foreign = await api.client.options(
            "/api/v1/pipelines/1/stop",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        )
        assert (foreign.status_code, "error" in foreign.json()) == (403, True)
    assert await cmd_count(js, names) == 0


async def test_the_host_must_be_one_the_api_serves(nc: NATS, js: JetStreamContext, names: Names):
    async with running_api(
        nc, names, api_host="inferno.lan", allowed_hosts=("ci.example", "[fd00::5]")
    ) as api:
        refused = (
            "attacker.example",
            "attacker.example:8851",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:8851",
            "not a host",
        )
        for host in refused:
            response = await api.client.get("/api/v1/pipelines", headers={"Host": host})
            assert response.status_code == 400, host
            assert repr(host) in response.json()["error"]
            assert "INFERNO_ALLOWED_HOSTS" in response.json()["error"]
        # DNS rebinding: the page's requests are same-origin for the browser, not for the api
        rebound = {"Host": "rebind.example:8851", "Origin": "http://rebind.example:8851"}
        write = await api.client.post("/api/v1/pipelines/1/stop", headers=rebound)
        assert write.status_code == 400
        served = (
            "localhost",
            "LOCALHOST:9999",
            "127.0.0.1:8851",
            "[::1]:8851",
            "inferno.lan:8851",
            "inferno.lan.",
            "ci.example",
            "[fd00::5]:443",
        )
        for host in served:
            response = await api.client.get("/api/v1/pipelines", headers={"Host": host})
            assert response.status_code == 200, (host, response.text)
        for probe in ("/healthz", "/dispatcher/health-check"):  # orchestrators probe by IP
            response = await api.client.get(probe, headers={"Host": "10.1.2.3:8851"})
            assert response.status_code == 200
    async with running_api(nc, names, allowed_hosts=("*",)) as anywhere:
        response = await anywhere.client.get("/api/v1/pipelines", headers={"Host": "x.example"})
        assert response.status_code == 200
    assert await cmd_count(js, names) == 0


async def test_options_and_405_name_every_method_of_the_path(api: Api):
    for path, allow in (
        ("/api/v1/experiments", "GET, OPTIONS, POST"),
        ("/api/v1/pipelines/1/stop", "OPTIONS, POST"),
        ("/dispatcher/operation-status/3", "GET, OPTIONS"),
    ):
        response = await api.client.options(path)
        assert (response.status_code, response.headers.get("allow")) == (204, allow), path
        assert response.content == b""
    unknown = await api.client.options("/no/such/route")
    assert (unknown.status_code, "error" in unknown.json()) == (404, True)
    wrong = await api.client.delete("/api/v1/experiments")
    assert (wrong.status_code, wrong.headers["allow"]) == (405, "GET, OPTIONS, POST")
    assert wrong.json() == {
        "error": "DELETE is not allowed on /api/v1/experiments; it allows GET, OPTIONS, POST"
    }


def test_allowed_hosts_and_body_limits_come_from_the_environment():
    assert (Settings().allowed_hosts, Settings().max_command_bytes) == ((), 1 << 20)
    assert Settings().max_upload_bytes == 256 << 20
    settings = Settings.from_env(
        {
            "INFERNO_ALLOWED_HOSTS": " Inferno.LAN. , ::1,*",
            "INFERNO_MAX_COMMAND_BYTES": "65536",
            "INFERNO_MAX_UPLOAD_BYTES": "1048576",
        }
    )
    assert settings.allowed_hosts == ("inferno.lan", "[::1]", "*")
    assert (settings.max_command_bytes, settings.max_upload_bytes) == (65536, 1 << 20)
    for var, raw in (
        ("INFERNO_ALLOWED_HOSTS", "https://x.example"),
        ("INFERNO_ALLOWED_HOSTS", "x.example:8851"),
        ("INFERNO_MAX_COMMAND_BYTES", "1e6"),
        ("INFERNO_MAX_UPLOAD_BYTES", "10"),
        ("INFERNO_API_HOST", "my host"),
    ):
        with pytest.raises(ConfigError, match=var):
            Settings.from_env({var: raw})


# 4. limits


def _huge_openai_pipeline(pad: int) -> dict[str, Any]:
    return {
        "pipeline_name": "huge",
        "pipeline_type": "openai",
        "model_config": {"model": "gpt-x"},
        "sampling_params": {"temperature": 0, "logit_bias_note": "x" * pad},
        "client_config": {"base_url": "http://127.0.0.1:9/v1", "api_key": "sk-secret-huge"},
    }


async def test_a_command_over_the_nats_max_payload_is_a_413_before_the_append(
    nc: NATS, js: JetStreamContext, names: Names
):
    body = experiment_body(pipelines=[_huge_openai_pipeline(2_000_000)])
    async with running_api(nc, names, max_command_bytes=8 << 20) as api:
        with structlog.testing.capture_logs() as logs:
            response = await api.client.post("/api/v1/experiments", json=body)
        assert response.status_code == 413, response.text
        assert f"max_payload {nc.max_payload} bytes" in response.json()["error"]
        assert errors_logged(logs) == []
        fits = experiment_body(pipelines=[_huge_openai_pipeline(nc.max_payload // 2)])
        assert (await api.client.post("/api/v1/experiments", json=fits)).status_code == 200
    assert await cmd_count(js, names) == 1
    secrets = await js.key_value(names.secrets_bucket)
    assert len(await secrets.keys()) == 1  # the refused command stored no secret either


async def _chunks(data: bytes, size: int = 16 << 10) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_request_bodies_are_bounded_while_they_are_read(
    nc: NATS, js: JetStreamContext, names: Names
):
    rows = [
        {"id": i, "question": f"what is {i} plus one?", "answer": str(i + 1)} for i in range(2000)
    ]
    body = json.dumps(experiment_body(dataset={"rows": rows})).encode()
    assert 64 << 10 < len(body) < 256 << 10
    as_json = {"Content-Type": "application/json"}
    async with running_api(
        nc, names, max_command_bytes=64 << 10, max_upload_bytes=256 << 10
    ) as api:
        with structlog.testing.capture_logs() as logs:
            declared = await api.client.post("/api/v1/experiments", content=body, headers=as_json)
            chunked = await api.client.post(
                "/api/v1/experiments", content=_chunks(body), headers=as_json
            )
            understated = await api.client.post(
                "/api/v1/experiments", content=body, headers={**as_json, "Content-Length": "100"}
            )
        for response in (declared, chunked, understated):
            assert response.status_code == 413, response.text
            assert response.json()["error"] == (
                "the request body is over the limit of 65536 bytes (INFERNO_MAX_COMMAND_BYTES);"
                " send datasets with POST /api/v1/datasets"
            )
        assert "transfer-encoding" not in declared.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        assert understated.request.headers["content-length"] == "100"
        assert errors_logged(logs) == []

        # the same rows as an upload fit, and the experiment names them by ref
        upload = await api.client.post("/api/v1/datasets", json={"rows": rows})
        assert upload.status_code == 200, upload.text
        by_ref = experiment_body(dataset={"ref": upload.json()["dataset_ref"]})
        assert (await api.client.post("/api/v1/experiments", json=by_ref)).status_code == 200

        jsonl = b"\n".join(json.dumps(row).encode() for row in rows * 4)
        assert len(jsonl) > 256 << 10
        for too_big in (
            {"files": {"file": ("rows.jsonl", jsonl)}},
            {"content": _chunks(jsonl), "headers": {"Content-Type": "application/x-ndjson"}},
        ):
            response = await api.client.post("/api/v1/datasets", **too_big)
            assert response.status_code == 413, response.text
            assert response.json()["error"] == (
                "the request body is over the limit of 262144 bytes (INFERNO_MAX_UPLOAD_BYTES)"
            )
    assert await cmd_count(js, names) == 1


async def test_a_command_body_over_the_default_limit_is_a_413(
    api: Api, js: JetStreamContext, names: Names
):
    body = experiment_body(pipelines=[_huge_openai_pipeline(2_000_000)])
    response = await api.client.post("/api/v1/experiments", json=body)
    assert response.status_code == 413
    assert "limit of 1048576 bytes (INFERNO_MAX_COMMAND_BYTES)" in response.json()["error"]
    assert await cmd_count(js, names) == 0


# 5. Idempotency-Key


async def test_an_idempotency_key_is_bound_to_its_whole_request(
    api: Api, scheduler: PlayScheduler, js: JetStreamContext, names: Names
):
    await created(api, scheduler)
    key = {"Idempotency-Key": "clone-1-t07"}
    first = await api.client.post(
        "/api/v1/pipelines/1/clone",
        json={"pipeline_name": "t07", "sampling_params": {"temperature": 0.7}},
        headers=key,
    )
    assert first.status_code == 200, first.text
    ic_id = first.json()["ic_id"]
    reordered = b'{"sampling_params": {"temperature": 0.7}, "pipeline_name": "t07"}'
    again = await api.client.post(
        "/api/v1/pipelines/1/clone",
        content=reordered,
        headers={**key, "Content-Type": "application/json"},
    )
    assert (again.status_code, again.json()["ic_id"]) == (200, ic_id)

    for path, body in (
        ("/api/v1/pipelines/1/clone", {"pipeline_name": "t07", "sampling_params": {"top_p": 1}}),
        ("/api/v1/pipelines/1/clone", {"pipeline_name": "t09"}),
        ("/api/v1/pipelines/2/clone", {"pipeline_name": "t07"}),
        ("/api/v1/pipelines/1/stop", None),
        ("/api/v1/experiments", experiment_body()),
    ):
        response = await api.client.post(path, json=body, headers=key)
        assert response.status_code == 409, (path, body, response.text)
        assert response.json()["error"] == (
            f"Idempotency-Key was already used for another request: ic_id {ic_id},"
            " clone of pipeline 1"
        )
    assert await cmd_count(js, names) == 2

    # decided, then retried: still the original; the same key with a changed body: still 409
    await scheduler.command(ic_id)
    retry = await api.client.post(
        "/api/v1/pipelines/1/clone",
        content=reordered,
        headers={**key, "Content-Type": "application/json"},
    )
    assert (retry.json()["ic_id"], retry.json()["status"]) == (ic_id, "completed")
    changed = await api.client.post("/api/v1/pipelines/1/clone", json={}, headers=key)
    assert changed.status_code == 409

    # a stop retried once it is refused answers the original, a resume under its key is a 409
    stop_key = {"Idempotency-Key": "stop-2"}
    stop = await api.client.post("/api/v1/pipelines/2/stop", headers=stop_key)
    await scheduler.command(stop.json()["ic_id"])
    repeated = await api.client.post("/api/v1/pipelines/2/stop", headers=stop_key)
    assert (repeated.status_code, repeated.json()["ic_id"]) == (200, stop.json()["ic_id"])
    resume = await api.client.post("/api/v1/pipelines/2/resume", headers=stop_key)
    assert resume.status_code == 409
    assert f"ic_id {stop.json()['ic_id']}, stop of pipeline 2" in resume.json()["error"]
    assert await cmd_count(js, names) == 3

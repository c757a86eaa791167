"""Acceptance (issue 4, Secrets): an API key given in a request reaches INFERNO_SECRETS and
nothing else — no stream message, KV entry, object, API response or log line of a real cluster.

Two keys are cloned in: `sk-test-<random>` (the shape the acceptance names) and one no log
masking pattern matches, so that finding neither proves the keys never got there, rather than
that a mask hid them. Those pipelines are `sim`, which ignores the key, but every shard still
resolves its spec's refs first (a ref that resolves to nothing fails the shard for good), so
pipelines that complete show the executor fetched the keys.

Credentials inside URLs (issue 7): two `openai` clones run against the OpenAI-compatible test
server on loopback, one with a base_url carrying userinfo and a secret query parameter, one with
a secret `default_headers.Authorization` (that server refuses any other bearer token). They
complete, and the servers saw the credentials; the same scan finds them nowhere but in the
secrets bucket.
"""

from __future__ import annotations

import asyncio
import base64
import io
import secrets
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from bench import openai_server as fake
from inferno.client.launcher import LocalCluster
from inferno.events.names import Names
from tests.results import stored_objects

ROWS = [{"id": i, "question": f"{i}+1?", "answer": str(i + 1)} for i in range(12)]
SIM = {"model": "sim-a", "accuracy": 0.7}
FAST_RETRIES = {"backoff_s": 0.02, "backoff_max_s": 0.1}


@pytest.fixture
def endpoints() -> Iterator[tuple[Any, Any]]:
    """Two OpenAI-compatible servers: one open, one that wants a bearer token (set later)."""
    with fake.OpenAIServer() as open_server, fake.OpenAIServer() as token_server:
        yield open_server, token_server


def random_text(n: int) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(n))


class Wiretap:
    """Every message published on the namespace's subjects, KV buckets and object stores while
    the test runs (work orders included, which the WORK stream deletes once acked)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def record(self, msg: Msg) -> None:
        self.messages.append((msg.subject, f"{msg.headers}".encode() + msg.data))


async def stored_messages(js: JetStreamContext, stream: str) -> bytes:
    info = await js.stream_info(stream)
    blob = bytearray()
    if info.state.messages == 0:
        return b""
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            msg = await js.get_msg(stream, seq)
        except nats.js.errors.NotFoundError:  # deleted (acked work, replaced KV values)
            continue
        blob += f"{msg.subject} {msg.headers}\n".encode() + (msg.data or b"") + b"\n"
    return bytes(blob)


async def read_history(http: httpx.AsyncClient, api_url: str, ids: list[int]) -> dict[str, Any]:
    """The whole history three ways, for the scan: every page of the events API (the response
    hook keeps them), the SSE stream from the start (under "sse"), and the CLI's `events` and
    `history` (by their arguments)."""
    after, count = None, 0
    while True:
        params = {"stream": "cmd,evt,exec", "limit": 500, **({"after": after} if after else {})}
        page = (await http.get("/api/v1/events", params=params)).json()
        count += sum(1 for e in page["entries"] if e["stream"].endswith(("_CMD", "_EVT")))
        after = page["cursor"]
        if not page["more"]:
            break
    assert count > 20  # the run's commands and events: something to scan
    streamed, seen = [], 0
    async with httpx.AsyncClient(base_url=api_url, timeout=60, trust_env=False) as raw:
        params = {"since": "0", "heartbeat": 1}
        async with raw.stream("GET", "/api/v1/events/stream", params=params) as response:
            async for chunk in response.aiter_bytes():
                streamed.append(chunk)
                seen += chunk.count(b"\ndata: ")
                if seen >= count:
                    break
    runs = [["events", "--json", "--stream", "exec", "--stream", "cmd", "--stream", "evt"]]
    runs += [["events"]] + [["history", str(pid)] for pid in ids]
    found: dict[str, Any] = {"sse": [b"".join(streamed)]}
    for args in runs:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(Path(sys.executable).parent / "inferno"), "--api", api_url, *args],
            capture_output=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        found[" ".join(args)] = done.stdout + done.stderr
    assert b"pipeline_created" in found["events"]
    return found


async def wait_completed(http: httpx.AsyncClient, ids: list[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        statuses = {
            p["pipeline_id"]: p["status"] for p in (await http.get("/api/v1/pipelines")).json()
        }
        if all(statuses.get(i) in ("completed", "failed") for i in ids):
            assert all(statuses[i] == "completed" for i in ids), statuses
            return
        assert time.monotonic() < deadline, f"pipelines not completed in time: {statuses}"
        await asyncio.sleep(0.2)


async def test_an_api_key_appears_nowhere_but_in_the_secrets_bucket(
    tmp_path: Path,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
    endpoints: tuple[Any, Any],
):
    monkeypatch.setenv("INFERNO_LOG_LEVEL", "debug")  # the most a process ever logs
    monkeypatch.setenv("INFERNO_SNAPSHOT_EVERY_EVENTS", "1")  # snapshots are scanned too
    sk_key = "sk-test-" + random_text(24)
    plain_key = "e2e-plain-" + random_text(24)  # matches no masking pattern
    url_password, url_key, header_key = (f"e2e-{random_text(24)}" for _ in range(3))
    keys = [k.encode() for k in (sk_key, plain_key, url_password, url_key, header_key)]
    open_server, token_server = endpoints
    token_server.api_key = header_key
    keyed_url = (
        f"http://svc:{url_password}@127.0.0.1:{open_server.port}/v1"
        f"?api-version=2024-06-01&api-key={url_key}"
    )
    names = Names(namespace)
    out = io.StringIO()
    log_dir = tmp_path / "logs"
    cluster = LocalCluster(
        tmp_path / "data", executors=1, namespace=namespace, log_dir=log_dir, out=out
    )
    await asyncio.to_thread(cluster.start)
    responses: list[bytes] = []

    async def keep(response: httpx.Response) -> None:
        responses.append(await response.aread())

    nc = None
    try:
        nc = await nats.connect(cluster.nats_url)
        js = nc.jetstream()
        tap = Wiretap()
        for subject in (f"{namespace}.>", "$KV.>", "$O.>"):
            await nc.subscribe(subject, cb=tap.record)
        async with httpx.AsyncClient(
            base_url=cluster.api_url, timeout=30, event_hooks={"response": [keep]}
        ) as http:
            created = await http.post(
                "/api/v1/experiments?wait=10",
                json={
                    "experiment_name": "secrets",
                    "num_shards": 3,
                    "dataset": {"rows": ROWS},
                    "eval": {
                        "prompt": "Q: {question}",
                        "scorers": [{"name": "exact_match", "target": "answer"}],
                    },
                    "pipelines": [
                        {"pipeline_name": "base", "pipeline_type": "sim", "model_config": SIM}
                    ],
                },
            )
            assert created.json()["status"] == "completed", created.text
            [base] = created.json()["result"]["pipeline_ids"]
            clone = await http.post(
                f"/api/v1/pipelines/{base}/clone?wait=10",
                json={"pipeline_name": "keyed", "client_config": {"api_key": sk_key}},
            )
            assert clone.json()["status"] == "completed", clone.text
            keyed = clone.json()["result"]["pipeline_id"]
            context_id = created.json()["context_id"]
            into = await http.post(
                "/dispatcher/clone-pipeline?wait=10",
                json={
                    "context_id": context_id,
                    "pipeline_name": "keyed-too",
                    "pipeline_type": "sim",
                    "model_config": SIM,
                    "client_config": {"api_key": plain_key, "base_url": "http://unused"},
                },
            )
            assert into.json()["status"] == "completed", into.text
            ops = (await http.get("/dispatcher/all-operations")).json()
            keyed_too = ops[-1]["result"]["pipeline_id"]
            openai_ids = []
            for name, client_config in [
                ("url-keyed", {"base_url": keyed_url, **FAST_RETRIES}),
                (
                    "header-keyed",
                    {
                        "base_url": token_server.base_url,
                        "default_headers": {"Authorization": f"Bearer {header_key}"},
                        **FAST_RETRIES,
                    },
                ),
            ]:
                cloned = await http.post(
                    f"/api/v1/pipelines/{base}/clone?wait=10",
                    json={
                        "pipeline_name": name,
                        "pipeline_type": "openai",
                        "model_config": {"model": "m"},
                        "client_config": client_config,
                    },
                )
                assert cloned.json()["status"] == "completed", cloned.text
                openai_ids.append(cloned.json()["result"]["pipeline_id"])
            ops = (await http.get("/dispatcher/all-operations")).json()
            ids = [base, keyed, keyed_too, *openai_ids]

            await wait_completed(http, ids, timeout=90)
            shown_url = (await http.get(f"/api/v1/pipelines/{openai_ids[0]}")).json()[
                "client_config"
            ]["base_url"]
            assert shown_url.startswith("http://{{sec-")  # a placeholder, not a mask
            for pid in ids:
                pipeline = (await http.get(f"/api/v1/pipelines/{pid}")).json()
                assert pipeline["shards_completed"] == 3
                if pid in (keyed, keyed_too):
                    assert pipeline["client_config"]["api_key_ref"].startswith("sec-")
                exported = await http.get(f"/api/v1/pipelines/{pid}/results")
                assert exported.status_code == 200, exported.text
                assert len(exported.text.splitlines()) == len(ROWS)  # every row, scanned below
                assert "client_config" not in exported.text  # rows never carry the config
            experiment_id = created.json()["experiment_id"]
            for path in (
                "/api/v1/experiments",
                f"/api/v1/experiments/{experiment_id}",
                f"/api/v1/experiments/{experiment_id}/leaderboard",
                "/api/v1/pipelines",
                "/api/v1/operations",
                "/api/v1/executors",
                *(f"/dispatcher/operation-status/{op['ic_id']}" for op in ops),
            ):
                assert (await http.get(path)).status_code == 200, path
            history = await read_history(http, cluster.api_url, ids)
            responses += history.pop("sse")
            cli_output = history

        # everything stored in the namespace: streams, KV buckets and object stores
        secrets_stream = f"KV_{names.secrets_bucket}"
        streams = [s.config.name for s in await js.streams_info()]
        assert {names.cmd_stream, names.evt_stream, names.exec_stream, names.work_stream} <= set(
            streams
        )
        assert secrets_stream in streams
        stored = {s: await stored_messages(js, s) for s in streams}
        # snapshots were taken (their chunks are in the OBJ_ stream scanned above)
        snapshots = await (await js.object_store(names.snapshots_store)).list(ignore_deletes=True)
        assert {info.name.split("@")[0] for info in snapshots} == {"decision", "readmodel"}
        for store_name in (names.data_store, names.results_store):
            store = await js.object_store(store_name)
            for info in await stored_objects(js, store_name):
                stored[f"{store_name}/{info.name}"] = (await store.get(info.name)).data or b""
        inline = stored[names.exec_stream].count(b'"results":[')  # in the finishing reports
        objects = await stored_objects(js, names.results_store)
        assert inline + len(objects) == 15  # 5 pipelines x 3 shards, all scanned
        kv = await js.key_value(names.secrets_bucket)
        try:
            refs = await kv.keys()
        except nats.js.errors.NoKeysError:
            refs = []
        kept = [msgspec.json.decode((await kv.get(ref)).value) for ref in refs]
        await nc.drain()  # every tapped message handled
    finally:
        if nc is not None and not nc.is_closed:
            await nc.close()
        await asyncio.to_thread(cluster.stop)

    logs = {path: path.read_bytes() for path in log_dir.iterdir()}
    logs[cluster.nats.log_file] = cluster.nats.log_file.read_bytes()
    logs[Path("launcher output")] = out.getvalue().encode()
    logs.update({Path(f"inferno {args}"): text for args, text in cli_output.items()})
    assert logs[log_dir / "exec-1.log"], "the executor logged nothing: the scan would be empty"

    # the keys are nowhere but in the secrets bucket
    tapped = [(s, d) for s, d in tap.messages if not s.startswith(f"$KV.{names.secrets_bucket}.")]
    assert any(s.startswith(f"{namespace}.work.") for s, _ in tapped)  # work orders were seen
    for key in keys:
        for name, blob in stored.items():
            assert name == secrets_stream or key not in blob, f"key found in {name}"
        for subject, data in tapped:
            assert key not in data, f"key found in a message on {subject}"
        for i, body in enumerate(responses):
            assert key not in body, f"key found in api response {i}"
        for path, text in logs.items():
            assert key not in text, f"key found in {path}"

    # the endpoints got the credentials: the userinfo as Basic auth, the query, the header
    basic = base64.b64encode(f"svc:{url_password}".encode()).decode()
    assert open_server.last_headers["authorization"] == f"Basic {basic}"
    assert parse_qs(open_server.last_query) == {
        "api-version": ["2024-06-01"],
        "api-key": [url_key],
    }
    assert open_server.stats().answered["chat"] == len(ROWS)
    assert token_server.stats().answered["chat"] == len(ROWS)
    assert token_server.stats().unauthorized == 0

    # and they ARE there: the scan looked in the right place
    given = [sk_key, plain_key, f"svc:{url_password}", url_key, f"Bearer {header_key}"]
    assert sorted(kept) == sorted(given)
    assert all(key in stored[secrets_stream] for key in keys)
    assert len(tapped) < len(tap.messages)  # the tap saw the puts into the secrets bucket

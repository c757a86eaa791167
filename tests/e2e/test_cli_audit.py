"""Who and why, end to end (issue 8 §2): `inferno stop N --reason ...` on a real local cluster,
then `inferno ops` shows the OS user@host and the reason, and the request's trace id is in the
operation, on the api's log line and on the scheduler's "command decided" line.

The cluster runs without a token, as `inferno up` does by default: the actor is what the CLI
says (docs/security.md), and its services log JSON so the test can read their lines.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferno.client.launcher import read_state
from inferno.client.sdk import default_actor
from tests.e2e.test_cli import inferno, ok, slow_arith
from tests.waiting import until_blocking


@pytest.fixture
def cluster(tmp_path: Path, namespace: str) -> Iterator[dict[str, str]]:
    """Environment for `inferno` commands on a detached cluster without a token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env["INFERNO_DATA_DIR"] = str(tmp_path / "data")
    env["INFERNO_LOG_FORMAT"] = "json"
    try:
        ports = ("--api-port", "0", "--nats-port", "0")
        ok(env, "up", "--detach", "--executors", "1", *ports, "--namespace", namespace)
        yield env
    finally:
        inferno(env, "down")


def json_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = (line for line in path.read_text(errors="replace").splitlines())
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_stop_with_a_reason_shows_who_and_why(cluster: dict[str, str], tmp_path: Path) -> None:
    env = cluster
    ok(env, "run", str(slow_arith(tmp_path)), "--wait", "10", "--reason", "nightly eval")
    out = ok(env, "stop", "1", "--reason", "diverging after shard 2")
    assert out.startswith("stop pipeline 1: ic_id ")

    actor = default_actor()
    assert actor  # this process's user@host: the CLI ran as the same user on the same host
    rows = ok(env, "ops").strip().splitlines()
    assert rows[0].split() == [
        "IC_ID",
        "OPERATION",
        "PIPELINE",
        "STATUS",
        "TOOK_MS",
        "CREATED",
        "ACTOR",
        "REASON",
        "RESULT",
    ]
    [created] = [row for row in rows if " create_experiment " in row]
    [stop] = [row for row in rows if " stop " in row]
    assert f"  {actor}  nightly eval" in created
    assert f"  {actor}  diverging after shard 2" in stop

    state = read_state(Path(env["INFERNO_DATA_DIR"]))
    assert state is not None
    with httpx.Client(base_url=state["api_url"], trust_env=False) as http:
        ops = http.get("/api/v1/operations").json()
    [op] = [o for o in ops if o["operation"] == "stop"]
    assert (op["actor"], op["reason"], op["status"]) == (
        actor,
        "diverging after shard 2",
        "completed",
    )
    trace_id = op["trace_id"]
    assert len(trace_id) == 32

    logs = Path(state["logs"])
    [received] = [line for line in json_lines(logs / "api.log") if line.get("trace_id") == trace_id]
    assert (received["event"], received["actor"]) == ("command received", actor)

    def decided() -> list[dict[str, Any]]:
        lines = json_lines(logs / "scheduler.log")
        return [line for line in lines if line.get("event") == "command decided"]

    [line] = until_blocking(
        lambda: [d for d in decided() if d.get("trace_id") == trace_id] or None,
        "the scheduler's line for the stop",
    )
    assert (line["actor"], line["reason"], line["ic_id"]) == (actor, op["reason"], op["ic_id"])
    assert line["outcome"] == "completed"

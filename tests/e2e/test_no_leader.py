"""With no scheduler left, a live cluster says so (issue 7, item 7): `/readyz` answers 503 naming
the lease, `inferno stop` says its operation is pending because no scheduler leads and exits
non-zero, `inferno ps` warns that its RUNNING counts are not live. Starting a scheduler again
makes the cluster ready, and the operation issued meanwhile is decided.

Every scheduler of the cluster is killed with SIGKILL, so nothing releases the lease: it lapses
with its TTL (2 s here) and nats-server's delete marker reaches the api's watch.
"""

from __future__ import annotations

import asyncio
import io
import re
from typing import TYPE_CHECKING, Any

import pytest

from inferno.client import cli

if TYPE_CHECKING:
    from conftest import Live

pytestmark = pytest.mark.slow

SCHEDULERS = ("scheduler-1", "scheduler-2")


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_LEASE_TTL_S": "2"}


async def readiness(live: Live, status: int) -> dict[str, Any]:
    async def answers() -> dict[str, Any] | None:
        response = await live.http.get("/readyz")
        return response.json() if response.status_code == status else None

    return await live.until(answers, f"/readyz to answer {status}", timeout=60)


async def inferno(*argv: str) -> tuple[int, str]:
    """`inferno ARGV` against nothing but the api's URL: (exit code, stdout)."""
    out = io.StringIO()
    code = await asyncio.to_thread(cli.main, list(argv), out)
    return code, out.getvalue()


async def test_no_scheduler_means_not_ready_and_the_cli_says_why(
    live: Live, capsys: pytest.CaptureFixture[str]
) -> None:
    created = await live.create_experiment(live.experiment_body(live.sim("slow", latency_ms=150)))
    [pid] = [p["pipeline_id"] for p in created["pipelines"]]
    await live.running(pid)
    ready = await readiness(live, 200)
    assert ready["checks"]["leader"]["ok"], ready
    leader = await live.leader()
    for name in SCHEDULERS:
        process = live.child(name).process
        assert process is not None
        process.kill()
        await asyncio.to_thread(process.wait)

    lapsed = await readiness(live, 503)
    assert lapsed["failed"] == ["leader"], lapsed
    bucket = live.names.leader_bucket
    assert lapsed["error"].startswith(f"no scheduler holds the lease in {bucket}"), lapsed
    assert f"(last leader {leader}, lapsed" in lapsed["error"], lapsed

    api = ["--api", live.cluster.api_url]
    capsys.readouterr()
    code, _ = await inferno(*api, "stop", str(pid), "--wait", "2")
    said = capsys.readouterr().err
    assert code == 1, said
    found = re.search(r"ic_id (\d+) is pending: no scheduler holds the lease in ", said)
    assert found, said
    assert f"(last leader {leader}, lapsed" in said, said
    assert "is the scheduler running?" in said, said

    code, table = await inferno(*api, "ps")
    warned = capsys.readouterr().err
    assert code == 0, warned
    assert str(pid) in table
    assert "inferno: warning: no scheduler holds the lease" in warned, warned
    assert "RUNNING" in warned, warned

    watched = io.StringIO()  # `inferno watch` says why nothing moves, and ends once it does
    watching = asyncio.create_task(
        asyncio.to_thread(cli.main, [*api, "watch", "--interval", "0.2"], watched)
    )

    async def warned_while_watching() -> bool:
        return "warning: no scheduler holds the lease" in watched.getvalue()

    await live.until(warned_while_watching, "watch to warn", timeout=30)
    live.restart(live.child(SCHEDULERS[0]))
    healed = await readiness(live, 200)
    assert healed["checks"]["leader"]["detail"].startswith(f"{SCHEDULERS[0]} holds the lease")
    stop = await live.operation(int(found.group(1)), timeout=30)  # decided once one leads
    assert stop["status"] == "completed", stop
    assert await asyncio.wait_for(watching, 60) == 0  # the stopped pipeline drained
    code, _ = await inferno(*api, "ps")
    assert code == 0
    assert "warning" not in capsys.readouterr().err

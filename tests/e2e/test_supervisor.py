"""`inferno up` supervises its cluster: a process that dies is reported and started again with
backoff, the rest keeps running meanwhile, and a launcher killed with its whole cluster leaves
nothing that stops the next `up` on the same ports.

The clusters are the real thing (`inferno up --detach` in a temp data dir on fixed free ports);
the tests kill processes by the pids in up.json, as a crash would, and read the supervisor's
report in `logs/up.log`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from inferno.client.embedded import free_port
from inferno.client.launcher import LocalCluster, is_running, read_state
from inferno.client.restarts import Backoff
from inferno.events import Names, decode_event, fold
from inferno.events.batches import expanded
from inferno.events.events import ShardCompleted
from inferno.jetstream import connect, replay
from tests.waiting import until_blocking

pytestmark = pytest.mark.slow

T = TypeVar("T")
INFERNO = Path(sys.executable).parent / "inferno"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ROWS = [json.loads(line) for line in (EXAMPLES / "arith.jsonl").read_text().splitlines() if line]


@dataclass
class Up:
    """A detached cluster started by `inferno up` from `data_dir` on fixed ports."""

    data_dir: Path
    env: dict[str, str]
    api_port: int
    nats_port: int

    def inferno(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(INFERNO), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def up(self) -> str:
        started = time.monotonic()
        result = self.inferno(
            "up",
            "--detach",
            "--executors",
            "2",
            "--api-port",
            str(self.api_port),
            "--nats-port",
            str(self.nats_port),
        )
        assert result.returncode == 0, f"inferno up:\n{result.stdout}\n{result.stderr}"
        print(f"up --detach took {time.monotonic() - started:.1f}s")
        return result.stdout

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def pids(self) -> dict[str, int]:
        """name -> pid from up.json, the supervisor as "up"."""
        state = read_state(self.data_dir) or {}
        return {"up": state["pid"], **{n: c["pid"] for n, c in state["children"].items()}}

    def report(self) -> str:
        """What the supervisor wrote."""
        return (self.data_dir / "logs" / "up.log").read_text()

    def restarted(self, name: str, old_pid: int) -> int:
        """The pid of `name` once up.json records a new, live one."""

        def new_pid() -> int | None:
            pid = self.pids().get(name)
            return pid if pid not in (None, old_pid) and is_running(pid) else None

        return until_blocking(new_pid, f"{name} to be started again")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env["INFERNO_DATA_DIR"] = str(tmp_path / "data")
    cluster = Up(tmp_path / "data", env, free_port(), free_port())
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.inferno("down")


def get(http: httpx.Client, path: str) -> Any:
    """The JSON of a 200 answer, or None while the api (or its nats) is not there."""
    try:
        response = http.get(path)
    except httpx.TransportError:
        return None
    return response.json() if response.status_code == 200 else None


def experiment(latency_ms: float) -> dict[str, Any]:
    """examples/arith.yaml's three sim pipelines with the rows inline; 12-row shards."""

    def sim(name: str) -> dict[str, Any]:
        return {
            "pipeline_name": name,
            "pipeline_type": "sim",
            "model_config": {"model": f"sim-{name}", "latency_ms_per_row": latency_ms},
            "sampling_params": {"temperature": 0, "max_tokens": 16},
        }

    return {
        "experiment_name": "arith",
        "num_shards": 8,
        "dataset": {"rows": ROWS},
        "eval": {
            "prompt": "Q: {question}\nA:",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [sim("small"), sim("medium"), sim("large")],
    }


def shard_completions(nats_url: str) -> tuple[Counter[tuple[int, int]], Any]:
    """How often INFERNO_EVT completed each (pipeline, shard), and the state it folds to."""

    async def read() -> list[Any]:
        nc = await connect(nats_url, name="e2e-supervisor")
        try:
            events: list[Any] = []
            await replay(
                nc.jetstream(),
                Names("inferno").evt_stream,
                lambda data, _seq: events.extend(expanded(decode_event(data))),
            )
            return events
        finally:
            await nc.close()

    events = asyncio.run(read())
    completed = Counter((e.pipeline_id, e.shard) for e in events if isinstance(e, ShardCompleted))
    return completed, fold(events)


def test_a_killed_api_comes_back_and_serves_and_down_stops_everything(up: Up) -> None:
    before = up.pids()
    os.kill(before["api"], signal.SIGKILL)
    new_api = up.restarted("api", before["api"])
    with httpx.Client(base_url=up.api_url, timeout=10.0, trust_env=False) as http:
        until_blocking(lambda: get(http, "/readyz"), "the new api to be ready")
        assert get(http, "/api/v1/pipelines") == []
    assert "api was killed by SIGKILL after" in up.report()
    assert "restarting it in 1s" in up.report()
    after = up.pids()
    assert after == {**before, "api": new_api}  # nothing else was touched

    down = up.inferno("down")
    assert down.returncode == 0, down.stderr
    assert not [name for name, pid in after.items() if is_running(pid)]
    assert read_state(up.data_dir) is None


def test_a_killed_nats_server_comes_back_and_the_running_experiment_completes(up: Up) -> None:
    with httpx.Client(base_url=up.api_url, timeout=30.0, trust_env=False) as http:
        response = http.post("/api/v1/experiments", params={"wait": 30}, json=experiment(80))
        assert response.status_code == 200, response.text
        ids = [p["pipeline_id"] for p in response.json()["pipelines"]]

        def shards_done() -> int:
            pipelines = get(http, "/api/v1/pipelines") or []
            return sum(p["shards_completed"] for p in pipelines)

        until_blocking(lambda: shards_done() >= 2, "2 shards completed")
        nats = up.pids()["nats"]
        os.kill(nats, signal.SIGKILL)
        assert shards_done() < 24  # mid-run (or the api cannot even tell while nats is down)
        up.restarted("nats", nats)

        def all_completed() -> bool:
            pipelines = [get(http, f"/api/v1/pipelines/{pid}") for pid in ids]
            return all(p and p["status"] == "completed" for p in pipelines)

        until_blocking(all_completed, "every pipeline to complete after the restart", timeout=180)

    completed, state = shard_completions(f"nats://127.0.0.1:{up.nats_port}")
    assert completed == Counter({(pid, shard): 1 for pid in ids for shard in range(8)})
    assert [state.pipelines[pid].status for pid in ids] == ["completed"] * 3
    assert "nats was killed by SIGKILL after" in up.report()


def test_up_again_at_once_after_the_whole_cluster_was_killed(up: Up) -> None:
    with httpx.Client(base_url=up.api_url, timeout=10.0, trust_env=False) as http:
        ready = get(http, "/readyz")  # a kept-alive connection: the killed api closes it first
        term = ready["checks"]["leader"]["term"]
        pids = up.pids()
        for name in ("nats", "api", "up", *pids):  # as a power cut or OOM kill would
            if is_running(pids[name]):
                os.kill(pids[name], signal.SIGKILL)
        until_blocking(lambda: not any(is_running(pid) for pid in pids.values()), "the kills")
    assert read_state(up.data_dir) is not None  # stale: nobody removed it

    started, began = time.monotonic(), time.time()
    out = up.up()  # same ports, their connections still in TIME_WAIT
    assert "inferno is up" in out
    print(f"up again after the crash in {time.monotonic() - started:.1f}s")
    assert up.pids()["up"] != pids["up"]
    with httpx.Client(base_url=up.api_url, timeout=10.0, trust_env=False) as http:
        # the killed scheduler's lease stays in the LEADER bucket until its TTL runs out: `up`
        # waits for a term begun since it started, so ready now means ready on the new one
        ready = get(http, "/readyz")
    assert ready is not None
    leader = ready["checks"]["leader"]
    assert leader["term"] > term
    assert leader["since"] >= began


def bound(sock: socket.socket, port: int) -> bool:
    """Whether `sock` could bind `port` (a socket of the killed server may linger an instant)."""
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_a_nats_server_that_crashes_at_once_is_given_up_and_the_cluster_stops(up: Up) -> None:
    pids = up.pids()
    blocker = socket.socket()  # takes nats's port the moment it is free: every restart fails
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        os.kill(pids["up"], signal.SIGSTOP)  # so it cannot restart nats before the port is taken
        try:
            os.kill(pids["nats"], signal.SIGKILL)
            until_blocking(lambda: not is_running(pids["nats"]), "nats to die")
            until_blocking(lambda: bound(blocker, up.nats_port), "nats's port to be free")
            blocker.listen()
        finally:
            os.kill(pids["up"], signal.SIGCONT)
        until_blocking(lambda: not is_running(pids["up"]), "the supervisor to give up", timeout=180)
    finally:
        blocker.close()
    report = up.report()
    print(report)
    assert "nats was killed by SIGKILL after" in report
    assert "nats exited with code 1 after" in report
    for delay in ("1s", "2s", "4s", "8s"):
        assert f"restarting it in {delay}" in report
    assert "6 crashes in a row, each within 10s of starting: giving up on it" in report
    assert "nothing works without it, so the cluster stops" in report
    assert "address already in use" in report  # nats-server's own last lines say why
    assert not [name for name, pid in pids.items() if is_running(pid)]
    assert read_state(up.data_dir) is None


def test_an_executor_that_crashes_at_once_is_given_up_and_the_rest_keeps_running(
    tmp_path: Path,
) -> None:
    cluster = LocalCluster(
        tmp_path / "data",
        executors=1,
        log_dir=tmp_path / "logs",
        backoff=Backoff(first_s=0.2, cap_s=0.4, quick_s=3600.0, give_up_after=3),
    )
    with cluster:
        executor = next(c for c in cluster.children if c.name == "exec-1")
        executor.env["INFERNO_HEARTBEAT_TTL_S"] = "abc"  # its next start fails on its config
        assert executor.process is not None
        executor.process.kill()
        messages: list[str] = []

        def gave_up() -> bool:
            messages.extend(cluster.supervise())  # the thread that started it, as serve() does
            return any("giving up" in m for m in messages)

        until_blocking(gave_up, "the launcher to give up on exec-1")
        print("\n".join(messages))
        assert messages[0].startswith("exec-1 was killed by SIGKILL after")
        assert messages[0].endswith("restarting it in 0.2s")
        assert "exec-1 exited with code 2 after" in messages[2]
        assert messages[2].endswith("restarting it in 0.4s")
        assert "3 crashes in a row" in messages[-1]
        assert "the rest keeps running" in messages[-1]
        assert "INFERNO_HEARTBEAT_TTL_S" in messages[-1]  # the executor's own last lines
        assert cluster.nats.running
        assert all(c.alive for c in cluster.children if c.name != "exec-1")
        assert cluster.supervise() == []  # given up: no more restarts

"""Fixtures for the end-to-end tests: a real cluster started the way people start one.

`LocalCluster` runs nats-server, the api, two schedulers (a leader and a standby) and two
executors, each a separate `python -m inferno.<service>` process with its log in `<tmp>/logs`.
Tests drive it over HTTP (`Live.http`, loopback, no proxies) and judge the outcome from the log
itself: `Live.events()` replays INFERNO_EVT from sequence 1 and `Live.state()` folds it with the
same `evolve` every service uses.

A module may override `cluster_env` (module scope) to start its clusters with more environment,
e.g. a bearer token or a short heartbeat TTL; LocalCluster copies `os.environ` into every child.

`r3_cluster` / `r3_live` run the same services on the 3-node JetStream cluster of tests/conftest.py
(`nats_cluster`) with R3 streams, for chaos tests that kill nodes as well as services.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bench.openai_server import OpenAIServer
from inferno.api import views
from inferno.client.cli import main as cli_main
from inferno.client.embedded import wait_for_meta_leader
from inferno.client.launcher import Child, LocalCluster
from inferno.events import (
    Names,
    State,
    decode_command,
    decode_event,
    decode_report,
    fold,
)
from inferno.events.batches import expanded, members
from inferno.events.commands import AnyCommand, AnyReport
from inferno.events.events import AnyEvent, ShardCompleted
from inferno.jetstream import connect, replay
from inferno.readmodels import ReadModel, apply_command, apply_event
from tests.results import stored_objects
from tests.waiting import until

T = TypeVar("T")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ARITH_ROWS: list[dict[str, Any]] = [
    json.loads(line) for line in (EXAMPLES / "arith.jsonl").read_text().splitlines() if line
]
"""The example's 96 rows: 8 shards of 12 rows, so `latency_ms_per_row` 30 makes ~0.4 s shards."""

SETTLED = frozenset({"completed", "stopped", "deleted", "failed"})


# the cluster


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    """Extra environment for every process of the module's clusters (override per module)."""
    return {}


class ClusterNats:
    """The 3-node cluster of tests/conftest.py (`nats_cluster`) in the place of LocalCluster's own
    nats-server. That session fixture owns the nodes: `start` only waits for a meta leader and
    `stop` leaves them running; a test that kills a node brings it back itself."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster  # tests/conftest.py's LocalCluster: .nodes, .kill(i), .restart(i)
        self.log_file = cluster.nodes[0].log_file

    @property
    def url(self) -> str:
        return ",".join(self.cluster.urls)

    @property
    def running(self) -> bool:
        """A quorum of nodes runs, so the cluster serves (chaos tests take one node down)."""
        nodes = self.cluster.nodes
        return 2 * sum(node.running for node in nodes) > len(nodes)

    def start(self) -> None:
        wait_for_meta_leader(self.cluster.nodes)

    def stop(self) -> None:
        """Nothing: the nodes serve the rest of the session."""

    def log_tail(self) -> str:
        return "\n".join(f"--- {node!r}\n{node.log_tail(1500)}" for node in self.cluster.nodes)


@contextmanager
def local_cluster(
    root: Path,
    env: Mapping[str, str],
    mp: pytest.MonkeyPatch,
    *,
    namespace: str = "inferno",
    nats: ClusterNats | None = None,
) -> Iterator[LocalCluster]:
    for key, value in env.items():
        mp.setenv(key, value)  # LocalCluster copies os.environ into each child
    cluster = LocalCluster(
        root / "data", executors=2, schedulers=2, log_dir=root / "logs", namespace=namespace
    )
    if nats is not None:  # the children were given the embedded server's URL: point them on
        cluster.nats = nats  # type: ignore[assignment]
        for child in cluster.children:
            child.env["NATS_URL"] = nats.url
    print(f"cluster logs: {root / 'logs'}")  # shown with a failure's captured output
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(
    tmp_path: Path, cluster_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalCluster]:
    """A fresh cluster for one test (tests that kill its processes)."""
    with local_cluster(tmp_path, cluster_env, monkeypatch) as started:
        yield started


@pytest.fixture(scope="module")
def module_cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str]
) -> Iterator[LocalCluster]:
    """One cluster for a whole module; its tests each run their own experiment on it."""
    with (
        pytest.MonkeyPatch.context() as mp,
        local_cluster(tmp_path_factory.mktemp("cluster"), cluster_env, mp) as started,
    ):
        yield started


@pytest.fixture(scope="module")
def r3_cluster(
    nats_cluster: Any, tmp_path_factory: pytest.TempPathFactory, cluster_env: dict[str, str]
) -> Iterator[LocalCluster]:
    """The services of `module_cluster` on the 3-node JetStream cluster, every stream, bucket and
    store R3, in a namespace of their own (the nodes serve the whole session)."""
    env = {**cluster_env, "INFERNO_REPLICAS": "3"}
    with (
        pytest.MonkeyPatch.context() as mp,
        local_cluster(
            tmp_path_factory.mktemp("r3"),
            env,
            mp,
            namespace=f"c{uuid.uuid4().hex[:8]}",
            nats=ClusterNats(nats_cluster),
        ) as started,
    ):
        yield started


@pytest.fixture(scope="module")
def openai_server() -> Iterator[Any]:
    """The OpenAI-compatible test server (bench/openai_server.py) on loopback, for `openai`
    pipelines: it answers "A + B" prompts with the sum and wants the bearer key `api_key`."""
    with OpenAIServer(api_key="sk-e2e-" + uuid.uuid4().hex) as server:
        yield server


# talking to it


@dataclass
class Live:
    """A started cluster with an HTTP client for its api and a NATS connection to its log."""

    cluster: LocalCluster
    names: Names
    nc: NATS
    js: JetStreamContext
    http: httpx.AsyncClient

    # building requests and judging the log (tests cannot import conftest: importlib mode)

    @staticmethod
    def sim(
        name: str, *, latency_ms: float = 30.0, accuracy: float = 0.8, model: str | None = None
    ) -> dict[str, Any]:
        """A `sim` pipeline as in examples/arith.yaml; a 12-row shard lasts 12 × `latency_ms`."""
        return {
            "pipeline_name": name,
            "pipeline_type": "sim",
            "model_config": {
                "model": model or f"sim-{name}",
                "accuracy": accuracy,
                "latency_ms_per_row": latency_ms,
                "tokens_per_row": 6,
            },
            "sampling_params": {"temperature": 0, "max_tokens": 16},
        }

    @staticmethod
    def openai(server: Any, *, client: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
        """An `openai` pipeline against the test server (bench/openai_server.py), which answers
        "A + B" prompts with the sum; `client` adds client_config keys, `spec` overrides keys."""
        return {
            "pipeline_name": "gpt",
            "pipeline_type": "openai",
            "model_config": {"model": "sum-echo"},
            "client_config": {
                "base_url": server.base_url,
                "api_key": server.api_key,
                **(client or {}),
            },
            "sampling_params": {"temperature": 0, "max_tokens": 16},
            **spec,
        }

    @staticmethod
    def experiment_body(
        *pipelines: dict[str, Any], name: str = "arith", num_shards: int = 8, **extra: Any
    ) -> dict[str, Any]:
        """The body of `POST /api/v1/experiments` for the arith example with these pipelines."""
        return {
            "experiment_name": name,
            "num_shards": num_shards,
            "dataset": {"rows": ARITH_ROWS},
            "eval": {
                "prompt": "Q: {question}\nA:",
                "scorers": [{"name": "exact_match", "target": "answer"}],
            },
            "pipelines": list(pipelines),
            **extra,
        }

    @staticmethod
    def completions(events: list[tuple[int, AnyEvent]]) -> Counter[tuple[int, int]]:
        """How often each (pipeline, shard) was completed in the log."""
        return Counter((e.pipeline_id, e.shard) for _, e in events if isinstance(e, ShardCompleted))

    @staticmethod
    def assert_run_complete(events: list[tuple[int, AnyEvent]]) -> State:
        """Each (pipeline, shard) completed at most once, and exactly once for every shard of every
        pipeline that was not stopped or deleted, which is completed; returns the folded state."""
        state = fold(event for _, event in events)
        counts = Live.completions(events)
        twice = {key: n for key, n in counts.items() if n > 1}
        assert not twice, f"shards completed more than once: {twice}"
        for pid, p in state.pipelines.items():
            if p.status in ("stopped", "deleted"):
                continue
            assert p.status == "completed", f"pipeline {pid} is {p.status}: {p.failure}"
            assert p.completed == set(range(p.num_shards)), (pid, sorted(p.completed))
            assert not p.in_flight, (pid, p.in_flight)
            assert all(counts[pid, shard] == 1 for shard in range(p.num_shards)), pid
        return state

    def child(self, name: str) -> Child:
        return next(c for c in self.cluster.children if c.name == name)

    # HTTP

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.http.get(path, params=params)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = await self.http.post(path, json=body, **kwargs)
        assert response.status_code == 200, f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    async def create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/v1/experiments with ?wait: the created experiment with its pipelines."""
        created = await self.post("/api/v1/experiments", body, params={"wait": 10})
        assert created["status"] == "completed", created
        assert len(created["pipelines"]) == len(body["pipelines"]), created
        return created

    async def pipeline(self, pipeline_id: int) -> dict[str, Any]:
        return await self.get(f"/api/v1/pipelines/{pipeline_id}")

    async def until(
        self, check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 60.0
    ) -> T:
        """`waiting.until`, printing why a child died (that explains a timeout)."""

        def report_deaths() -> None:
            for message in self.cluster.check():
                print(message)

        return await until(check, what, timeout, on_miss=report_deaths)

    async def running(self, pipeline_id: int, *, completed: int = 0) -> dict[str, Any]:
        """The pipeline once it has `completed` shards done and at least one in flight."""

        async def check() -> dict[str, Any] | None:
            p = await self.pipeline(pipeline_id)
            return p if p["in_flight"] and p["shards_completed"] >= completed else None

        return await self.until(check, f"pipeline {pipeline_id} running")

    async def settled(self, *pipeline_ids: int, timeout: float = 90.0) -> list[dict[str, Any]]:
        """The pipelines once each is completed, stopped, deleted or failed with nothing in
        flight."""

        async def check() -> list[dict[str, Any]] | None:
            pipelines = [await self.pipeline(pid) for pid in pipeline_ids]
            done = all(p["status"] in SETTLED and not p["in_flight"] for p in pipelines)
            return pipelines if done else None

        return await self.until(check, f"pipelines {pipeline_ids} to settle", timeout)

    async def operation(self, ic_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """The operation once it is final, polled as RapidFire's clients poll it."""

        async def check() -> dict[str, Any] | None:
            op = await self.get(f"/dispatcher/operation-status/{ic_id}")
            return op if op["status"] in ("completed", "failed") else None

        return await self.until(check, f"operation {ic_id}", timeout)

    # the log

    async def events(self) -> list[tuple[int, AnyEvent]]:
        """INFERNO_EVT from sequence 1: (seq, event), a batch event as one per shard."""
        out: list[tuple[int, Any]] = []

        def collect(data: bytes, seq: int) -> None:
            out.extend((seq, event) for event in expanded(decode_event(data)))

        await replay(self.js, self.names.evt_stream, collect)
        return out

    async def state(self) -> State:
        """The state folded from INFERNO_EVT sequence 1 on."""
        return fold(event for _, event in await self.events())

    async def commands(self, subject: str | None = None) -> list[tuple[int, AnyCommand]]:
        out: list[tuple[int, AnyCommand]] = []

        def keep(data: bytes, seq: int) -> None:
            out.append((seq, decode_command(data)))

        await replay(self.js, self.names.cmd_stream, keep, subjects=subject)
        return out

    async def reports(self) -> list[tuple[int, AnyReport]]:
        """INFERNO_EXEC: what executors reported, (seq, report)."""
        out: list[tuple[int, AnyReport]] = []

        def keep(data: bytes, seq: int) -> None:  # a ShardsFinished as its members
            out.extend((seq, report) for report in members(decode_report(data)))

        await replay(self.js, self.names.exec_stream, keep)
        return out

    async def leader(self) -> str:
        """The scheduler id in the INFERNO_LEADER lease (the LocalCluster child's name)."""
        kv = await self.js.key_value(self.names.leader_bucket)
        entry = await kv.get("scheduler")
        return msgspec.json.decode(entry.value or b"{}")["scheduler_id"]

    async def stream_leader(self, stream: str) -> str:
        """The server name of the node that leads `stream` (on the 3-node cluster)."""
        cluster = (await self.js.stream_info(stream)).cluster
        leader = cluster.leader if cluster is not None else None
        assert leader, f"{stream} has no leader: {cluster}"
        return leader

    async def read_model(self) -> ReadModel:
        """What a reader folds from the log, as the api does: INFERNO_CMD and INFERNO_EVT into
        the read model."""
        model = ReadModel()
        for ic_id, command in await self.commands():
            apply_command(model, ic_id, command)
        for seq, event in await self.events():
            apply_event(model, seq, event)
        return model

    async def assert_projection_is_the_fold(self, timeout: float = 30.0) -> ReadModel:
        """The api answers what its own views make of a fresh fold of the log (once it caught up:
        call it when nothing is running); returns that fold."""
        shown: dict[str, Any] = {}
        folded: dict[str, Any] = {}

        async def equal() -> ReadModel | None:
            state = await self.read_model()
            experiments = state.experiments
            folded.update(
                experiments=[views.experiment(e) for e in experiments.values()],
                pipelines=[
                    views.pipeline(p, experiments[p.experiment_id])
                    for _, p in sorted(state.pipelines.items())
                ],
                operations=[views.operation(op) for _, op in sorted(state.operations.items())],
            )
            shown.update({what: await self.get(f"/api/v1/{what}") for what in folded})
            return state if shown == json.loads(json.dumps(folded)) else None

        try:
            return await self.until(equal, "the api's projection to equal the fold", timeout)
        except AssertionError:
            assert shown == json.loads(json.dumps(folded))  # pytest shows the difference
            raise

    async def assert_results_once(self, state: State | ReadModel) -> None:
        """INFERNO_RESULTS holds objects of completed shards only, and the results route gives
        every row of each completed pipeline exactly once, none an error (shards' results are
        in their reports or in objects: the route reads both)."""
        for info in await stored_objects(self.js, self.names.results_store):
            _, pid, shard = info.name.removesuffix(".jsonl").split("/")
            assert int(shard) in state.pipelines[int(pid)].completed, info.name
        for pid, p in sorted(state.pipelines.items()):
            if p.status != "completed":
                continue
            experiment = state.experiments[p.experiment_id]
            response = await self.http.get(f"/api/v1/pipelines/{pid}/results")
            assert response.status_code == 200, response.text
            rows = response.content.splitlines()
            indices = sorted(json.loads(row)["row_index"] for row in rows)
            assert indices == list(range(experiment.row_count)), f"pipeline {pid}: {indices}"
            errors = [row for row in rows if json.loads(row).get("error")]
            assert not errors, f"pipeline {pid}: {errors[:3]}"

    @property
    def token(self) -> str | None:
        return api_token(self.cluster)

    async def cli(self, *args: str) -> tuple[int, str]:
        """`inferno ARGS` against this cluster's api (with its token), in a thread: the exit
        code and what it printed."""
        token = self.token
        argv = ["--api", self.cluster.api_url, *(["--token", token] if token else []), *args]
        out = io.StringIO()
        code = await asyncio.to_thread(cli_main, argv, out=out)
        return code, out.getvalue()

    def restart(self, child: Child) -> None:
        """Start a killed child again (from the event loop's thread, which started the cluster)."""
        self.cluster.restart(child)


def api_token(cluster: LocalCluster) -> str | None:
    return next(c for c in cluster.children if c.name == "api").env.get("INFERNO_TOKEN")


@asynccontextmanager
async def connected(cluster: LocalCluster) -> AsyncIterator[Live]:
    token = api_token(cluster)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    nc = await connect(cluster.nats_url, name="e2e-test")
    try:
        async with httpx.AsyncClient(
            base_url=cluster.api_url, headers=headers, timeout=30.0, trust_env=False
        ) as http:
            yield Live(cluster, Names(cluster.namespace), nc, nc.jetstream(), http)
    finally:
        await nc.close()


@pytest.fixture
async def live(cluster: LocalCluster) -> AsyncIterator[Live]:
    async with connected(cluster) as started:
        yield started


@pytest.fixture(scope="module")
async def shared_live(module_cluster: LocalCluster) -> AsyncIterator[Live]:
    async with connected(module_cluster) as started:
        yield started


@pytest.fixture(scope="module")
async def r3_live(r3_cluster: LocalCluster, drop_namespace: Any) -> AsyncIterator[Live]:
    """`r3_cluster`, connected; at the end its services stop and its namespace is deleted from
    the nodes, which serve the rest of the session."""
    async with connected(r3_cluster) as started:
        yield started
        await asyncio.to_thread(r3_cluster.stop)  # stopping again later does nothing
        await drop_namespace(started.js, started.names)

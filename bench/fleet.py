"""A simulated fleet: what the control plane costs per executor, per pipeline and per decision.

    .venv/bin/python bench/fleet.py            # the small size (baseline), then the fleet size
    .venv/bin/python bench/fleet.py --quick    # the small size only (development)

Each size runs on a fresh local cluster started as people start it (nats-server with
`sync_interval: always`, the api and the scheduler as `python -m inferno.<service>`), with real
executors (`inferno.executor.service.run`, 2 slots) as asyncio tasks in a few host processes
(bench/hosts.py). One experiment is created through the api: `sim` pipelines (a model each, zero
latency per row, 2 rows per shard). While it runs, one client sends stop + resume pairs with
`?wait` on pipelines in turn. Figures per size:
- scheduler CPU per decision: utime + stime (/proc/<pid>/stat) from the create request to the
  end of the run, per input decided (CMD + EXEC messages) and per EVT message appended;
- memory per pipeline, scheduler and api: RSS (VmRSS) at the end less RSS before the create, over
  the pipelines; and the msgpack size of the decision state and the read model folded from the log;
- dispatch rate: completed shards over the span from the create command's time in INFERNO_CMD
  to the last ShardCompleted's in INFERNO_EVT (server timestamps);
- an IC operation's time while the run goes on: request -> response `completed`, p50 / p99, and
  its legs by this host's clock: to the api's `created_at`, to the scheduler's `processed_at`,
  to its outcome event's server time in INFERNO_EVT, to the response.
A run that passes `--cap-s` of wall time is ended there and reported as capped, with its
progress: the figures then cover what it did. The small size is the baseline of the fleet size:
the same figures with 8x fewer executors and 10x fewer pipelines of as many shards, in the same
invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgspec
from hosts import ExecutorHosts
from workload import sim_experiment

from inferno.client.launcher import LocalCluster
from inferno.client.sdk import Client
from inferno.client.wire import InfernoError
from inferno.events import Names, State, decode_command, decode_event, evolve
from inferno.events.batches import expanded
from inferno.events.events import ShardCompleted
from inferno.jetstream import connect, replay
from inferno.readmodels import ReadModel, apply_command, apply_event
from inferno.runtime.logs import configure_logging

OUT = Path(__file__).parent / "out"
NAMESPACE = "inferno"
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Size:
    executors: int
    hosts: int
    pipelines: int
    shards: int

    @property
    def label(self) -> str:
        return f"{self.executors} executors, {self.pipelines} pipelines x {self.shards} shards"


QUICK = Size(executors=32, hosts=2, pipelines=100, shards=100)
FLEET = Size(executors=256, hosts=8, pipelines=1000, shards=100)
ROWS_PER_SHARD = 2
LEGS = ("to_api", "api_to_decided", "decided_to_stored", "stored_to_answer")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


class Controller(threading.Thread):
    """Stop + resume pairs with `?wait` on pipelines in turn, `gap_s` apart, until `done`."""

    def __init__(self, api_url: str, pipeline_ids: list[int], ops: int, gap_s: float) -> None:
        super().__init__(name="ic-ops", daemon=True)
        self.api_url, self.ids, self.ops, self.gap_s = api_url, pipeline_ids, ops, gap_s
        self.done = threading.Event()
        # per completed op: request -> response seconds, and (ic_id, request sent, the api
        # issued the command (`created_at`), the scheduler decided it (`processed_at`), the
        # response arrived), by the one clock of this host
        self.seconds: list[float] = []
        self.times: list[tuple[int, float, float, float, float]] = []
        self.refused: list[str] = []

    def run(self) -> None:
        with Client(self.api_url) as client:
            for i in range(self.ops // 2):
                pipeline_id = self.ids[(i * 7) % len(self.ids)]  # spread over the pipelines
                for action in (client.stop, client.resume):
                    if self.done.is_set():
                        return
                    start, sent = time.perf_counter(), time.time()
                    try:
                        op = action(pipeline_id, wait=10)
                    except InfernoError as error:  # e.g. the pipeline completed meanwhile
                        self.refused.append(f"{error.status} {error.message}"[:120])
                        break
                    if op["status"] == "completed":
                        self.seconds.append(time.perf_counter() - start)
                        issued, decided = op["created_at"], op["processed_at"]
                        self.times.append((op["ic_id"], sent, issued, decided, time.time()))
                    else:
                        self.refused.append(f"{action.__name__} {pipeline_id}: {op['status']}")
                self.done.wait(self.gap_s)


@dataclass
class LogFacts:
    completed: int
    span_s: float  # create command -> last ShardCompleted, server times
    inputs: int  # commands + executor reports stored, all of them decided or due
    evt_messages: int
    state_bytes: int
    read_model_bytes: int
    create_command_bytes: int  # the one CMD message that holds every pipeline's spec
    work_consumers: int  # durable consumers on the WORK stream: one per executor
    outcome_stored: dict[int, float]  # ic_id -> server time of the event that settled it


async def read_log(nats_url: str, ic_id: int, op_ids: set[int]) -> LogFacts:
    names = Names(NAMESPACE)
    nc = await connect(nats_url, name="bench-fleet-read")
    js = nc.jetstream()
    state, model = State(), ReadModel()
    last_completed = [0, 0]  # count, sequence
    outcome_seq: dict[int, int] = {}  # ic_id -> sequence of the first event carrying it

    def on_event(data: bytes, seq: int) -> None:
        event = decode_event(data)
        evolve(state, event)
        apply_event(model, seq, event)
        if done := sum(isinstance(e, ShardCompleted) for e in expanded(event)):
            last_completed[:] = [last_completed[0] + done, seq]
        elif (op := getattr(event, "ic_id", None)) in op_ids and op not in outcome_seq:
            outcome_seq[op] = seq

    def on_command(data: bytes, seq: int) -> None:
        apply_command(model, seq, decode_command(data))

    cmd_seq = await replay(js, names.cmd_stream, on_command)
    evt_seq = await replay(js, names.evt_stream, on_event)
    exec_seq = (await js.stream_info(names.exec_stream)).state.last_seq
    work_consumers = (await js.stream_info(names.work_stream)).state.consumer_count
    created = await js.get_msg(names.cmd_stream, seq=ic_id)
    last = await js.get_msg(names.evt_stream, seq=last_completed[1]) if last_completed[1] else None
    stored = {}
    for op, seq in outcome_seq.items():
        outcome = await js.get_msg(names.evt_stream, seq=seq)
        assert outcome.time is not None
        stored[op] = outcome.time.timestamp()
    await nc.close()
    assert created.time is not None
    span = last.time.timestamp() - created.time.timestamp() if last and last.time else 0.0
    encoder = msgspec.msgpack.Encoder()
    return LogFacts(
        completed=last_completed[0],
        span_s=span,
        inputs=cmd_seq + exec_seq,
        evt_messages=evt_seq,
        state_bytes=len(encoder.encode(state)),
        read_model_bytes=len(encoder.encode(model)),
        create_command_bytes=len(created.data or b""),
        work_consumers=work_consumers,
        outcome_stored=stored,
    )


def wait_done(client: Client, experiment_id: str, hosts: ExecutorHosts, cap_s: float) -> bool:
    """True when the experiment completed, False when `cap_s` ran out first."""
    deadline = time.monotonic() + cap_s
    while (status := client.experiment(experiment_id)["status"]) != "completed":
        hosts.check()
        if status == "failed":
            raise RuntimeError(f"experiment {experiment_id} failed")
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def run_size(size: Size, args: argparse.Namespace) -> dict:
    os.environ.setdefault("INFERNO_LOG_FORMAT", "json")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(tmp) / "logs"
        log_dir.mkdir()
        cluster = LocalCluster(
            tmp, executors=0, namespace=NAMESPACE, log_dir=log_dir, out=io.StringIO()
        )
        cluster.start()
        stack.callback(cluster.stop)
        hosts = ExecutorHosts.start(
            cluster.nats_url,
            NAMESPACE,
            executors=size.executors,
            hosts=size.hosts,
            slots=2,
            log_dir=log_dir,
        )
        stack.callback(hosts.stop)
        client = stack.enter_context(Client(cluster.api_url, timeout=120))
        started = time.monotonic()
        hosts.wait_registered(client, size.executors, timeout=300)
        registered_s = time.monotonic() - started
        pids = {c.name: c.pid for c in cluster.children if c.pid}
        pids |= {"nats": cluster.nats.pid or 0, **hosts.pids}
        spec = sim_experiment(
            "fleet",
            pipelines=size.pipelines,
            shards=size.shards,
            rows=size.shards * ROWS_PER_SHARD,
            latency_ms=0,
        )
        rss_before = {name: rss_mb(pids[name]) for name in ("scheduler", "api")}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start = time.monotonic()
        created = client.create_experiment(spec, wait=60)
        create_s = time.monotonic() - start
        rss_created = {name: rss_mb(pids[name]) for name in ("scheduler", "api")}
        ids = [p["pipeline_id"] for p in created["pipelines"]]
        controller = Controller(cluster.api_url, ids, args.ic_ops, args.ic_gap_s)
        controller.start()
        finished = wait_done(client, created["experiment_id"], hosts, args.cap_s)
        wall_s = time.monotonic() - start
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        cpu["executor_hosts"] = sum(cpu.pop(name) for name in hosts.pids)
        rss_end = {name: rss_mb(pids[name]) for name in ("scheduler", "api")}
        controller.done.set()
        controller.join(30)
        hosts.stop()  # a capped run stops here, so the log read is what the figures covered
        op_ids = {times[0] for times in controller.times}
        facts = asyncio.run(read_log(cluster.nats_url, created["ic_id"], op_ids))
    legs = [
        (issued - sent, decided - issued, stored - decided, answered - stored)
        for op, sent, issued, decided, answered in controller.times
        if (stored := facts.outcome_stored.get(op)) is not None
    ]
    return {
        "size": asdict(size),
        "finished": finished,
        "wall_s": wall_s,
        "registered_s": registered_s,
        "create_s": create_s,
        "log": asdict(facts),
        "shards_per_s": facts.completed / facts.span_s if facts.span_s else 0.0,
        "cpu_s": cpu,
        "scheduler_cpu_ms_per_input": cpu["scheduler"] / facts.inputs * 1000,
        "scheduler_cpu_ms_per_evt": cpu["scheduler"] / facts.evt_messages * 1000,
        "rss_mb": {"before": rss_before, "created": rss_created, "end": rss_end},
        "kb_per_pipeline": {
            name: (rss_end[name] - rss_before[name]) * 1024 / size.pipelines
            for name in ("scheduler", "api")
        },
        "created_kb_per_pipeline": {
            name: (rss_created[name] - rss_before[name]) * 1024 / size.pipelines
            for name in ("scheduler", "api")
        },
        "ic": {
            "n": len(controller.seconds),
            "p50_ms": percentile(controller.seconds, 0.5) * 1000,
            "p99_ms": percentile(controller.seconds, 0.99) * 1000,
            **{
                f"{leg}_{q}_ms": percentile([op_legs[i] for op_legs in legs], p) * 1000
                for i, leg in enumerate(LEGS)
                for q, p in (("p50", 0.5), ("p99", 0.99))
            },
            "refused": controller.refused[:5],
        },
    }


def report(r: dict) -> str:
    size, log, ic = Size(**r["size"]), r["log"], r["ic"]
    total = size.pipelines * size.shards
    ended = "completed" if r["finished"] else f"CAPPED at {r['wall_s']:.0f} s wall"
    per = r["kb_per_pipeline"]
    lines = [
        f"fleet: {size.label} ({total:,} shards); {ended}: {log['completed']:,} shards done",
        f"  executors registered in {r['registered_s']:.1f} s ({log['work_consumers']} durable"
        f" consumers on WORK); create answered in {r['create_s']:.2f} s, its command"
        f" {log['create_command_bytes'] / 1024:.0f} KiB",
        f"  dispatch: {r['shards_per_s']:,.0f} shards/s over {log['span_s']:.1f} s (server times)",
        f"  scheduler CPU: {r['scheduler_cpu_ms_per_input']:.3f} ms per input decided"
        f" ({log['inputs']:,} CMD + EXEC), {r['scheduler_cpu_ms_per_evt']:.3f} ms per EVT"
        f" message ({log['evt_messages']:,})",
        "  CPU over the run (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["cpu_s"].items()),
        f"  memory per pipeline (RSS end - before): scheduler {per['scheduler']:.1f} KiB,"
        f" api {per['api']:.1f} KiB; encoded: decision state"
        f" {log['state_bytes'] / size.pipelines / 1024:.2f} KiB, read model"
        f" {log['read_model_bytes'] / size.pipelines / 1024:.2f} KiB",
        f"  IC stop/resume with ?wait during the run: p50 {ic['p50_ms']:.1f} ms,"
        f" p99 {ic['p99_ms']:.1f} ms (n={ic['n']})"
        + (f"; refused: {ic['refused']}" if ic["refused"] else ""),
        "    legs, p50 / p99 ms: "
        + ", ".join(f"{leg} {ic[leg + '_p50_ms']:.1f} / {ic[leg + '_p99_ms']:.1f}" for leg in LEGS),
    ]
    return "\n".join(lines)


def scaling(small: dict, big: dict) -> str:
    """The fleet size's figures as multiples of the baseline size's."""
    ratios = {
        "scheduler CPU per input": "scheduler_cpu_ms_per_input",
        "scheduler CPU per EVT message": "scheduler_cpu_ms_per_evt",
        "dispatch rate": "shards_per_s",
    }
    lines = ["fleet size / baseline size (8x executors, 10x pipelines and shards):"]
    for label, key in ratios.items():
        lines.append(f"  {label:<32} {big[key] / small[key]:6.2f}x" if small[key] else "")
    for name in ("scheduler", "api"):
        a, b = small["kb_per_pipeline"][name], big["kb_per_pipeline"][name]
        lines.append(f"  {name + ' KiB per pipeline':<32} {b:6.1f} vs {a:.1f}")
    lines.append(f"  {'IC p99 (ms)':<32} {big['ic']['p99_ms']:6.1f} vs {small['ic']['p99_ms']:.1f}")
    return "\n".join(line for line in lines if line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small size only")
    parser.add_argument("--cap-s", type=float, default=420.0, help="wall-time cap per size")
    parser.add_argument("--ic-ops", type=int, default=100, help="stop + resume ops per size")
    parser.add_argument("--ic-gap-s", type=float, default=0.1, help="pause between pairs")
    args = parser.parse_args()
    configure_logging("error", "console")
    results = [run_size(QUICK, args)]
    print(report(results[0]), flush=True)
    if not args.quick:
        results.append(run_size(FLEET, args))
        print(report(results[1]), flush=True)
        print(scaling(*results), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "fleet.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

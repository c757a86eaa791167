"""Dispatch throughput: how many shards per second the control plane pushes through, end to end.

    .venv/bin/python bench/dispatch.py [--pipelines 64] [--shards 50] [--rows 3200]
        [--executors 32] [--hosts 4] [--slots 2] [--queue N] [--only-sync-always]

Starts nats-server (embedded, `sync_interval: always`), the api and the scheduler as the
processes people run (`python -m inferno.<service>`), and 32 real executors
(`inferno.executor.service.run`, default settings) as asyncio tasks in a few host processes
(4 x 8: 32 Python processes would mostly measure the 2 cores' context switches). It creates one
experiment through the api: 3,200 inline rows, 64 `sim` pipelines (a model each) x 50 shards,
zero latency per row, and waits until it completed. Figures:
- shards/s end to end: from the create command's time in INFERNO_CMD to the last ShardCompleted's
  time in INFERNO_EVT (both stamped by the server);
- the scheduler's CPU per shard: utime + stime of its process (/proc/<pid>/stat) over the run,
  with every other process's CPU beside it (2 cores give 2 CPU-seconds per second);
- the baseline, in the same run and on the same server: the scheduler's writes alone. The run's
  own EVT log is appended again, each message a fenced decision, pipelined 64 at a time (one
  per in-flight slot, the scheduler's best case), and after each such cycle its work orders are
  published: what the log allows the scheduler with no decisions, no followers and no executors;
- a reference, likewise: every message a shard stored in the protocol before issue 10 (7: EVT
  assigned + completed, WORK, EXEC started + finished, the results object's chunk + meta with
  nats-py's `put`, which looks the name up first) written from one process in waves of 64
  shards, step by step: what the log allowed the whole old flow; and the same for this
  protocol's 4 (no ShardStarted for a shard shorter than the executor's progress interval, the
  results inside ShardFinished), in alternating waves. Printed beside them: the messages per
  shard the run itself stored.
Then every (pipeline, shard) must be completed exactly once in the folded EVT. All of it is
repeated on a server without `sync_interval: always` (skip that with --only-sync-always).
Target (2 cores): >= 1,000 shards/s.

Its executor hosts are `bench/hosts.py`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

from hosts import ExecutorHosts
from nats.aio.client import Client as NATS
from nats.js.api import PubAck
from workload import sim_experiment

from inferno.client.launcher import ClusterError, LocalCluster
from inferno.client.sdk import Client
from inferno.events import Names, State, decode_event, decode_report, encode, evolve, subject_for
from inferno.events.batches import expanded
from inferno.events.commands import ShardFinished, ShardsFinished, ShardStarted
from inferno.events.events import ShardAssigned, ShardCompleted
from inferno.events.work import (
    WorkBatch,
    WorkOrder,
    report_msg_id,
    report_subject,
    results_name,
    work_order,
)
from inferno.jetstream import Appender, Outgoing, connect, ensure_log, replay
from inferno.jetstream.results import jsonl
from inferno.runtime.logs import configure_logging

OUT = Path(__file__).parent / "out"
NAMESPACE = "inferno"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STEPS = ("assigned", "finished", "completed")  # ShardStarted only for a shard that runs 1 s+
OLD_STEPS = ("assigned", "started", "finished", "completed")  # what the reference writes
OLD_MESSAGES_PER_SHARD = 7  # EVT 2, WORK 1, EXEC 2 (started, finished), results object 2
BASELINES = {
    "scheduler_writes": "baseline: the scheduler's writes alone",
    "whole_flow": "reference: every write of a shard, old protocol (7)",
    "new_flow": "the same, one message a shard each way (4)",
}


# the run


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for_executors(client: Client, count: int, hosts: ExecutorHosts, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(client.executors()) < count:
        hosts.check()
        if time.monotonic() > deadline:
            raise ClusterError(f"{count} executors did not register within {timeout:.0f}s")
        time.sleep(0.1)


def wait_completed(
    client: Client, experiment_id: str, hosts: ExecutorHosts, timeout: float
) -> None:
    """Poll 4 times a second (cheap for the api); the figures come from the log, not from here."""
    deadline = time.monotonic() + timeout
    while (status := client.experiment(experiment_id)["status"]) != "completed":
        hosts.check()
        if status == "failed" or time.monotonic() > deadline:
            raise RuntimeError(f"experiment {experiment_id} is {status} after the wait")
        time.sleep(0.25)


@dataclass
class Attempt:
    """One attempt at a shard as the log tells it: its work order, and per step (STEPS) the
    message that recorded it and when (by the clock of whoever decided or reported it)."""

    order: WorkOrder
    messages: dict[str, bytes] = field(default_factory=dict)
    at: dict[str, float] = field(default_factory=dict)


@dataclass
class Log:
    """What the bench reads back from the log after the run."""

    state: State = field(default_factory=State)
    # (the orders its work message carried, payload) per EVT message
    events: list[tuple[list[WorkOrder], bytes]] = field(default_factory=list)
    attempts: dict[tuple[int, int, int], Attempt] = field(default_factory=dict)  # as assigned
    completions: Counter[tuple[int, int]] = field(default_factory=Counter)
    last_completed_seq: int = 0
    writes: dict[str, int] = field(default_factory=dict)  # messages stored per stream
    result: bytes = b""  # one shard's results (JSONL), as the executor encoded them


async def read_log(nats_url: str, ic_id: int) -> tuple[Log, float]:
    """Fold EVT (counting completions on the way), note every step of every attempt, and
    return the seconds from the create command to the last ShardCompleted (server times)."""
    names = Names(NAMESPACE)
    nc = await connect(nats_url, name="bench-dispatch-read")
    js = nc.jetstream()
    log = Log()
    state, attempts = log.state, log.attempts

    def on_event(data: bytes, seq: int) -> None:
        stored = decode_event(data)
        evolve(state, stored)
        orders = []
        for event in expanded(stored):  # a batch event as one per shard, for the references
            if not isinstance(event, ShardAssigned | ShardCompleted):
                continue
            key = (event.pipeline_id, event.shard, event.attempt)
            if isinstance(event, ShardAssigned):
                pipeline = state.pipelines[event.pipeline_id]
                experiment = state.experiments[pipeline.experiment_id]
                attempts[key] = Attempt(work_order(experiment, pipeline, event.shard))
                orders.append(attempts[key].order)
            else:
                log.completions[event.pipeline_id, event.shard] += 1
                log.last_completed_seq = seq
            attempts[key].messages[event.kind] = encode(event)
            attempts[key].at[event.kind] = event.at
        log.events.append((orders, data))

    def on_report(data: bytes, seq: int) -> None:
        stored = decode_report(data)
        for report in stored.reports if isinstance(stored, ShardsFinished) else [stored]:
            if isinstance(report, ShardStarted | ShardFinished):
                step = "started" if isinstance(report, ShardStarted) else "finished"
                attempt = attempts[report.pipeline_id, report.shard, report.attempt]
                attempt.messages[step] = encode(report)
                attempt.at[step] = report.at

    await replay(js, names.evt_stream, on_event)
    await replay(js, names.exec_stream, on_report)
    created = await js.get_msg(names.cmd_stream, seq=ic_id)
    last = await js.get_msg(names.evt_stream, seq=log.last_completed_seq)
    streams = [names.evt_stream, names.work_stream, names.exec_stream]
    for stream in [*streams, f"OBJ_{names.results_store}"]:  # an object store's stream
        log.writes[stream] = (await js.stream_info(stream)).state.last_seq
    sample = next(a for a in attempts.values() if "finished" in a.messages)
    finished = decode_report(sample.messages["finished"])
    assert isinstance(finished, ShardFinished)
    log.result = jsonl(bytes(row) for row in finished.results)
    if not log.result:  # too large for the report: the object the executor stored
        results = await js.object_store(names.results_store)
        log.result = (
            await results.get(
                results_name(
                    sample.order.experiment_id, sample.order.pipeline_id, sample.order.shard
                )
            )
        ).data or b""
    await nc.close()
    assert created.time is not None
    assert last.time is not None
    return log, last.time.timestamp() - created.time.timestamp()


def check_exactly_once(log: Log, pipelines: int, shards: int) -> None:
    expected = pipelines * shards
    wrong = [key for key, n in log.completions.items() if n != 1]
    if len(log.completions) != expected or wrong:
        raise RuntimeError(
            f"{len(log.completions)} of {expected} shards completed; not exactly once: {wrong[:5]}"
        )
    for pipeline in log.state.pipelines.values():
        if len(pipeline.completed) != shards or pipeline.status != "completed":
            raise RuntimeError(f"pipeline {pipeline.pipeline_id} ended {pipeline.status}")


def round_trip(log: Log) -> dict[str, float]:
    """Median milliseconds of each step of a shard's round trip, and the mean number of shards
    in flight (Little's law: the time every attempt spent in flight over the run's span)."""
    done = [a.at for a in log.attempts.values() if all(step in a.at for step in STEPS)]
    steps = [*itertools.pairwise(STEPS), ("assigned", "completed")]
    out = {f"{a}_to_{b}_ms": statistics.median(t[b] - t[a] for t in done) * 1000 for a, b in steps}
    span = max(t["completed"] for t in done) - min(t["assigned"] for t in done)
    out["mean_in_flight"] = sum(t["completed"] - t["assigned"] for t in done) / span
    out["started_reports"] = sum("started" in t for t in done)
    return out


async def scheduler_writes_alone(nats_url: str, log: Log, cycle: int) -> dict[str, float]:
    """The baseline: the run's EVT messages appended again, fenced, one decision per message,
    pipelined `cycle` at a time, the work orders of each cycle published after its append (as
    the scheduler does), into a namespace of their own on the same server."""
    names = Names("ceiling")
    nc = await connect(nats_url, name="bench-dispatch-ceiling")
    js = nc.jetstream()
    await ensure_log(js, names)
    appender = Appender(nc)
    messages = [
        Outgoing(subject_for(names, decode_event(data)), data, f"baseline-{i}")
        for i, (_, data) in enumerate(log.events)
    ]
    last_seq = 0
    start_cpu, start = time.process_time(), time.perf_counter()
    for first in range(0, len(messages), cycle):
        decisions = [[message] for message in messages[first : first + cycle]]
        results = await appender.append_decisions(
            names.evt_stream, decisions, expected_last_seq=last_seq
        )
        last_seq = results[-1].last_seq
        sent = [WorkBatch(orders=o) for o, _ in log.events[first : first + cycle] if o]
        await asyncio.gather(
            *(
                js.publish(
                    names.work(work.orders[0].executor_id),
                    encode(work),
                    stream=names.work_stream,
                    headers={"Nats-Msg-Id": work.msg_id},
                )
                for work in sent
            )
        )
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    for stream in (names.evt_stream, names.work_stream):
        await js.delete_stream(stream)
    await nc.close()
    return {"seconds": elapsed, "cpu_s": cpu}


class Flow:
    """A reference: every message a shard's round trip stores, in its order, from one process,
    a wave of shards at a time, into a namespace of its own. The old protocol (`old`):
    ShardAssigned appended (fenced, pipelined), work orders published, ShardStarted reported,
    the results object put (nats-py), ShardFinished reported, ShardCompleted appended. This
    one: no ShardStarted, and the results inside ShardFinished (the run's own report). What the
    server sustains for the whole flow when nothing waits for a decision or a hop between
    processes (the work orders are not consumed)."""

    def __init__(self, nc: NATS, log: Log, *, old: bool) -> None:
        self.names = Names("flow" if old else "flownew")
        self.js, self.appender, self.log, self.old = nc.jetstream(), Appender(nc), log, old
        self.steps = OLD_STEPS if old else STEPS
        self.last_seq = 0
        self.seconds = self.cpu_s = self.nats_cpu_s = 0.0

    async def start(self) -> None:
        await ensure_log(self.js, self.names)
        self.results = await self.js.object_store(self.names.results_store)

    def message(self, attempt: Attempt, step: str) -> Outgoing:
        data = attempt.messages.get(step) or encode(old_started(attempt.order))
        if step in ("started", "finished"):
            r = decode_report(data)
            return Outgoing(report_subject(self.names, r), data, report_msg_id(r))
        msg_id = f"{step}-{attempt.order.msg_id}"
        return Outgoing(subject_for(self.names, decode_event(data)), data, msg_id)

    def order(self, attempt: Attempt) -> Awaitable[PubAck]:
        return self.js.publish(
            self.names.work(attempt.order.executor_id),
            encode(attempt.order),
            stream=self.names.work_stream,
            headers={"Nats-Msg-Id": attempt.order.msg_id},
        )

    def put(self, attempt: Attempt) -> Awaitable[object]:
        return self.results.put(
            results_name(
                attempt.order.experiment_id, attempt.order.pipeline_id, attempt.order.shard
            ),
            self.log.result,
        )

    async def wave(self, attempts: list[Attempt]) -> None:
        wave = [(a, {step: self.message(a, step) for step in self.steps}) for a in attempts]
        start_cpu, start = time.process_time(), time.perf_counter()
        for step in self.steps:
            if step in ("assigned", "completed"):
                decisions = [[messages[step]] for _, messages in wave]
                appended = await self.appender.append_decisions(
                    self.names.evt_stream, decisions, expected_last_seq=self.last_seq
                )
                self.last_seq = appended[-1].last_seq
            else:
                reports = (self.appender.append(self.names.exec_stream, [m[step]]) for _, m in wave)
                await asyncio.gather(*reports)
            if step == "assigned":
                await asyncio.gather(*(self.order(a) for a, _ in wave))
            if step == "started":
                await asyncio.gather(*(self.put(a) for a, _ in wave))
        self.seconds += time.perf_counter() - start
        self.cpu_s += time.process_time() - start_cpu


async def flows_alone(
    nats_url: str, log: Log, cycle: int, nats_pid: int
) -> dict[str, dict[str, float]]:
    """Both references in alternating waves, so the two see the same load (other work on the
    machine comes and goes); nats-server's CPU is read around each wave."""
    nc = await connect(nats_url, name="bench-dispatch-flow")
    flows = {"whole_flow": Flow(nc, log, old=True), "new_flow": Flow(nc, log, old=False)}
    for flow in flows.values():
        await flow.start()
    done = [a for a in log.attempts.values() if all(step in a.messages for step in STEPS)]
    for first in range(0, len(done), cycle):
        for flow in flows.values():
            nats_before = cpu_seconds(nats_pid)
            await flow.wave(done[first : first + cycle])
            flow.nats_cpu_s += cpu_seconds(nats_pid) - nats_before
    await nc.close()
    return {
        name: {"seconds": f.seconds, "cpu_s": f.cpu_s, "nats_cpu_s": f.nats_cpu_s}
        for name, f in flows.items()
    }


def old_started(order: WorkOrder) -> ShardStarted:
    """The ShardStarted report the old protocol sent first for every shard."""
    return ShardStarted(
        executor_id=order.executor_id,
        pipeline_id=order.pipeline_id,
        shard=order.shard,
        attempt=order.attempt,
    )


def run_once(args: argparse.Namespace, *, sync_always: bool) -> dict:
    """One cluster, one experiment, then the baselines on the same server."""
    os.environ.setdefault("INFERNO_LOG_FORMAT", "json")  # as services log in production
    total = args.pipelines * args.shards
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(tmp) / "logs"
        log_dir.mkdir()
        cluster = LocalCluster(
            tmp,
            executors=0,
            namespace=NAMESPACE,
            sync_always=sync_always,
            log_dir=log_dir,
            out=io.StringIO(),
        )
        cluster.start()
        stack.callback(cluster.stop)
        hosts = ExecutorHosts.start(
            cluster.nats_url,
            NAMESPACE,
            executors=args.executors,
            hosts=args.hosts,
            slots=args.slots,
            log_dir=log_dir,
            queue=args.queue,
        )
        stack.callback(hosts.stop)
        client = stack.enter_context(Client(cluster.api_url))
        wait_for_executors(client, args.executors, hosts, timeout=60)
        pids = {"nats": cluster.nats.pid, **{c.name: c.pid for c in cluster.children}}
        pids |= {f"executors-{i}": p.pid for i, p in enumerate(hosts.processes)}
        spec = sim_experiment(
            "dispatch", pipelines=args.pipelines, shards=args.shards, rows=args.rows, latency_ms=0
        )
        before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        bench_before = time.process_time()
        created = client.create_experiment(spec, wait=30)
        wait_completed(client, created["experiment_id"], hosts, timeout=args.timeout)
        after = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
        bench_cpu = time.process_time() - bench_before
        log, seconds = asyncio.run(read_log(cluster.nats_url, created["ic_id"]))
        check_exactly_once(log, args.pipelines, args.shards)
        cycle, nats_url = args.executors * args.slots, cluster.nats_url
        nats_before = cpu_seconds(cluster.nats.pid)
        baselines = {"scheduler_writes": asyncio.run(scheduler_writes_alone(nats_url, log, cycle))}
        baselines["scheduler_writes"]["nats_cpu_s"] = cpu_seconds(cluster.nats.pid) - nats_before
        baselines |= asyncio.run(flows_alone(nats_url, log, cycle, cluster.nats.pid))
    cpu = {name: after[name] - before[name] for name in after}
    return {
        "sync_always": sync_always,
        "shards": total,
        "executors": args.executors,
        "hosts": args.hosts,
        "slots": args.slots,
        "queue": "auto" if args.queue is None else args.queue,
        "rows": args.rows,
        "evt_events": len(log.events),
        "log_writes_per_shard": {k: v / total for k, v in log.writes.items()},
        "seconds": seconds,
        "shards_per_s": total / seconds,
        "scheduler_cpu_ms_per_shard": cpu["scheduler"] / total * 1000,
        "cpu_s": {
            "scheduler": cpu["scheduler"],
            "api": cpu["api"],
            "nats": cpu["nats"],
            "executor_hosts": sum(v for k, v in cpu.items() if k.startswith("executors-")),
            "bench_client": bench_cpu,
        },
        "round_trip": round_trip(log),
        "baselines": {
            name: {
                "shards_per_s": total / b["seconds"],
                "client_cpu_ms_per_shard": b["cpu_s"] / total * 1000,
                "nats_cpu_ms_per_shard": b["nats_cpu_s"] / total * 1000,
            }
            for name, b in baselines.items()
        },
        "nats_cpu_ms_per_shard": cpu["nats"] / total * 1000,
    }


def report(r: dict) -> str:
    mode = "sync_interval: always" if r["sync_always"] else "WITHOUT sync_interval: always"
    cpu, rt = r["cpu_s"], r["round_trip"]
    writes = ", ".join(f"{k} {v:.1f}" for k, v in r["log_writes_per_shard"].items())
    rows = [
        ("end to end: create -> last ShardCompleted", r["shards_per_s"], ""),
        *(
            (label, r["baselines"][name]["shards_per_s"], f"{r['shards_per_s'] / rate:.0%}")
            for name, label in BASELINES.items()
            if (rate := r["baselines"][name]["shards_per_s"])
        ),
    ]
    lines = [
        f"dispatch, {mode}: {r['shards']:,} shards, {r['executors']} executors"
        f" ({r['hosts']} processes) x {r['slots']} slots (+ queue {r['queue']}),"
        f" {r['rows']:,} rows;"
        " target >= 1,000 shards/s",
        f"  {'':<52}{'shards/s':>9}   end to end = % of it",
    ]
    lines += [f"  {label:<52}{rate:>9,.0f}   {share}".rstrip() for label, rate, share in rows]
    lines += [
        f"  scheduler CPU per shard: {r['scheduler_cpu_ms_per_shard']:.3f} ms"
        f" (nats-server: {r['nats_cpu_ms_per_shard']:.3f} ms); the baselines'"
        f" client / nats-server CPU per shard: "
        + ", ".join(
            f"{b['client_cpu_ms_per_shard']:.3f} / {b['nats_cpu_ms_per_shard']:.3f} ms"
            for b in r["baselines"].values()
        ),
        "  CPU over the run (s): " + ", ".join(f"{name} {sec:.2f}" for name, sec in cpu.items()),
        "  a shard's round trip, medians (ms): assigned -> finished"
        f" {rt['assigned_to_finished_ms']:.1f} -> completed {rt['finished_to_completed_ms']:.1f};"
        f" in all {rt['assigned_to_completed_ms']:.1f}, {rt['mean_in_flight']:.1f} in flight;"
        f" {rt['started_reports']} ShardStarted reports",
        f"  messages stored per shard: {sum(r['log_writes_per_shard'].values()):.2f} ({writes});"
        f" the reference (old protocol) stores {OLD_MESSAGES_PER_SHARD}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=64)
    parser.add_argument("--shards", type=int, default=50, help="shards per pipeline")
    parser.add_argument("--rows", type=int, default=3200, help="dataset rows, split into shards")
    parser.add_argument("--executors", type=int, default=32)
    parser.add_argument("--hosts", type=int, default=4, help="processes the executors share")
    parser.add_argument("--slots", type=int, default=2, help="per executor (its default: 2)")
    parser.add_argument(
        "--queue", type=int, default=None, help="orders held beyond the slots (default: auto)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    parser.add_argument(
        "--only-sync-always", action="store_true", help="skip the run without sync_interval"
    )
    args = parser.parse_args()
    configure_logging("error", "console")  # the bench's own connections: errors only
    results = []
    for sync_always in (True,) if args.only_sync_always else (True, False):
        results.append(run_once(args, sync_always=sync_always))
        print(report(results[-1]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "dispatch.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Interactive-control latency: how long a stop or resume takes from request to completed.

    .venv/bin/python bench/ic_latency.py [--ops 1000] [--baseline-ops 40]
        [--concurrent-ops 500 --clients 50] [--quick]

Starts the embedded cluster the way `inferno up` does (nats-server with sync_interval: always,
api, scheduler, 2 executors, all separate processes), runs an experiment whose `sim` pipelines
stay ongoing, and sends alternating stop/resume over HTTP with `?wait`, timing each request from
send to a response that says `completed` (accept -> completed, as a client sees it). The
baseline, in the same run: RapidFire's evals design, an IC-op table in SQLite applied by a
controller loop that sleeps 0.5 s between checks (bench/sqlite_controller.py).
Targets (2 cores): p50 <= 5 ms, p99 <= 25 ms, p50 >= 50x faster than the baseline's.

Concurrent mode, same cluster, same run (bench/ic_concurrent.py): `--concurrent-ops` stop/resume
from `--clients` clients at once, one keep-alive connection and one pipeline each, every request
with `?wait` and its own Idempotency-Key; then `all-operations` is checked against every answer
and a few keys are re-sent. Targets: p99 <= 100 ms, >= 1,500 operations/s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import ic_concurrent
from sqlite_controller import SqliteController, submit_and_wait
from workload import sim_experiment

from inferno.client.launcher import LocalCluster
from inferno.client.sdk import Client

OUT = Path(__file__).parent / "out"


def long_running(pipelines: int) -> dict:
    """Sim pipelines that stay ongoing: 400 shards of 10 rows at 20 ms a row."""
    return sim_experiment("ic-latency", pipelines=pipelines, shards=400, rows=4000, latency_ms=20)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def inferno_latencies(client: Client, ops: int, pipelines: int) -> tuple[list[float], list[float]]:
    """(client-side request->completed seconds, server-side created_at->processed_at seconds)."""
    created = client.create_experiment(long_running(pipelines), wait=10)
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    client_side, server_side = [], []
    actions = itertools.cycle(["stop", "resume"])
    for i in range(ops):
        action = next(actions)
        pipeline_id = ids[(i // 2) % len(ids)]
        start = time.perf_counter()
        op = getattr(client, action)(pipeline_id, wait=5)
        elapsed = time.perf_counter() - start
        if op["status"] != "completed":
            raise RuntimeError(f"{action} {pipeline_id} ended {op}")
        client_side.append(elapsed)
        server_side.append(op["processed_at"] - op["created_at"])
    return client_side, server_side


def concurrent_run(client: Client, url: str, ops: int, clients: int) -> dict:
    """The concurrent mode's figures: latency of each request, operations/s, and the checks."""
    created = client.create_experiment(long_running(clients), wait=30)
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    answers, wall = asyncio.run(ic_concurrent.run(url, ids, ops, tag=f"bench-{time.time_ns()}"))
    failed = [a for a in answers if a.status_code != 200 or a.body.get("status") != "completed"]
    problems = asyncio.run(ic_concurrent.check(url, answers))
    return {
        **summary([a.seconds for a in answers]),
        "clients": clients,
        "wall_s": wall,
        "ops_per_s": len(answers) / wall,
        "not_completed": len(failed),
        "problems": problems,
    }


def inferno_figures(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(tmp, executors=2, log_dir=Path(tmp) / "logs")
        cluster.start()
        try:
            with Client(cluster.api_url) as client:
                client_side, server_side = inferno_latencies(client, args.ops, args.pipelines)
                concurrent = concurrent_run(
                    client, cluster.api_url, args.concurrent_ops, args.clients
                )
        finally:
            cluster.stop()
    return {
        "inferno_http_wait": summary(client_side),
        "inferno_server_side": summary(server_side),
        "inferno_concurrent": concurrent,
    }


def baseline_latencies(ops: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp, SqliteController(Path(tmp) / "ic.db"):
        samples = []
        for i in range(ops):
            samples.append(submit_and_wait(Path(tmp) / "ic.db", i % 4, ("stop", "resume")[i % 2]))
            time.sleep(0.013 * (i % 7))  # requests arrive at arbitrary points of the poll cycle
        return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 0.50) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=1000, help="stop/resume operations")
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--baseline-ops", type=int, default=40)
    parser.add_argument("--concurrent-ops", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="200 single ops, 10 baseline ops")
    args = parser.parse_args()
    if args.quick:
        args.ops, args.baseline_ops = 200, 10
    result = inferno_figures(args)
    result["sqlite_controller_baseline"] = summary(baseline_latencies(args.baseline_ops))
    speedup = result["sqlite_controller_baseline"]["p50_ms"] / result["inferno_http_wait"]["p50_ms"]
    result["p50_speedup"] = speedup
    print(f"interactive-control latency, {args.ops} alternating stop/resume ops")
    for name, label in (
        ("inferno_http_wait", "inferno: HTTP ?wait, request -> completed"),
        ("inferno_server_side", "inferno: created_at -> processed_at"),
        ("sqlite_controller_baseline", "baseline: SQLite table + 0.5 s poll loop"),
    ):
        s = result[name]
        p50, p99 = s["p50_ms"], s["p99_ms"]
        print(f"  {label:<44} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   n={s['n']}")
    print(f"  p50 speedup over the baseline: {speedup:,.0f}x")
    print("  targets (2 cores): p50 <= 5 ms, p99 <= 25 ms, >= 50x the baseline")
    c = result["inferno_concurrent"]
    print(
        f"concurrent: {c['n']} stop/resume ops from {c['clients']} clients, each ?wait + key\n"
        f"  {'inferno: request -> completed':<44} p50 {c['p50_ms']:8.2f} ms"
        f"   p99 {c['p99_ms']:8.2f} ms   {c['ops_per_s']:,.0f} ops/s"
        f" ({c['wall_s']:.2f} s, {c['not_completed']} not completed)\n"
        f"  checks (all-operations, one op per key, re-sent keys):"
        f" {'consistent' if not c['problems'] else c['problems'][:5]}\n"
        "  targets (2 cores): p99 <= 100 ms, >= 1,500 ops/s"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "ic_latency.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

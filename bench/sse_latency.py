"""Live-stream latency: how soon a client learns an operation completed, pushed (SSE) vs polled.

    .venv/bin/python bench/sse_latency.py [--ops 300] [--poll-interval 0.5]

Starts the embedded cluster the way `inferno up` does (nats-server, api, scheduler, 2 executors,
separate processes), runs `sim` pipelines that stay ongoing, and sends alternating stop/resume
without `?wait`. For each operation, from the moment its settling event was stored (the
server's time of that INFERNO_EVT message, in the entry's `time`; same host, same clock):
- pushed: until the entry arrives on `GET /api/v1/events/stream` (a reader thread, the SDK's
  `follow_events`), the way dashboards and `inferno watch` are meant to learn it;
- polled (the baseline, same operations, same run): until `GET /api/v1/operations/{ic_id}`,
  asked every `--poll-interval` seconds on the poller's own clock (0.5 s: what `inferno watch`
  refreshes at), says so.
Target (2 cores): pushed p99 <= 100 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import queue
import random
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from workload import sim_experiment

from inferno.client.launcher import LocalCluster
from inferno.client.sdk import Client

OUT = Path(__file__).parent / "out"
SETTLING = ["pipeline_stopped", "pipeline_resumed"]


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stored_at(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["time"]).timestamp()


def listen(api_url: str, arrivals: queue.Queue[tuple[float, dict[str, Any]]]) -> None:
    """Put each settling entry on `arrivals` with the time it arrived, until the process ends."""
    with Client(api_url) as client:
        for entry in client.follow_events(type=SETTLING):
            arrivals.put((time.time(), entry))


def measure(ops: int, pipelines: int, poll_interval: float) -> tuple[list[float], list[float]]:
    """(pushed seconds, polled seconds), one of each per operation."""
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(tmp, executors=2, log_dir=Path(tmp) / "logs")
        cluster.start()
        try:
            with Client(cluster.api_url) as client:
                spec = sim_experiment(
                    "sse", pipelines=pipelines, shards=400, rows=4000, latency_ms=20
                )
                created = client.create_experiment(spec, wait=10)
                ids = [p["pipeline_id"] for p in created["pipelines"]]
                arrivals: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
                threading.Thread(
                    target=listen, args=(cluster.api_url, arrivals), daemon=True
                ).start()
                time.sleep(1.0)  # the stream is open before the first operation
                pushed, polled, started = [], [], time.time()
                jitter = random.Random(7)
                actions = itertools.cycle(["stop", "resume"])
                for i in range(ops):
                    ic_id = getattr(client, next(actions))(ids[(i // 2) % len(ids)])["ic_id"]
                    while True:  # the poller's ticks do not wait for our operations
                        time.sleep(poll_interval - (time.time() - started) % poll_interval)
                        if client.operation(ic_id)["status"] in ("completed", "failed"):
                            break
                    seen_by_poll = time.time()
                    while True:
                        arrived, entry = arrivals.get(timeout=30)
                        if entry["ids"].get("ic_id") == ic_id:
                            break
                    pushed.append(arrived - stored_at(entry))
                    polled.append(seen_by_poll - stored_at(entry))
                    time.sleep(jitter.uniform(0, poll_interval))  # anywhere in a poll cycle
        finally:
            cluster.stop()
    return pushed, polled


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 0.50) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "mean_ms": statistics.fmean(samples) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=300, help="stop/resume operations")
    parser.add_argument("--pipelines", type=int, default=4)
    parser.add_argument("--poll-interval", type=float, default=0.5, help="the baseline's period")
    args = parser.parse_args()
    pushed, polled = measure(args.ops, args.pipelines, args.poll_interval)
    result = {"sse_pushed": summary(pushed), "polling_baseline": summary(polled)}
    print(f"settling event stored -> client knows, {args.ops} alternating stop/resume ops")
    for name, label in (
        ("sse_pushed", "inferno: /api/v1/events/stream (SSE)"),
        ("polling_baseline", f"baseline: poll the operation every {args.poll_interval:g} s"),
    ):
        s = result[name]
        print(f"  {label:<44} p50 {s['p50_ms']:8.2f} ms   p99 {s['p99_ms']:8.2f} ms   n={s['n']}")
    print("  target (2 cores): SSE p99 <= 100 ms")
    OUT.mkdir(exist_ok=True)
    (OUT / "sse_latency.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

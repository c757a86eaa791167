"""Cold start on a long history: process start to the api's `/readyz` and to the scheduler's first
decision, without and with snapshots (issue 8 §4).

    .venv/bin/python bench/cold_start.py [--events 1000000 10000000]

For each size it writes a history (bench/history.py: CMD and EVT, about 2,020 events an
experiment) to a throwaway nats-server without `sync_interval: always`, then times real service
processes (`python -m inferno.scheduler`, `python -m inferno.api`), each from `Popen`:
  scheduler: until its first decision, the outcome event of a clone command appended to CMD
             right after the process was started (the scheduler must replay, lead, follow CMD
             and decide it);
  api:       until `GET /readyz` answers 200 (projection caught up; the scheduler of the second
             run holds the lease meanwhile).
The first start of each finds no snapshot: it replays the whole log, then writes one; the
second start loads it and catches up from its sequences. Target: <= 3 s with snapshots at 10M.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgspec
from history import write_history

from inferno.client.embedded import EmbeddedNats, free_port
from inferno.events import Names, encode
from inferno.events.commands import ClonePipeline
from inferno.events.model import PipelineChanges
from inferno.jetstream import SnapshotStore, connect, ensure_log
from inferno.jetstream.snapshots import parse_name
from inferno.runtime.settings import Settings

OUT = Path(__file__).parent / "out"
NAMES = Names("bench")
DEADLINE_S = 900.0  # a full replay of 10M events takes minutes on 2 cores
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


_children: list[subprocess.Popen[bytes]] = []  # stopped at the end of each size, come what may


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    _children.append(process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)


def log_lines(log: Path, event: str) -> list[dict]:
    """The service's JSON log lines for `event` (snapshot saved / loaded, ...)."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                found.append(entry)
    return found


async def first_decision(nc, env: dict[str, str], log: Path) -> tuple[float, subprocess.Popen]:
    """Seconds from starting a scheduler to the outcome of a command appended after that."""
    js = nc.jetstream()
    ic_id = (await js.stream_info(NAMES.cmd_stream)).state.last_seq + 1  # the only CMD writer
    decided = asyncio.get_running_loop().create_future()

    async def on_event(msg) -> None:
        if not decided.done() and msgspec.json.decode(msg.data).get("ic_id") == ic_id:
            decided.set_result(time.perf_counter())

    sub = await nc.subscribe(NAMES.evt_subjects, cb=on_event)
    start = time.perf_counter()
    process = spawn("inferno.scheduler", env, log)
    changes = PipelineChanges(pipeline_name=f"cold-{ic_id}")  # a name still free: it succeeds
    command = ClonePipeline(pipeline_id=1, changes=changes)
    ack = await js.publish(command.subject(NAMES), encode(command), stream=NAMES.cmd_stream)
    if ack.seq != ic_id:
        raise RuntimeError(f"the command got ic_id {ack.seq}, expected {ic_id}")
    try:
        while not decided.done():
            if process.poll() is not None:
                raise RuntimeError(f"the scheduler exited with {process.returncode}; see {log}")
            if time.perf_counter() - start > DEADLINE_S:
                raise RuntimeError(f"no decision within {DEADLINE_S} s; see {log}")
            await asyncio.wait([decided], timeout=0.01)
    finally:
        await sub.unsubscribe()
    return decided.result() - start, process


def _ready(url: str) -> bool:
    try:
        with _HTTP.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


async def readyz(env: dict[str, str], log: Path) -> tuple[float, subprocess.Popen]:
    """Seconds from starting an api to `/readyz` answering 200."""
    url = f"http://127.0.0.1:{env['INFERNO_API_PORT']}/readyz"
    start = time.perf_counter()
    process = spawn("inferno.api", env, log)
    while time.perf_counter() - start < DEADLINE_S:
        if process.poll() is not None:
            raise RuntimeError(f"the api exited with {process.returncode}; see {log}")
        if await asyncio.to_thread(_ready, url):
            return time.perf_counter() - start, process
        await asyncio.sleep(0.01)
    raise RuntimeError(f"the api was not ready within {DEADLINE_S} s; see {log}")


async def snapshot_taken(store: SnapshotStore, model: str, at_least: int) -> str:
    """Wait until `model` has a snapshot including at least `at_least` messages in all."""
    deadline = time.perf_counter() + DEADLINE_S
    while time.perf_counter() < deadline:
        for name in await store.available(model):
            parsed = parse_name(name)
            if parsed and sum(parsed[1].values()) >= at_least:
                return name
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no {model} snapshot within {DEADLINE_S} s")


async def one_size(events: int, tmp: Path) -> dict:
    logs = OUT / "cold_start" / str(events)
    logs.mkdir(parents=True, exist_ok=True)
    for old in logs.glob("*.log"):
        old.unlink()
    with EmbeddedNats(tmp / f"nats-{events}", sync_always=False) as server:
        nc = await connect(server.url, name="bench-cold-start")
        js = nc.jetstream()
        defaults = Settings()  # the services' settings: the log must be what they expect
        await ensure_log(
            js, NAMES, heartbeat_ttl_s=defaults.heartbeat_ttl_s, lease_ttl_s=defaults.lease_ttl_s
        )
        built = await write_history(nc, NAMES, events)
        print(f"  history of {events:,} events written in {built['seconds']:.0f} s", flush=True)
        env = {
            **os.environ,
            "NATS_URL": server.url,
            "INFERNO_NAMESPACE": NAMES.namespace,
            "INFERNO_LOG_FORMAT": "json",
            "INFERNO_API_PORT": str(free_port()),
        }
        result: dict = {"events": events, "history": built}
        try:
            await time_services(nc, env, logs, result)
        finally:
            while _children:
                stop(_children.pop())
        await nc.close()
    return result


async def time_services(nc, env: dict[str, str], logs: Path, result: dict) -> None:
    """Each service started twice: on the log alone, then from the snapshot it wrote."""
    js = nc.jetstream()
    store = SnapshotStore(js, NAMES)
    for run in ("without", "with"):
        log = logs / f"scheduler-{run}.log"
        seconds, scheduler = await first_decision(nc, env, log)
        result[f"scheduler_{run}_snapshot_s"] = seconds
        print(f"  scheduler {run} snapshot: first decision after {seconds:.2f} s", flush=True)
        if run == "without":
            last = (await js.stream_info(NAMES.evt_stream)).state.last_seq
            await snapshot_taken(store, "decision", last - 1)
            stop(scheduler)
            result["decision_snapshot"] = log_lines(log, "snapshot saved")[-1]
    # the second scheduler keeps running: it holds the lease the api's readiness needs
    for run in ("without", "with"):
        log = logs / f"api-{run}.log"
        seconds, api = await readyz(env, log)
        result[f"api_{run}_snapshot_s"] = seconds
        print(f"  api {run} snapshot: /readyz 200 after {seconds:.2f} s", flush=True)
        if run == "without":
            total = 0
            for stream in (NAMES.cmd_stream, NAMES.evt_stream):
                total += (await js.stream_info(stream)).state.last_seq
            await snapshot_taken(store, "readmodel", total)
            result["readmodel_snapshot"] = log_lines(log, "snapshot saved")[-1]
        stop(api)


def report(results: list[dict]) -> str:
    lines = [
        "cold start (process start -> ready), without and with snapshots; target <= 3 s at 10M",
        f"  {'events':>12}  {'service':<30}{'without':>10}{'with':>10}   snapshot",
    ]
    for r in results:
        for service, key, snap in (
            ("scheduler: first decision", "scheduler", r["decision_snapshot"]),
            ("api: /readyz 200", "api", r["readmodel_snapshot"]),
        ):
            without, with_ = r[f"{key}_without_snapshot_s"], r[f"{key}_with_snapshot_s"]
            size = f"{snap['bytes'] / 1e6:.1f} MB, encoded in {snap['encode_ms']:.0f} ms"
            lines.append(
                f"  {r['events']:>12,}  {service:<30}{without:>9.2f}s{with_:>9.2f}s   {size}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events", type=int, nargs="+", default=[1_000_000, 10_000_000], help="history sizes"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for events in args.events:
            print(f"== {events:,} events", flush=True)
            results.append(asyncio.run(one_size(events, Path(tmp))))
    print(report(results))
    OUT.mkdir(exist_ok=True)
    (OUT / "cold_start.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

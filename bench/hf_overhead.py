"""What the executor costs on top of transformers: one model, one set of prompts, two ways.

    .venv/bin/python bench/hf_overhead.py [--rows 1024] [--max-tokens 64] [--batch-sizes 16,64]
        [--shards 4] [--rounds 5] [--threads 1] [--quick]

(a) bare: transformers in this process: the tokenizer (left padding) and `model.generate`
    (greedy, `--max-tokens` new tokens) over the rows in batches of the batch size, then the
    completions decoded: what a script without Inferno does;
(b) cluster: a real cluster (`LocalCluster`: nats-server with `sync_interval: always`, the api
    and the scheduler as their own processes) with one real executor process
    (`inferno.executor.service.run`, default settings but the batch size). Each round creates an
    experiment through the api from the stored dataset: one `hf` pipeline over the same rows in
    `--shards` shards, the same prompt, sampling and model; the executor renders, batches,
    generates, scores and writes results and reports as it always does. Timed from the create
    command's time in INFERNO_CMD to the PipelineCompleted's in INFERNO_EVT (server clocks).
The model is `hf.tiny_model` (GPT-2 shaped, random weights, built here: nothing is downloaded),
loaded once per side; warm-ups (imports, model load, a first experiment) are not timed. Both
sides run torch with `--threads` intra-op threads (default 1: on a shared 2-core machine two
threads per process mostly measure who else runs, as a preempted thread stalls every step's
barrier). Rounds alternate bare / cluster; the medians are compared, and each round's pair too.

Per batch size, printed and written to bench/out/hf_overhead.json in bench/vllm_overhead.py's
format: rows/s of each and the ratio cluster / bare (target >= 0.95); beside them where the
cluster's time went (`engine_s`: the executor's generate calls, as its rows' latencies say; the
rest is dispatch, prompts, scoring, results and reports not hidden behind generation), CPU
seconds (bare; the executor process; nats-server, api and scheduler) and their ratio, which the
machine's other load disturbs less than wall time, and how many outputs equal the bare run's.

`python bench/hf_overhead.py executor --id ID --batch-size N --threads T` is the executor
process it starts (NATS_URL and INFERNO_* from the environment).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
from vllm_overhead import arithmetic

from inferno.client.embedded import die_with_parent_hook
from inferno.client.launcher import ClusterError, LocalCluster
from inferno.events.names import Names
from inferno.executor.backends import hf
from inferno.jetstream import connect
from inferno.runtime.logs import configure_logging
from inferno.runtime.settings import Settings

OUT = Path(__file__).parent / "out"
NAMES = Names("inferno")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROMPT = "Q: {question}\nA:"
TARGET = 0.95


# the executor process


def executor_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hf_overhead.py executor")
    parser.add_argument("--id", required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from inferno.executor.service import run

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format, service="executor")
    asyncio.run(
        run(
            settings,
            executor_id=args.id,
            slots=settings.executor_slots,
            batch_size=args.batch_size,
        )
    )
    return 0


def start_executor(
    cluster: LocalCluster, log_dir: Path, batch_size: int, threads: int
) -> tuple[str, subprocess.Popen[bytes]]:
    executor_id = f"hf-b{batch_size}"
    env = {**os.environ, "NATS_URL": cluster.nats_url, "INFERNO_NAMESPACE": NAMES.namespace}
    argv = [sys.executable, __file__, "executor", "--id", executor_id]
    argv += ["--batch-size", str(batch_size), "--threads", str(threads)]
    with (log_dir / f"{executor_id}.log").open("ab") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent_hook()
        )
    return executor_id, process


def stop_executor(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (its children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# the bare side


class Bare:
    """transformers alone: the model and tokenizer `hf.HfModel.load` would load, used directly."""

    def __init__(self, model_dir: Path) -> None:
        import torch
        import transformers

        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        self.model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
        self.model.eval()

    def run(self, prompts: list[str], batch_size: int, max_tokens: int) -> tuple[list[str], int]:
        """Completions of every prompt, and how many tokens were generated."""
        tokenizer, texts, tokens = self.tokenizer, [], 0
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(
                prompts[start : start + batch_size],
                padding=True,
                return_tensors="pt",
                return_token_type_ids=False,  # GPT-2 would read them as embeddings
            )
            with self.torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=max_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            tokens += int((new != tokenizer.pad_token_id).sum())
            texts += tokenizer.batch_decode(new, skip_special_tokens=True)
        return texts, tokens


# the cluster side


async def wait_executor(
    api: httpx.AsyncClient, executor_id: str, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 120
    while True:
        executors = (await api.get("/executors")).json()
        executors = executors["executors"] if isinstance(executors, dict) else executors
        if any(e["executor_id"] == executor_id and "hf" in e["backends"] for e in executors):
            return
        if process.poll() is not None or time.monotonic() > deadline:
            raise ClusterError(f"executor {executor_id} did not register (see its log)")
        await asyncio.sleep(0.2)


class Cluster:
    """An open connection to the cluster's api and log, and the experiment each round creates."""

    def __init__(
        self, api: httpx.AsyncClient, nc: Any, experiment: dict[str, Any], others: list[int]
    ) -> None:
        self.api, self.nc, self.js, self.experiment = api, nc, nc.jetstream(), experiment
        self.others = others  # nats-server, api and scheduler
        self.executor_pid = 0
        self.ended: dict[int, asyncio.Event] = {}
        self.failed: dict[int, str] = {}

    async def watch(self) -> None:
        async def on_end(msg: Any) -> None:
            pid = int(msg.subject.split(".")[3])
            if msg.subject.endswith(".failed"):
                self.failed[pid] = msg.data.decode()[:500]
            self.ended.setdefault(pid, asyncio.Event()).set()

        for kind in ("completed", "failed"):
            await self.nc.subscribe(NAMES.pipeline_evt("*", kind), cb=on_end)

    async def run(self, rows: int, batch_size: int) -> dict[str, Any]:
        """One experiment, start to end: its seconds by server clocks, tokens and results."""
        body = {**self.experiment, "experiment_name": f"hf-overhead-{time.time_ns()}"}
        executor_cpu = cpu_seconds(self.executor_pid)
        others_cpu = sum(map(cpu_seconds, self.others))
        response = await self.api.post("/experiments", json=body, params={"wait": 30})
        created = response.json()
        if response.status_code != 200 or created.get("status") != "completed":
            raise RuntimeError(f"create failed: {response.status_code} {response.text[:500]}")
        pid = created["pipelines"][0]["pipeline_id"]
        await asyncio.wait_for(self.ended.setdefault(pid, asyncio.Event()).wait(), 600)
        if pid in self.failed:
            raise RuntimeError(f"pipeline {pid} failed: {self.failed[pid]}")
        command = await self.js.get_msg(NAMES.cmd_stream, seq=created["ic_id"])
        done = await self.js.get_last_msg(NAMES.evt_stream, NAMES.pipeline_evt(pid, "completed"))
        executor_cpu = cpu_seconds(self.executor_pid) - executor_cpu
        others_cpu = sum(map(cpu_seconds, self.others)) - others_cpu
        pipeline = (await self.api.get(f"/pipelines/{pid}")).json()
        assert pipeline["rows_processed"] == rows, pipeline
        exported = await self.api.get(f"/pipelines/{pid}/results")
        results = [msgspec.json.decode(line) for line in exported.content.splitlines()]
        return {
            "seconds": done.time.timestamp() - command.time.timestamp(),
            "completion_tokens": pipeline["completion_tokens"],
            "executor_cpu_s": executor_cpu,
            "others_cpu_s": others_cpu,
            "results": sorted(results, key=lambda r: r["row_index"]),
            # every row of a batch carries the batch's wall time; batches are full
            "engine_s": sum(r["latency_ms"] for r in results) / batch_size / 1000,
        }


def experiment(ref: str, model_dir: Path, shards: int, max_tokens: int) -> dict[str, Any]:
    return {
        "num_shards": shards,
        "shuffle": False,  # the bare side's batches, row for row: the same padding, same outputs
        "dataset": {"ref": ref},
        "eval": {"prompt": PROMPT, "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": [
            {
                "pipeline_name": "tiny",
                "pipeline_type": "hf",
                "model_config": {"model": str(model_dir), "dtype": "float32"},
                "sampling_params": {"temperature": 0, "max_tokens": max_tokens},
            }
        ],
    }


# the comparison


async def compare(
    cluster: Cluster, bare: Bare, args: argparse.Namespace, batch_size: int
) -> dict[str, Any]:
    rows = arithmetic(args.rows)
    prompts = [PROMPT.format(**row) for row in rows]
    bare.run(prompts[: 2 * batch_size], batch_size, args.max_tokens)  # warm-up
    bare_s, bare_cpu, runs = [], [], []
    for _ in range(args.rounds):
        started, cpu = time.perf_counter(), time.process_time()
        texts, bare_tokens = bare.run(prompts, batch_size, args.max_tokens)
        bare_s.append(time.perf_counter() - started)
        bare_cpu.append(time.process_time() - cpu)
        runs.append(await cluster.run(args.rows, batch_size))

    def median(key: str) -> float:
        return statistics.median(run[key] for run in runs)

    bare_median, cluster_median = statistics.median(bare_s), median("seconds")
    last = runs[-1]
    same = sum(r["output"] == t for r, t in zip(last["results"], texts, strict=True))
    if same != args.rows or last["completion_tokens"] != bare_tokens:
        raise RuntimeError(  # then the two sides did not do the same work
            f"batch {batch_size}: {same} of {args.rows} outputs equal, completion tokens "
            f"{last['completion_tokens']} through the cluster vs {bare_tokens} bare"
        )
    return {
        "model": "hf.tiny_model (GPT-2 shape, 2 layers, width 64, vocab 512)",
        "path": "cluster (api, scheduler, one executor process)",
        "rows": args.rows,
        "max_tokens": args.max_tokens,
        "batch_size": batch_size,
        "shards": args.shards,
        "threads": args.threads,
        "rounds": args.rounds,
        "bare_rows_per_s": round(args.rows / bare_median, 1),
        "executor_rows_per_s": round(args.rows / cluster_median, 1),
        "completion_tokens_bare": bare_tokens,
        "completion_tokens_executor": last["completion_tokens"],
        "same_outputs": same,
        "ratio": round(bare_median / cluster_median, 4),
        "target": TARGET,
        "bare_s": [round(s, 3) for s in bare_s],
        "executor_s": [round(run["seconds"], 3) for run in runs],
        # each round's two passes ran back to back, under much the same load from elsewhere
        "ratio_of_each_round": [
            round(b / run["seconds"], 4) for b, run in zip(bare_s, runs, strict=True)
        ],
        # where the cluster's time went, medians: the executor's generate calls, and CPU
        "engine_s": round(median("engine_s"), 3),
        "cpu_ratio": round(statistics.median(bare_cpu) / median("executor_cpu_s"), 4),
        "bare_cpu_s": round(statistics.median(bare_cpu), 3),
        "executor_cpu_s": round(median("executor_cpu_s"), 3),
        "nats_api_scheduler_cpu_s": round(median("others_cpu_s"), 3),
    }


async def bench(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    rows = arithmetic(args.rows)
    model_dir = hf.tiny_model(
        tmp / "tiny-lm", [f"Q: {r['question']}\nA: {r['answer']}" for r in rows]
    )
    bare = Bare(model_dir)
    log_dir = tmp / "logs"
    cluster = LocalCluster(tmp / "data", executors=0, namespace=NAMES.namespace, log_dir=log_dir)
    cluster.start()
    results = []
    try:
        async with httpx.AsyncClient(
            base_url=f"{cluster.api_url}/api/v1", timeout=60.0, trust_env=False
        ) as api:
            stored = (await api.post("/datasets", json={"rows": rows})).json()
            body = experiment(stored["dataset_ref"], model_dir, args.shards, args.max_tokens)
            nc = await connect(cluster.nats_url, name="bench-hf-overhead")
            others = [cluster.nats.pid, *(c.pid for c in cluster.children)]
            on = Cluster(api, nc, body, [pid for pid in others if pid is not None])
            await on.watch()
            for batch_size in args.batch_sizes:
                executor_id, process = start_executor(cluster, log_dir, batch_size, args.threads)
                on.executor_pid = process.pid
                try:
                    await wait_executor(api, executor_id, process)
                    # warm-up: torch imported, the model loaded, the dataset cached
                    on.experiment = experiment(stored["dataset_ref"], model_dir, args.shards, 1)
                    await on.run(args.rows, batch_size)
                    on.experiment = body
                    results.append(await compare(on, bare, args, batch_size))
                finally:
                    stop_executor(process)
            await nc.close()
    except BaseException:
        print(f"cluster logs: {log_dir}", file=sys.stderr)
        raise
    finally:
        cluster.stop()
    return results


def main() -> int:
    if sys.argv[1:2] == ["executor"]:
        return executor_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="16,64", help="comma-separated; 16: the default")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    parser.add_argument("--quick", action="store_true", help="256 rows, 32 tokens, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.max_tokens, args.rounds = 256, 32, 2
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if any(args.rows % (args.shards * b) for b in args.batch_sizes):
        parser.error("--rows must be a multiple of --shards x every batch size (full batches)")
    import torch

    torch.set_num_threads(args.threads)
    os.environ["HF_HUB_OFFLINE"] = "1"  # the cluster's processes inherit it: no hub
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(bench(args, Path(tmp)))
    print(json.dumps(results, indent=2))
    for r in results:
        verdict = "meets" if r["ratio"] >= TARGET else "MISSES"
        print(
            f"batch {r['batch_size']}: executor / bare = {r['ratio']:.3f} "
            f"({verdict} the >= {TARGET} target)"
        )
    OUT.mkdir(exist_ok=True)
    (OUT / "hf_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the executor costs on top of vLLM: one model, one set of prompts, two ways.

    .venv/bin/python bench/vllm_overhead.py --model Qwen/Qwen2.5-0.5B-Instruct \
        [--rows 2048] [--max-tokens 128] [--batch-size ROWS] [--rounds 3]

(a) bare: `vllm.LLM.generate(prompts, SamplingParams(...))`, all prompts in one call;
(b) executor: the same rows as one shard through a real executor (`inferno.executor.service.run`
    in this process, on an embedded nats-server): the work order from INFERNO_WORK, the dataset
    from INFERNO_DATA, prompts rendered, batches of `--batch-size` through the vllm backend's
    engine, scored, and its `ShardFinished` to INFERNO_EXEC with the results inside it (in
    INFERNO_RESULTS first when they pass 256 KiB). Timed from publishing the order to receiving
    its `ShardFinished`.
Both use one `vllm.LLM` (loaded once; the executor's backend is handed the same object), greedy
sampling, and alternate over `--rounds` after a warm-up. Printed and written to
bench/out/vllm_overhead.json: rows/s of each and the ratio executor / bare (target >= 0.97).

The executor's batch size matters: vLLM batches continuously only within one `generate` call, so
small executor batches (the executor's default is 16) leave the GPU underused; by default the
shard is one batch here, so the ratio is the executor's own cost. Try `--batch-size 256` to see
what batching costs. Needs vllm (`pip install -e '.[vllm]'`) and a GPU; without either it says
which and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from inferno.client.embedded import EmbeddedNats
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events.batches import members
from inferno.events.codec import decode_report, encode
from inferno.events.commands import ShardErrored, ShardFinished
from inferno.events.model import EvalSpec, PipelineSpec, Scorer
from inferno.events.names import Names
from inferno.events.work import WorkOrder
from inferno.executor.backends import vllm as vllm_backend
from inferno.executor.backends.base import Backend
from inferno.executor.service import run
from inferno.jetstream import connect, ensure_log
from inferno.runtime.settings import Settings

OUT = Path(__file__).parent / "out"
NAMES = Names("bench")
EXECUTOR = "bench"
EVAL = EvalSpec(prompt="Q: {question}\nA:", scorers=[Scorer(name="exact_match", target="answer")])


def missing() -> str | None:
    """Why this host cannot run the benchmark, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed (pip install -e '.[vllm]')"
    if not vllm_backend.has_gpu():
        return "torch sees no GPU, and vLLM needs one"
    return None


def arithmetic(n: int) -> list[dict[str, Any]]:
    """examples/arith.jsonl's recipe, for any number of rows."""
    rows = []
    for i in range(n):
        a, b, op = (37 * i) % 90 + 10, (11 * i) % 19 + 2, "+-*"[i % 3]
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"id": i, "question": f"What is {a} {op} {b}?", "answer": str(answer)})
    return rows


async def executor_pass(
    nc: Any,
    js: Any,
    executor: asyncio.Task[None],
    spec: PipelineSpec,
    ref: str,
    rows: int,
    pipeline_id: int,
) -> tuple[float, ShardFinished]:
    """Send one shard of `rows` rows to the running executor; seconds until it finished."""
    done: asyncio.Future[ShardFinished] = asyncio.get_running_loop().create_future()

    async def on_report(msg: Any) -> None:
        for report in members(decode_report(msg.data)):
            if report.pipeline_id != pipeline_id or done.done():
                continue
            if isinstance(report, ShardFinished):
                done.set_result(report)
            elif isinstance(report, ShardErrored):
                done.set_exception(RuntimeError(f"the shard failed: {report.error}"))

    sub = await nc.subscribe(NAMES.exec_report(EXECUTOR, "*"), cb=on_report)
    order = WorkOrder(
        experiment_id="bench",
        pipeline_id=pipeline_id,
        shard=0,
        attempt=1,
        executor_id=EXECUTOR,
        dataset_ref=ref,
        row_start=0,
        row_end=rows,
        spec=spec,
        eval=EVAL,
    )
    started = time.perf_counter()
    await js.publish(
        NAMES.work(EXECUTOR),
        encode(order),
        stream=NAMES.work_stream,
        headers={"Nats-Msg-Id": order.msg_id},
    )
    await asyncio.wait([done, executor], return_when=asyncio.FIRST_COMPLETED)
    if not done.done():  # the executor stopped: say why
        executor.result()
        raise RuntimeError("the executor stopped before the shard finished")
    finished = done.result()
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    # the report arrives before the executor has its PubAck and acks the order: let it finish,
    # since the bare pass blocks this event loop (the executor's too)
    await asyncio.sleep(0.2)
    return elapsed, finished


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    import vllm

    model_config = {"model": args.model, "gpu_memory_utilization": args.gpu_memory_utilization}
    if args.max_model_len:
        model_config["max_model_len"] = args.max_model_len
    sampling = {"temperature": 0, "max_tokens": args.max_tokens}
    spec = PipelineSpec(
        pipeline_name="bench",
        pipeline_type="vllm",
        model_config=model_config,
        sampling_params=sampling,
    )
    llm = vllm.LLM(**vllm_backend.llm_kwargs(model_config))
    params = vllm.SamplingParams(**vllm_backend.sampling_kwargs(sampling))

    @asynccontextmanager
    async def shared_engine(_: PipelineSpec) -> AsyncIterator[vllm_backend.VllmEngine]:
        yield vllm_backend.VllmEngine(llm, vllm.SamplingParams)  # the bench owns the LLM

    rows = arithmetic(args.rows)
    prompts = [EVAL.prompt.format(**row) for row in rows]
    jsonl = to_jsonl(rows)
    ref = dataset_ref(jsonl)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp)) as server:
        nc = await connect(server.url, name="bench-vllm")
        js = nc.jetstream()
        settings = Settings(nats_url=server.url, namespace=NAMES.namespace)
        await ensure_log(
            js, NAMES, heartbeat_ttl_s=settings.heartbeat_ttl_s, lease_ttl_s=settings.lease_ttl_s
        )
        await (await js.object_store(NAMES.data_store)).put(ref, jsonl)
        stop = asyncio.Event()
        executor = asyncio.create_task(
            run(
                settings,
                executor_id=EXECUTOR,
                slots=1,
                stop=stop,
                backends={"vllm": Backend("vllm", shared_engine)},
                batch_size=args.batch_size,
                progress_every_s=60.0,
                poll_s=0.05,
            )
        )
        try:
            llm.generate(prompts[:64], params, use_tqdm=False)  # warm-up: both paths
            await executor_pass(nc, js, executor, spec, ref, 64, pipeline_id=1)
            bare_s, executor_s = [], []
            for round_ in range(args.rounds):
                started = time.perf_counter()
                outputs = llm.generate(prompts, params, use_tqdm=False)
                bare_s.append(time.perf_counter() - started)
                elapsed, finished = await executor_pass(
                    nc, js, executor, spec, ref, args.rows, pipeline_id=2 + round_
                )
                executor_s.append(elapsed)
                assert finished.stats.rows == args.rows, finished.stats
        finally:
            stop.set()
            await executor
            await nc.close()
    bare, through = statistics.median(bare_s), statistics.median(executor_s)
    return {
        "model": args.model,
        "rows": args.rows,
        "max_tokens": args.max_tokens,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "bare_rows_per_s": round(args.rows / bare, 1),
        "executor_rows_per_s": round(args.rows / through, 1),
        "completion_tokens_bare": sum(len(o.outputs[0].token_ids) for o in outputs),
        "completion_tokens_executor": finished.stats.completion_tokens,
        "ratio": round(bare / through, 4),
        "target": 0.97,
        "bare_s": [round(s, 3) for s in bare_s],
        "executor_s": [round(s, 3) for s in executor_s],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model directory or hub id")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="the executor's batch size (default: --rows)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    parser.add_argument("--max-model-len", type=int, default=None)
    args = parser.parse_args()
    args.batch_size = args.batch_size or args.rows
    if reason := missing():
        print(f"vllm_overhead: cannot run here: {reason}", file=sys.stderr)
        return 2
    result = asyncio.run(bench(args))
    print(json.dumps(result, indent=2))
    verdict = "meets" if result["ratio"] >= result["target"] else "MISSES"
    print(f"executor / bare = {result['ratio']:.3f} ({verdict} the >= 0.97 target)")
    OUT.mkdir(exist_ok=True)
    (OUT / "vllm_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

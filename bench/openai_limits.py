"""The `openai` backend under an endpoint's rate limits: no 429s, and the quota used up.

    .venv/bin/python bench/openai_limits.py [--rows 2000] [--window 10] [--fleet]

The OpenAI-compatible test server (bench/openai_server.py) enforces rpm and tpm over a sliding
window, scaled from 60 s to `--window` seconds so a run takes under a minute, and fails 1% of
attempts with a 500. Prompts carry a context of varying length, so tokens are the binding limit
and a limiter that kept whole reservations (prompt + max_tokens) would waste about a sixth of it.

Three runs of the same rows against a fresh server each:
  limiter   the real executor (`inferno.executor.service.run`, 4 slots, 4 shards) with the
            pipeline's rpm/tpm limits at 95% of the server's;
  reactive  the same without limits: it only backs off when told (429 + Retry-After);
  sdk       the baseline people write: AsyncOpenAI with its own retries (2, honouring
            Retry-After), 8 requests at a time.
For each: rows answered, 429s in all and after the first window (warm-up), and throughput over
the complete windows after the first, from the server's own admission log, as a share of the
configured limits (of the server's for the baselines): max(requests / rpm, tokens / tpm).
Targets: limiter answers every row, 0 429s after warm-up, >= 90% of the configured limit.

`--fleet`: the limits across executors. 1, 3 and 8 executors (2 slots, 2 shards each) run one
pipeline with its own limits, and 4 executors run 4 pipelines that share one endpoint limit
(`endpoint_limit`), each twice: with the fleet limiter (`INFERNO_RATE_LIMITS=fleet`, the
default) and with today's per-executor one (`executor`, where each of the 4 pipelines declares
the account's limits as its own, there being no shared limit then). Same figures, same targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from openai_server import OpenAIServer, count_tokens

from inferno.client.embedded import EmbeddedNats
from inferno.datasets.store import dataset_ref, to_jsonl
from inferno.events.batches import members
from inferno.events.codec import decode_report, encode
from inferno.events.commands import AnyReport, ShardErrored, ShardFinished
from inferno.events.model import EndpointLimit, EvalSpec, PipelineSpec, Scorer, shard_bounds
from inferno.events.names import Names
from inferno.events.work import WorkOrder
from inferno.executor.backends import openai as openai_backend
from inferno.executor.service import run
from inferno.jetstream import connect, ensure_log, follow
from inferno.runtime.settings import Settings

OUT = Path(__file__).parent / "out"
NAMES = Names("bench")
SERVER_RPM, SERVER_TPM = 600, 36_000  # per window
SHARE = 0.95  # the pipeline's limits: just under the server's
SHARDS = 4
MAX_TOKENS = 16
PROMPT = "Context: {context}\nQ: What is {a} + {b}?\nA:"
WORDS = "the of and to in is was for on that with as by at from it an be this are".split()  # noqa: SIM905


def make_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(42)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        context = " ".join(rng.choices(WORDS, k=rng.randint(40, 140)))
        rows.append({"id": i, "context": context, "a": a, "b": b, "answer": str(a + b)})
    return rows


def server(window_s: float) -> OpenAIServer:
    return OpenAIServer(
        rpm=SERVER_RPM, tpm=SERVER_TPM, window_s=window_s, error_rate=0.01, seed=1, latency_s=0.02
    ).start()


def throughput(srv: OpenAIServer, rpm: float, tpm: float) -> dict[str, Any]:
    """From the server's log: usage per complete window after the first, as a share of limits."""
    stats = srv.stats()
    times = [at for at, _ in stats.admitted]
    start, end, w = times[0], times[-1], srv.window_s
    windows = []
    k = 1
    while start + (k + 1) * w <= end:
        lo, hi = start + k * w, start + (k + 1) * w
        inside = [tokens for at, tokens in stats.admitted if lo <= at < hi]
        windows.append(max(len(inside) / rpm, sum(inside) / tpm))
        k += 1
    warm = start + w
    return {
        "requests_admitted": len(times),
        "rate_limited": len(stats.rate_limited),
        "rate_limited_after_warmup": sum(at >= warm for at in stats.rate_limited),
        "injected_500s": stats.injected_errors,
        "steady_windows": len(windows),
        "utilisation_pct": round(100 * sum(windows) / len(windows), 1) if windows else None,
        "utilisation_min_pct": round(100 * min(windows), 1) if windows else None,
    }


async def executor_run(
    rows: list[dict[str, Any]],
    window_s: float,
    limited: bool,
    *,
    executors: int = 1,
    pipelines: int = 1,
    scope: str = "fleet",
) -> dict:
    """`executors` real executors (2 slots each, 4 with one) run `pipelines` pipelines over the
    rows, 2 shards per executor and pipeline at least. One pipeline has its own limits; several
    share one endpoint limit (`scope` fleet), or each declares the account's limits as its own
    (`scope` executor: today's way, before endpoint limits)."""
    srv = server(window_s)
    data = to_jsonl(rows)
    rpm, tpm = int(SERVER_RPM * SHARE), int(SERVER_TPM * SHARE)
    shared = pipelines > 1 and scope == "fleet"
    spec = PipelineSpec(
        pipeline_name="bench",
        pipeline_type="openai",
        model_config={"model": "bench-model"},
        sampling_params={"max_tokens": MAX_TOKENS, "temperature": 0},
        client_config={"base_url": srv.base_url, "rate_window_s": window_s},
        rpm_limit=rpm if limited and not shared else None,
        tpm_limit=tpm if limited and not shared else None,
        endpoint_limit=EndpointLimit(name="account", rpm_limit=rpm, tpm_limit=tpm)
        if limited and shared
        else None,
    )
    evals = EvalSpec(prompt=PROMPT, scorers=[Scorer(name="exact_match", target="answer")])
    slots = SHARDS if executors == 1 else 2
    shards = max(SHARDS if executors == 1 else 2 * executors // pipelines, 1)
    finals: list[AnyReport] = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp)) as nats:
        nc = await connect(nats.url, name="bench")
        js = nc.jetstream()
        settings = Settings(nats_url=nats.url, namespace=NAMES.namespace, rate_limits=scope)
        await ensure_log(
            js, NAMES, heartbeat_ttl_s=settings.heartbeat_ttl_s, lease_ttl_s=settings.lease_ttl_s
        )
        await (await js.object_store(NAMES.data_store)).put(dataset_ref(data), data)
        done = asyncio.Event()

        def on_report(payload: bytes, _seq: int) -> None:
            for report in members(decode_report(payload)):
                if isinstance(report, ShardFinished | ShardErrored):
                    finals.append(report)
            if len(finals) == shards * pipelines:
                done.set()

        follower = await follow(js, NAMES.exec_stream, on_report, start_seq=1)
        stop = asyncio.Event()
        ids = [f"ex{i}" for i in range(executors)]
        running = [
            asyncio.create_task(
                run(
                    settings,
                    executor_id=executor_id,
                    slots=slots,
                    stop=stop,
                    backends={"openai": openai_backend.BACKEND},
                    poll_s=0.1,
                )
            )
            for executor_id in ids
        ]
        started = time.perf_counter()
        per_pipeline = len(rows) // pipelines
        turn = 0
        for pipeline in range(pipelines):
            for shard in range(shards):
                start, end = shard_bounds(per_pipeline, shards, shard)
                order = WorkOrder(
                    experiment_id="bench",
                    pipeline_id=pipeline + 1,
                    shard=shard,
                    attempt=1,
                    executor_id=ids[turn % executors],
                    dataset_ref=dataset_ref(data),
                    row_start=pipeline * per_pipeline + start,
                    row_end=pipeline * per_pipeline + end,
                    spec=msgspec.structs.replace(spec, pipeline_name=f"bench{pipeline}"),
                    eval=evals,
                )
                turn += 1
                await js.publish(
                    NAMES.work(order.executor_id),
                    encode(order),
                    stream=NAMES.work_stream,
                    headers={"Nats-Msg-Id": order.msg_id},
                )
        finished = asyncio.create_task(done.wait())
        await asyncio.wait({finished, *running}, return_when=asyncio.FIRST_COMPLETED)
        for executor in running:
            if executor.done():
                finished.cancel()
                executor.result()  # raises what stopped the executor
        elapsed = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*running)
        await follower.stop()
        await nc.close()
    srv.stop()
    answered = right = 0
    for report in finals:
        if isinstance(report, ShardFinished):
            answered += report.stats.rows - report.stats.errors
            right += int(report.stats.metrics["exact_match"].total)
    limits = (rpm, tpm) if limited else (SERVER_RPM, SERVER_TPM)
    return {
        "rows": per_pipeline * pipelines,
        "answered": answered,
        "right": right,
        "shards_errored": sum(isinstance(r, ShardErrored) for r in finals),
        "elapsed_s": round(elapsed, 1),
        "rows_per_s": round(answered / elapsed, 1),
        **throughput(srv, *limits),
    }


async def sdk_run(rows: list[dict[str, Any]], window_s: float) -> dict:
    import openai

    srv = server(window_s)
    client = openai.AsyncOpenAI(api_key="no-key", base_url=srv.base_url)  # default retries: 2
    slots = asyncio.Semaphore(8)
    answered = right = 0

    async def one(row: dict[str, Any]) -> None:
        nonlocal answered, right
        async with slots:
            try:
                reply = await client.chat.completions.create(
                    model="bench-model",
                    messages=[{"role": "user", "content": PROMPT.format(**row)}],
                    max_tokens=MAX_TOKENS,
                    temperature=0,
                )
            except openai.APIError:
                return
        answered += 1
        right += reply.choices[0].message.content == row["answer"]

    started = time.perf_counter()
    await asyncio.gather(*(one(row) for row in rows))
    elapsed = time.perf_counter() - started
    await client.close()
    srv.stop()
    return {
        "rows": len(rows),
        "answered": answered,
        "right": right,
        "elapsed_s": round(elapsed, 1),
        "rows_per_s": round(answered / elapsed, 1),
        **throughput(srv, SERVER_RPM, SERVER_TPM),
    }


def show(name: str, r: dict[str, Any]) -> None:
    print(
        f"{name:14} answered {r['answered']:>5}/{r['rows']}  right {r['right']:>5}  "
        f"429s {r['rate_limited']:>5} (after warm-up {r['rate_limited_after_warmup']:>5})  "
        f"{r['rows_per_s']:>6} rows/s in {r['elapsed_s']:>5} s  "
        f"steady use {r['utilisation_pct']}% of the limit (min {r['utilisation_min_pct']}%, "
        f"{r['steady_windows']} windows)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per scaled minute")
    parser.add_argument(
        "--fleet",
        action="store_true",
        help="1, 3 and 8 executors x one pipeline, and 4 pipelines on one endpoint limit, "
        "each with the fleet limiter and with today's per-executor one",
    )
    args = parser.parse_args()
    rows = make_rows(args.rows)
    rpm, tpm = int(SERVER_RPM * SHARE), int(SERVER_TPM * SHARE)
    print(
        f"server: {SERVER_RPM} requests / {SERVER_TPM} tokens per {args.window:g} s window; "
        f"pipeline limits {rpm} / {tpm}; {args.rows} rows, 1% injected 500s"
    )
    reserved = sum(
        openai_backend.reserve_tokens(PROMPT.format(**r), {"max_tokens": MAX_TOKENS}) for r in rows
    )
    used = sum(count_tokens(PROMPT.format(**r)) + count_tokens(r["answer"]) for r in rows)
    print(
        f"tokens per row: {reserved / len(rows):.1f} reserved, {used / len(rows):.1f} used: "
        f"a limiter that kept whole reservations would use at most {100 * used / reserved:.0f}% "
        "of tpm"
    )
    figures: dict[str, dict[str, Any]] = {}
    if args.fleet:
        for executors, pipelines in ((1, 1), (3, 1), (8, 1), (4, 4)):
            for scope in ("fleet", "executor"):
                name = f"{executors}x{pipelines} {scope}"
                figures[name] = await executor_run(
                    rows, args.window, True, executors=executors, pipelines=pipelines, scope=scope
                )
                show(name, figures[name])
    else:
        figures["limiter"] = await executor_run(rows, args.window, limited=True)
        figures["reactive"] = await executor_run(rows, args.window, limited=False)
        figures["sdk"] = await sdk_run(rows, args.window)
        for name, result in figures.items():
            show(name, result)
    OUT.mkdir(exist_ok=True)
    meta = {
        "window_s": args.window,
        "server_rpm": SERVER_RPM,
        "server_tpm": SERVER_TPM,
        "tokens_reserved_per_row": round(reserved / len(rows), 1),
        "tokens_used_per_row": round(used / len(rows), 1),
    }
    out = OUT / ("openai_fleet_limits.json" if args.fleet else "openai_limits.json")
    out.write_text(json.dumps({**meta, **figures}, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())

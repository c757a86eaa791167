"""Big datasets: streaming uploads, create from a stored dataset, and what one shard reads.

    .venv/bin/python bench/datasets.py [--rows 1000000] [--create-rows 100000] [--quick]

Starts the embedded cluster the way `inferno up` does (nats-server with sync_interval: always,
api and scheduler as separate processes), then:
- uploads a `--rows` dataset as JSONL, CSV and Parquet, each a raw streamed body (chunked, no
  Content-Length): rows/s, MB/s of the file, and the api process's peak RSS during the upload
  (VmHWM, reset before each). Baseline, same run: today's whole-object path on the same file in
  a process of its own (read it whole, parse every row, build the canonical JSONL and its
  digest, no storing), with its peak RSS;
- creates experiments from a stored `--create-rows` dataset of 550-byte rows (55 MB at 100k,
  the issue's case): time until the api answers, and until the operation is completed.
  Baseline, same run: what today's api did before answering (the whole object from
  INFERNO_DATA, parsed), timed on the same rows stored whole;
- reads one shard (1/64 of the rows) as an executor does: time and blocks read, beside the
  whole-object read above.
Targets: create <= 0.5 s; upload memory bounded whatever the file's size.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pyarrow as pa
import pyarrow.parquet as pq
from prometheus_client import REGISTRY

from inferno.client.launcher import LocalCluster
from inferno.datasets.files import parse_rows
from inferno.datasets.objects import read_whole
from inferno.datasets.store import dataset_ref, from_jsonl, to_jsonl
from inferno.events.names import Names
from inferno.executor.datasets import DatasetCache

OUT = Path(__file__).parent / "out"
MEDIA = {
    "jsonl": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
NAMES = Names("inferno")


def rows(n: int, pad: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": str(i), "question": f"what is {i} + {i}? {'x' * pad}", "answer": str(2 * i)}


def write_files(folder: Path, n: int, pad: int) -> dict[str, Path]:
    paths = {fmt: folder / f"rows.{fmt}" for fmt in MEDIA}
    with paths["jsonl"].open("wb") as jsonl, paths["csv"].open("w") as csv:
        csv.write("id,question,answer\n")
        for row in rows(n, pad):
            jsonl.write(to_jsonl([row]))
            csv.write(f"{row['id']},{row['question']},{row['answer']}\n")
    batch, writer = [], None
    for row in rows(n, pad):  # in row groups of 50k: the bench's own memory stays small
        batch.append(row)
        if len(batch) == 50_000:
            table = pa.Table.from_pylist(batch)
            writer = writer or pq.ParquetWriter(paths["parquet"], table.schema)
            writer.write_table(table)
            batch = []
    if batch:
        table = pa.Table.from_pylist(batch)
        writer = writer or pq.ParquetWriter(paths["parquet"], table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    return paths


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's way to reset VmHWM


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            yield chunk


def upload(api: str, pid: int, path: Path, fmt: str) -> dict[str, Any]:
    reset_peak_rss(pid)
    start = time.perf_counter()
    answer = httpx.post(
        f"{api}/api/v1/datasets",
        content=file_chunks(path),
        headers={"Content-Type": MEDIA[fmt]},
        timeout=1800,
    )
    seconds = time.perf_counter() - start
    answer.raise_for_status()
    count = answer.json()["row_count"]
    size_mb = path.stat().st_size / 1e6
    return {
        "dataset_ref": answer.json()["dataset_ref"],
        "rows_per_s": count / seconds,
        "mb_per_s": size_mb / seconds,
        "seconds": seconds,
        "file_mb": size_mb,
        "api_peak_rss_mb": peak_rss_mb(pid),
    }


def whole_path(path: Path, fmt: str) -> dict[str, Any]:
    """Today's whole-object path on a file, in a process of its own (for a clean peak RSS)."""
    start = time.perf_counter()
    parsed = parse_rows(path.read_bytes(), fmt)
    dataset_ref(to_jsonl(parsed))
    seconds = time.perf_counter() - start
    return {
        "rows_per_s": len(parsed) / seconds,
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(os.getpid()),
    }


def baseline(path: Path, fmt: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--whole", str(path), fmt], check=True, capture_output=True
    )
    return json.loads(done.stdout)


def experiment(ref: str) -> dict[str, Any]:
    return {
        "experiment_name": "big",
        "num_shards": 64,
        "dataset": {"ref": ref},
        "eval": {
            "prompt": "Q: {question}",
            "scorers": [{"name": "exact_match", "target": "answer"}],
        },
        "pipelines": [
            {"pipeline_name": "s", "pipeline_type": "sim", "model_config": {"model": "sim"}}
        ],
    }


def creates(api: str, ref: str, times: int) -> dict[str, Any]:
    answered, completed = [], []
    with httpx.Client(base_url=api, timeout=60) as http:
        for _ in range(times):
            start = time.perf_counter()
            http.post("/api/v1/experiments", json=experiment(ref)).raise_for_status()
            answered.append(time.perf_counter() - start)
            start = time.perf_counter()
            op = http.post("/api/v1/experiments?wait=30", json=experiment(ref)).json()
            assert op["status"] == "completed", op
            completed.append(time.perf_counter() - start)
    return {
        "answered_p50_s": statistics.median(answered),
        "answered_max_s": max(answered),
        "completed_p50_s": statistics.median(completed),
    }


async def reads(nats_url: str, jsonl: bytes, row_count: int) -> dict[str, Any]:
    """Today's whole read (object + parse) beside one shard's read from blocks."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        store = await js.object_store(NAMES.data_store)
        ref = dataset_ref(jsonl)
        await store.put(ref, jsonl)  # the same rows stored whole, as before blocks
        start = time.perf_counter()
        whole = from_jsonl(await read_whole(store, ref) or b"")
        whole_s = time.perf_counter() - start
        assert len(whole) == row_count
        shard = range(row_count // 2, row_count // 2 + row_count // 64)
        before = REGISTRY.get_sample_value(
            "inferno_executor_dataset_blocks_total", {"source": "store"}
        )
        start = time.perf_counter()
        got = await DatasetCache(js, NAMES).rows(ref, shard)
        shard_s = time.perf_counter() - start
        assert got == whole[shard.start : shard.stop]
        after = REGISTRY.get_sample_value(
            "inferno_executor_dataset_blocks_total", {"source": "store"}
        )
        return {
            "whole_read_s": whole_s,
            "shard_rows": len(shard),
            "shard_read_s": shard_s,
            "shard_blocks_read": (after or 0) - (before or 0),
        }
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--create-rows", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="100k rows to upload, 20k to create")
    parser.add_argument("--whole", nargs=2, metavar=("PATH", "FORMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole:
        print(json.dumps(whole_path(Path(args.whole[0]), args.whole[1])))
        return
    if args.quick:
        args.rows, args.create_rows = 100_000, 20_000
    results: dict[str, Any] = {"rows": args.rows, "create_rows": args.create_rows}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing {args.rows} rows as JSONL, CSV and Parquet ...", flush=True)
        paths = write_files(folder, args.rows, pad=120)
        cluster = LocalCluster(
            folder / "cluster", executors=0, log_dir=folder / "logs", out=io.StringIO()
        )
        cluster.start()
        try:
            api, pid = cluster.api_url, next(c.pid for c in cluster.children if c.name == "api")
            assert pid is not None
            results["api_idle_rss_mb"] = peak_rss_mb(pid)
            for fmt, path in paths.items():
                print(f"uploading {path.name} ({path.stat().st_size / 1e6:.0f} MB) ...", flush=True)
                results[f"upload_{fmt}"] = upload(api, pid, path, fmt)
                results[f"whole_{fmt}"] = baseline(path, fmt)
            refs = {results[f"upload_{fmt}"]["dataset_ref"] for fmt in MEDIA}
            assert len(refs) == 1, f"the formats gave different refs: {refs}"
            create_file = folder / "create.jsonl"
            jsonl = to_jsonl(rows(args.create_rows, pad=510))  # 550-byte rows, as in the issue
            create_file.write_bytes(jsonl)
            print(f"storing {args.create_rows} rows ({len(jsonl) / 1e6:.0f} MB) ...", flush=True)
            results["create_upload"] = upload(api, pid, create_file, "jsonl")
            results["create"] = creates(api, results["create_upload"]["dataset_ref"], times=5)
            results["reads"] = asyncio.run(reads(cluster.nats_url, jsonl, args.create_rows))
        finally:
            cluster.stop()
    report(results)


def report(r: dict[str, Any]) -> None:
    print(f"\nuploads of {r['rows']} rows, streamed (api idle RSS {r['api_idle_rss_mb']:.0f} MB)")
    print(
        f"{'format':8} {'file MB':>8} {'rows/s':>9} {'MB/s':>6} {'api peak RSS':>13}"
        " | today's whole path: rows/s, peak RSS"
    )
    for fmt in MEDIA:
        u, w = r[f"upload_{fmt}"], r[f"whole_{fmt}"]
        print(
            f"{fmt:8} {u['file_mb']:8.0f} {u['rows_per_s']:9.0f} {u['mb_per_s']:6.1f}"
            f" {u['api_peak_rss_mb']:10.0f} MB | {w['rows_per_s']:9.0f} {w['peak_rss_mb']:6.0f} MB"
        )
    c, reads_ = r["create"], r["reads"]
    print(
        f"\ncreate from a stored {r['create_rows']}-row dataset"
        f" ({r['create_upload']['file_mb']:.0f} MB)"
    )
    print(
        f"  answered p50 {c['answered_p50_s'] * 1e3:.0f} ms"
        f" (max {c['answered_max_s'] * 1e3:.0f} ms),"
        f" completed p50 {c['completed_p50_s'] * 1e3:.0f} ms"
    )
    print(
        "  baseline, today's path (whole object read + parsed):"
        f" {reads_['whole_read_s'] * 1e3:.0f} ms"
    )
    print(
        f"  one shard ({reads_['shard_rows']} rows): {reads_['shard_read_s'] * 1e3:.0f} ms,"
        f" {reads_['shard_blocks_read']:.0f} blocks read, vs the whole object above"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "datasets.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()

"""How fast a service rebuilds its state from INFERNO_EVT, and what fsync-before-ack costs.

    .venv/bin/python bench/replay.py [--events 1000000] [--rounds 3]

Appends a realistic log (bench/workload.py) to an embedded nats-server, then times
  (a) decode + evolve in memory, and
  (b) replay from JetStream into the fold (`inferno.jetstream.replay`),
each for the scheduler's decision state (`inferno.events.State`, `evolve`) and for the api's read
model (`inferno.readmodels`, `apply_event`), beside the baseline measured in the same run: the
raw delivery rate of an ordered push consumer whose callback only counts. Targets (2 cores), for
the decision state: (a) >= 400k events/s, (b) >= 80% of the baseline.

It also appends the same sample to two servers, with and without `sync_interval: always`
(DESIGN §9), to show what durability costs. The million-event load itself goes to a server
without it, since only replay is being timed and fsyncing each message would take minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from workload import event_log

from inferno.client.embedded import EmbeddedNats
from inferno.events import Names, State, decode_event, evolve
from inferno.jetstream import connect, ensure_log, replay
from inferno.readmodels import ReadModel, apply_event

OUT = Path(__file__).parent / "out"
NAMES = Names("bench")


async def append_all(js, log: list[tuple[str, bytes]]) -> float:
    """publish_async in windows; no expected-sequence headers, so nats-py #985 cannot bite."""
    start = time.perf_counter()
    window = 5000
    for i in range(0, len(log), window):
        for subject, payload in log[i : i + window]:
            await js.publish_async(subject, payload, stream=NAMES.evt_stream)
        await js.publish_async_completed()
    return len(log) / (time.perf_counter() - start)


async def append_rate(log: list[tuple[str, bytes]], *, sync_always: bool) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        EmbeddedNats(Path(tmp), sync_always=sync_always) as server,
    ):
        nc = await connect(server.url, name="bench-append")
        js = nc.jetstream()
        await ensure_log(js, NAMES)
        rate = await append_all(js, log)
        await nc.close()
    return rate


Fold = tuple[Callable[[bytes, int], object], Callable[[], int]]
"""apply(data, seq) for each event, and how many it has folded."""


def decision_fold() -> Fold:
    state = State()

    def apply(data: bytes, seq: int) -> None:
        evolve(state, decode_event(data))

    return apply, lambda: state.events_applied


def read_model_fold() -> Fold:
    model = ReadModel()

    def apply(data: bytes, seq: int) -> None:
        apply_event(model, seq, decode_event(data))

    return apply, lambda: model.events_applied


FOLDS = {"decision": decision_fold, "read_model": read_model_fold}


def in_memory(payloads: list[bytes], fold: Callable[[], Fold]) -> float:
    """(a): the fold alone, best of the rounds (nothing else competes for the CPU here)."""
    apply, folded = fold()
    start = time.perf_counter()
    for seq, payload in enumerate(payloads, 1):
        apply(payload, seq)
    elapsed = time.perf_counter() - start
    assert folded() == len(payloads)
    return len(payloads) / elapsed


async def raw_delivery(js, count: int) -> float:
    """The baseline: an ordered consumer whose callback does nothing but count."""
    done = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_message(msg) -> None:
        nonlocal seen
        seen += 1
        if seen == count:
            done.set_result(None)

    start = time.perf_counter()
    sub = await js.subscribe(
        NAMES.evt_subjects, stream=NAMES.evt_stream, cb=on_message, ordered_consumer=True
    )
    await done
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    return count / elapsed


async def replay_transport(js, count: int) -> float:
    """`replay` with a handler that does nothing: the transport alone, for reference."""
    start = time.perf_counter()
    await replay(js, NAMES.evt_stream, lambda data, seq: None)
    return count / (time.perf_counter() - start)


async def replay_into_fold(js, count: int, fold: Callable[[], Fold]) -> float:
    apply, folded = fold()
    start = time.perf_counter()
    last = await replay(js, NAMES.evt_stream, apply)
    elapsed = time.perf_counter() - start
    if last != count or folded() != count:
        raise RuntimeError(f"replay stopped at {last}, folded {folded()} of {count}")
    return count / elapsed


async def main(events: int, rounds: int, sample: int) -> dict:
    """Replays are reported as medians, and (b) as the median of per-pair ratios."""
    log = event_log(events, NAMES)
    durable = await append_rate(log[:sample], sync_always=True)
    lazy = await append_rate(log[:sample], sync_always=False)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedNats(Path(tmp), sync_always=False) as server:
        nc = await connect(server.url, name="bench-replay")
        js = nc.jetstream()
        await ensure_log(js, NAMES)
        await append_all(js, log)
        payloads = [payload for _, payload in log]
        memory = {k: max(in_memory(payloads, f) for _ in range(rounds)) for k, f in FOLDS.items()}
        raw, transport = [], []
        folded: dict[str, list[float]] = {k: [] for k in FOLDS}
        for _ in range(rounds):  # back to back, so a busy machine slows all alike
            raw.append(await raw_delivery(js, len(log)))
            transport.append(await replay_transport(js, len(log)))
            for name, fold in FOLDS.items():
                folded[name].append(await replay_into_fold(js, len(log), fold))
        await nc.close()
    ratios = [f / r for f, r in zip(folded["decision"], raw, strict=True)]
    model_ratios = [f / r for f, r in zip(folded["read_model"], raw, strict=True)]
    return {
        "events": len(log),
        "append_sample": sample,
        "append_sync_always_per_s": durable,
        "append_default_sync_per_s": lazy,
        "decode_evolve_per_s": memory["decision"],
        "read_model_in_memory_per_s": memory["read_model"],
        "raw_delivery_per_s": statistics.median(raw),
        "replay_transport_per_s": statistics.median(transport),
        "replay_fold_per_s": statistics.median(folded["decision"]),
        "replay_vs_raw": statistics.median(ratios),
        "replay_vs_raw_range": [min(ratios), max(ratios)],
        "read_model_replay_per_s": statistics.median(folded["read_model"]),
        "read_model_vs_raw": statistics.median(model_ratios),
        "read_model_vs_raw_range": [min(model_ratios), max(model_ratios)],
    }


def report(r: dict) -> str:
    low, high = r["replay_vs_raw_range"]
    model_low, model_high = r["read_model_vs_raw_range"]
    rows = [
        ("append, sync_interval: always", r["append_sync_always_per_s"], ""),
        ("append, default 2-minute fsync", r["append_default_sync_per_s"], ""),
        ("(a) decision state: decode + evolve", r["decode_evolve_per_s"], "target >= 400,000"),
        ("(a) read model: decode + apply_event", r["read_model_in_memory_per_s"], ""),
        ("baseline: raw ordered-consumer delivery", r["raw_delivery_per_s"], ""),
        ("replay transport alone (no-op handler)", r["replay_transport_per_s"], ""),
        (
            "(b) replay into the decision state",
            r["replay_fold_per_s"],
            f"{r['replay_vs_raw']:.0%} of baseline (pairs: {low:.0%}-{high:.0%}), target >= 80%",
        ),
        (
            "(b) replay into the read model",
            r["read_model_replay_per_s"],
            f"{r['read_model_vs_raw']:.0%} of baseline (pairs: {model_low:.0%}-{model_high:.0%})",
        ),
    ]
    lines = [f"replay benchmark: {r['events']:,} events, appends timed on {r['append_sample']:,}"]
    lines += [f"  {name:<42}{rate:>12,.0f} ev/s   {note}" for name, rate, note in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5, help="paired raw/fold replays")
    parser.add_argument("--append-sample", type=int, default=20_000)
    args = parser.parse_args()
    result = asyncio.run(main(args.events, args.rounds, args.append_sample))
    print(report(result))
    OUT.mkdir(exist_ok=True)
    (OUT / "replay.json").write_text(json.dumps(result, indent=2))

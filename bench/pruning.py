"""Pruning rules on simulated experiments: compute saved, and how often the best was stopped.

    .venv/bin/python bench/pruning.py [--experiments 200] [--rows 2000] [--shards 40]

Each experiment has 8 pipelines with known accuracies, in two fields: `spread` (the best 0.80,
one rival at 0.77, the rest down to 0.50) and `close` (four within 0.015 of each other at the
top, as in a sweep of small changes), their rows in a random order, scored 0/1 by a draw per
(pipeline, row). Pipelines advance one shard per round in lockstep; after every round the rule
decides with `inferno.events.policy.to_prune`, the scheduler's own function, on standings built
as the decider builds them (`inferno.events.sequences` for the confidence sequences). A pruned
pipeline runs no more shards. Printed per rule: the share of row evaluations saved against
running everything, and the share of experiments whose truly best pipeline (the highest mean
over all rows) was stopped. Baselines in the same runs: no pruning (0 saved), RapidFire's
`median_of_peers`, and `dominated` on fixed-sample Wilson intervals instead of the sequences.
Pure computation: nothing is started.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from inferno.events.model import PrunePolicy, shard_bounds
from inferno.events.policy import Standing, to_prune
from inferno.events.sequences import Prefix, shard_terms
from inferno.stats.metrics import fpc, wilson_interval

FIELDS = {
    "spread": (0.80, 0.77, 0.72, 0.68, 0.64, 0.60, 0.55, 0.50),
    "close": (0.800, 0.795, 0.790, 0.785, 0.75, 0.70, 0.65, 0.60),
}
CONFIDENCE = 0.95
OUT = Path(__file__).parent / "out"


def experiment(
    accuracies: tuple[float, ...],
    rows: int,
    shards: int,
    rule: str,
    intervals: str,
    rng: random.Random,
) -> tuple[float, bool]:
    scores = [[float(rng.random() < a) for _ in range(rows)] for a in accuracies]
    finals = [sum(s) / rows for s in scores]
    best = max(range(len(accuracies)), key=lambda p: (finals[p], -p))
    policy = PrunePolicy(rule=rule, metric="m", min_rows=100)  # type: ignore[arg-type]
    prefixes = [Prefix() for _ in accuracies]
    running = [True] * len(accuracies)
    done_rows = [0] * len(accuracies)
    for shard in range(shards):
        start, end = shard_bounds(rows, shards, shard)
        for p in range(len(accuracies)):
            if running[p]:
                part: list[float | None] = list(scores[p][start:end])
                prefixes[p].absorb(shard_terms({"m": part}, start, rows, CONFIDENCE))
                done_rows[p] = end
        standings = []
        for p, prefix in enumerate(prefixes):
            n = done_rows[p]
            value = sum(scores[p][:n]) / n
            if intervals == "sequence":
                bounds = prefix.bounds("m", CONFIDENCE, rows)
            else:
                bounds = wilson_interval(value, n, CONFIDENCE, fpc(n, rows))
            low, high = bounds if bounds is not None else (None, None)
            standings.append(Standing(p, running[p], False, n, value, low, high, f"{shard + 1}"))
        for p, _ in to_prune(policy, standings):
            running[p] = False
    evaluated = sum(done_rows)
    return 1 - evaluated / (rows * len(accuracies)), not running[best] and done_rows[best] < rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="pruning.py")
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--shards", type=int, default=40)
    args = parser.parse_args()
    cases = {
        "dominated, confidence sequences": ("dominated", "sequence"),
        "dominated, Wilson (fixed-sample)": ("dominated", "wilson"),
        "median_of_peers (RapidFire)": ("median_of_peers", "sequence"),
    }
    print(
        f"{args.experiments} experiments x 8 pipelines per field, {args.rows} rows in"
        f" {args.shards} shards, min_rows 100, {CONFIDENCE:.0%}; baseline: no pruning saves 0 %"
    )
    print(f"{'field':<8}{'rule':<36}{'compute saved':>15}{'best pruned':>13}")
    figures: dict[str, dict[str, float]] = {}
    for field, accuracies in FIELDS.items():
        for name, (rule, intervals) in cases.items():
            rng = random.Random(2026)  # every rule sees the same experiments
            runs = [
                experiment(accuracies, args.rows, args.shards, rule, intervals, rng)
                for _ in range(args.experiments)
            ]
            saved = sum(s for s, _ in runs) / len(runs)
            lost = sum(b for _, b in runs) / len(runs)
            print(f"{field:<8}{name:<36}{saved:>15.1%}{lost:>13.1%}")
            figures[f"{field}: {name}"] = {"compute_saved": saved, "best_pruned": lost}
    OUT.mkdir(exist_ok=True)
    (OUT / "pruning.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

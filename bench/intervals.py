"""What an interval valid at every look costs: widths and coverage, sequence against Wilson.

    .venv/bin/python bench/intervals.py [--rows 1000] [--shards 20] [--runs 2000]

Simulates runs of an experiment with 0/1 scores: the population's rows in a random order (as a
shuffled experiment sees them), cut into shards, each interval computed after every shard by the
code the read models use (`inferno.events.sequences` for the confidence sequence,
`inferno.stats.metrics.wilson_interval` with the finite-population correction for Wilson).
Prints, per pass rate, the median width of each at 10 %, 50 % and 90 % of the rows, and the
share of runs whose every interval covered the final value (the baseline is Wilson, in the
same runs). Pure computation: nothing is started.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

from inferno.events.model import shard_bounds
from inferno.events.sequences import Prefix, shard_terms
from inferno.stats.metrics import fpc, wilson_interval

CONFIDENCE = 0.95
LOOKS = (0.1, 0.5, 0.9)
OUT = Path(__file__).parent / "out"


def run(order: list[float], shards: int) -> tuple[dict[float, tuple[float, float]], bool, bool]:
    """Widths (sequence, wilson) at each look, and whether each covered at every look."""
    rows = len(order)
    final = sum(order) / rows
    prefix, seen = Prefix(), 0.0
    widths: dict[float, tuple[float, float]] = {}
    sequence_held = wilson_held = True
    for shard in range(shards):
        start, end = shard_bounds(rows, shards, shard)
        part = order[start:end]
        prefix.absorb(shard_terms({"m": list(part)}, start, rows, CONFIDENCE))
        seen += sum(part)
        low, high = prefix.bounds("m", CONFIDENCE, rows) or (0.0, 1.0)
        w_low, w_high = wilson_interval(seen / end, end, CONFIDENCE, fpc(end, rows))
        sequence_held &= low <= final <= high
        wilson_held &= w_low <= final <= w_high
        for look in LOOKS:
            if end == round(rows * look):
                widths[look] = (high - low, w_high - w_low)
    return widths, sequence_held, wilson_held


def main() -> None:
    parser = argparse.ArgumentParser(prog="intervals.py")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--shards", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(2026)
    print(
        f"{args.rows} rows in {args.shards} shards, {args.runs} runs per rate, {CONFIDENCE:.0%}:"
        " median width (sequence / wilson = cost) at each share of rows; runs covered at every look"
    )
    header = "".join(f"{f'{look:.0%} of rows':>26}" for look in LOOKS)
    print(f"{'pass rate':>10}{header}{'covered: sequence':>20}{'wilson':>9}")
    figures: dict[str, dict[str, float]] = {}
    for rate in (0.1, 0.5, 0.8, 0.95):
        population = [1.0] * round(args.rows * rate) + [0.0] * (args.rows - round(args.rows * rate))
        results = []
        for _ in range(args.runs):
            rng.shuffle(population)
            results.append(run(population, args.shards))
        cells, figure = "", {}
        for look in LOOKS:
            sequence = statistics.median(w[look][0] for w, _, _ in results if look in w)
            wilson = statistics.median(w[look][1] for w, _, _ in results if look in w)
            cells += f"{f'{sequence:.3f} / {wilson:.3f} = {sequence / wilson:.2f}x':>26}"
            figure[f"sequence_width_at_{look:.0%}"] = sequence
            figure[f"wilson_width_at_{look:.0%}"] = wilson
        covered = sum(s for _, s, _ in results) / args.runs
        wilson_covered = sum(w for _, _, w in results) / args.runs
        print(f"{rate:>10.2f}{cells}{covered:>20.1%}{wilson_covered:>9.1%}")
        figures[str(rate)] = {**figure, "covered": covered, "wilson_covered": wilson_covered}
    OUT.mkdir(exist_ok=True)
    (OUT / "intervals.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

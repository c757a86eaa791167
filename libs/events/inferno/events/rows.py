"""Which dataset rows each shard runs: a seeded permutation of the rows, cut into shards.

Shards are contiguous ranges of *positions* (`shard_bounds`); position p runs dataset row
`permuted(p)`. With a `RowOrder` in the experiment's creation event the permutation is
`feistel-v1`, a pseudo-random bijection of [0, N) computed per position (so an executor derives
its shard's rows alone, and any reader can, from the seed and N); without one (`shuffle: false`,
or a log written before rows were shuffled) position p is row p. A shuffled shard is a uniform
random sample of the dataset, so early metrics are unbiased even on a file sorted by difficulty,
and the positions are the order in which `inferno.events.sequences` sees the rows.

`feistel-v1`, exactly: take the smallest even b ≥ 2 with 2^b ≥ N, h = b/2. Four round keys are
the first 32 bytes of BLAKE2b(seed as 8 big-endian bytes, key=b"inferno-rows-v1"), read as
big-endian 64-bit words k0..k3. A value x < 2^b is split into L = x >> h and R = x mod 2^h;
each round r sets (L, R) ← (R, L xor (mix(R xor k_r) mod 2^h)), where mix is SplitMix64's
finaliser; the result is L·2^h + R. Position p maps to the first value below N on the walk
p → E(p) → E(E(p)) → … (cycle walking; 2^b < 4N keeps it short).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from inferno.events.model import PERMUTATION, RowOrder, shard_bounds

_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class Permutation:
    """`feistel-v1` over [0, size) for one seed."""

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError(f"a permutation needs at least one row, not {size}")
        bits = max(2, (size - 1).bit_length())
        bits += bits & 1
        self.size, self._half, self._low = size, bits // 2, (1 << (bits // 2)) - 1
        digest = hashlib.blake2b(
            (seed & _MASK64).to_bytes(8, "big"), key=b"inferno-rows-v1", digest_size=32
        ).digest()
        self._keys = tuple(int.from_bytes(digest[i : i + 8], "big") for i in range(0, 32, 8))

    def __call__(self, position: int) -> int:
        if not 0 <= position < self.size:
            raise IndexError(f"position {position} is outside [0, {self.size})")
        half, low, keys = self._half, self._low, self._keys
        x = position
        while True:
            left, right = x >> half, x & low
            for key in keys:
                left, right = right, left ^ (_mix(right ^ key) & low)
            x = (left << half) | right
            if x < self.size:
                return x


def shard_rows(
    row_count: int, num_shards: int, shard: int, order: RowOrder | None
) -> Sequence[int]:
    """The dataset rows of `shard`, in the order the shard runs them."""
    start, end = shard_bounds(row_count, num_shards, shard)
    return positions_rows(row_count, range(start, end), order)


def positions_rows(row_count: int, positions: range, order: RowOrder | None) -> Sequence[int]:
    if order is None:
        return positions
    if order.permutation != PERMUTATION:
        raise ValueError(f"unknown row permutation {order.permutation!r}")
    return _permuted(row_count, order.seed, positions.start, positions.stop)


@functools.lru_cache(maxsize=1024)
def _permuted(row_count: int, seed: int, start: int, stop: int) -> tuple[int, ...]:
    """Every pipeline of an experiment runs the same shards: an executor permutes each once."""
    permuted = Permutation(row_count, seed)
    return tuple(permuted(p) for p in range(start, stop))

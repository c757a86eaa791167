"""Rows to shards: `feistel-v1` is a bijection, pinned, and spreads rows evenly."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inferno.events.model import shard_bounds
from inferno.events.rows import Permutation, RowOrder, positions_rows, shard_rows


@given(size=st.integers(1, 3000), seed=st.integers(0, 2**63 - 1))
def test_every_row_is_at_exactly_one_position(size, seed):
    permuted = Permutation(size, seed)
    assert sorted(map(permuted, range(size))) == list(range(size))


def test_the_definition_is_pinned():
    """Logs store only the seed: a change to the permutation would change old runs' shards."""
    assert [Permutation(10, 1)(p) for p in range(10)] == [2, 8, 7, 5, 3, 0, 9, 1, 4, 6]
    assert [Permutation(1000, 2026)(p) for p in range(8)] == [
        714,
        177,
        791,
        389,
        323,
        690,
        967,
        451,
    ]
    assert Permutation(1, 5)(0) == 0


@pytest.mark.parametrize("num_shards", [1, 7, 50])
def test_shards_cover_the_rows_once_in_file_order_or_shuffled(num_shards):
    rows = 1234
    for order in (None, RowOrder(seed=9)):
        seen = [r for s in range(num_shards) for r in shard_rows(rows, num_shards, s, order)]
        assert sorted(seen) == list(range(rows))
    assert shard_rows(rows, num_shards, 0, None) == range(*shard_bounds(rows, num_shards, 0))


def test_a_shuffled_shard_is_a_spread_sample():
    """The first tenth of the positions of a sorted file: its mean row index is near the
    middle (file order would put it at 5 %), across seeds."""
    rows = 10_000
    means = [
        statistics.fmean(positions_rows(rows, range(rows // 10), RowOrder(seed=s)))
        for s in range(20)
    ]
    assert all(abs(m - rows / 2) < rows * 0.03 for m in means), means
    assert statistics.fmean(positions_rows(rows, range(rows // 10), None)) < rows * 0.05


def test_bad_orders_and_positions_are_refused():
    with pytest.raises(ValueError, match="unknown row permutation 'later-v9'"):
        positions_rows(10, range(3), RowOrder(seed=1, permutation="later-v9"))
    with pytest.raises(IndexError, match="outside"):
        Permutation(10, 1)(10)
    with pytest.raises(ValueError, match="at least one row"):
        Permutation(0, 1)

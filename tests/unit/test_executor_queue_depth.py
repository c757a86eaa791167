"""The queue an executor offers beyond its slots, by how long its shards run."""

from __future__ import annotations

import pytest

from inferno.executor.queue_depth import MAX_PER_SLOT, QUEUE_WORK_S, QueueDepth, orders_per_slot


@pytest.mark.parametrize(
    ("shard_s", "per_slot"),
    [
        (3600.0, 1),
        (QUEUE_WORK_S, 1),  # one shard's worth of queue work: one order
        (QUEUE_WORK_S / 1.5, 2),
        (QUEUE_WORK_S / 2, 2),
        (QUEUE_WORK_S / 3, 4),
        (QUEUE_WORK_S / 8, 8),
        (0.001, MAX_PER_SLOT),  # capped
        (0.0, MAX_PER_SLOT),  # a shard of no rows
    ],
)
def test_orders_per_slot_cover_the_queue_work_in_powers_of_two(shard_s, per_slot):
    assert orders_per_slot(shard_s) == per_slot


def test_a_fixed_queue_never_changes():
    depth = QueueDepth(slots=4, fixed=3)
    assert depth.orders == 3
    assert not depth.ran(0.001, "sim:a")
    assert depth.orders == 3


def test_short_shards_deepen_the_queue_and_long_ones_bring_it_back():
    depth = QueueDepth(slots=2)
    assert depth.orders == 2  # one a slot until a shard has run
    assert depth.ran(0.005, "sim:a")  # changed: the heartbeat goes out at once
    assert depth.orders == 2 * MAX_PER_SLOT
    assert not depth.ran(0.005, "sim:a")  # the same: no heartbeat of its own
    while depth.orders != 2:  # shards of a minute from now on: the mean follows
        depth.ran(60.0, "sim:a")
    assert not depth.ran(60.0, "sim:a")


def test_another_model_starts_the_mean_again():
    depth = QueueDepth(slots=2)
    for _ in range(50):
        depth.ran(0.001, "sim:fast")
    assert depth.orders == 2 * MAX_PER_SLOT
    assert depth.ran(30.0, "vllm:big")  # its first shard alone decides, not fifty of the other
    assert depth.orders == 2

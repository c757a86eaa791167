"""How many work orders an executor asks to hold beyond its slots (`ExecutorInfo.queue`).

A queued order lets a freed slot start its next shard at once instead of waiting a decision
cycle, and the orders of a deeper queue travel in fewer, larger messages. A slot needs queued
work for a round trip through the scheduler (Little's law; 0.1-0.2 s here, assigned to
finished): one order covers it for shards of 0.2 s or more, and shards of milliseconds need
more, or slots wait and every message carries few shards (bench/dispatch.py: 1.54 stored
messages a shard with a fixed queue of one order a slot, 0.46 with seven; docs/benchmarks.md).
But a queued order is in flight for
everyone else: a stop lets it run, and only its executor can start it. So, unless
`INFERNO_EXECUTOR_QUEUE` fixes it, the queue holds about `QUEUE_WORK_S` of its slots' work, by
the mean duration of the shards of the model it has loaded: at least one order a slot (the fixed
default before), at most `MAX_PER_SLOT`, in powers of two a slot so that the figure the
heartbeat carries changes seldom. The scheduler queues orders beyond one a slot only with shards
of the model the heartbeat says is loaded (`inferno.events.work.queue_capacity`): the durations
were measured on it, and another model's shards may be long.
"""

from __future__ import annotations

import math

QUEUE_WORK_S = 0.2  # of the slots' work that may wait in the queue: one or two round trips
MAX_PER_SLOT = 8
_WEIGHT = 0.2  # of each finished shard in the running mean of their durations


def orders_per_slot(shard_s: float) -> int:
    """Queued orders a slot for shards of `shard_s` seconds: 1, 2, 4 or 8."""
    wanted = QUEUE_WORK_S / shard_s if shard_s > 0 else MAX_PER_SLOT
    if wanted <= 1:
        return 1
    return min(2 ** math.ceil(math.log2(wanted)), MAX_PER_SLOT)


class QueueDepth:
    """The queue an executor offers: `fixed` when given, else following its shards."""

    def __init__(self, slots: int, fixed: int | None = None) -> None:
        self.slots, self.fixed = slots, fixed
        self.orders = slots if fixed is None else fixed
        self._model: str | None = None
        self._mean_s: float | None = None

    def ran(self, duration_s: float, model: str) -> bool:
        """A shard of `model` finished in `duration_s`; True when the queue offered changed."""
        if self.fixed is not None:
            return False
        mean = self._mean_s if model == self._model else None  # another model: start again
        self._model = model
        self._mean_s = mean = duration_s if mean is None else mean + _WEIGHT * (duration_s - mean)
        orders = self.slots * orders_per_slot(mean)
        changed, self.orders = orders != self.orders, orders
        return changed

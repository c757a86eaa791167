"""The scheduler lease as readers see it: key `scheduler` in the INFERNO_LEADER bucket.

The scheduler writes `LeaseValue` (services/scheduler/lease.py) and renews it every third of the
TTL; a dead leader's key expires and nats-server leaves a delete marker, a clean shutdown deletes
it. `Leadership` folds what a watch of the key delivers, so a reader (the api's `/readyz`, and
through it the CLI) can say whether anyone decides, and since when no one has. Pure: times come
in as arguments (the server's timestamps of the KV messages, and `now` when asked).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

LEASE_KEY = "scheduler"


class LeaseValue(msgspec.Struct, kw_only=True):
    scheduler_id: str
    since: float  # when this term began
    term: int


lease_value_decoder = msgspec.json.Decoder(LeaseValue)


@dataclass
class Leadership:
    """Who holds the lease; who held it last and when that lease ended, if one did since the
    reader started (after an expiry marker ages out, the bucket no longer says)."""

    holder: LeaseValue | None = None
    renewed_at: float | None = None
    last_holder: str | None = None
    lapsed_at: float | None = None

    def held(self, value: LeaseValue, at: float) -> None:
        self.holder, self.renewed_at = value, at
        self.last_holder, self.lapsed_at = value.scheduler_id, None

    def ended(self, at: float) -> None:
        """The key was deleted (a clean shutdown) or expired (the leader stopped renewing)."""
        if self.holder is not None:
            self.last_holder, self.lapsed_at = self.holder.scheduler_id, at
        self.holder = self.renewed_at = None

    def check(self, now: float, bucket: str) -> tuple[bool, str]:
        """Whether a scheduler decides, and who, or since when no one has, in words."""
        if self.holder is not None:
            held = max(now - self.holder.since, 0.0)
            return True, (
                f"{self.holder.scheduler_id} holds the lease in {bucket} "
                f"(term {self.holder.term}, for {held:.0f} s)"
            )
        last = ""
        if self.last_holder is not None and self.lapsed_at is not None:
            lapsed = max(now - self.lapsed_at, 0.0)
            last = f" (last leader {self.last_holder}, lapsed {lapsed:.0f} s ago)"
        return False, f"no scheduler holds the lease in {bucket}{last}"

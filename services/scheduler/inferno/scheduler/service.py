"""The scheduler's wiring: connect, create the log, watch executors, campaign for the lease, and
lead one term after another until stopped.

A term ends when the lease is lost, on `stop`, or when an append finds another writer in the log
(`StaleWriter`); after the last, the scheduler re-checks the lease and, still leader, starts a
new term from a fresh replay. Cancelling `run` is a crash: the lease is left to expire. Setting
`stop` is a clean shutdown: the current batch is appended, the lease deleted (a standby takes
over at once) and the connection drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace

import nats.errors
import structlog

from inferno.jetstream import Appender, Cadence, SnapshotStore
from inferno.runtime.bootstrap import open_log
from inferno.runtime.metrics import MetricsServer
from inferno.runtime.settings import Settings
from inferno.runtime.tasks import cancel_and_wait
from inferno.scheduler import metrics
from inferno.scheduler.leader import Deps, Outcome, Status, Term
from inferno.scheduler.lease import Lease
from inferno.scheduler.roster import Roster

_log = structlog.get_logger("inferno.scheduler")


def default_scheduler_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def run(
    settings: Settings,
    *,
    scheduler_id: str | None = None,
    stop: asyncio.Event | None = None,
    clock: Callable[[], float] = time.time,
    tick_interval: float = 0.05,
    lease_ttl_s: float | None = None,
    status: Status | None = None,
    metrics_port: int = 0,
) -> None:
    """Run the scheduler until `stop` is set. `lease_ttl_s` overrides `settings.lease_ttl_s`
    (env INFERNO_LEASE_TTL_S); `status`, if given, is kept up to date (tests read the leader's
    state from it); `clock` stamps decisions and judges heartbeats; `metrics_port`: serve
    /metrics there on `settings.metrics_host` (0: not at all)."""
    if lease_ttl_s is not None:
        settings = replace(settings, lease_ttl_s=lease_ttl_s)
    scheduler_id = scheduler_id or default_scheduler_id()
    stop = asyncio.Event() if stop is None else stop
    status = Status() if status is None else status
    status.scheduler_id = scheduler_id
    _log.info(
        "effective_config",
        **settings.masked(),
        scheduler_id=scheduler_id,
        tick_interval_s=tick_interval,
    )
    log = await open_log(settings, f"inferno-scheduler-{scheduler_id}")
    nc, js, names = log.nc, log.js, log.names
    roster = Roster()
    lease: Lease | None = None
    crashed = False
    exporter = None
    try:
        if metrics_port:
            live = metrics.StateCollector(status)
            exporter = await MetricsServer(
                settings.metrics_host,
                metrics_port,
                live=live,
                refresh=lambda: live.refresh(js, names),
            ).start()
        await roster.start(await js.key_value(names.executors_bucket))
        lease = Lease(
            js,
            await js.key_value(names.leader_bucket),
            names.leader_bucket,
            scheduler_id,
            settings.lease_ttl_s,
            clock,
        )
        deps = Deps(
            js=js,
            appender=Appender(nc),
            names=names,
            lease=lease,
            roster=roster,
            status=status,
            clock=clock,
            tick_interval=tick_interval,
            heartbeat_ttl_s=settings.heartbeat_ttl_s,
            snapshots=SnapshotStore(js, names),
            snapshot_cadence=Cadence(settings.snapshot_every_events, settings.snapshot_every_s),
        )
        await _campaign(deps, stop)
    except asyncio.CancelledError:
        crashed = True
        raise
    finally:
        if exporter is not None:
            await exporter.stop()
        await roster.stop()
        if crashed:
            await nc.close()
        else:
            if lease is not None:
                await lease.release()
            await nc.drain()
        _log.info("scheduler stopped", crashed=crashed)


async def _campaign(d: Deps, stop: asyncio.Event) -> None:
    """Standby until the lease is free; then lead until it is lost; repeat until stopped."""
    lease, status = d.lease, d.status
    announced = False
    while not stop.is_set():
        if not await lease.acquire():
            if not announced:
                _log.info("standby", holder=lease.holder, retry_s=lease.ttl_s / 5)
                announced = True
            await _sleep_unless(stop, lease.ttl_s / 5)
            continue
        announced = False
        status.leading, status.term = True, lease.term
        _log.info("leader", term=lease.term, lease_ttl_s=lease.ttl_s)
        renewal = asyncio.create_task(_keep(lease), name="lease-renewal")
        outcome: Outcome = "stale"
        try:
            # after a stale append, go on only if the lease is still ours (renewal re-checks it)
            while outcome == "stale" and not stop.is_set() and await lease.renew():
                outcome = await _term(d, stop)
        finally:
            status.leading = False
            await cancel_and_wait(renewal)  # it loops on renewals, which can lose a cancel
        if outcome == "stale":  # the lease was not ours any more when we looked again
            outcome = "stopped" if stop.is_set() else "deposed"
        _log.info("leadership ended", term=lease.term, outcome=outcome)


async def _term(d: Deps, stop: asyncio.Event) -> Outcome:
    """A term; one that fails on a NATS error (a timeout during a reconnect, say) is retried
    from a fresh replay after a pause, like a stale one."""
    try:
        return await Term(d, stop).run()
    except nats.errors.Error as error:
        _log.warning("term failed; rebuilding", error=repr(error))
        await _sleep_unless(stop, d.lease.ttl_s / 5)
        return "stale"


async def _keep(lease: Lease) -> None:
    """Renew every third of the TTL, so two renewals can fail before the lease lapses."""
    while True:
        await asyncio.sleep(lease.ttl_s / 3)
        if not await lease.renew():
            return


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)

"""Chaos on the 3-node JetStream cluster (issue 7, item 15). The services run as processes on R3
streams (`r3_live`). Under a running experiment — three `sim` pipelines and one `openai` pipeline
against the loopback test server — each test kills one part with SIGKILL: the scheduler leader,
an executor mid-shard, the api, the nats-server that leads INFERNO_EVT; then brings it back.

Right after each kill it issues IC operations: resume of a pipeline stopped before the fault, stop
of another, clone of the openai one. It sends them as a careful client does, with an
Idempotency-Key, retrying while the api cannot answer. Once the fault heals, over the whole log
so far: the operations are answered, every (pipeline, shard) is completed exactly once, every
result row is in INFERNO_RESULTS once, no operation is pending, and the api's projection equals
a fresh fold of the log.

Recovery times are printed (`pytest -s`) and kept in docs/benchmarks.md. The tests share one
cluster and run in file order; each leaves it whole. Heartbeats lapse after 2 s here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from inferno.events.events import AnyEvent, ShardAssigned, ShardCompleted, ShardReleased
from tests.waiting import until

if TYPE_CHECKING:
    from conftest import Live

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

FINAL = ("completed", "failed")
SHARDS = 8


@pytest.fixture(scope="module")
def cluster_env() -> dict[str, str]:
    return {"INFERNO_HEARTBEAT_TTL_S": "2"}


# the run under a fault


async def start_run(live: Live, server: Any, name: str) -> dict[str, int]:
    """An experiment a few shards in, with `c` stopped (so resuming it is valid during the
    fault); pipeline ids by name."""
    sims = (live.sim(p, latency_ms=50) for p in ("a", "b", "c"))
    body = live.experiment_body(*sims, live.openai(server), name=name, retry_backoff_s=0.2)
    created = await live.create_experiment(body)
    ids = {p["pipeline_name"]: p["pipeline_id"] for p in created["pipelines"]}
    stopped = await live.post(f"/api/v1/pipelines/{ids['c']}/stop", params={"wait": 20})
    assert stopped["status"] == "completed", stopped

    async def some_done() -> bool:
        return sum([(await live.pipeline(i))["shards_completed"] for i in ids.values()]) >= 3

    await live.until(some_done, f"{name}: 3 shards completed", timeout=60)
    return ids


async def insist(live: Live, path: str, body: Any = None, timeout: float = 90.0) -> dict[str, Any]:
    """POST a write through an outage: one Idempotency-Key, sent again while the api cannot be
    reached or answers 503; the answer (a retry of a stored command answers its ic_id)."""
    headers = {"Idempotency-Key": uuid.uuid4().hex}

    async def answer() -> dict[str, Any] | None:
        try:
            response = await live.http.post(path, json=body, headers=headers)
        except httpx.TransportError:  # the api is down, or restarting
            return None
        if response.status_code == 503:
            return None
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    return await until(answer, f"POST {path} to be answered", timeout, interval=0.1)


def issue_ops(live: Live, ids: dict[str, int]) -> dict[str, asyncio.Task[dict[str, Any]]]:
    """The IC operations a user sends during the fault, all at once."""
    v1 = "/api/v1/pipelines"
    clone = {"pipeline_name": "gpt-warm", "sampling_params": {"temperature": 0.5, "max_tokens": 16}}
    return {
        "resume c": asyncio.create_task(insist(live, f"{v1}/{ids['c']}/resume")),
        "stop a": asyncio.create_task(insist(live, f"{v1}/{ids['a']}/stop")),
        "clone gpt": asyncio.create_task(insist(live, f"{v1}/{ids['gpt']}/clone", clone)),
    }


@dataclass
class Answers:
    stored: float  # the last command's time in INFERNO_CMD (the server's clock)
    decided: float  # the last operation's `processed_at` (the scheduler's clock)
    seen: float  # when the api showed the last of them final (this process's clock)
    a_stopped: bool  # whether the stop of `a` took effect


async def answered(
    live: Live, ids: dict[str, int], ops: dict[str, asyncio.Task[dict[str, Any]]]
) -> Answers:
    """Once the fault heals every operation is final, as the api shows it, and completed. But
    the stop of `a` may fail because `a` completed first: a command can wait in INFERNO_CMD for
    seconds while the scheduler's tail of it recovers from a lost node, and work goes on."""
    stored = decided = 0.0
    stopped = False
    for what, task in ops.items():
        ic_id = (await asyncio.wait_for(task, 120))["ic_id"]
        op = await live.operation(ic_id, timeout=90)
        if what == "stop a" and op["status"] == "failed":
            too_late = f"cannot stop pipeline {ids['a']}: it is completed"
            assert op["error"].startswith(too_late), op
            print(f"chaos: the stop of a (ic_id {ic_id}) was decided after a completed")
        else:
            stopped |= what == "stop a"
            assert op["status"] == "completed", (what, op)
        decided = max(decided, op["processed_at"])
        command = await live.js.get_msg(live.names.cmd_stream, ic_id)
        stored = max(stored, command.time.timestamp())  # type: ignore[union-attr]
    return Answers(stored, decided, time.time(), a_stopped=stopped)


async def finish(live: Live, ids: dict[str, int], answers: Answers) -> None:
    """Resume `a` (if the stop took effect), let the run complete, judge the whole log so far."""
    if answers.a_stopped:
        resumed = await live.post(f"/api/v1/pipelines/{ids['a']}/resume", params={"wait": 30})
        assert resumed["status"] == "completed", resumed
    clone = next(
        p
        for p in await live.get("/api/v1/pipelines")
        if p["pipeline_name"] == "gpt-warm" and p["parent_pipeline_id"] == ids["gpt"]
    )
    run = [*ids.values(), clone["pipeline_id"]]
    final = await live.settled(*run, timeout=120)
    assert [(p["status"], p["shards_completed"]) for p in final] == [("completed", SHARDS)] * 5

    live.assert_run_complete(await live.events())  # each (pipeline, shard) completed once
    state = await live.assert_projection_is_the_fold()
    pending = [op for op in state.operations.values() if op.status not in FINAL]
    assert not pending, pending
    await live.assert_results_once(state)


def seconds_to_first(
    events: list[tuple[int, AnyEvent]], since: float, kind: type | None = ShardCompleted
) -> float:
    """From `since` (a kill, wall clock) to the first event (of `kind`) stamped after it."""
    stamps = [e.at for _, e in events if e.at > since and (kind is None or isinstance(e, kind))]
    return min(stamps) - since


def of_shard(events: list[tuple[int, AnyEvent]], pipeline_id: int, shard: int) -> list[AnyEvent]:
    """The events about one (pipeline, shard), in log order."""
    key = (pipeline_id, shard)
    return [
        e for _, e in events if (getattr(e, "pipeline_id", None), getattr(e, "shard", None)) == key
    ]


def report(fault: str, killed_at: float, answers: Answers, **seconds: float) -> None:
    """One line of recovery times, each from the kill."""
    seconds |= {
        "operations_stored": answers.stored - killed_at,
        "operations_decided": answers.decided - killed_at,
        "operations_answered": answers.seen - killed_at,
    }
    figures = ", ".join(f"{what.replace('_', ' ')} {s:.1f} s" for what, s in seconds.items())
    print(f"chaos: {fault}: {figures}")


# the faults


async def test_scheduler_leader_killed(r3_live: Live, openai_server: Any) -> None:
    live = r3_live
    ids = await start_run(live, openai_server, "leader")
    leader = await live.leader()
    standby = ({"scheduler-1", "scheduler-2"} - {leader}).pop()

    killed_at = time.time()
    live.child(leader).process.kill()  # type: ignore[union-attr]
    ops = issue_ops(live, ids)
    # nobody leads until the lease lapses: the commands wait in INFERNO_CMD for the standby
    for what, task in ops.items():
        assert (await task)["status"] == "pending", what
    answers = await answered(live, ids, ops)
    assert await live.leader() == standby
    live.restart(live.child(leader))  # back, as the standby now

    await finish(live, ids, answers)
    events = await live.events()
    report(
        "scheduler leader",
        killed_at,
        answers,
        takeover=seconds_to_first(events, killed_at, None),
        first_shard_completed=seconds_to_first(events, killed_at),
    )


async def test_executor_killed_mid_shard(r3_live: Live, openai_server: Any) -> None:
    live = r3_live
    ids = await start_run(live, openai_server, "executor")
    running = await live.running(ids["b"])
    victim = running["in_flight"][0]["executor_id"]
    survivor = ({"exec-1", "exec-2"} - {victim}).pop()

    killed_at = time.time()
    live.child(victim).process.kill()  # type: ignore[union-attr]
    ops = issue_ops(live, ids)
    held = {  # but a's: stopped meanwhile, a shard of it released waits for the resume
        (pid, shard)
        for pid, p in (await live.state()).pipelines.items()
        for shard, a in p.in_flight.items()
        if a.executor_id == victim and pid != ids["a"]
    }
    answers = await answered(live, ids, ops)

    async def reassigned() -> list[ShardCompleted] | None:
        """Each shard the victim held, completed: by the survivor once its heartbeat lapsed
        (or by the victim, whose report was in INFERNO_EXEC before the kill)."""
        events = await live.events()
        done = {(e.pipeline_id, e.shard): e for _, e in events if isinstance(e, ShardCompleted)}
        if not held <= done.keys():
            return None
        return [done[key] for key in sorted(held) if done[key].executor_id != victim]

    redone = await live.until(
        reassigned, f"the shards {victim} held, {sorted(held)}, to complete", timeout=90
    )
    assert redone, f"{victim} held {held}, all reported before the kill: nothing to reassign"
    events = await live.events()
    reassigned_at = []
    for done in redone:
        about = of_shard(events, done.pipeline_id, done.shard)
        released = [e for e in about if isinstance(e, ShardReleased)]
        assert released[0].reason == f"executor {victim} heartbeat lapsed", released
        reassigned_at += [e.at for e in about if isinstance(e, ShardAssigned) and e.attempt > 1]
        assert done.executor_id == survivor, done
        assert done.attempt >= 2, done  # 2, unless a loaded machine let the survivor lapse too

    live.restart(live.child(victim))

    async def both_registered() -> bool:
        executors = await live.get("/api/v1/executors")
        return sorted(e["executor_id"] for e in executors) == ["exec-1", "exec-2"]

    await live.until(both_registered, f"{victim} to register again", timeout=60)
    await finish(live, ids, answers)
    report(
        "executor mid-shard",
        killed_at,
        answers,
        held_shard_reassigned=min(reassigned_at) - killed_at,
        held_shards_completed_elsewhere=max(e.at for e in redone) - killed_at,
    )


async def test_api_killed(r3_live: Live, openai_server: Any) -> None:
    live = r3_live
    ids = await start_run(live, openai_server, "api")
    api = live.child("api")

    killed_at = time.time()
    api.process.kill()  # type: ignore[union-attr]
    api.process.wait()  # type: ignore[union-attr]
    ops = issue_ops(live, ids)  # they retry until the api is back

    # the scheduler and executors go on without the api: a shard completes meanwhile
    async def completed_meanwhile() -> list[AnyEvent]:
        events = await live.events()
        return [e for _, e in events if isinstance(e, ShardCompleted) and e.at > killed_at]

    await until(completed_meanwhile, "a shard completed while the api was down", 60, interval=0.2)
    live.restart(api)
    answers = await answered(live, ids, ops)

    await finish(live, ids, answers)
    events = await live.events()
    report("api", killed_at, answers, first_shard_completed=seconds_to_first(events, killed_at))


async def test_nats_server_leading_the_event_stream_killed(
    r3_live: Live, openai_server: Any, nats_cluster: Any
) -> None:
    live = r3_live
    ids = await start_run(live, openai_server, "nats")
    leader = await live.stream_leader(live.names.evt_stream)
    node = nats_cluster.index(leader)

    killed_at = time.time()
    nats_cluster.kill(node)
    try:
        ops = issue_ops(live, ids)
        answers = await answered(live, ids, ops)
        assert await live.stream_leader(live.names.evt_stream) != leader
    finally:
        nats_cluster.restart(node)  # the session's nodes: always back (from the loop's thread)
    await replicas_current(live)

    await finish(live, ids, answers)
    events = await live.events()
    report(
        f"nats-server {leader} (INFERNO_EVT leader)",
        killed_at,
        answers,
        first_shard_completed=seconds_to_first(events, killed_at),
    )


async def replicas_current(live: Live, timeout: float = 60.0) -> None:
    """Every stream of the namespace has a leader and all its replicas caught up."""

    async def current() -> bool:
        infos = [
            i for i in await live.js.streams_info() if live.names.prefix in (i.config.name or "")
        ]
        return bool(infos) and all(
            i.cluster is not None
            and i.cluster.leader
            and all(r.current and not r.offline for r in i.cluster.replicas or [])
            for i in infos
        )

    await live.until(current, "every replica to catch up", timeout)

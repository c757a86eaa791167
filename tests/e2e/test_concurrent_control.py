"""Interactive control under concurrency (issue 10 §3), against a live cluster (nats-server, api,
two schedulers, two executors as separate processes).

20 clients send 200 stop / resume requests at once over 5 pipelines, so requests on the same
pipeline race: each waits for its own outcome (`?wait`) with an Idempotency-Key of its own. What
must hold whatever the interleaving: every answer is a final operation or a 409 in the decider's
words; `all-operations` shows each answered operation as it was answered; each key is one
command in INFERNO_CMD and a 409 left none; replaying the operations of a pipeline in ic_id
order through the transition rule gives exactly the outcomes that were answered; a key sent
again answers the same ic_id. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conftest import Live

CLIENTS, OPS_EACH, PIPELINES = 20, 10, 5
WAIT_S = 60  # a bound on a hang, not a guess: an answer comes as soon as the outcome folds


def refusal_pattern(pipeline_id: int, action: str) -> re.Pattern[str]:
    """The decider's words (inferno.events.preconditions) for a stop or resume it refuses."""
    rule = {
        "stop": "only new or ongoing pipelines can be stopped",
        "resume": "only stopped pipelines can be resumed",
    }[action]
    return re.compile(rf"cannot {action} pipeline {pipeline_id}: it is (\w+); {re.escape(rule)}")


async def client(live: Live, number: int, pipeline_id: int) -> list[dict[str, Any]]:
    """One client's requests, one at a time; odd clients start with a resume, so they race."""
    answers = []
    for n in range(OPS_EACH):
        action = ("stop", "resume")[(n + number) % 2]
        key = f"concurrent-{number}-{n}"
        response = await live.http.post(
            f"/api/v1/pipelines/{pipeline_id}/{action}",
            headers={"Idempotency-Key": key},
            params={"wait": WAIT_S},
        )
        answers.append(
            {
                "key": key,
                "pipeline_id": pipeline_id,
                "action": action,
                "code": response.status_code,
                "body": response.json(),
            }
        )
    return answers


async def test_concurrent_stop_resume_is_consistent(live: Live) -> None:
    created = await live.create_experiment(
        live.experiment_body(
            *(live.sim(f"c{i}", latency_ms=400) for i in range(PIPELINES)),
            name="concurrent-control",
        )
    )
    pids = [p["pipeline_id"] for p in created["pipelines"]]  # new or ongoing: stop is valid

    batches = await asyncio.gather(*(client(live, i, pids[i % PIPELINES]) for i in range(CLIENTS)))
    answers = [a for batch in batches for a in batch]
    assert len(answers) == CLIENTS * OPS_EACH

    accepted = [a for a in answers if a["code"] == 200]
    for a in answers:
        body, pattern = a["body"], refusal_pattern(a["pipeline_id"], a["action"])
        if a["code"] == 409:
            assert pattern.fullmatch(body["error"]), a
            continue
        assert a["code"] == 200, a
        assert body["status"] in ("completed", "failed"), a
        assert (body["operation"], body["pipeline_id"]) == (a["action"], a["pipeline_id"]), a
        if body["status"] == "failed":
            assert pattern.fullmatch(body["error"]), a
    ic_ids = [a["body"]["ic_id"] for a in accepted]
    assert len(set(ic_ids)) == len(ic_ids), "two keys answered with one operation"

    # all-operations (the dispatcher's route) shows every answer as it was given
    listed = {op["ic_id"]: op for op in await live.get("/dispatcher/all-operations")}
    for a in accepted:
        op, body = listed[a["body"]["ic_id"]], a["body"]
        assert (op["status"], op["operation"], op["pipeline_id"]) == (
            body["status"],
            a["action"],
            a["pipeline_id"],
        ), a
        assert op["error"] == (body["error"] or ""), a

    # each key is one command in the log, and a 409 left none
    stored = [
        seq for pid in pids for seq, _ in await live.commands(live.names.pipeline_cmd(pid, "*"))
    ]
    assert sorted(stored) == sorted(ic_ids)

    # the decider ruled in ic_id order: replaying the transitions gives every answered outcome
    for pid in pids:
        stopped = False  # new and ongoing pipelines can be stopped, neither resumed
        for a in sorted(
            (a for a in accepted if a["pipeline_id"] == pid), key=lambda a: a["body"]["ic_id"]
        ):
            valid = stopped == (a["action"] == "resume")
            assert a["body"]["status"] == ("completed" if valid else "failed"), (stopped, a)
            if valid:
                stopped = a["action"] == "stop"
        status = (await live.pipeline(pid))["status"]
        assert status in (("stopped",) if stopped else ("new", "ongoing")), (pid, status)

    # a key sent again is the same operation, and nothing new is stored
    for a in accepted[::20]:
        again = await live.post(
            f"/api/v1/pipelines/{a['pipeline_id']}/{a['action']}",
            headers={"Idempotency-Key": a["key"]},
            params={"wait": WAIT_S},
        )
        assert (again["ic_id"], again["status"]) == (a["body"]["ic_id"], a["body"]["status"])
    assert len(await live.get("/dispatcher/all-operations")) == len(listed)

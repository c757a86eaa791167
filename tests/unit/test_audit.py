"""inferno.audit: entries from stored bytes, queries, a pipeline's story, and verify's checks on
logs built by hand to break each invariant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from inferno.audit import query as q
from inferno.audit.entries import Entry, Ids, build, each_shard, rfc3339, settled_by
from inferno.audit.story import story
from inferno.audit.verify import as_text, report
from inferno.events import encode
from inferno.events.commands import ClonePipeline, ShardFinished, ShardsFinished, StopPipeline
from inferno.events.events import (
    AssignedShard,
    CompletedShard,
    PipelineStopped,
    ShardsAssigned,
    ShardsCompleted,
)
from inferno.events.model import PipelineChanges, ShardStats
from inferno.events.names import Names

GOLDEN = Path(__file__).parents[1] / "golden"
T0 = 1_796_000_000 * 10**9


def cmd(seq: int, type_: str, pipeline_id: int | None = None, **fields: Any) -> Entry:
    return Entry(
        stream="INFERNO_CMD",
        seq=seq,
        time=rfc3339(T0 + seq * 10**9),
        type=type_,
        actor=fields.pop("actor", None),
        reason=fields.pop("reason", None),
        ids=Ids(ic_id=seq, pipeline_id=pipeline_id),
        payload=fields,
    )


def evt(seq: int, type_: str, **fields: Any) -> Entry:
    ids = Ids(
        ic_id=fields.get("ic_id"),
        pipeline_id=fields.get("pipeline_id"),
        shard=fields.get("shard"),
        experiment_id=fields.get("experiment_id"),
    )
    return Entry(
        stream="INFERNO_EVT",
        seq=seq,
        time=rfc3339(T0 + seq * 10**9 + 1),
        type=type_,
        actor=fields.pop("actor", None),
        reason=fields.pop("why", None),
        ids=ids,
        payload=fields,
    )


# entries


def test_a_command_entry_carries_who_why_and_its_target_and_masks_secrets():
    command = ClonePipeline(
        pipeline_id=3,
        changes=PipelineChanges(
            client_config={"api_key": "sk-abcdefgh12345678", "secret_ref": "r"}
        ),
        actor="alice",
        reason="try it",
        trace_id="t1",
    )
    entry, who = build("INFERNO_CMD", 12, T0 + 1500, encode(command))
    assert (entry.type, entry.actor, entry.reason, entry.trace_id) == (
        "clone_pipeline",
        "alice",
        "try it",
        "t1",
    )
    assert entry.ids == Ids(ic_id=12, pipeline_id=3)
    assert entry.payload["changes"]["client_config"] == {"api_key": "***", "secret_ref": "r"}
    assert entry.time == "2026-11-30T00:53:20.000001Z"  # truncated to the microsecond, in UTC
    assert who is not None
    assert who.actor == "alice"


def test_an_event_settling_an_operation_shows_its_command_s_who_and_why():
    _, who = build(
        "INFERNO_CMD", 7, T0, encode(StopPipeline(pipeline_id=2, actor="bob", reason="r"))
    )
    entry, _ = build("INFERNO_EVT", 40, T0, encode(PipelineStopped(ic_id=7, pipeline_id=2)))
    assert who is not None
    settled_by(entry, who)
    assert (entry.actor, entry.reason, entry.ids) == ("bob", "r", Ids(ic_id=7, pipeline_id=2))


def test_a_report_s_inline_results_show_as_a_count_not_as_rows():
    rows = [msgspec.Raw(b'{"row_index": %d, "output": "long text"}' % i) for i in range(64)]
    report = ShardFinished(executor_id="ex1", pipeline_id=3, shard=2, attempt=1, results=rows)
    entry, _ = build("INFERNO_EXEC", 9, T0, encode(report))
    assert (entry.type, entry.ids) == ("shard_finished", Ids(pipeline_id=3, shard=2))
    assert entry.payload["results"] == {"rows": 64}
    assert b"long text" not in msgspec.json.encode(entry)


def test_unknown_and_undecodable_messages_still_show():
    newer, _ = build("INFERNO_EVT", 1, T0, b'{"type":"pipeline_renamed","pipeline_id":1}')
    assert (newer.type, newer.payload) == (
        "pipeline_renamed",
        {"type": "pipeline_renamed", "pipeline_id": 1},
    )
    broken, _ = build("INFERNO_EVT", 2, T0, b"not json")
    assert broken.type == "undecodable"


# queries


def test_times_parse_exactly_and_bad_ones_name_their_parameter():
    assert q.parse_time("2026-11-30T00:53:20.000001Z", "since") == T0 + 1000
    assert q.parse_time("2026-11-30T00:53:20.000001", "since") == T0 + 1000  # no zone: UTC
    assert q.parse_time("1796000000.5", "until") == T0 + 500_000_000
    # what the OpenAPI schema refuses is refused: a negative or exponent epoch, a bare date
    for bad in ("yesterday", "NaN", "2026-13-01", "-1.97e16", "1e9", "2026-12-01"):
        with pytest.raises(q.QueryError) as refused:
            q.parse_time(bad, "until")
        assert refused.value.parameter == "until"


def test_cursors_round_trip_and_bad_ones_are_refused():
    assert q.parse_cursor("cmd:12,evt:340") == {"cmd": 12, "evt": 340}
    assert q.format_cursor({"evt": 3, "cmd": 1}) == "cmd:1,evt:3"
    for bad in ("evt=3", "log:1", "cmd:x"):
        with pytest.raises(q.QueryError):
            q.parse_cursor(bad)


def test_a_pipeline_query_matches_its_story_and_reads_only_its_subjects():
    query = q.Query(pipeline_id=1)
    created = evt(1, "experiment_created", ic_id=1, experiment_id="e")
    clone = evt(5, "pipeline_created", ic_id=3, pipeline_id=4, parent_pipeline_id=1)
    other = evt(6, "shard_completed", pipeline_id=2, shard=0)
    experiment_of = {1: "e", 2: "e"}.get
    assert q.matches(created, query, experiment_of)
    assert q.matches(clone, query, experiment_of)
    assert not q.matches(other, query, experiment_of)
    subjects = q.subjects(query, "evt", Names("ns"), "e")
    assert "ns.evt.shard.1.>" in subjects
    assert "ns.evt.pipeline.*.created" in subjects
    assert "ns.evt.pipeline.1.>" not in subjects  # it would overlap the wildcard
    assert q.subjects(q.Query(), "cmd", Names("ns"), None) == ["ns.cmd.>"]


def test_an_actor_filter_finds_an_identity_whatever_its_client_said():
    """Behind a token the actor is recorded as `identity (what the client said)`."""
    said = cmd(2, "stop_pipeline", 1, actor="alice (alice@laptop)")
    plain = cmd(3, "stop_pipeline", 1, actor="alice")
    other = cmd(4, "stop_pipeline", 1, actor="bob (alice)")
    for query, expected in (("alice", [said, plain]), ("alice (alice@laptop)", [said])):
        found = [e for e in (said, plain, other) if q.matches(e, q.Query(actor=query), str)]
        assert found == expected, query


def test_types_and_streams_are_checked():
    assert q.parse_types(["stop_pipeline,shard_completed"]) == {"stop_pipeline", "shard_completed"}
    with pytest.raises(q.QueryError, match="type"):
        q.parse_types(["exploded"])
    assert q.parse_streams([]) == ("cmd", "evt")
    assert q.parse_streams(["exec,cmd"]) == ("cmd", "exec")


# the story


def test_a_prune_tells_its_rule_and_reason():
    reason = "exact_match upper 0.412 < best lower 0.610 (pipeline 1) at 12/50 shards, 240 rows"
    entries = [evt(1, "pipeline_pruned", pipeline_id=2, rule="dominated", reason=reason)]
    assert story(entries, 2)[0].endswith(f"stopped by the dominated prune policy: {reason}")


def test_the_story_of_a_pipeline():
    entries = [
        cmd(1, "create_experiment", actor="alice"),
        evt(
            1,
            "experiment_created",
            ic_id=1,
            actor="alice",
            experiment_id="e",
            experiment_name="arith",
            num_shards=2,
            first_pipeline_id=1,
            pipelines=[
                {"pipeline_name": "a", "pipeline_type": "sim", "model_config": {"model": "m"}}
            ],
        ),
        evt(2, "shard_completed", pipeline_id=1, shard=0),
        evt(3, "shard_released", pipeline_id=1, shard=1, attempt=1, reason="executor lost"),
        cmd(2, "stop_pipeline", 1, actor="bob", reason="diverging"),
        evt(4, "pipeline_stopped", ic_id=2, pipeline_id=1, actor="bob", why="diverging"),
        cmd(3, "clone_pipeline", 1, actor="carol"),
        evt(
            5,
            "pipeline_created",
            ic_id=3,
            pipeline_id=2,
            parent_pipeline_id=1,
            actor="carol",
            spec={"pipeline_name": "a2"},
        ),
        cmd(4, "resume_pipeline", 1, actor="dave"),
    ]
    lines = story(entries, 1)
    assert lines[0].endswith(
        "created as 'a' (sim, model m) in experiment e (arith), 2 shards by alice (ic_id 1)"
    )
    assert lines[1].endswith("shard 0 done")
    assert lines[2].endswith("shard 1 will be retried (attempt 1): executor lost")
    assert lines[3].endswith('stopped by bob: "diverging" (ic_id 2)')
    assert lines[4].endswith("cloned into pipeline 2 (a2) by carol (ic_id 3)")
    assert lines[5].endswith("resume asked by dave (ic_id 4): not answered yet")
    assert lines[-1] == "lineage: no parent; clones: 2 (a2)"


# verify


def healthy() -> list[Entry]:
    return [
        cmd(1, "create_experiment"),
        evt(1, "experiment_created", ic_id=1, experiment_id="e"),
        evt(2, "shard_assigned", pipeline_id=1, shard=0, attempt=1),
        evt(3, "shard_completed", pipeline_id=1, shard=0, attempt=1),
        cmd(2, "delete_pipeline", 1),
        evt(4, "pipeline_deleted", ic_id=2, pipeline_id=1),
        cmd(3, "stop_pipeline", 1),
    ]


def test_a_healthy_log_holds_and_says_what_is_pending():
    result = report(healthy())
    assert result.held
    assert result.pending == [3]
    assert result.extent["INFERNO_EVT"].messages == 4
    text = as_text(result, "now")
    assert text[0] == "inferno verify, now: ALL HELD"
    assert "pending (not answered yet): ic_id 3" in text


@pytest.mark.parametrize(
    ("extra", "check", "seq"),
    [
        (
            [
                evt(5, "shard_assigned", pipeline_id=2, shard=0, attempt=1),
                evt(6, "shard_completed", pipeline_id=2, shard=0, attempt=1),
                evt(7, "shard_completed", pipeline_id=2, shard=0, attempt=1),
            ],
            "shard_completed_once",
            7,
        ),
        (
            [evt(5, "shard_assigned", pipeline_id=1, shard=1, attempt=1)],
            "no_work_after_deletion",
            5,
        ),
        ([evt(5, "pipeline_stopped", ic_id=2, pipeline_id=1)], "operations_move_forward", 5),
        ([evt(5, "pipeline_stopped", ic_id=9, pipeline_id=1)], "answered_or_pending", 5),
        ([evt(5, "operation_started", ic_id=3, operation="stop")], "answered_or_pending", 5),
    ],
)
def test_each_broken_invariant_is_found_at_its_message(extra: list[Entry], check: str, seq: int):
    result = report(healthy() + extra)
    assert not result.held
    assert [(v.check, v.stream, v.seq) for v in result.violations] == [(check, "INFERNO_EVT", seq)]
    assert any(
        line.startswith(f"violation: INFERNO_EVT seq {seq}: {check}")
        for line in as_text(result, "x")
    )


def test_a_completion_by_a_stale_attempt_is_a_violation():
    log = healthy()
    log[3] = evt(3, "shard_completed", pipeline_id=1, shard=0, attempt=2)
    assert [v.check for v in report(log).violations] == ["completed_by_its_assignment"]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_golden_logs_hold_every_invariant(version: str):
    lines = (GOLDEN / f"events-{version}.jsonl").read_bytes().splitlines()
    events = [build("INFERNO_EVT", seq, T0 + seq, line)[0] for seq, line in enumerate(lines, 1)]
    ic_ids = sorted({e.ids.ic_id for e in events if e.ids.ic_id})
    commands = [cmd(i, "stop_pipeline") for i in range(1, max(ic_ids) + 1)]
    result = report(commands + events)
    assert result.violations == []
    assert result.counts["shard_completed"] >= 6


def test_batch_events_and_reports_read_as_one_entry_per_shard_where_shards_are_followed():
    """Several shards of one executor in one message (inferno.events.batches): one entry as
    stored, found by each of its pipelines, and one per shard for verify and stories."""
    stats = ShardStats(rows=2)
    assigned = ShardsAssigned(
        at=1.0,
        executor_id="ex1",
        shards=[AssignedShard(3, 0, 1), AssignedShard(4, 0, 1)],
    )
    completed = ShardsCompleted(
        at=2.0,
        executor_id="ex1",
        report_seq=9,
        shards=[
            CompletedShard(pipeline_id=3, shard=0, attempt=1, stats=stats),
            CompletedShard(pipeline_id=4, shard=0, attempt=1, stats=stats),
        ],
    )
    rows = [msgspec.Raw(b'{"row_index": 0, "output": "long text"}')]
    finished = ShardsFinished(
        executor_id="ex1",
        reports=[
            ShardFinished(executor_id="ex1", pipeline_id=p, shard=0, attempt=1, results=rows)
            for p in (3, 4)
        ],
    )
    first, _ = build("INFERNO_EVT", 1, T0, encode(assigned))
    second, _ = build("INFERNO_EVT", 2, T0, encode(completed))
    again = evt(3, "shard_completed", pipeline_id=4, shard=0, attempt=1)
    reported, _ = build("INFERNO_EXEC", 9, T0, encode(finished))
    assert (first.type, first.ids.pipeline_id) == ("shards_assigned", None)
    assert [r["results"] for r in reported.payload["reports"]] == [{"rows": 1}] * 2
    shards = each_shard([first, second])
    assert [(e.type, e.ids.pipeline_id, e.ids.shard) for e in shards] == [
        ("shard_assigned", 3, 0),
        ("shard_assigned", 4, 0),
        ("shard_completed", 3, 0),
        ("shard_completed", 4, 0),
    ]
    assert shards[2].payload["stats"] == {"rows": 2}
    query = q.Query(pipeline_id=4)
    for entry in (first, second, reported):
        assert q.matches(entry, query, lambda pid: None)
    assert not q.matches(second, q.Query(pipeline_id=5), lambda pid: None)
    checked = report([first, second, again])
    assert not checked.checks["completed_by_its_assignment"].violations
    [twice] = checked.violations  # pipeline 4's shard 0: in the batch, and alone again
    assert (twice.check, twice.seq) == ("shard_completed_once", 3)
    assert story([first, second], 3)[0].endswith("shard 0 done")

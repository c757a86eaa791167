"""Admission control by declared resources (DESIGN §4): what executors declare, what pipelines
need, placement that never overcommits, and the reason a pipeline nobody can host is given."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from inferno.api.schemas import CloneBody, PipelineBody
from inferno.events import State, decide, evolve
from inferno.events.commands import ClonePipeline, ShardFinished
from inferno.events.model import PipelineSpec
from inferno.events.resources import (
    Capacity,
    in_use,
    needs,
    needs_gpu,
    parse_resources,
    unplaceable,
)
from inferno.events.scheduling import plan_assignments
from inferno.events.work import ExecutorInfo
from inferno.executor.capabilities import declared_resources
from inferno.runtime.settings import ConfigError, Settings
from inferno.scheduler.roster import tick_messages
from tests.unit.test_scheduling import state_with

NOW = 100.0


def spec(name: str, kind: str = "sim", **need: float) -> PipelineSpec:
    return PipelineSpec(pipeline_name=name, pipeline_type=kind, resources=need)  # type: ignore[arg-type]


def info(eid: str, slots: int = 4, backends=("sim",), **resources: float) -> ExecutorInfo:
    return ExecutorInfo(
        executor_id=eid,
        backends=list(backends),
        slots=slots,
        has_gpu=resources.get("gpus", 0) > 0,
        resources=resources,
        heartbeat_at=NOW,
    )


def tick(state: State, *executors: ExecutorInfo) -> list[tuple[int, str]]:
    """One scheduler tick as the leader runs it; the placements it made, folded in."""
    roster = {e.executor_id: e for e in executors}
    _, assign = tick_messages(state, roster, now=NOW, heartbeat_ttl_s=10.0, expire=False)
    events = decide(state, assign, now=NOW)
    for event in events:
        evolve(state, event)
    return [(e.pipeline_id, e.executor_id) for e in events]  # type: ignore[attr-defined]


# what is declared and needed


def test_executor_resources_parse_from_the_environment_with_slots_apart():
    s = Settings.from_env(
        {"INFERNO_EXECUTOR_RESOURCES": '{"slots": 4, "gpus": 2, "gpu_mem_gb": 160}'}
    )
    assert s.executor_slots == 4
    assert s.executor_resources == (("gpu_mem_gb", 160.0), ("gpus", 2.0))
    assert s.masked()["executor_resources"] == {"gpu_mem_gb": 160.0, "gpus": 2.0}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"gpus": -1}', "'gpus': -1 is not a number"),
        ('{"gpus": true}', "'gpus': True is not a number"),
        ('{"GPUs": 1}', "'GPUs': a name is a-z"),
        ('{"slots": 1.5}', "slots must be a whole number"),
        ("[2]", "Expected `object`"),
        ("gpus=2", "not JSON"),
    ],
)
def test_a_bad_resources_value_names_the_variable(raw: str, says: str):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"INFERNO_EXECUTOR_RESOURCES": raw})
    assert str(error.value).startswith("INFERNO_EXECUTOR_RESOURCES=")
    assert says in str(error.value)


def test_slots_declared_twice_must_agree():
    env = {"INFERNO_EXECUTOR_RESOURCES": '{"slots": 3}', "INFERNO_EXECUTOR_SLOTS": "2"}
    with pytest.raises(ConfigError, match="set one of them"):
        Settings.from_env(env)
    env["INFERNO_EXECUTOR_SLOTS"] = "3"
    assert Settings.from_env(env).executor_slots == 3


def test_detected_gpus_are_the_default_and_a_declaration_wins_key_by_key():
    gpus = [{"index": 0, "memory_mb": 81920}, {"index": 1, "memory_mb": 81920}]
    assert declared_resources({}, gpus) == {"gpus": 2.0, "gpu_mem_gb": 160.0}
    assert declared_resources({}, []) == {"gpus": 0.0, "gpu_mem_gb": 0.0}
    assert declared_resources({"gpus": 0.0, "a100": 1.0}, gpus) == {
        "gpus": 0.0,
        "gpu_mem_gb": 160.0,
        "a100": 1.0,
    }
    assert parse_resources('{"gpus": 1}') == {"gpus": 1.0}


def test_which_pipelines_need_a_gpu():
    assert needs_gpu(spec("v", "vllm"))
    assert needs_gpu(spec("s", gpu_mem_gb=40))
    assert not needs_gpu(spec("s", gpu_mem_gb=0))  # zero needs nothing
    assert not needs_gpu(spec("h", "hf"))  # hf runs on a CPU too
    on_cuda = PipelineSpec(pipeline_name="h", pipeline_type="hf", model_config={"device": "cuda:0"})
    assert needs_gpu(on_cuda)
    assert needs(spec("s", gpu_mem_gb=40, cpu_mem_gb=0)) == {"gpu_mem_gb": 40}


# placement


def test_a_gpu_pipeline_never_lands_on_a_cpu_only_executor():
    state = state_with(spec("g", gpus=1), spec("c"))
    cpu = info("cpu", slots=1, gpus=0, gpu_mem_gb=0)
    assert tick(state, cpu) == [(2, "cpu")]  # the CPU pipeline runs, the GPU one waits
    assert tick(state, cpu, info("gpu", slots=1, gpus=1)) == [(1, "gpu")]


def test_declared_resources_are_never_overcommitted_and_free_up_as_shards_end():
    state = state_with(spec("a", gpu_mem_gb=40))
    gpu = info("x", slots=4, gpus=1, gpu_mem_gb=80)
    assert tick(state, gpu) == [(1, "x"), (1, "x")]  # two fit in 80 GB, though four slots are free
    assert tick(state, gpu) == []
    finished = ShardFinished(executor_id="x", pipeline_id=1, shard=0, attempt=1)
    for event in decide(state, finished, now=NOW, seq=1):
        evolve(state, event)
    assert tick(state, gpu) == [(1, "x")]


def test_only_what_a_pipeline_names_is_enforced():
    state = state_with(spec("plain"), spec("needs-a100", a100=1))
    placed = tick(state, info("x", slots=2, gpus=1, gpu_mem_gb=24))
    assert placed == [(1, "x"), (1, "x")]  # gpus and gpu_mem_gb pass through; a100 is undeclared


def test_a_pipeline_nobody_can_host_is_told_why():
    cpu = Capacity(executor_id="c", backends=frozenset({"sim", "hf"}), resources={"gpus": 0})
    small = Capacity(
        executor_id="g", backends=frozenset({"sim"}), has_gpu=True, resources={"gpu_mem_gb": 24}
    )
    other = Capacity(
        executor_id="h", backends=frozenset({"sim"}), has_gpu=True, resources={"gpus": 2}
    )
    assert unplaceable(spec("s"), []) == "no executor is registered"
    assert unplaceable(spec("v", "vllm"), [cpu]) == (
        "no executor runs vllm pipelines (they run: hf, sim)"
    )
    assert unplaceable(spec("s", gpus=1), [cpu]) == (
        "needs a GPU; every executor that runs sim is CPU-only"
    )
    assert unplaceable(spec("s", gpu_mem_gb=40), [cpu, small]) == (
        "needs gpu_mem_gb 40; the largest executor has 24"
    )
    assert unplaceable(spec("s", gpu_mem_gb=40, a100=1), [small]) == (
        "needs a100 1; no executor declares a100"
    )
    assert unplaceable(spec("s", gpus=1, gpu_mem_gb=20), [small, other]) == (
        "needs gpu_mem_gb 20, gpus 1 on one executor; none has all of it"
    )
    assert unplaceable(spec("s", gpu_mem_gb=20), [cpu, small]) is None
    assert unplaceable(spec("s"), [cpu]) is None


# the property: no executor is ever overcommitted, whatever the fleet and the pipelines

NEEDS = st.dictionaries(
    st.sampled_from(["gpus", "gpu_mem_gb", "a100"]), st.sampled_from([0.0, 0.5, 1.0, 8.0, 40.0])
)
HAS = st.dictionaries(
    st.sampled_from(["gpus", "gpu_mem_gb", "a100", "cpu_mem_gb"]),
    st.sampled_from([0.0, 1.0, 2.0, 24.0, 80.0]),
)


@settings(max_examples=150, deadline=None)
@given(
    pipelines=st.lists(
        st.tuples(st.sampled_from(["sim", "vllm", "hf"]), NEEDS), min_size=1, max_size=6
    ),
    fleet=st.lists(st.tuples(st.integers(1, 4), HAS), min_size=1, max_size=5),
    finishes=st.lists(st.integers(0, 10_000), max_size=30),
)
def test_no_executor_is_ever_overcommitted(pipelines, fleet, finishes):
    specs = [spec(f"p{i}", kind, **need) for i, (kind, need) in enumerate(pipelines)]
    state = state_with(*specs, shards=5)
    executors = [
        info(f"x{i}", slots, backends=("sim", "vllm", "hf"), **has)
        for i, (slots, has) in enumerate(fleet)
    ]
    by_id = {e.executor_id: e for e in executors}
    for step, pick in enumerate([*finishes, 0]):
        tick(state, *executors)
        used = in_use(state.pipelines.values())
        for eid, taken in used.items():
            executor = by_id[eid]
            assert taken["slots"] <= executor.slots
            for key, amount in taken.items():
                if key != "slots":
                    assert amount <= executor.resources.get(key, 0.0) + 1e-9, (eid, key)
        for pipeline in state.pipelines.values():
            for a in pipeline.in_flight.values():
                assert by_id[a.executor_id].has_gpu or not needs_gpu(pipeline.spec)
        running = [(p, s, a) for p in state.pipelines.values() for s, a in p.in_flight.items()]
        if running:  # one shard ends, freeing what it took
            pipeline, shard, a = running[pick % len(running)]
            done = ShardFinished(
                executor_id=a.executor_id,
                pipeline_id=pipeline.pipeline_id,
                shard=shard,
                attempt=a.attempt,
            )
            for event in decide(state, done, now=NOW, seq=step + 2):
                evolve(state, event)


def test_plan_assignments_reads_free_resources_from_the_slot():
    state = state_with(spec("a", gpus=1))
    slot = info("x", gpus=1).slot({"slots": 0, "gpus": 1})  # its one GPU is taken
    assert plan_assignments(state, [slot], now=NOW) == []
    assert slot.free_slots == 4


@pytest.mark.parametrize(
    ("resources", "where"),
    [
        ({"slots": 1}, "resources"),
        ({"GPU": 1}, "resources.GPU.[key]"),
        ({"gpus": -1}, "resources.gpus"),
        ({"gpus": "1"}, "resources.gpus"),
    ],
)
def test_the_api_refuses_needs_it_cannot_place_naming_the_field(resources, where):
    body = {"pipeline_name": "a", "pipeline_type": "sim", "resources": resources}
    with pytest.raises(ValidationError) as error:
        PipelineBody.model_validate(body)
    assert ".".join(map(str, error.value.errors()[0]["loc"])) == where
    with pytest.raises(ValidationError):
        CloneBody.model_validate({"resources": resources})


def test_needs_travel_into_the_spec_and_a_clone_merges_them():
    body = {"pipeline_name": "a", "pipeline_type": "sim", "resources": {"gpu_mem_gb": 40}}
    assert PipelineBody.model_validate(body).spec().resources == {"gpu_mem_gb": 40.0}
    state = state_with(spec("a", gpus=1, gpu_mem_gb=40))
    changes = CloneBody.model_validate({"resources": {"gpu_mem_gb": 0, "a100": 1}}).changes()
    (created,) = decide(state, ClonePipeline(pipeline_id=1, changes=changes), now=NOW, seq=2)
    assert created.spec.resources == {"gpus": 1.0, "gpu_mem_gb": 0.0, "a100": 1.0}  # type: ignore[attr-defined]
    assert needs(created.spec) == {"a100": 1.0, "gpus": 1.0}  # type: ignore[attr-defined]

"""Prometheus `/metrics` of a real cluster (api, two schedulers, two executors, each its own
process): every endpoint `inferno up` records parses, and its numbers move when work happens.

The run has a sim pipeline and an OpenAI-compatible one (bench/openai_server.py) whose rpm
limit is small for its window, so the executors' rate limiters wait.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import Live

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(url: str) -> Samples:
    """Every sample of one endpoint; parsing fails the test on a malformed exposition."""
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        answer = await http.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    families = list(text_string_to_metric_families(answer.text))
    assert families, f"{url} exposes nothing"
    return [(s.name, s.labels, s.value) for f in families for s in f.samples]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


def names(samples: Samples) -> set[str]:
    return {n for n, _, _ in samples}


async def scrape_all(urls: dict[str, str], prefix: str) -> Samples:
    """The samples of every endpoint whose name starts with `prefix`, together."""
    return [s for name, url in urls.items() if name.startswith(prefix) for s in await scrape(url)]


async def test_every_service_is_scraped_and_counts_the_work(
    shared_live: Live, openai_server: Any
) -> None:
    live = shared_live
    urls = live.cluster.describe()["metrics"]
    assert set(urls) == {"api", "scheduler-1", "scheduler-2", "exec-1", "exec-2"}
    assert urls["api"] == f"{live.cluster.api_url}/metrics"

    api_before = await scrape(urls["api"])
    sched_before = await scrape_all(urls, "scheduler")
    exec_before = await scrape_all(urls, "exec")
    assert {"inferno_executor_slots_busy", "inferno_executor_slots_free"} <= names(exec_before)
    assert total(exec_before, "inferno_executor_slots") == 4  # two executors, two slots each
    assert total(sched_before, "inferno_scheduler_leading") == 1  # one leader, one standby
    assert total(api_before, "inferno_leader_present") == 1

    body = live.experiment_body(
        live.sim("s", latency_ms=5),
        live.openai(openai_server, client={"rate_window_s": 0.25}, rpm_limit=6),
    )
    created = await live.create_experiment(body)
    ids = [p["pipeline_id"] for p in created["pipelines"]]
    await live.settled(*ids)

    async def api_caught_up() -> Samples | None:
        samples = await scrape(urls["api"])
        done = total(samples, "inferno_pipeline_shards", state="completed") >= 16
        return samples if done and total(samples, "inferno_api_replay_lag") == 0 else None

    api = await live.until(api_caught_up, "the api's metrics show the run")
    for pipeline_id in ids:
        pid = str(pipeline_id)
        assert total(api, "inferno_pipeline_rows_total", pipeline_id=pid) == 96
        assert total(api, "inferno_pipeline_tokens_total", pipeline_id=pid) > 0
        assert total(api, "inferno_pipeline_shards", pipeline_id=pid, state="pending") == 0
    created_ops = {"operation": "create_experiment", "status": "completed"}
    assert (
        total(api, "inferno_operations", **created_ops)
        == total(api_before, "inferno_operations", **created_ops) + 1
    )
    assert total(api, "inferno_leader_term") >= 1
    assert total(api, "inferno_cluster_executor_slots") == 4  # busy + free of two executors

    sched = await scrape_all(urls, "scheduler")

    def moved(name: str, **labels: str) -> float:
        return total(sched, name, **labels) - total(sched_before, name, **labels)

    completed = {"operation": "create_experiment", "outcome": "completed"}
    assert moved("inferno_scheduler_operations_total", **completed) == 1
    assert moved("inferno_scheduler_ic_latency_seconds_count") >= 1
    assert moved("inferno_scheduler_shards_total", event="assigned") >= 16
    assert moved("inferno_scheduler_shards_total", event="completed") == 16
    assert total(sched, "inferno_scheduler_pending_shards") == 0
    assert total(sched, "inferno_scheduler_leader_term") >= 1
    assert {"inferno_scheduler_replay_lag"} <= names(sched)

    execs = await scrape_all(urls, "exec")

    def grew(name: str, **labels: str) -> float:
        return total(execs, name, **labels) - total(exec_before, name, **labels)

    assert grew("inferno_executor_rows_total") == 2 * 96
    assert grew("inferno_executor_shards_total", outcome="finished") == 16
    assert grew("inferno_executor_tokens_total", kind="completion") > 0
    assert grew("inferno_executor_ratelimit_waits_total") > 0
    assert grew("inferno_executor_ratelimit_wait_seconds_total") > 0
    assert "inferno_executor_work_pending" in names(execs)


async def test_other_paths_are_not_found(shared_live: Live) -> None:
    url = shared_live.cluster.describe()["metrics"]["exec-1"].removesuffix("/metrics")
    async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
        assert (await http.get(f"{url}/")).status_code == 404
        assert (await http.post(f"{url}/metrics")).status_code == 404

"""The OpenAPI document matches the server: schemathesis against a real local cluster.

Every check schemathesis has is on: no 5xx, only documented statuses, content types and headers,
responses that fit their schemas, every request valid under the schema accepted, every invalid
one refused with a 4xx, `Allow` on 405s, 401 when the token is missing. Its engine runs all of
its phases (examples, coverage, fuzzing, stateful), as `st run` does, and each failure shows
here with its curl line. The module runs twice: without INFERNO_TOKEN and with one.

One allowance, said here rather than hidden: creating an experiment and uploading a dataset may
answer 400 to a request the schema allows, because what they refuse there depends on the data
(a prompt field the rows lack, more shards than rows, a CSV without a header row), which no
schema can say. Every other operation must accept all that its schema allows. The live event
stream (SSE) is left out: it never ends, so no response of it could be checked.

Bounded: a fixed number of examples per operation and of stateful steps (schemathesis runs
hypothesis without a deadline, which suits a shared machine), and a seed, so a failure
reproduces.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.engine import events, from_schema

from inferno.client.launcher import LocalCluster

pytestmark = pytest.mark.slow

TOKEN = "contract-test-token"

CONFIG: dict[str, Any] = {
    "seed": 7,
    "generation": {"max-examples": 40, "database": "none"},
    "phases": {"stateful": {"max-steps": 8}},
    "operations": [
        {
            "include-path-regex": "^/api/v1/(experiments|datasets)$",
            "include-method": "POST",
            "checks": {
                "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "409"]}
            },
        },
        # a live stream never ends, so no check can judge its response; it is tested by
        # tests/integration/test_events_api.py and tests/e2e/test_audit.py instead
        {"include-path": "/api/v1/events/stream", "enabled": False},
    ],
}


@pytest.fixture(scope="module", params=["no token", "token"])
def cluster_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The module's two clusters: one open, as `inferno up` starts by default, one with a
    bearer token."""
    return {"INFERNO_TOKEN": TOKEN} if request.param == "token" else {}


def sim_experiment() -> dict[str, Any]:
    """Something to find: pipelines 1 and 2 exist, so the ids schemathesis tries can hit them."""
    return {
        "experiment_name": "contract",
        "num_shards": 2,
        "dataset": {"rows": [{"prompt": f"q{i}", "answer": "a"} for i in range(4)]},
        "pipelines": [
            {"pipeline_name": name, "pipeline_type": "sim", "model_config": {"model": "m"}}
            for name in ("one", "two")
        ],
    }


def failures(schema: Any) -> list[str]:
    """Run every phase of schemathesis on `schema`; each failed check and engine error, told
    with the request that reproduces it."""
    found: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.append(
                            f"{failure.operation}: {check.name}: {failure.title}\n"
                            f"{failure.message}\n{check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError | events.FatalError):
            found.append(f"schemathesis error: {event!r}")
    return sorted(set(found))


def test_the_api_keeps_its_openapi_contract(
    module_cluster: LocalCluster, cluster_env: dict[str, str]
):
    headers = {"Authorization": f"Bearer {TOKEN}"} if cluster_env else {}
    with httpx.Client(base_url=module_cluster.api_url, headers=headers, trust_env=False) as http:
        created = http.post("/api/v1/experiments", json=sim_experiment(), params={"wait": 30})
        assert created.status_code == 200, created.text
        assert created.json()["status"] == "completed", created.json()
    config = schemathesis.Config.from_dict({**CONFIG, "headers": headers} if headers else CONFIG)
    schema = schemathesis.openapi.from_url(f"{module_cluster.api_url}/openapi.json", config=config)
    found = failures(schema)
    assert not found, f"{len(found)} schemathesis failures:\n\n" + "\n\n".join(found)

"""RapidFire's own clients against a real `inferno up` (issue 9 §2): the calls its evals notebook
panel (`rapidfireai/evals/utils/notebook_ui.py`) and its fit Python controller
(`rapidfireai/fit/utils/interactive_controller.py`) make, in the order they make them, with the
bodies they send and the fields they read; a real scheduler decides and real executors run.

The panel calls from the notebook's origin with `fetch(..., {mode: 'cors'})`, takes any non-2xx
for an error, and sends the <select>'s value (a string) once it has refreshed. The controller
uses `requests`: `raise_for_status()`, then `result.get("error")`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferno.client.launcher import read_state
from tests.e2e.test_cli import inferno, ok, slow_arith
from tests.waiting import until_blocking

NOTEBOOK = "http://localhost:8888"


@pytest.fixture
def api(tmp_path: Path, namespace: str) -> Iterator[httpx.Client]:
    """An HTTP client for the api of a detached `inferno up`, running examples/arith.yaml."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env["INFERNO_DATA_DIR"] = str(tmp_path / "data")
    try:
        ports = ("--api-port", "0", "--nats-port", "0")
        ok(env, "up", "--detach", "--executors", "2", *ports, "--namespace", namespace)
        ok(env, "run", str(slow_arith(tmp_path)), "--wait", "10")
        state = read_state(Path(env["INFERNO_DATA_DIR"]))
        assert state is not None
        with httpx.Client(base_url=state["api_url"], trust_env=False, timeout=30) as http:
            yield http
    finally:
        inferno(env, "down")


def panel(http: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    """The panel's `xhrRequest`: JSON, from the notebook's origin; a non-2xx throws."""
    headers = {"Origin": NOTEBOOK, "Content-Type": "application/json"}
    response = http.request(method, f"/dispatcher/{path}", json=body, headers=headers)
    assert response.is_success, (path, response.status_code, response.text)
    assert response.headers["access-control-allow-origin"] == NOTEBOOK
    return response.json()


def controller(http: httpx.Client, method: str, path: str, body: Any = None) -> Any:
    """The controller's `requests` call: raise_for_status, then no `error` in the answer."""
    response = http.request(method, f"/dispatcher/{path}", json=body)
    response.raise_for_status()
    result = response.json()
    assert not (isinstance(result, dict) and result.get("error")), (path, result)
    return result


def final(http: httpx.Client, ic_id: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        op = http.get(f"/dispatcher/operation-status/{ic_id}").json()
        return op if op["status"] in ("completed", "failed") else None

    return until_blocking(check, f"operation {ic_id} to be decided")


def status_of(http: httpx.Client, pipeline_id: int) -> str:
    listed = panel(http, "GET", "list-all-pipeline-ids")
    return str(next(p["status"] for p in listed if p["pipeline_id"] == pipeline_id))


def test_the_notebook_panel_steers_a_running_experiment(api: httpx.Client) -> None:
    http = api
    preflight = http.options(
        "/dispatcher/clone-pipeline",
        headers={"Origin": NOTEBOOK, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.headers["access-control-allow-origin"] == NOTEBOOK

    # initial fetchPipelines: newest first; the first is selected and its config fetched
    listed = panel(http, "GET", "list-all-pipeline-ids")
    assert [p["pipeline_id"] for p in listed] == [3, 2, 1]
    first = panel(http, "GET", f"get-pipeline-config-json/{listed[0]['pipeline_id']}")
    assert first["pipeline_config_json"]["pipeline_name"] == "large"
    # the user picks Config ID 1: from now on the id is the <select>'s string
    selected = "1"
    config = panel(http, "GET", f"get-pipeline-config-json/{selected}")
    assert config["pipeline_config_json"]["pipeline_type"] == "sim"
    context_id = config["context_id"]

    stop = panel(http, "POST", "stop-pipeline", {"pipeline_id": selected})
    assert final(http, stop["ic_id"])["status"] == "completed"
    assert status_of(http, 1) == "stopped"
    again = panel(http, "POST", "stop-pipeline", {"pipeline_id": selected})  # 200, and fails
    refused = final(http, again["ic_id"])
    assert refused["status"] == "failed"
    assert "it is stopped" in refused["error"]
    resume = panel(http, "POST", "resume-pipeline", {"pipeline_id": selected})
    assert final(http, resume["ic_id"])["status"] == "completed"

    # handleClone: the shown config, edited in the textarea, under the selected parent
    edited = {**config["pipeline_config_json"], "pipeline_name": "small-hot"}
    edited["sampling_params"] = {**edited["sampling_params"], "temperature": 0.5}
    clone = panel(
        http, "POST", "clone-pipeline", {"parent_pipeline_id": selected, "config_json": edited}
    )
    decided = final(http, clone["ic_id"])
    assert (decided["status"], decided["error"]) == ("completed", "")
    new_id = decided["result"]["pipeline_id"]
    assert next(p["pipeline_id"] for p in panel(http, "GET", "list-all-pipeline-ids")) == new_id
    child = panel(http, "GET", f"get-pipeline-config-json/{new_id}")
    assert child["context_id"] == context_id
    assert child["pipeline_config_json"]["sampling_params"]["temperature"] == 0.5
    delete = panel(http, "POST", "delete-pipeline", {"pipeline_id": str(new_id)})
    assert final(http, delete["ic_id"])["status"] == "completed"
    assert status_of(http, new_id) == "deleted"

    ops = panel(http, "GET", "all-operations")
    assert [op["operation"] for op in ops] == ["delete", "clone", "resume", "stop", "stop"]


def test_the_fit_controller_steers_runs(api: httpx.Client) -> None:
    http = api
    runs = controller(http, "GET", "get-all-runs")  # _fetch_runs fills the dropdown
    assert [r["run_id"] for r in runs] == [3, 2, 1]
    run = controller(http, "POST", "get-run", {"run_id": 2})  # load_run
    assert run["config"]["pipeline_name"] == "medium"
    assert isinstance(run["num_chunks_visited"], int)
    assert run["status"] in ("New", "Ongoing", "Completed")

    stop = controller(http, "POST", "stop-run", {"run_id": 2})
    assert final(http, stop["ic_id"])["status"] == "completed"
    assert controller(http, "POST", "get-run", {"run_id": 2})["status"] == "Stopped"
    resume = controller(http, "POST", "resume-run", {"run_id": 2})
    assert final(http, resume["ic_id"])["status"] == "completed"

    body = {"run_id": 2, "config": {"model_config": {"accuracy": 0.95}}, "warm_start": False}
    clone = controller(http, "POST", "clone-modify-run", body)
    assert clone.get("result") is not False
    new_id = clone["new_run_id"] or final(http, clone["ic_id"])["result"]["pipeline_id"]
    child = controller(http, "POST", "get-run", {"run_id": new_id})
    assert child["parent_run_id"] == 2
    assert child["config"]["model_config"]["accuracy"] == 0.95
    assert child["config"]["model_config"]["model"] == "sim-medium"  # the rest is the parent's
    delete = controller(http, "POST", "delete-run", {"run_id": new_id})
    assert final(http, delete["ic_id"])["status"] == "completed"

    # the dashboard's experiment and log panes
    assert controller(http, "GET", "get-all-experiment-names") == ["arith"]
    running = controller(http, "POST", "is-experiment-running", {"experiment_name": "arith"})
    assert set(running) == {"is_running"}
    assert isinstance(running["is_running"], bool)
    ic_logs = controller(http, "POST", "get-ic-logs", {"experiment_name": "arith"})
    assert any("stop pipeline" in line and "pipeline 2" in line for line in ic_logs), ic_logs
    assert any("clone pipeline" in line for line in ic_logs), ic_logs
    # the dashboard polls get-run; once a chunk is done, the log tells of it
    until_blocking(
        lambda: controller(http, "POST", "get-run", {"run_id": 1})["num_chunks_visited"] >= 1,
        "a chunk of run 1 to be done",
    )
    logs = controller(http, "POST", "get-experiment-logs", {"experiment_name": "arith"})
    assert all(" | arith | " in line for line in logs)
    assert any("shard completed pipeline 1" in line for line in logs), logs

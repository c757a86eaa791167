"""`inferno demo` (`make demo`): the whole story of DESIGN §1 in well under a minute.

A throwaway cluster (temp data dir, free ports, 3 executors) runs the example experiment; once
every pipeline has finished two shards the worst one (lowest value of the first metric) is stopped
and the best is cloned with new sampling params; when everything else has completed the
operations and the final pipelines are printed and the cluster is shut down. The children's logs
go to files, kept (and named) only if something goes wrong. Given the api of a running cluster
(`inferno demo --api URL` or `--data-dir DIR`), the same story runs there and the cluster stays.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from inferno.client.launcher import ClusterError, LocalCluster
from inferno.client.sdk import Client, InfernoError, load_spec
from inferno.client.tables import (
    CELL_WIDTH,
    field,
    in_order,
    leaderboard_table,
    metric_names,
    metric_value,
    operations_table,
    pipelines_table,
)
from inferno.client.terminal import printable

WAIT_S = 10.0
CLONE_SAMPLING = {"temperature": 0.7}


def default_spec() -> Path:
    """examples/arith.yaml in the working directory, else in the source tree this runs from."""
    here = Path("examples/arith.yaml")
    return here if here.is_file() else Path(__file__).resolve().parents[2] / here


def run_demo(
    spec_path: Path | None,
    out: TextIO,
    *,
    executors: int = 3,
    timeout: float = 90.0,
    api_url: str | None = None,
    token: str | None = None,
) -> int:
    """The story on a throwaway cluster, or on the running one at `api_url` (left running)."""
    spec_path = spec_path or default_spec()
    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[demo {time.monotonic() - started:5.1f}s] {printable(text)}", file=out, flush=True)

    if api_url is not None:
        say(f"running the story on the cluster at {api_url} (it stays up)")
        with Client(api_url, token=token) as client:
            _story(client, spec_path, say, out, time.monotonic() + timeout)
        say("done")
        return 0
    data_dir = Path(tempfile.mkdtemp(prefix="inferno-demo-"))
    logs = data_dir / "logs"
    logs.mkdir()
    ok = False
    with (logs / "launcher.log").open("w") as launcher_log:
        cluster = LocalCluster(
            data_dir, executors=executors, namespace="demo", log_dir=logs, out=launcher_log
        )
        say(f"starting nats-server, api, scheduler and {executors} executors in {data_dir}")
        try:
            cluster.start()
            say(f"cluster ready: api {cluster.api_url}, nats {cluster.nats_url}")
            with Client(cluster.api_url, token=os.environ.get("INFERNO_TOKEN")) as client:
                _story(client, spec_path, say, out, time.monotonic() + timeout)
            ok = True
        finally:
            say("shutting down")
            cluster.stop()
            if not ok:
                say(f"failed; logs kept in {logs}")
    shutil.rmtree(data_dir, ignore_errors=True)
    say("done")
    return 0


def _story(
    client: Client, spec_path: Path, say: Callable[[str], None], out: TextIO, deadline: float
) -> None:
    spec = load_spec(spec_path, client)
    say(f"uploaded {spec_path.name}'s dataset as {spec['dataset'].get('ref', '(inline)')}")
    created = client.create_experiment(spec, wait=WAIT_S)
    _check(created, "create experiment")
    experiment_id = created.get("experiment_id") or created["result"]["experiment_id"]
    pipelines = client.pipelines(experiment_id=experiment_id)
    say(
        f"experiment {experiment_id}: {', '.join(_name(p) for p in pipelines)} "
        f"(ic_id {created.get('ic_id')})"
    )

    pipelines = _wait(
        client,
        experiment_id,
        say,
        deadline,
        "every pipeline has 2 shards done",
        lambda ps: all(p.get("shards_completed", 0) >= 2 for p in ps),
    )
    metric = (metric_names(pipelines) or ["exact_match"])[0]
    ranked = sorted(pipelines, key=lambda p: (metric_value(p, metric) or 0.0, p["pipeline_id"]))
    worst, best = ranked[0], ranked[-1]

    op = client.stop(worst["pipeline_id"], wait=WAIT_S)
    _check(op, "stop")
    say(
        f"stopped the worst pipeline {_name(worst)} ({metric} {_value(worst, metric)}):"
        f" ic_id {op['ic_id']} {op['status']}"
    )
    name = f"{field(best, 'pipeline_name')}-t07"
    op = client.clone(
        best["pipeline_id"], {"pipeline_name": name, "sampling_params": CLONE_SAMPLING}, wait=WAIT_S
    )
    _check(op, "clone")
    say(
        f"cloned the best pipeline {_name(best)} ({metric} {_value(best, metric)}) with"
        f" sampling_params {CLONE_SAMPLING} as pipeline {op['result']['pipeline_id']} ({name}):"
        f" ic_id {op['ic_id']} {op['status']}"
    )

    stopped = worst["pipeline_id"]
    pipelines = _wait(
        client,
        experiment_id,
        say,
        deadline,
        "the other pipelines complete",
        lambda ps: all(p.get("status") == "completed" for p in ps if p["pipeline_id"] != stopped),
    )
    print("\noperations\n" + operations_table(in_order(client.operations())), file=out)
    print("\npipelines\n" + pipelines_table(pipelines) + "\n", file=out)
    board = client.leaderboard(experiment_id, metric=metric)
    print("leaderboard\n" + leaderboard_table(board) + "\n", file=out, flush=True)


def _wait(
    client: Client,
    experiment_id: str,
    say: Callable[[str], None],
    deadline: float,
    what: str,
    done: Callable[[list[dict[str, Any]]], bool],
) -> list[dict[str, Any]]:
    """Poll the experiment's pipelines until `done`, printing progress when it changes."""
    say(f"waiting until {what}")
    shown = ""
    while True:
        pipelines = client.pipelines(experiment_id=experiment_id)
        progress = "  ".join(
            f"{printable(field(p, 'pipeline_name'), CELL_WIDTH)}"
            f" {p.get('shards_completed', 0)}/{p.get('num_shards')}"
            f" {p.get('status')}"
            for p in sorted(pipelines, key=lambda p: p["pipeline_id"])
        )
        if progress != shown:
            say(f"  {progress}")
            shown = progress
        if pipelines and done(pipelines):
            return pipelines
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting until {what}")
        time.sleep(0.2)


def _check(op: dict[str, Any], what: str) -> None:
    if op.get("status") != "completed":
        raise InfernoError(
            409,
            f"{what}: operation {op.get('ic_id')} is {op.get('status')}: "
            f"{op.get('error') or 'not completed in time'}",
        )


def _name(pipeline: dict[str, Any]) -> str:
    return f"{pipeline['pipeline_id']}:{printable(field(pipeline, 'pipeline_name'), CELL_WIDTH)}"


def _value(pipeline: dict[str, Any], metric: str) -> str:
    value = metric_value(pipeline, metric)
    return "-" if value is None else f"{value:.3f}"

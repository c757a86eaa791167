"""`from inferno import Experiment`: RapidFire's `Experiment` + `run_evals` over Inferno's api.

`run_evals` creates the experiment, follows it over the events stream (SSE; the api is read
again when an entry says something changed, as `inferno watch` does, `inferno.client.watching`)
with live progress, and returns when every pipeline has settled — clones made meanwhile, from the
dashboard or another notebook, included. Progress is `inferno watch`'s board
(`inferno.client.live`): redrawn in place in a terminal (and in Jupyter where ipywidgets is
installed, which rich needs to redraw there), one line per change elsewhere.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.live import Live

from inferno.client import evals, live, watching
from inferno.client.evals import Metric, PipelineResult
from inferno.client.sdk import DEFAULT_URL, Client, InfernoError, read_rows
from inferno.client.tables import clock
from inferno.client.terminal import printable

__all__ = ["Experiment", "Metric", "PipelineResult"]

Progress = Literal["auto", "live", "lines", "off"]
CREATE_WAIT_S = 30.0
CONTROL_WAIT_S = 30.0


class Experiment:
    """An experiment by name on the api at `api` (with `token` when it wants one; as the CLI,
    by default INFERNO_API_URL or http://127.0.0.1:8851, and INFERNO_TOKEN). If experiments of
    that name exist, the newest is this one until `run_evals` makes another."""

    def __init__(
        self,
        experiment_name: str,
        api: str | None = None,
        token: str | None = None,
        *,
        actor: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.experiment_name = experiment_name
        url = api or os.environ.get("INFERNO_API_URL") or DEFAULT_URL
        if token is None:  # "" asks for no token whatever the environment says
            token = os.environ.get("INFERNO_TOKEN")
        token = token or None
        self._connect = lambda: Client(url, token, timeout, actor)
        self.client = self._connect()
        named = [e for e in self.client.experiments() if e["experiment_name"] == experiment_name]
        newest = max(named, key=lambda e: e.get("created_at") or 0, default=None)
        self.experiment_id: str | None = newest["experiment_id"] if newest else None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Experiment({self.experiment_name!r}, id={self.experiment_id})"

    def run_evals(
        self,
        pipelines: Any,
        dataset: Any,
        eval: Mapping[str, Any] | None = None,
        num_shards: int = 4,
        *,
        progress: Progress = "auto",
        reason: str | None = None,
        out: TextIO | None = None,
        **spec: Any,
    ) -> dict[int, PipelineResult]:
        """Run `pipelines` (a spec or a list) over `dataset` (rows, a JSONL/CSV/Parquet path,
        or `{"ref": ...}`) with `eval` (`{"prompt", "scorers"}`) in `num_shards` lockstep
        shards; more fields of the api's experiment spec go in `spec` (`max_attempts`, ...).
        Returns pipeline id → result, as RapidFire's does leaving out deleted and failed
        pipelines. An invalid spec raises `InfernoError` with the api's 400 naming the field."""
        if evals.is_file(dataset):
            stored = self.client.upload_dataset(read_rows(Path(dataset)))
            data = {"ref": stored["dataset_ref"]}
        else:
            data = evals.dataset_spec(dataset)
        body = evals.experiment_spec(
            self.experiment_name, evals.pipeline_specs(pipelines), data, eval, num_shards, spec
        )
        created = self.client.create_experiment(body, wait=CREATE_WAIT_S, reason=reason)
        if created["status"] == "failed":
            raise InfernoError(409, f"creating the experiment failed: {created['error']}")
        self.experiment_id = created["experiment_id"]
        self._follow(progress, out or sys.stdout)
        return self.results()

    def pipelines(self) -> list[dict[str, Any]]:
        """The experiment's pipelines as the api shows them (metrics, progress, lineage)."""
        return self.client.pipelines(experiment_id=self._id())

    def results(self) -> dict[int, PipelineResult]:
        """Each pipeline (but deleted and failed ones) with its rows and metrics so far."""
        return {
            int(p["pipeline_id"]): evals.result(p, self.client.results(p["pipeline_id"]))
            for p in evals.kept(self.pipelines())
        }

    def stop(self, pipeline: int | str, reason: str | None = None) -> dict[str, Any]:
        """Stop a pipeline (by id or name); the final operation. The shard in flight counts."""
        return self._control("stop", pipeline, reason)

    def resume(self, pipeline: int | str, reason: str | None = None) -> dict[str, Any]:
        return self._control("resume", pipeline, reason)

    def delete(self, pipeline: int | str, reason: str | None = None) -> dict[str, Any]:
        return self._control("delete", pipeline, reason)

    def clone(
        self,
        pipeline: int | str,
        changes: Mapping[str, Any] | None = None,
        reason: str | None = None,
        **knobs: Any,
    ) -> int:
        """Clone a pipeline with `changes` and/or `knobs` (pipeline_name, model_config,
        sampling_params, ...); the new pipeline's id. It joins a running `run_evals`."""
        op = self._control("clone", pipeline, reason, {**(changes or {}), **knobs})
        return int(op["result"]["pipeline_id"])

    def events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """The experiment's history (docs/audit.md entries), oldest first."""
        return self.client.events(experiment_id=self._id(), **filters)

    def follow_events(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """The experiment's entries live, as they are stored, for ever."""
        return self.client.follow_events(experiment_id=self._id(), **filters)

    def _id(self) -> str:
        if self.experiment_id is None:
            raise LookupError(f"no experiment named {self.experiment_name!r}; run_evals first")
        return self.experiment_id

    def _control(
        self,
        action: str,
        pipeline: int | str,
        reason: str | None,
        changes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Issue `action` and wait for its outcome; a failed operation raises InfernoError."""
        pid = evals.resolve(self.pipelines(), pipeline)
        wait, key = CONTROL_WAIT_S, None
        if action == "clone":
            op = self.client.clone(pid, changes, wait, key, reason)
        else:
            op = getattr(self.client, action)(pid, wait, key, reason)
        if op["status"] == "failed":
            raise InfernoError(409, f"{action} of pipeline {pid} failed: {op['error']}")
        if op["status"] != "completed":
            raise InfernoError(504, f"{action} of pipeline {pid} not answered in {wait:g}s")
        return dict(op)

    def _follow(self, progress: Progress, out: TextIO) -> None:
        """Until every pipeline of the experiment has settled, showing progress."""
        stream = watching.Stream(self._connect(), {"experiment_id": self.experiment_id})
        try:
            mode = _mode(progress, out)
            if mode == "live":
                self._live(stream, out)
            else:
                watching.follow(
                    self.client,
                    stream,
                    self.experiment_id,
                    watching.IDLE_S,
                    watching.line_printer(out) if mode == "lines" else lambda view: None,
                )
        finally:
            stream.close()

    def _live(self, stream: watching.Stream, out: TextIO) -> None:
        console = Console(file=out, highlight=False)
        title = printable(f"experiment {self.experiment_name} ({self.experiment_id})", 200)
        with Live(console=console, auto_refresh=False, redirect_stdout=False) as screen:

            def show(view: watching.View) -> None:
                now = time.time()
                heading = f"{clock(now)}  {title}" + ("  (all settled)" if view.done else "")
                board = live.board(view.rows(now), view.operations, view.warning, heading)
                screen.update(board, refresh=True)

            watching.follow(self.client, stream, self.experiment_id, 0.5, show)


def _mode(progress: Progress, out: TextIO) -> Progress:
    """`auto`: live where rich can redraw (a terminal; Jupyter with ipywidgets), else lines."""
    if progress != "auto":
        return progress
    console = Console(file=out)
    if console.is_jupyter:  # rich redraws in Jupyter through ipywidgets
        return "live" if importlib.util.find_spec("ipywidgets") else "lines"
    return "live" if console.is_terminal else "lines"

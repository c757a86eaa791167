"""Python SDK over the Inferno HTTP API (DESIGN §7): one method per route, plain dicts back.

A non-2xx answer raises `InfernoError(status, message)` with the server's `error` text; an api
that cannot be reached raises `ApiUnreachable` (status 0). `load_spec` turns an experiment spec
file (YAML or JSON, the body of POST /api/v1/experiments) into that body, uploading a local
`dataset.path` (JSONL, CSV or Parquet) once through POST /api/v1/datasets.
"""

from __future__ import annotations

import getpass
import io
import json
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import yaml

from inferno.client import events, wire
from inferno.client.wire import ApiUnreachable, InfernoError
from inferno.datasets.files import SUFFIXES, DatasetFileError, format_of, parse_rows
from inferno.events.provenance import as_actor, check_actor

__all__ = ["ApiUnreachable", "Client", "InfernoError", "SpecError", "load_spec"]

DEFAULT_URL = "http://127.0.0.1:8851"
API = "/api/v1"
DATASET_SUFFIXES = tuple(SUFFIXES)


class BytesSink(Protocol):
    """Where `download_results` writes: a binary file, or anything with a bytes `write`."""

    def write(self, data: bytes, /) -> object: ...


class SpecError(ValueError):
    """An experiment spec or dataset file that cannot be used; the message names the file."""


def default_actor() -> str | None:
    """`user@host` of this process, as the api records who issued a command (ASCII only)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no user name in the environment or the password database
        user = "unknown"
    return as_actor(f"{user}@{socket.gethostname()}")


class Client:
    """Synchronous client; use it as a context manager or call `close()`.

    `actor` is who the api records as issuing this client's commands (`X-Inferno-Actor`):
    by default the OS user and host (`default_actor`), "" for none. Behind a token the api
    records it after the token's identity; it never grants anything. ValueError if it is not
    printable ASCII of at most MAX_ACTOR_LENGTH characters."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        timeout: float = 30.0,
        actor: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.actor = (default_actor() if actor is None else actor and check_actor(actor)) or None
        headers = wire.headers(token, self.actor)
        # trust_env=False: loopback calls must never go through an http_proxy from the environment
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, trust_env=False
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # experiments and datasets
    def create_experiment(
        self,
        spec: Mapping[str, Any],
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """`reason`, on this and every other write: why, recorded with the command."""
        body = {**spec, "reason": reason} if reason is not None else spec
        return self._request("POST", f"{API}/experiments", body, wait, idempotency_key)

    def estimate(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """What `create_experiment(spec)` would cost in tokens and, where priced, money; the
        api checks the spec as for a create and stores nothing."""
        return self._request("POST", f"{API}/experiments", spec, params={"dry_run": "true"})

    def upload_dataset(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Store rows once (content-addressed); returns {"dataset_ref", "row_count"}."""
        return self._request("POST", f"{API}/datasets", {"rows": rows})

    def upload_dataset_file(self, path: str | Path) -> dict[str, Any]:
        """Upload a JSONL, CSV or Parquet file as it is; the api reads it into rows."""
        path = Path(path)
        with path.open("rb") as file:
            return self._request("POST", f"{API}/datasets", files={"file": (path.name, file)})

    def leaderboard(self, experiment_id: str, metric: str | None = None) -> dict[str, Any]:
        """The experiment's pipelines best first by `metric` (default: its first scorer), each
        with the metric's value, confidence interval, shards done and status."""
        path = f"{API}/experiments/{experiment_id}/leaderboard"
        return self._request("GET", path, params={"metric": metric})

    def experiments(self) -> list[dict[str, Any]]:
        return wire.items(self._request("GET", f"{API}/experiments"), "experiments")

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        return self._request("GET", f"{API}/experiments/{experiment_id}")

    # pipelines
    def pipelines(
        self, experiment_id: str | None = None, status: str | None = None, at: str | None = None
    ) -> list[dict[str, Any]]:
        """The pipelines now, or as they were at `at` (RFC 3339 or epoch seconds)."""
        params = {"experiment_id": experiment_id, "status": status, "at": at}
        body = self._request("GET", f"{API}/pipelines", params=params)
        return wire.items(body, "pipelines")

    def pipeline(self, pipeline_id: int) -> dict[str, Any]:
        return self._request("GET", f"{API}/pipelines/{pipeline_id}")

    def download_results(self, pipeline_id: int, out: BytesSink) -> int:
        """Stream the pipeline's per-row results (JSONL, completed shards in order) into `out`;
        the number of rows written."""
        rows = 0
        try:
            with self._http.stream("GET", f"{API}/pipelines/{pipeline_id}/results") as response:
                if not response.is_success:
                    response.read()
                    raise InfernoError(response.status_code, wire.error_text(response))
                for chunk in response.iter_bytes():
                    rows += chunk.count(b"\n")
                    out.write(chunk)
        except httpx.TransportError as error:
            raise wire.unreachable(self.base_url, error) from error
        return rows

    def results(self, pipeline_id: int) -> list[dict[str, Any]]:
        """The pipeline's per-row results so far: row_index, prompt, output, scores, tokens."""
        buffer = io.BytesIO()
        self.download_results(pipeline_id, buffer)
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    def stop(
        self,
        pipeline_id: int,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        return self._control(pipeline_id, "stop", None, wait, idempotency_key, reason)

    def resume(
        self,
        pipeline_id: int,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        return self._control(pipeline_id, "resume", None, wait, idempotency_key, reason)

    def retry(
        self,
        pipeline_id: int,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Run a failed pipeline's failed and never-run shards again."""
        return self._control(pipeline_id, "retry", None, wait, idempotency_key, reason)

    def extend(
        self,
        experiment_id: str,
        num_shards: int,
        *,
        rows: list[dict[str, Any]] | None = None,
        ref: str | None = None,
        shuffle_seed: int | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Add `rows` (or the stored dataset `ref`) to the experiment as `num_shards` more
        shards of every pipeline; completed work stands."""
        if (rows is None) == (ref is None):
            raise ValueError("give rows or ref")
        dataset = {"rows": rows} if rows is not None else {"ref": ref}
        body: dict[str, Any] = {"dataset": dataset, "num_shards": num_shards}
        if shuffle_seed is not None:
            body["shuffle_seed"] = shuffle_seed
        path = f"{API}/experiments/{experiment_id}/extend"
        return self._request("POST", path, wire.control_body(body, reason), wait, idempotency_key)

    def set_budget(
        self,
        experiment_id: str | None = None,
        *,
        pipeline_id: int | None = None,
        usd: float | None = None,
        tokens: int | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Set the experiment's budget, or with `pipeline_id` that pipeline's own: `usd` and
        `tokens` replace the current ones where given. What the budget stopped runs again."""
        if (experiment_id is None) == (pipeline_id is None):
            raise ValueError("give experiment_id or pipeline_id")
        path = (
            f"{API}/experiments/{experiment_id}/budget"
            if pipeline_id is None
            else f"{API}/pipelines/{pipeline_id}/budget"
        )
        body = {k: v for k, v in {"usd": usd, "tokens": tokens}.items() if v is not None}
        return self._request("POST", path, wire.control_body(body, reason), wait, idempotency_key)

    def delete(
        self,
        pipeline_id: int,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        return self._control(pipeline_id, "delete", None, wait, idempotency_key, reason)

    def clone(
        self,
        pipeline_id: int,
        changes: Mapping[str, Any] | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Clone with `changes` (pipeline_name, model_config, sampling_params, ...); the new
        pipeline's id is in the operation's `result` once it completed."""
        body = dict(changes or {})
        return self._control(pipeline_id, "clone", body, wait, idempotency_key, reason)

    # the seed's dispatcher routes (DESIGN §7), as RapidFire's clients call them
    def operation_status(self, ic_id: int) -> dict[str, Any]:
        return self._request("GET", f"/dispatcher/operation-status/{ic_id}")

    def all_operations(self) -> list[dict[str, Any]]:
        return wire.items(self._request("GET", "/dispatcher/all-operations"), "operations")

    def dispatch(
        self,
        route: str,
        body: Mapping[str, Any],
        wait: float | None = None,
        idempotency_key: str | None = None,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """POST /dispatcher/`route` (stop-pipeline, resume-pipeline, delete-pipeline with
        {"pipeline_id"}; clone-pipeline with {"context_id", "pipeline_name", ...}): {"ic_id",
        "message"}. There `reason` is a query parameter."""
        path, params = wire.dispatcher(route, reason)
        return self._request("POST", path, dict(body), wait, idempotency_key, params)

    # operations, executors, health
    def operations(self) -> list[dict[str, Any]]:
        return wire.items(self._request("GET", f"{API}/operations"), "operations")

    def operation(self, ic_id: int) -> dict[str, Any]:
        return self._request("GET", f"{API}/operations/{ic_id}")

    def executors(self) -> list[dict[str, Any]]:
        return wire.items(self._request("GET", f"{API}/executors"), "executors")

    def executor(self, executor_id: str) -> dict[str, Any]:
        return self._request("GET", f"{API}/executors/{executor_id}")

    def cleanup_executors(self, older_than_s: float | None = None) -> dict[str, Any]:
        """Remove lapsed executors from the registry: {"removed", "kept", "older_than_s"}."""
        body = {} if older_than_s is None else {"older_than_s": older_than_s}
        return self._request("POST", f"{API}/admin/cleanup", body)

    # the history (docs/audit.md): filters are the routes' query parameters, e.g.
    # pipeline_id=7, type=["stop_pipeline"], actor="alice", since="2026-12-01T12:00:00Z"
    def events_page(self, params: Mapping[str, Any], after: str | None = None) -> dict[str, Any]:
        """One page of GET /api/v1/events: {"entries", "cursor", "more"}."""
        query = {**params, "limit": params.get("limit", events.PAGE), "after": after}
        return self._request("GET", f"{API}/events", params=query)

    def events(self, after: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every entry matching `filters` from `after` (a cursor) on, oldest first, page by
        page until the log has no more."""
        for page in events.pages(self, events.filters(**filters), after):
            yield from page["entries"]

    def follow_events(self, after: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """The entries matching `filters` live, as they are stored (Server-Sent Events), from
        `after` on or from now; reconnects by itself, missing and repeating nothing."""
        return events.follow(self, self._http, events.filters(**filters), after)

    def raise_for(self, response: httpx.Response) -> None:
        raise InfernoError(response.status_code, wire.error_text(response))

    def ready(self) -> bool:
        """True when /readyz answers 2xx; False when it answers otherwise or cannot be reached."""
        try:
            return self._http.get("/readyz").is_success
        except httpx.HTTPError:
            return False

    def no_leader(self) -> str | None:
        """Why nothing gets decided, when /readyz says no scheduler holds the lease (e.g. "no
        scheduler holds the lease in INFERNO_LEADER (last leader s1, lapsed 14 s ago)"); None
        while one does, or when the api cannot say (unreachable, or older)."""
        try:
            body = self._http.get("/readyz").json()
        except (httpx.HTTPError, ValueError):
            return None
        checks = body.get("checks") if isinstance(body, dict) else None
        leader = checks.get("leader") if isinstance(checks, dict) else None
        if isinstance(leader, dict) and leader.get("ok") is False:
            return str(leader.get("detail") or "no scheduler holds the lease")
        return None

    def _control(
        self,
        pipeline_id: int,
        action: str,
        body: dict[str, Any] | None,
        wait: float | None,
        idempotency_key: str | None,
        reason: str | None,
    ) -> dict[str, Any]:
        """POST a pipeline action; a `reason` goes into the body (the api records it)."""
        path = f"{API}/pipelines/{pipeline_id}/{action}"
        return self._request("POST", path, wire.control_body(body, reason), wait, idempotency_key)

    def _request(self, method: str, path: str, body: Any = None, *args: Any, **kwargs: Any) -> Any:
        """`wire.request_args`' parameters; the answer's JSON, or `InfernoError`."""
        request = wire.request_args(self._http.timeout, method, path, body, *args, **kwargs)
        try:
            response = self._http.request(**request)
        except httpx.TransportError as error:
            raise wire.unreachable(self.base_url, error) from error
        return wire.answer(response, self.base_url)


# experiment spec files
def load_spec(path: str | Path, client: Client | None = None) -> dict[str, Any]:
    """The POST /experiments body in a YAML or JSON file. A `dataset.path` (JSONL, CSV or
    Parquet, relative to the spec file) is, when `client` is given, uploaded as it is (the api
    reads it as a stream, so a file of any size goes) and replaced by `dataset.ref`; without a
    client its rows are read and inlined as `dataset.rows`."""
    path = Path(path)
    spec = read_spec(path)
    dataset = spec.get("dataset")
    if isinstance(dataset, dict) and "path" in dataset:
        data_path = Path(dataset["path"])
        if not data_path.is_absolute():
            data_path = path.parent / data_path
        rest = {k: v for k, v in dataset.items() if k != "path"}
        if client is None:
            spec["dataset"] = {**rest, "rows": read_rows(data_path)}
        else:
            _dataset_format(data_path)
            if not data_path.is_file():
                raise SpecError(f"dataset file {data_path} not found")
            stored = client.upload_dataset_file(data_path)
            spec["dataset"] = {**rest, "ref": stored["dataset_ref"]}
    return spec


def read_spec(path: Path) -> dict[str, Any]:
    """Parse a spec file (YAML is a superset of JSON, so one parser reads both)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"spec file {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"cannot read spec file {path}: {error}") from None
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"spec file {path} is not valid YAML/JSON: {_yaml_reason(error)}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"spec file {path} must hold a mapping, not {type(spec).__name__}")
    dataset = spec.get("dataset")
    if dataset is not None and not isinstance(dataset, dict):
        raise SpecError(f"spec file {path}: `dataset` must be a mapping (rows, ref or path)")
    if isinstance(dataset, dict) and "path" in dataset:
        others = sorted({"rows", "ref"} & dataset.keys())
        if others:
            raise SpecError(f"spec file {path}: `dataset` has `path` and `{others[0]}`; give one")
        if not isinstance(dataset["path"], str) or not dataset["path"]:
            raise SpecError(f"spec file {path}: `dataset.path` must be a file name")
    return spec


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL (one JSON object a line; blank lines skipped), CSV (header row; values
    stay strings) or Parquet file (`inferno.datasets.files`)."""
    fmt = _dataset_format(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"dataset file {path} not found") from None
    except OSError as error:
        raise SpecError(f"cannot read dataset file {path}: {error}") from None
    try:
        return parse_rows(data, fmt)
    except DatasetFileError as error:
        raise SpecError(f"dataset {path} {error}") from None


def _dataset_format(path: Path) -> str:
    fmt = format_of(path.name)
    if fmt is None:
        suffix = path.suffix.lower()
        raise SpecError(
            f"dataset {path}: unsupported file type {suffix or '(none)'!r};"
            f" use {', '.join(DATASET_SUFFIXES)}"
        )
    return fmt


def _yaml_reason(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem

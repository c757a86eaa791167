"""`inferno`: run a local cluster, submit experiments and steer their pipelines (DESIGN §7).

Exit codes: 0 ok, 1 the server refused or failed (or cannot be reached, or an operation is still
undecided when its --wait ends: the error says whether a scheduler leads), 2 usage (bad arguments,
a spec file that cannot be used, a pipeline name that matches none or several pipelines).
Errors are one line on stderr: `inferno: error: ...`, caught in one place (`main`), never a
traceback. Every line printed goes through `terminal.printable`: text from the log cannot
control the terminal, and tables and error listings are bounded however long the names are.
"""

from __future__ import annotations

import argparse
import os
import sys
from codecs import getincrementaldecoder
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO, get_args
from urllib.parse import urlparse

from inferno.client import audit, launcher, watching
from inferno.client.arguments import (
    UsageError,
    clone_changes,
    resolve_experiment,
    resolve_pipeline,
    shown_name,
)
from inferno.client.demo import run_demo
from inferno.client.embedded import NatsServerError, port_in_use
from inferno.client.sdk import ApiUnreachable, Client, InfernoError, SpecError, load_spec
from inferno.client.tables import (
    AUTOMATIC,
    CELL_WIDTH,
    automatic_stop,
    estimate_table,
    executors_table,
    in_order,
    leaderboard_table,
    operations_table,
    pipeline_failures,
    pipeline_waits,
    pipelines_table,
)
from inferno.client.terminal import clip, json_safe, printable
from inferno.datasets.store import REF_PATTERN
from inferno.events.provenance import check_reason
from inferno.events.state import PipelineStatus

DEFAULT_WAIT_S = 10.0
ERROR_WIDTH = 2000  # the longest error line printed


# commands
def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    data_dir = Path(args.data_dir)
    env = os.environ
    options = {
        "api_port": env_port(env, "INFERNO_API_PORT", 8851)
        if args.api_port is None
        else args.api_port,
        "nats_port": nats_url_port(env) if args.nats_port is None else args.nats_port,
        "executors": args.executors,
        "schedulers": args.schedulers,
        "namespace": args.namespace,
    }
    launcher.claim_data_dir(data_dir)  # before the ports: a cluster running from here holds them
    for what, port in (("api", options["api_port"]), ("nats", options["nats_port"])):
        if port and port_in_use(port):
            flag = "--api-port" if what == "api" else "--nats-port"
            raise UsageError(
                f"port {port} for the {what} is in use (another `inferno up`?); "
                f"choose another with {flag} (0 = any free port)"
            )
    if args.detach:
        state = launcher.start_detached(data_dir, **options)
        emit(out, f"inferno is up (detached, supervisor pid {state['pid']})")
        emit(out, f"  api   {state['api_url']}\n  nats  {state['nats_url']}")
        emit(out, f"  metrics  {metrics_line(state['metrics'])}")
        where = "" if data_dir == launcher.default_data_dir() else f" --data-dir {data_dir}"
        emit(out, f"  logs  {state['logs']}\n  stop it with: inferno{where} down")
        return 0
    cluster = launcher.LocalCluster(data_dir, out=out, **options)

    def ready(c: launcher.LocalCluster) -> None:
        c.say(
            "up",
            f"ready: api {c.api_url}, nats {c.nats_url}, {c.executor_count} executors;"
            " Ctrl-C stops everything",
        )
        c.say("up", f"metrics: {metrics_line(c.metrics_urls)}")

    return launcher.serve(cluster, on_ready=ready)


def metrics_line(urls: dict[str, str]) -> str:
    """Each service's /metrics, as `name url` pairs (docs/operations.md has a scrape config)."""
    return ", ".join(f"{name} {url}" for name, url in urls.items())


def cmd_down(args: argparse.Namespace, out: TextIO) -> int:
    data_dir = Path(args.data_dir)
    if launcher.stop_detached(data_dir):
        emit(out, f"stopped the cluster running from {data_dir}")
    else:
        emit(out, f"no cluster running from {data_dir}")
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        spec = load_spec(args.spec, client)
        if args.dry_run:
            emit(out, estimate_table(client.estimate(spec)))
            return 0
        answer = client.create_experiment(spec, wait=args.wait, reason=args.reason)
        result = answer.get("result") or {}
        experiment_id = answer.get("experiment_id") or result.get("experiment_id")
        name = clip(str(spec.get("experiment_name", "")), CELL_WIDTH)
        emit(out, f"experiment  {experiment_id}  ({name})")
        emit(out, f"context     {answer.get('context_id') or result.get('context_id')}")
        emit(out, f"ic_id       {answer.get('ic_id')}  ({answer.get('status', 'accepted')})")
        if answer.get("status") == "failed":
            raise InfernoError(409, f"experiment not created: {answer.get('error')}")
        if args.wait and answer.get("status") in ("pending", "processing"):
            return _fail(f"experiment not created yet: {undecided(answer, client.no_leader())}", 1)
        pipelines = answer.get("pipelines") or []
        if pipelines:
            listed = [f"{p['pipeline_id']} {shown_name(p)}" for p in pipelines]
        else:
            listed = [str(i) for i in result.get("pipeline_ids", [])]
        emit(out, f"pipelines   {', '.join(listed) or '(pending)'}")
        if args.watch:
            return _watch(args, client, experiment_id, out)
    return 0


def _watch(args: argparse.Namespace, client: Client, experiment_id: str | None, out: TextIO) -> int:
    """`watching.watch` with a second client of its own for the events stream."""
    return watching.watch(client, _client(args), experiment_id, out, _isatty(out), args.interval)


def cmd_ps(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        pipelines = client.pipelines(experiment_id=args.experiment, status=args.status, at=args.at)
        no_leader = None if args.at else client.no_leader()  # the past: as it was, said below
    if not args.all and not args.status:
        pipelines = [p for p in pipelines if p.get("status") != "deleted"]
    if args.at:
        emit(out, f"as of {args.at}, folded from the log stored up to then:")
    emit(out, pipelines_table(pipelines))
    for line in [*pipeline_failures(pipelines), *pipeline_waits(pipelines)]:
        emit(out, line)
    if no_leader:  # the counts are the last leader's: say so rather than show them as live
        _warn(f"{no_leader}: nothing progresses; RUNNING is what was in flight when it lapsed")
    return 0


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        return _watch(args, client, args.experiment, out)


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    action = args.command
    with _client(args) as client:
        ids = _resolve_all(client, args.pipelines)
        failed = 0
        for token, pid in zip(args.pipelines, ids, strict=True):
            what = f"{action} {_who(token, pid)}"
            try:
                op = getattr(client, action)(pid, wait=args.wait, reason=args.reason)
            except ApiUnreachable:
                raise
            except InfernoError as error:  # refused: say so, and go on with the others
                _fail(f"{what}: {error}", 1)
                failed += 1
                continue
            failed += _report(out, what, op, client if args.wait else None)
    return 1 if failed else 0


def cmd_extend(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        experiment_id = resolve_experiment(args.experiment, client.experiments())
        ref = args.dataset
        if not REF_PATTERN.match(ref):
            path = Path(ref).expanduser()
            if not path.is_file():
                return _fail(f"{ref}: no such file (a JSONL, CSV or Parquet file, or a ref)", 2)
            ref = client.upload_dataset_file(path)["dataset_ref"]
        op = client.extend(
            experiment_id,
            args.shards,
            ref=ref,
            shuffle_seed=args.seed,
            wait=args.wait,
            reason=args.reason,
        )
        result = op.get("result") or {}
        where = f" → shards from {result['first_shard']}" if "first_shard" in result else ""
        return _report(
            out, f"extend experiment {experiment_id}{where}", op, client if args.wait else None
        )


def cmd_budget(args: argparse.Namespace, out: TextIO) -> int:
    if args.usd is None and args.tokens is None:
        return _fail("inferno budget: give --usd, --tokens or both", 2)
    with _client(args) as client:
        experiment_id, pid = None, None
        if args.pipeline:
            (pid,) = _resolve_all(client, [args.target])
            what = f"budget of {_who(args.target, pid)}"
        else:
            experiment_id = resolve_experiment(args.target, client.experiments())
            what = f"budget of experiment {experiment_id}"
        op = client.set_budget(
            experiment_id,
            pipeline_id=pid,
            usd=args.usd,
            tokens=args.tokens,
            wait=args.wait,
            reason=args.reason,
        )
        return _report(out, what, op, client if args.wait else None)


def cmd_clone(args: argparse.Namespace, out: TextIO) -> int:
    changes = clone_changes(args.name, args.set, args.model_config, args.sampling_params)
    with _client(args) as client:
        (pid,) = _resolve_all(client, [args.pipeline])
        op = client.clone(pid, changes, wait=args.wait, reason=args.reason)
        new_id = (op.get("result") or {}).get("pipeline_id")
        suffix = f" → pipeline {new_id}" if new_id is not None else ""
        if new_id is not None and changes.get("pipeline_name"):
            suffix += f" ({clip(str(changes['pipeline_name']), CELL_WIDTH)})"
        what = f"clone {_who(args.pipeline, pid)}{suffix}"
        return _report(out, what, op, client if args.wait else None)


def _resolve_all(client: Client, tokens: Sequence[str]) -> list[int]:
    pipelines = [] if all(t.isdigit() for t in tokens) else client.pipelines()
    return [resolve_pipeline(t, pipelines) for t in tokens]


def _who(token: str, pid: int) -> str:
    return f"pipeline {pid}" if token == str(pid) else f"pipeline {pid} ({clip(token, CELL_WIDTH)})"


def _report(out: TextIO, what: str, op: dict[str, Any], waited: Client | None = None) -> int:
    """One line per operation; a failed one goes to stderr and counts as a failure, and so
    does one still undecided after a wait (`waited`: the client that waited), with the reason
    when it is that no scheduler leads."""
    status = op.get("status", "accepted")
    if status == "failed":
        return _fail(f"{what}: ic_id {op.get('ic_id')} failed: {op.get('error')}", 1)
    if waited is not None and status in ("pending", "processing"):
        return _fail(f"{what}: {undecided(op, waited.no_leader())}", 1)
    emit(out, f"{what}: ic_id {op.get('ic_id')} {status}")
    return 0


def undecided(op: dict[str, Any], no_leader: str | None) -> str:
    """`ic_id 12 is pending: no scheduler holds the lease (...) — is the scheduler running?`"""
    still = f"ic_id {op.get('ic_id')} is {op.get('status')}"
    if no_leader:
        return f"{still}: {no_leader} — is the scheduler running?"
    return f"{still} after the wait, though a scheduler leads; see `inferno ops`"


def cmd_results(args: argparse.Namespace, out: TextIO) -> int:
    """Per-row results of one pipeline as JSONL, or `--compare`: an experiment's leaderboard."""
    if (args.pipeline is None) == (args.compare is None):
        raise UsageError("results: give a PIPELINE, or --compare EXPERIMENT (not both)")
    if args.metric and args.compare is None:
        raise UsageError("results: --metric goes with --compare")
    with _client(args) as client:
        if args.compare is not None:
            experiment_id = resolve_experiment(args.compare, client.experiments())
            emit(out, leaderboard_table(client.leaderboard(experiment_id, args.metric)))
            return 0
        (pid,) = _resolve_all(client, [args.pipeline])
        if args.output in (None, "-"):
            sink = JsonlSink(out)
            client.download_results(pid, sink)
            sink.close()
            return 0
        path = Path(args.output)
        partial = path.with_name(f".{path.name}.partial")  # no half-written file under the name
        try:
            with partial.open("wb") as file:
                rows = client.download_results(pid, file)
            partial.replace(path)
        except OSError as error:
            where = error.strerror if path.parent.is_dir() else f"no directory {path.parent}"
            raise UsageError(f"-o {path}: cannot write it ({where})") from None
        finally:
            partial.unlink(missing_ok=True)
        emit(out, f"{rows} rows of {_who(args.pipeline, pid)} written to {path}")
    return 0


class JsonlSink:
    """JSONL bytes passed on to a text stream (stdout, or the StringIO tests pass as `out`):
    decoded across chunk boundaries, with what a terminal would act on as `\\u` escapes."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._decoder = getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> int:
        self._out.write(json_safe(self._decoder.decode(data)))
        return len(data)

    def close(self) -> None:
        self._out.write(json_safe(self._decoder.decode(b"", final=True)))
        self._out.flush()


def cmd_ops(args: argparse.Namespace, out: TextIO) -> int:
    """Operations people asked for, and the stops the scheduler decided on its own (a prune
    policy's, a budget's: no ic_id, the rule as ACTOR), in time order."""
    with _client(args) as client:
        operations = in_order(client.operations())
        stops = [automatic_stop(e) for e in client.events(type=list(AUTOMATIC), stream=["evt"])]
    merged = in_order(operations, stops)
    emit(out, operations_table(merged[-args.limit :] if args.limit else merged))
    return 0


def cmd_events(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        pid = _resolve_all(client, [args.pipeline])[0] if args.pipeline else None
        return audit.cmd_events(args, out, client, pid, emit)


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        (pid,) = _resolve_all(client, [args.pipeline])
        return audit.cmd_history(out, client, pid, emit)


def cmd_verify(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        return audit.cmd_verify(args, out, client, emit)


def cmd_executors(args: argparse.Namespace, out: TextIO) -> int:
    if args.prune and args.watch:
        raise UsageError("executors: --prune removes lapsed executors once; not with --watch")
    with _client(args) as client:
        if args.prune:
            answer = client.cleanup_executors(args.older_than)
            removed = answer.get("removed") or []
            lapsed = f"heartbeat older than {answer.get('older_than_s')} s"
            emit(out, f"removed {len(removed)} executor(s) ({lapsed}): {', '.join(removed)}")
            return 0
        if args.watch:
            return watching.watch_executors(client, out, _isatty(out), args.interval)
        emit(out, executors_table(client.executors()))
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """A throwaway cluster; with --api or --data-dir, the running cluster they name."""
    spec = Path(args.spec) if args.spec else None
    if not args.explicit & {"api", "data_dir"}:
        return run_demo(spec, out, executors=args.executors or 3)
    if args.executors is not None:
        raise UsageError("demo: --executors is for a throwaway cluster, not with --api/--data-dir")
    if "api" not in args.explicit and not _running_from(Path(args.data_dir)):
        raise UsageError(
            f"demo: no cluster is running from {args.data_dir}; start one with"
            f" `inferno --data-dir {args.data_dir} up --detach`, or run `inferno demo` alone"
            " for a throwaway cluster"
        )
    return run_demo(spec, out, api_url=args.api, token=args.token)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.api, token=args.token)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def emit(out: TextIO, text: str, width: int | None = None) -> None:
    """Print `text` with each line made printable (and cut to `width`): how the CLI writes."""
    print("\n".join(printable(line, width) for line in text.split("\n")), file=out)


# configuration from the environment and the command line
def default_api_url(env: Mapping[str, str], data_dir: Path, dir_given: bool = False) -> str:
    """The cluster running from a `--data-dir` given; else INFERNO_API_URL; else the cluster
    running from `data_dir`; else 127.0.0.1 on INFERNO_API_PORT (8851)."""
    state = _running_from(data_dir)
    if dir_given and state:
        return state["api_url"]
    if env.get("INFERNO_API_URL"):
        return check_api_url(env["INFERNO_API_URL"], "INFERNO_API_URL")
    if state:
        return state["api_url"]
    return f"http://127.0.0.1:{env_port(env, 'INFERNO_API_PORT', 8851)}"


def _running_from(data_dir: Path) -> dict[str, Any] | None:
    state = launcher.read_state(data_dir)
    return state if state and launcher.is_running(state["pid"], state.get("start")) else None


def check_api_url(url: str, source: str) -> str:
    """`url` when it is an http(s) URL with a host (and a valid port); a UsageError otherwise."""
    try:
        parsed = urlparse(url)
        parsed.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"{source} {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8851")
    return url


def env_port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    if not raw.isdigit() or int(raw) > 65535:
        raise UsageError(f"{name}={raw!r} is not a port number (0-65535)")
    return int(raw)


def nats_url_port(env: Mapping[str, str]) -> int:
    """The port of the first server in NATS_URL (4222 when it names none)."""
    url = env.get("NATS_URL", "")
    try:
        port = urlparse(url.split(",")[0].strip()).port if url else None
    except ValueError:
        raise UsageError(f"NATS_URL={url!r} does not end in a port number") from None
    return port or 4222


def _number(kind: type[int] | type[float], least: float) -> Callable[[str], Any]:
    """An argparse type: a `kind` of at least `least`, or a clear message."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < least or value != value:  # NaN compares false to everything
            raise argparse.ArgumentTypeError(f"must be {least:g} or more, not {text}")
        return value

    return parse


def _reason(text: str) -> str | None:
    """An argparse type: a reason the api takes (`inferno.events.provenance.check_reason`)."""
    try:
        return check_reason(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    # shared options work before or after the subcommand; SUPPRESS keeps a subcommand's unset
    # copy from overwriting a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="api base URL (env INFERNO_API_URL; default: the cluster `inferno up`"
        " runs from --data-dir, else http://127.0.0.1:$INFERNO_API_PORT)",
    )
    common.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token, when the api requires one (env INFERNO_TOKEN)",
    )
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        metavar="DIR",
        help="local cluster data dir (env INFERNO_DATA_DIR; default .inferno)",
    )
    parser = argparse.ArgumentParser(
        prog="inferno",
        parents=[common],
        description="Run LLM evaluation experiments you can steer while they run.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="see `inferno COMMAND --help`"
    )

    def add(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def wait_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--wait",
            type=_number(float, 0),
            default=DEFAULT_WAIT_S,
            metavar="S",
            help=f"wait up to S seconds for the operation to finish (default {DEFAULT_WAIT_S})",
        )

    def reason_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--reason",
            type=_reason,
            metavar="TEXT",
            help="why, for the audit trail: recorded with the command, shown by `inferno ops`",
        )

    def interval_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--interval",
            type=_number(float, 0.05),
            default=0.5,
            metavar="S",
            help="on a terminal, seconds between redraws (clock, ETA); the api is read when"
            " the events stream says something changed (default 0.5)",
        )

    p = add("up", cmd_up, "start nats-server, the api, scheduler(s) and executors locally")
    p.add_argument(
        "--executors", type=_number(int, 0), default=2, metavar="N", help="executors (default 2)"
    )
    p.add_argument(
        "--schedulers",
        type=_number(int, 1),
        default=1,
        metavar="N",
        help="schedulers: one leads, the others stand by (default 1)",
    )
    p.add_argument(
        "--api-port",
        type=_number(int, 0),
        metavar="P",
        help="default $INFERNO_API_PORT or 8851; 0 = any free port",
    )
    p.add_argument(
        "--nats-port",
        type=_number(int, 0),
        metavar="P",
        help="default the port of $NATS_URL or 4222; 0 = any free port",
    )
    p.add_argument(
        "--namespace",
        default=os.environ.get("INFERNO_NAMESPACE") or "inferno",
        help="prefix of every subject, stream and bucket (env INFERNO_NAMESPACE; default inferno)",
    )
    p.add_argument("--detach", action="store_true", help="run in the background; see `down`")
    add("down", cmd_down, "stop the cluster `inferno up --detach` started")

    p = add("run", cmd_run, "create an experiment from a YAML/JSON spec file")
    p.add_argument("spec", metavar="SPEC", help="the experiment spec, e.g. examples/arith.yaml")
    p.add_argument("--watch", action="store_true", help="follow progress until all settle")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="estimate each pipeline's tokens and worst-case cost; create nothing",
    )
    interval_flag(p)
    wait_flag(p)
    reason_flag(p)

    p = add("ps", cmd_ps, "list pipelines")
    p.add_argument("--experiment", metavar="ID", help="only this experiment's pipelines")
    p.add_argument(
        "--status",
        choices=get_args(PipelineStatus),
        help="only pipelines in this status: %(choices)s",
    )
    p.add_argument("--all", action="store_true", help="include deleted pipelines")
    p.add_argument(
        "--at",
        type=audit.time_arg,
        metavar="TIME",
        help="as they were at TIME (RFC 3339 or epoch seconds), folded from the log",
    )

    p = add("watch", cmd_watch, "follow pipelines' progress until all settle")
    p.add_argument("--experiment", metavar="ID", help="only this experiment's pipelines")
    interval_flag(p)

    for action in ("stop", "resume", "retry", "delete"):
        what = "run the failed shards of" if action == "retry" else action
        p = add(action, cmd_control, f"{what} pipelines (ids or unique name prefixes)")
        p.add_argument(
            "pipelines", nargs="+", metavar="PIPELINE", help="pipeline ids or unique name prefixes"
        )
        wait_flag(p)
        reason_flag(p)

    p = add("extend", cmd_extend, "add rows to an experiment: more shards of every pipeline")
    p.add_argument("experiment", metavar="EXPERIMENT", help="id or unique name prefix")
    p.add_argument(
        "dataset", metavar="DATASET", help="the rows: a JSONL, CSV or Parquet file, or a ref"
    )
    p.add_argument("--shards", type=_number(int, 1), required=True, metavar="N", help="new shards")
    p.add_argument(
        "--seed", type=_number(int, 0), metavar="S", help="their random order's seed (drawn)"
    )
    wait_flag(p)
    reason_flag(p)

    p = add(
        "budget",
        cmd_budget,
        "set an experiment's budget (or --pipeline's); what the budget stopped runs again",
    )
    p.add_argument(
        "target", metavar="EXPERIMENT", help="experiment id or unique name prefix (or pipeline)"
    )
    p.add_argument("--pipeline", action="store_true", help="the target is a pipeline")
    p.add_argument("--usd", type=_number(float, 0), metavar="USD", help="at most this many dollars")
    p.add_argument("--tokens", type=_number(int, 0), metavar="N", help="at most this many tokens")
    wait_flag(p)
    reason_flag(p)

    p = add("clone", cmd_clone, "clone a pipeline with changes")
    p.add_argument("pipeline", metavar="PIPELINE", help="id or unique name prefix of the parent")
    p.add_argument("--name", help="the clone's pipeline_name (default: <parent>-clone)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="e.g. sampling_params.temperature=0.7 (repeatable)",
    )
    p.add_argument("--model-config", metavar="JSON", help="keys merged onto the parent's")
    p.add_argument("--sampling-params", metavar="JSON", help="keys merged onto the parent's")
    wait_flag(p)
    reason_flag(p)

    p = add(
        "results",
        cmd_results,
        "a pipeline's per-row results as JSONL, or --compare an experiment's pipelines",
    )
    p.add_argument("pipeline", nargs="?", metavar="PIPELINE", help="id or unique name prefix")
    p.add_argument("-o", "--output", metavar="FILE", help="write the JSONL here (default stdout)")
    p.add_argument(
        "--compare",
        metavar="EXPERIMENT",
        help="print the experiment's leaderboard (id or unique name prefix) instead",
    )
    p.add_argument("--metric", metavar="M", help="rank by this metric (default the first scorer)")

    p = add("ops", cmd_ops, "list operations")
    p.add_argument(
        "--limit", type=_number(int, 0), default=20, metavar="N", help="last N (0 = all)"
    )
    p = add("executors", cmd_executors, "list registered executors, or --prune lapsed ones")
    p.add_argument(
        "--watch", action="store_true", help="keep the list live (Ctrl-C ends): slots, models"
    )
    p.add_argument(
        "--prune",
        action="store_true",
        help="remove lapsed executors from the registry (POST /api/v1/admin/cleanup)",
    )
    p.add_argument(
        "--older-than",
        type=_number(float, 0.001),
        default=None,
        metavar="S",
        help="with --prune: lapsed means no heartbeat for S seconds (default the heartbeat TTL)",
    )
    p.add_argument(
        "--interval",
        type=_number(float, 0.2),
        default=2.0,
        metavar="S",
        help="with --watch: seconds between rereads of the heartbeats (default 2)",
    )

    p = add("events", cmd_events, "the log's history: commands and events, with who and why")
    audit.add_filters(p)
    p.add_argument("--after", metavar="CURSOR", help="go on after this cursor (cmd:12,evt:340)")
    p.add_argument(
        "--limit", type=_number(int, 0), default=0, metavar="N", help="at most N (0 = all)"
    )
    p.add_argument("--follow", action="store_true", help="then keep printing new entries live")
    p.add_argument("--json", action="store_true", help="one JSON entry a line")
    p = add("history", cmd_history, "the story of one pipeline, from the log")
    p.add_argument("pipeline", metavar="PIPELINE", help="id or unique name prefix")
    p = add("verify", cmd_verify, "replay the whole log and check its invariants (exit 1: broken)")
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = add(
        "demo",
        cmd_demo,
        "steer the example experiment on a throwaway cluster (or on the one --api or"
        " --data-dir names, which stays up)",
    )
    p.add_argument("--spec", help="experiment spec (default examples/arith.yaml)")
    p.add_argument(
        "--executors",
        type=_number(int, 1),
        metavar="N",
        help="executors of the throwaway cluster (default 3)",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """The entry point; the one place errors become a line on stderr and an exit code."""
    out = sys.stdout if out is None else out
    try:
        args = build_parser().parse_args(argv)
        args.explicit = {name for name in ("api", "data_dir") if getattr(args, name, None)}
        env = os.environ
        args.data_dir = getattr(args, "data_dir", None) or str(launcher.default_data_dir())
        args.token = getattr(args, "token", None) or env.get("INFERNO_TOKEN") or None
        if "api" in args.explicit:
            args.api = check_api_url(args.api, "--api")
        else:
            args.api = default_api_url(env, Path(args.data_dir), "data_dir" in args.explicit)
        return args.handler(args, out)
    except (UsageError, SpecError) as error:
        return _fail(error, 2)
    except ApiUnreachable as error:
        return _fail(f"{error}; is `inferno up` running? (INFERNO_API_URL / --api)", 1)
    except InfernoError as error:
        if error.status == 401:
            return _fail(f"{error}; set INFERNO_TOKEN or pass --token with the api's token", 1)
        return _fail(error, 1)
    except (launcher.ClusterError, NatsServerError) as error:  # may hold a log's last lines
        return _fail(error, 1, keep_lines=True)
    except BrokenPipeError:  # the reader left (`inferno ps | head -1`): stop quietly
        if out is sys.stdout:  # nothing more may reach it, not even the flush at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:  # a file or directory the command needs
        where = f": {error.filename}" if error.filename else ""
        return _fail(f"{error.strerror or error}{where}", 1)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug: still one line, the traceback on request
        if os.environ.get("INFERNO_DEBUG"):
            raise
        return _fail(f"unexpected {type(error).__name__}: {error} (INFERNO_DEBUG=1 shows where)", 1)


def _warn(message: str) -> None:
    """`inferno: warning: ...` on stderr: what was printed holds, but read it with this."""
    emit(sys.stderr, f"inferno: warning: {message}", ERROR_WIDTH)


def _fail(error: object, code: int, keep_lines: bool = False) -> int:
    """`inferno: error: ...` on stderr, as one line unless `keep_lines`; returns `code`."""
    text = f"inferno: error: {error}"
    emit(sys.stderr, text if keep_lines else printable(text), ERROR_WIDTH)
    return code


if __name__ == "__main__":
    sys.exit(main())

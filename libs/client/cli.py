"""`inferno`: run a local cluster, submit experiments and steer their pipelines (DESIGN §7).

Exit codes: 0 ok, 1 the server refused or failed (or cannot be reached), 2 usage (bad arguments,
a spec file that cannot be used, a pipeline name that matches none or several pipelines).
Errors are one line on stderr: `inferno: error: ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

from inferno.client import launcher
from inferno.client.demo import run_demo
from inferno.client.embedded import NatsServerError
from inferno.client.sdk import ApiUnreachable, Client, InfernoError, SpecError, load_spec
from inferno.client.tables import (
    clock,
    executors_table,
    field,
    leaderboard_table,
    operations_table,
    pipelines_table,
    settled,
)

CLONE_FIELDS = (
    "pipeline_name",
    "pipeline_type",
    "model_config",
    "sampling_params",
    "client_config",
    "rpm_limit",
    "tpm_limit",
)
DEFAULT_WAIT_S = 10.0


class UsageError(Exception):
    """Bad input from the person at the terminal: exit 2."""


# pure helpers (unit-tested)
def parse_set(items: Iterable[str]) -> dict[str, Any]:
    """`["sampling_params.temperature=0.7", "pipeline_name=x"]` → nested clone changes. Values
    are JSON when they parse as JSON (0.7, true, null, {"a": 1}), strings otherwise."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or not all(path):
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. sampling_params.top_p=0.9")
        if path[0] not in CLONE_FIELDS:
            raise UsageError(f"--set {item!r}: {path[0]!r} is not one of {', '.join(CLONE_FIELDS)}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        node = changes
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--set {item!r}: {part!r} was already set to a value")
            node = child
        node[path[-1]] = value
    return changes


def clone_changes(
    name: str | None,
    sets: Iterable[str],
    model_config: str | None = None,
    sampling_params: str | None = None,
) -> dict[str, Any]:
    """The clone body: --model-config/--sampling-params JSON objects, then --set on top."""
    changes: dict[str, Any] = {}
    for flag, raw in (("model-config", model_config), ("sampling-params", sampling_params)):
        if raw is None:
            continue
        try:
            value = json.loads(raw)
        except ValueError as error:
            raise UsageError(f"--{flag}: not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise UsageError(f"--{flag}: must be a JSON object")
        changes[flag.replace("-", "_")] = value
    for key, value in parse_set(sets).items():
        if isinstance(value, dict) and isinstance(changes.get(key), dict):
            changes[key] = {**changes[key], **value}
        else:
            changes[key] = value
    if name:
        changes["pipeline_name"] = name
    return changes


def resolve_pipeline(token: str, pipelines: Sequence[dict[str, Any]]) -> int:
    """A pipeline id, or the one live pipeline whose name is `token` or starts with it."""
    if token.isdigit():
        return int(token)
    live = [p for p in pipelines if p.get("status") != "deleted"]
    exact = [p for p in live if field(p, "pipeline_name") == token]
    matches = exact or [p for p in live if str(field(p, "pipeline_name", "")).startswith(token)]
    if len(matches) == 1:
        return int(matches[0]["pipeline_id"])
    if not matches:
        names = ", ".join(_label(p) for p in live) or "none"
        raise UsageError(f"no pipeline id or name prefix matches {token!r} (pipelines: {names})")
    raise UsageError(
        f"{token!r} matches {len(matches)} pipelines: {', '.join(_label(p) for p in matches)};"
        " give more of the name, or the id"
    )


def _label(pipeline: dict[str, Any]) -> str:
    return f"{pipeline['pipeline_id']} ({field(pipeline, 'pipeline_name', '?')})"


# commands
def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    data_dir = Path(args.data_dir)
    options = {
        "api_port": args.api_port,
        "nats_port": args.nats_port,
        "executors": args.executors,
        "schedulers": args.schedulers,
        "namespace": args.namespace,
    }
    if args.executors < 0 or args.schedulers < 1:
        raise UsageError("--executors must be 0 or more and --schedulers 1 or more")
    launcher.claim_data_dir(data_dir)  # before the ports: a cluster running from here holds them
    for what, port in (("api", args.api_port), ("nats", args.nats_port)):
        if port and not _port_free(port):
            flag = "--api-port" if what == "api" else "--nats-port"
            raise UsageError(
                f"port {port} for the {what} is in use (another `inferno up`?); "
                f"choose another with {flag} (0 = any free port)"
            )
    if args.detach:
        state = launcher.start_detached(data_dir, **options)
        print(f"inferno is up (detached, supervisor pid {state['pid']})", file=out)
        print(f"  api   {state['api_url']}\n  nats  {state['nats_url']}", file=out)
        where = "" if data_dir == launcher.default_data_dir() else f" --data-dir {data_dir}"
        print(f"  logs  {state['logs']}\n  stop it with: inferno{where} down", file=out)
        return 0
    cluster = launcher.LocalCluster(data_dir, out=out, **options)

    def ready(c: launcher.LocalCluster) -> None:
        c.say(
            "up",
            f"ready: api {c.api_url}, nats {c.nats_url}, {c.executor_count} executors;"
            " Ctrl-C stops everything",
        )

    return launcher.serve(cluster, on_ready=ready)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_down(args: argparse.Namespace, out: TextIO) -> int:
    data_dir = Path(args.data_dir)
    if launcher.stop_detached(data_dir):
        print(f"stopped the cluster running from {data_dir}", file=out)
    else:
        print(f"no cluster running from {data_dir}", file=out)
    return 0


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        spec = load_spec(args.spec, client)
        answer = client.create_experiment(spec, wait=args.wait)
        result = answer.get("result") or {}
        experiment_id = answer.get("experiment_id") or result.get("experiment_id")
        print(f"experiment  {experiment_id}  ({spec.get('experiment_name', '')})", file=out)
        print(f"context     {answer.get('context_id') or result.get('context_id')}", file=out)
        print(f"ic_id       {answer.get('ic_id')}  ({answer.get('status', 'accepted')})", file=out)
        if answer.get("status") == "failed":
            raise InfernoError(409, f"experiment not created: {answer.get('error')}")
        pipelines = answer.get("pipelines") or []
        if pipelines:
            listed = [f"{p['pipeline_id']} {field(p, 'pipeline_name', '')}" for p in pipelines]
        else:
            listed = [str(i) for i in result.get("pipeline_ids", [])]
        print(f"pipelines   {', '.join(listed) or '(pending)'}", file=out)
        if args.watch:
            return watch(client, experiment_id, out, args.interval)
    return 0


def watch(client: Client, experiment_id: str | None, out: TextIO, interval: float = 0.5) -> int:
    """Redraw the pipelines table (in place on a terminal, on change otherwise) until every
    pipeline has settled."""
    redraw = _isatty(out)
    shown = ""
    while True:
        pipelines = client.pipelines(experiment_id=experiment_id)
        table = pipelines_table(pipelines)
        if table != shown:
            if redraw and shown:
                out.write(f"\033[{shown.count(chr(10)) + 2}F\033[J")
            out.write(f"{clock(time.time())}\n{table}\n")
            out.flush()
            shown = table
        if pipelines and all(settled(p) for p in pipelines):
            return 0
        time.sleep(interval)


def cmd_ps(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        pipelines = client.pipelines(experiment_id=args.experiment, status=args.status)
    if not args.all and not args.status:
        pipelines = [p for p in pipelines if p.get("status") != "deleted"]
    print(pipelines_table(pipelines), file=out)
    return 0


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        return watch(client, args.experiment, out, args.interval)


def cmd_control(args: argparse.Namespace, out: TextIO) -> int:
    action = args.command
    with _client(args) as client:
        ids = _resolve_all(client, args.pipelines)
        failed = 0
        for token, pid in zip(args.pipelines, ids, strict=True):
            what = f"{action} {_who(token, pid)}"
            try:
                op = getattr(client, action)(pid, wait=args.wait)
            except ApiUnreachable:
                raise
            except InfernoError as error:  # refused: say so, and go on with the others
                _fail(f"{what}: {error}", 1)
                failed += 1
                continue
            failed += _report(out, what, op)
    return 1 if failed else 0


def cmd_clone(args: argparse.Namespace, out: TextIO) -> int:
    changes = clone_changes(args.name, args.set, args.model_config, args.sampling_params)
    with _client(args) as client:
        (pid,) = _resolve_all(client, [args.pipeline])
        op = client.clone(pid, changes, wait=args.wait)
        new_id = (op.get("result") or {}).get("pipeline_id")
        suffix = f" → pipeline {new_id}" if new_id is not None else ""
        if new_id is not None and changes.get("pipeline_name"):
            suffix += f" ({changes['pipeline_name']})"
        return _report(out, f"clone {_who(args.pipeline, pid)}{suffix}", op)


def _resolve_all(client: Client, tokens: Sequence[str]) -> list[int]:
    pipelines = [] if all(t.isdigit() for t in tokens) else client.pipelines()
    return [resolve_pipeline(t, pipelines) for t in tokens]


def _who(token: str, pid: int) -> str:
    return f"pipeline {pid}" if token == str(pid) else f"pipeline {pid} ({token})"


def _report(out: TextIO, what: str, op: dict[str, Any]) -> int:
    """One line per operation; a failed one goes to stderr and counts as a failure."""
    status = op.get("status", "accepted")
    if status == "failed":
        print(
            f"inferno: error: {what}: ic_id {op.get('ic_id')} failed: {op.get('error')}",
            file=sys.stderr,
        )
        return 1
    print(f"{what}: ic_id {op.get('ic_id')} {status}", file=out)
    return 0


def cmd_results(args: argparse.Namespace, out: TextIO) -> int:
    """Per-row results of one pipeline as JSONL, or `--compare`: an experiment's leaderboard."""
    if (args.pipeline is None) == (args.compare is None):
        raise UsageError("results: give a PIPELINE, or --compare EXPERIMENT (not both)")
    if args.metric and args.compare is None:
        raise UsageError("results: --metric goes with --compare")
    with _client(args) as client:
        if args.compare is not None:
            experiment_id = resolve_experiment(args.compare, client.experiments())
            print(leaderboard_table(client.leaderboard(experiment_id, args.metric)), file=out)
            return 0
        (pid,) = _resolve_all(client, [args.pipeline])
        if args.output in (None, "-"):
            sink = _TextSink(out)
            client.download_results(pid, sink)
            out.flush()
            return 0
        path = Path(args.output)
        partial = path.with_name(f".{path.name}.partial")  # no half-written file under the name
        try:
            with partial.open("wb") as file:
                rows = client.download_results(pid, file)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        print(f"{rows} rows of {_who(args.pipeline, pid)} written to {path}", file=out)
    return 0


class _TextSink:
    """Bytes written to a text stream (stdout, or the StringIO tests pass as `out`)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, data: bytes) -> int:
        return self._out.write(data.decode("utf-8"))


def resolve_experiment(token: str, experiments: Sequence[dict[str, Any]]) -> str:
    """An experiment id, or the one experiment whose name is `token` or starts with it."""
    if any(e.get("experiment_id") == token for e in experiments):
        return token
    exact = [e for e in experiments if e.get("experiment_name") == token]
    matches = exact or [e for e in experiments if str(e.get("experiment_name")).startswith(token)]
    if len(matches) == 1:
        return str(matches[0]["experiment_id"])
    listed = ", ".join(f"{e['experiment_id']} ({e.get('experiment_name')})" for e in experiments)
    if not matches:
        raise UsageError(
            f"no experiment id or name prefix matches {token!r} (experiments: {listed or 'none'})"
        )
    raise UsageError(f"{token!r} matches {len(matches)} experiments; give its id ({listed})")


def cmd_ops(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        operations = sorted(client.operations(), key=lambda o: o["ic_id"])
    print(operations_table(operations[-args.limit :] if args.limit else operations), file=out)
    return 0


def cmd_executors(args: argparse.Namespace, out: TextIO) -> int:
    with _client(args) as client:
        print(executors_table(client.executors()), file=out)
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    return run_demo(Path(args.spec) if args.spec else None, out, executors=args.executors)


def _client(args: argparse.Namespace) -> Client:
    return Client(args.api, token=args.token)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# argument parsing
def default_api_url(env: Mapping[str, str], data_dir: Path) -> str:
    """INFERNO_API_URL; else the api of a cluster `inferno up` runs from `data_dir`; else
    127.0.0.1 on INFERNO_API_PORT (8851)."""
    if env.get("INFERNO_API_URL"):
        return env["INFERNO_API_URL"]
    state = launcher.read_state(data_dir)
    if state and launcher.is_running(state["pid"], state.get("start")):
        return state["api_url"]
    return f"http://127.0.0.1:{env.get('INFERNO_API_PORT') or 8851}"


def _nats_port(env: Mapping[str, str]) -> int:
    url = env.get("NATS_URL", "")
    try:
        port = urlparse(url.split(",")[0].strip()).port if url else None
    except ValueError:
        port = None
    return port or 4222


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
        "--token", default=argparse.SUPPRESS, help="bearer token (env INFERNO_TOKEN)"
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    def wait_flag(p: argparse.ArgumentParser, default: float | None = DEFAULT_WAIT_S) -> None:
        p.add_argument(
            "--wait",
            type=float,
            default=default,
            metavar="S",
            help=f"wait up to S seconds for the operation to finish (default {default})",
        )

    env = os.environ
    p = add("up", cmd_up, "start nats-server, the api, scheduler(s) and executors locally")
    p.add_argument("--executors", type=int, default=2, metavar="N")
    p.add_argument("--schedulers", type=int, default=1, metavar="N")
    p.add_argument(
        "--api-port",
        type=int,
        default=int(env.get("INFERNO_API_PORT") or 8851),
        metavar="P",
        help="default $INFERNO_API_PORT or 8851; 0 = any free port",
    )
    p.add_argument(
        "--nats-port",
        type=int,
        default=_nats_port(env),
        metavar="P",
        help="default the port of $NATS_URL or 4222; 0 = any free port",
    )
    p.add_argument("--namespace", default=env.get("INFERNO_NAMESPACE") or "inferno")
    p.add_argument("--detach", action="store_true", help="run in the background; see `down`")
    add("down", cmd_down, "stop the cluster `inferno up --detach` started")

    p = add("run", cmd_run, "create an experiment from a YAML/JSON spec file")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--watch", action="store_true", help="follow progress until all settle")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)
    wait_flag(p)

    p = add("ps", cmd_ps, "list pipelines")
    p.add_argument("--experiment", metavar="ID")
    p.add_argument("--status")
    p.add_argument("--all", action="store_true", help="include deleted pipelines")

    p = add("watch", cmd_watch, "follow pipelines' progress until all settle")
    p.add_argument("--experiment", metavar="ID")
    p.add_argument("--interval", type=float, default=0.5, help=argparse.SUPPRESS)

    for action in ("stop", "resume", "delete"):
        p = add(action, cmd_control, f"{action} pipelines (ids or unique name prefixes)")
        p.add_argument("pipelines", nargs="+", metavar="PIPELINE")
        wait_flag(p)

    p = add("clone", cmd_clone, "clone a pipeline with changes")
    p.add_argument("pipeline", metavar="PIPELINE")
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
    p.add_argument("--limit", type=int, default=20, metavar="N", help="last N (0 = all)")
    add("executors", cmd_executors, "list registered executors")

    p = add("demo", cmd_demo, "start a throwaway cluster and steer the example experiment")
    p.add_argument("--spec", help="experiment spec (default examples/arith.yaml)")
    p.add_argument("--executors", type=int, default=3, metavar="N")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    out = sys.stdout if out is None else out
    args = build_parser().parse_args(argv)
    env = os.environ
    args.data_dir = getattr(args, "data_dir", None) or str(launcher.default_data_dir())
    args.token = getattr(args, "token", None) or env.get("INFERNO_TOKEN") or None
    args.api = getattr(args, "api", None) or default_api_url(env, Path(args.data_dir))
    try:
        return args.handler(args, out)
    except (UsageError, SpecError) as error:
        return _fail(error, 2)
    except ApiUnreachable as error:
        return _fail(f"{error}; is it running? start a local cluster with `inferno up`", 1)
    except (InfernoError, launcher.ClusterError, NatsServerError) as error:
        return _fail(error, 1)
    except KeyboardInterrupt:
        return 130


def _fail(error: object, code: int) -> int:
    print(f"inferno: error: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

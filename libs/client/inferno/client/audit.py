"""The CLI's audit commands over /api/v1/events (docs/audit.md): `events` (replay, `--follow`),
`history PIPELINE` (its story) and `verify` (the log's invariants, exit 1 when one broke).

`verify` reads the history through the api, page by page, rather than from NATS: an auditor
needs only the api's URL and token, and checks exactly the entries the api shows people. What
it prints goes through `terminal` like every other line of the CLI.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from inferno.audit.entries import Entry
from inferno.audit.query import KINDS, QueryError, parse_time, parse_types
from inferno.audit.story import story
from inferno.audit.verify import as_text, report
from inferno.client import events as reading
from inferno.client.arguments import UsageError
from inferno.client.sdk import Client
from inferno.client.terminal import json_safe

_to_entry = msgspec.convert
Emit = Callable[[TextIO, str], None]


def time_arg(text: str) -> str:
    """An argparse type: RFC 3339 or epoch seconds, checked here so a typo is a usage error."""
    try:
        parse_time(text, "time")
    except QueryError as error:
        raise argparse.ArgumentTypeError(error.reason) from None
    return text


def types_arg(text: str) -> str:
    try:
        parse_types([text])
    except QueryError as error:
        raise argparse.ArgumentTypeError(error.reason) from None
    return text


def add_filters(p: argparse.ArgumentParser, *, pipeline: bool = True) -> None:
    p.add_argument("--experiment", metavar="ID", help="only this experiment's entries")
    if pipeline:
        p.add_argument("--pipeline", metavar="PIPELINE", help="id or unique name prefix")
    p.add_argument("--ic-id", type=int, metavar="N", help="only operation N's command and answer")
    p.add_argument(
        "--type",
        action="append",
        default=[],
        type=types_arg,
        metavar="TYPE",
        help="command/event type, e.g. stop_pipeline (repeatable)",
    )
    p.add_argument("--actor", help="only entries by this actor")
    p.add_argument("--since", type=time_arg, metavar="TIME", help="RFC 3339 or epoch seconds")
    p.add_argument("--until", type=time_arg, metavar="TIME", help="RFC 3339 or epoch seconds")
    p.add_argument(
        "--stream",
        action="append",
        default=[],
        choices=KINDS,
        help="cmd, evt, exec (repeatable; default cmd and evt)",
    )


def _filters(args: argparse.Namespace, pipeline_id: int | None) -> dict[str, Any]:
    return {
        "experiment_id": args.experiment,
        "pipeline_id": pipeline_id,
        "ic_id": args.ic_id,
        "type": args.type,
        "actor": args.actor,
        "since": args.since,
        "until": args.until,
        "stream": args.stream,
    }


def line(entry: Entry) -> str:
    """`2026-12-01T12:00:00.123456Z EVT 40 pipeline_stopped ic_id 12 pipeline 7 by bob: "why"`"""
    ids = msgspec.to_builtins(entry.ids)
    shown = " ".join(f"{k if k == 'ic_id' else k.removesuffix('_id')} {v}" for k, v in ids.items())
    who = f" by {entry.actor}" if entry.actor else ""
    why = f': "{entry.reason}"' if entry.reason else ""
    error = entry.payload.get("error") or entry.payload.get("reason")  # a failure's, a retry's
    extra = f" — {error}" if error and entry.kind != "cmd" else ""
    stream = entry.kind.upper()
    return f"{entry.time} {stream} {entry.seq} {entry.type} {shown}{who}{why}{extra}"


def print_entries(out: TextIO, entries: Iterable[dict[str, Any]], as_json: bool, emit: Emit) -> int:
    count = 0
    for raw in entries:
        if as_json:
            out.write(json_safe(msgspec.json.encode(raw).decode()) + "\n")
            out.flush()
        else:
            emit(out, line(_to_entry(raw, Entry)))
            out.flush()
        count += 1
    return count


def cmd_events(
    args: argparse.Namespace, out: TextIO, client: Client, pid: int | None, emit: Emit
) -> int:
    filters = _filters(args, pid)
    if args.follow:  # the history so far, then live from where it ended
        cursor = args.after
        for page in reading.pages(client, reading.filters(**filters), args.after):
            print_entries(out, page["entries"], args.json, emit)
            cursor = page["cursor"]
        print_entries(out, client.follow_events(after=cursor, **filters), args.json, emit)
        return 0
    entries = client.events(after=args.after, **filters)
    if args.limit:
        entries = (e for _, e in zip(range(args.limit), entries, strict=False))
    print_entries(out, entries, args.json, emit)
    return 0


def cmd_history(out: TextIO, client: Client, pid: int, emit: Emit) -> int:
    entries = [_to_entry(e, Entry) for e in client.events(pipeline_id=pid)]
    if not entries:
        raise UsageError(f"pipeline {pid}: the log holds nothing about it")
    emit(out, f"pipeline {pid}")
    for text in story(entries, pid):
        emit(out, f"  {text}")
    return 0


def cmd_verify(args: argparse.Namespace, out: TextIO, client: Client, emit: Emit) -> int:
    entries = [_to_entry(e, Entry) for e in client.events(stream=["cmd", "evt"])]
    result = report(entries)
    checked_at = datetime.fromtimestamp(time.time(), UTC).isoformat(timespec="seconds")
    if args.json:
        body = {"checked_at": checked_at, "api": client.base_url, **msgspec.to_builtins(result)}
        out.write(json_safe(msgspec.json.encode(body).decode()) + "\n")
    else:
        emit(out, f"api {client.base_url}")
        for text in as_text(result, checked_at):
            emit(out, text)
    return 0 if result.held else 1

"""The shell around `live`: what wakes `inferno watch` up, what it reads, where it draws.

`watch` follows the events stream (SSE, `Client.follow_events`) in a thread and reads the api
only when an entry arrives: no loop polls the pipelines. After IDLE_S of silence it reads once
more (the scheduler's lease lapsing is no event, and a gap between the first read and the
stream's start must not leave it waiting). On a terminal it redraws a rich table in place
(ETA and clock tick every `interval`); elsewhere it prints one line per change, then the final
table. Executors are heartbeats in a KV bucket, not events: `watch_executors` rereads them
every `interval` seconds.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import msgspec
from rich.console import Console
from rich.live import Live

from inferno.client import live
from inferno.client.sdk import Client
from inferno.client.tables import (
    clock,
    executors_table,
    pipeline_failures,
    pipelines_table,
    settled,
)
from inferno.client.terminal import printable

IDLE_S = 5.0
SINCE_SLACK_S = 2.0  # the stream starts this far before the first read: a gap heals itself
COALESCE_S = 0.1
NO_LEADER = "nothing progresses until a scheduler holds the lease"
EVENTS = "_EVT"  # how the stream only the leading scheduler writes ends (INFERNO_EVT)


class Stream:
    """Entries of the events stream, pushed by a daemon thread onto a queue: the main thread
    waits on it with a timeout. An error before `close` is handed over and raised there."""

    def __init__(self, client: Client, filters: dict[str, Any]) -> None:
        self.client = client
        self.entries: queue.Queue[object] = queue.Queue()
        self.closed = threading.Event()
        filters = {**filters, "since": time.time() - SINCE_SLACK_S}
        self.thread = threading.Thread(target=self._follow, args=(filters,), daemon=True)
        self.thread.start()

    def _follow(self, filters: dict[str, Any]) -> None:
        try:
            for entry in self.client.follow_events(**filters):
                if self.closed.is_set():
                    return
                self.entries.put(entry)
        except Exception as error:  # handed to the main thread, raised there
            if not self.closed.is_set():
                self.entries.put(error)

    def wait(self, timeout: float) -> list[dict[str, Any]]:
        """The entries that arrived within `timeout` ([] if none): after the first, those of
        the next COALESCE_S too, so a burst (a shard's completion and the next assignment)
        costs one read of the api."""
        try:
            got = [self.entries.get(timeout=timeout)]
        except queue.Empty:
            return []
        time.sleep(COALESCE_S)
        while True:
            try:
                got.append(self.entries.get_nowait())
            except queue.Empty:
                break
        for item in got:
            if isinstance(item, Exception):
                raise item
        return got  # type: ignore[return-value]  # what is not an Exception is an entry

    def close(self) -> None:
        self.closed.set()
        self.client.close()  # ends the stream's connection; the thread then returns


class View(msgspec.Struct, kw_only=True):
    """What the api said at the last read, and what this viewer has seen since it started."""

    pipelines: list[dict[str, Any]] = msgspec.field(default_factory=list)
    operations: list[dict[str, Any]] = msgspec.field(default_factory=list)
    warning: str | None = None
    seen: dict[int, live.Sample] = msgspec.field(default_factory=dict)
    metrics: dict[str, str] = msgspec.field(default_factory=dict)

    @property
    def done(self) -> bool:
        return bool(self.pipelines) and all(settled(p) for p in self.pipelines)

    def rows(self, now: float) -> list[live.Row]:
        return live.rows(self.pipelines, self.seen, now, self.metrics)


def read(
    client: Client,
    experiment_id: str | None,
    view: View,
    entries: Sequence[dict[str, Any]] | None = None,
) -> View:
    """The api now: pipelines, their operations, each experiment's main metric, the leader.
    Given the `entries` that woke it, it reads operations only when one is about an operation
    (has an `ic_id`), and asks for the leader only when no scheduler event came (an event is
    written by the leader, so it holds the lease)."""
    pipelines = client.pipelines(experiment_id=experiment_id)
    ids = {p["pipeline_id"] for p in pipelines}
    operations = view.operations
    if entries is None or any((e.get("ids") or {}).get("ic_id") for e in entries):
        operations = [
            op
            for op in client.operations()
            if experiment_id is None
            or op.get("pipeline_id") in ids
            or (op.get("result") or {}).get("experiment_id") == experiment_id
        ]
    metrics = dict(view.metrics)
    if {str(p.get("experiment_id")) for p in pipelines} - metrics.keys():
        for e in client.experiments():
            scorers = (e.get("eval") or {}).get("scorers") or []
            if scorers and scorers[0].get("name"):
                metrics[str(e.get("experiment_id"))] = str(scorers[0]["name"])
    done = bool(pipelines) and all(settled(p) for p in pipelines)
    from_leader = entries is not None and any(
        str(e.get("stream")).endswith(EVENTS) for e in entries
    )
    no_leader = None if done or from_leader else client.no_leader()
    return View(
        pipelines=pipelines,
        operations=operations,
        warning=f"{no_leader}: {NO_LEADER}" if no_leader else None,
        seen=live.observe(view.seen, pipelines, time.time()),
        metrics=metrics,
    )


def follow(
    client: Client,
    stream: Stream,
    experiment_id: str | None,
    tick: float,
    show: Callable[[View], None],
) -> View:
    """Read, show, and again on each batch of entries (or after IDLE_S of silence; `show`
    alone every `tick`) until every pipeline has settled; the last view."""
    view = read(client, experiment_id, View())
    show(view)
    quiet_since = time.monotonic()
    while not view.done:
        entries = stream.wait(tick)
        if entries or time.monotonic() - quiet_since >= IDLE_S:
            view = read(client, experiment_id, view, entries or None)
            quiet_since = time.monotonic()
        show(view)
    return view


def watch(
    client: Client,
    stream_client: Client,
    experiment_id: str | None,
    out: TextIO,
    tty: bool,
    interval: float = 0.5,
) -> int:
    """Follow the pipelines (of `experiment_id`, or all) until every one has settled."""
    stream = Stream(stream_client, {"experiment_id": experiment_id})
    try:
        if tty:
            return _on_terminal(client, stream, experiment_id, out, interval)
        return _as_lines(client, stream, experiment_id, out)
    finally:
        stream.close()


def _on_terminal(
    client: Client, stream: Stream, experiment_id: str | None, out: TextIO, interval: float
) -> int:
    console = Console(file=out, force_terminal=True, highlight=False)
    what = f"experiment {experiment_id}" if experiment_id else "all pipelines"
    with Live(console=console, auto_refresh=False, redirect_stdout=False) as screen:

        def show(view: View) -> None:
            now = time.time()
            title = f"{clock(now)}  {what}" + ("  (all settled)" if view.done else "")
            board = live.board(view.rows(now), view.operations, view.warning, title)
            screen.update(board, refresh=True)

        follow(client, stream, experiment_id, interval, show)
    return 0


def line_printer(out: TextIO) -> Callable[[View], None]:
    """A `show` for `follow` that writes one stamped line per change to `out`: a pipeline's
    status, shards or metric (its ETA alone makes no line), an operation's outcome, the
    leader warning."""
    printed: dict[object, str] = {}

    def say(key: object, line: str, change: str | None = None) -> None:
        change = line if change is None else change
        if printed.get(key) != change:
            printed[key] = change
            out.write(f"{clock(time.time())} {line}\n")

    def show(view: View) -> None:
        for row in view.rows(time.time()):
            steady = live.row_line(msgspec.structs.replace(row, eta_s=None))
            say(("pipeline", row.pipeline_id), live.row_line(row), steady)
        for op in view.operations:
            say(("operation", op.get("ic_id")), live.operation_line(op))
        if view.warning or "warning" in printed:
            warning = view.warning and f"warning: {printable(view.warning, 400)}"
            say("warning", warning or "a scheduler holds the lease again")
        out.flush()

    return show


def _as_lines(client: Client, stream: Stream, experiment_id: str | None, out: TextIO) -> int:
    last = follow(client, stream, experiment_id, IDLE_S, line_printer(out))
    out.write(f"all settled:\n{pipelines_table(last.pipelines)}\n")
    for line in pipeline_failures(last.pipelines):
        out.write(f"{line}\n")
    out.flush()
    return 0


def watch_executors(client: Client, out: TextIO, tty: bool, interval: float) -> int:
    """The executors live until Ctrl-C: on a terminal a table redrawn every `interval`, else
    the table again whenever more than the heartbeat ages changed."""
    if tty:
        console = Console(file=out, force_terminal=True, highlight=False)
        with Live(console=console, auto_refresh=False, redirect_stdout=False) as screen:
            while True:
                executors = client.executors()
                title = f"{clock(time.time())}  executors (every {interval:g}s; Ctrl-C ends)"
                screen.update(live.executors_board(executors, title), refresh=True)
                time.sleep(interval)
    shown: list[dict[str, Any]] | None = None
    while True:
        executors = client.executors()
        steady = [{k: v for k, v in e.items() if k != "heartbeat_age_s"} for e in executors]
        if steady != shown:
            out.write(f"{clock(time.time())}\n{executors_table(executors)}\n")
            out.flush()
            shown = steady
        time.sleep(interval)

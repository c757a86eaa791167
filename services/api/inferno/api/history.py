"""Reading the history for the events routes: pages by cursor, and a live feed from a cursor.

The entries come from the log itself (`inferno.audit.entries`), not from the read model, which
only helps: it says which experiment a pipeline belongs to, and who asked for an operation (so
an event settling it shows its command's actor and reason without reading the command again).
Each stream keeps its own position in the cursor; a page merges the streams by server time.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats.js.errors
from nats.js import JetStreamContext

from inferno.api.projection import Projection
from inferno.audit.entries import KINDS, Entry, Kind, Who, build, settled_by, with_experiment
from inferno.audit.query import (
    Cursor,
    Query,
    matches,
    outside_times,
    settle_subjects,
    subjects,
)
from inferno.events import Names, decode_command
from inferno.events.commands import AnyCommand, Target
from inferno.jetstream.scan import Stored, Tail, read, tail

CHUNK = 2000
"""Messages read per round trip while a page fills."""
SCAN_BUDGET = 50_000
"""Messages a page reads at most per stream: a query matching little in a long log answers
`more: true` with a cursor to go on from, instead of holding the request."""
SETTLE_SKEW_NS = 5_000_000_000
"""How long before its command an answering event is looked for: the streams may be led by
servers whose clocks differ a little."""
_WHO_CACHE = 10_000


@dataclass
class Page:
    entries: list[Entry]
    cursor: Cursor
    more: bool


@dataclass
class History:
    js: JetStreamContext
    names: Names
    projection: Projection
    _who: OrderedDict[int, Who | None] = field(default_factory=OrderedDict)

    def stream(self, kind: Kind) -> str:
        return {"cmd": self.names.cmd_stream, "evt": self.names.evt_stream}.get(
            kind, self.names.exec_stream
        )

    def experiment_of(self, pipeline_id: int) -> str | None:
        pipeline = self.projection.model.pipelines.get(pipeline_id)
        return pipeline.experiment_id if pipeline is not None else None

    def _experiment_of_context(self, context_id: str) -> str | None:
        return self.projection.model.contexts.get(context_id)

    async def who(self, ic_id: int) -> Who | None:
        """The command `ic_id`'s who and why: from the read model, else from INFERNO_CMD."""
        op = self.projection.model.operations.get(ic_id)
        if op is not None:
            target = Target(op.pipeline_id, op.context_id, op.experiment_id)
            return Who(op.actor, op.reason, op.trace_id, target)
        if ic_id not in self._who:
            try:
                stored = await self.js.get_msg(self.names.cmd_stream, ic_id)
                self._remember(ic_id, build(self.names.cmd_stream, ic_id, 0, stored.data or b"")[1])
            except nats.js.errors.NotFoundError:
                self._remember(ic_id, None)
        return self._who.get(ic_id)

    def _remember(self, ic_id: int, who: Who | None) -> None:
        self._who[ic_id] = who
        while len(self._who) > _WHO_CACHE:
            self._who.popitem(last=False)

    async def entry(self, kind: Kind, message: Stored) -> Entry:
        """The message as an entry, joined with its command and given its experiment."""
        entry, who = build(self.stream(kind), message.seq, message.time_ns, message.data)
        if who is not None:
            self._remember(message.seq, who)
        ids = entry.ids
        if kind != "cmd" and ids.ic_id is not None:
            command = await self.who(ids.ic_id)
            if command is not None:
                settled_by(entry, command)
        if ids.experiment_id is None:
            if ids.pipeline_id is not None:
                with_experiment(entry, self.experiment_of(ids.pipeline_id))
            elif ids.context_id is not None:
                with_experiment(entry, self._experiment_of_context(ids.context_id))
        return entry

    async def command_at(self, ic_id: int) -> tuple[Stored | None, AnyCommand | None]:
        found = await read(
            self.js,
            self.names.cmd_stream,
            subjects=[self.names.cmd_subjects],
            limit=1,
            start_seq=ic_id,
        )
        if not found or found[0].seq != ic_id:
            return None, None
        try:
            return found[0], decode_command(found[0].data)
        except Exception:  # a command type this api does not know: read its answers broadly
            return found[0], None

    async def plan(
        self, kind: Kind, query: Query, after: int
    ) -> tuple[list[str], int | None, int | None]:
        """(subjects, start_seq, start_ns) of one stream's read; an empty list: nothing to read."""
        start_seq = max(after + 1, query.from_seq or 1)
        start_ns = query.since_ns if after == 0 and query.from_seq is None else None
        if query.ic_id is None:
            pid = query.pipeline_id
            experiment = self.experiment_of(pid) if pid is not None else None
            return subjects(query, kind, self.names, experiment), start_seq, start_ns
        if kind == "cmd":
            ns = self.names.namespace
            return ([f"{ns}.cmd.>"] if after < query.ic_id else []), query.ic_id, None
        if kind == "exec":
            return [], None, None
        stored, command = await self.command_at(query.ic_id)
        if stored is None:
            return [], None, None
        if after == 0:
            start_ns = max(start_ns or 0, stored.time_ns - SETTLE_SKEW_NS)
        return settle_subjects(self.names, query.ic_id, command), start_seq, start_ns

    async def _read(
        self, kind: Kind, query: Query, after: int, limit: int
    ) -> tuple[list[Entry], int, bool]:
        """Up to `limit` matching entries of one stream after `after`: (entries, the last
        sequence read, whether the stream has nothing more to give now)."""
        wanted, start_seq, start_ns = await self.plan(kind, query, after)
        if not wanted:
            return [], after, True
        to_seq = query.ic_id if kind == "cmd" and query.ic_id is not None else query.to_seq
        entries: list[Entry] = []
        last, scanned, ended = after, 0, False
        while not ended and len(entries) < limit and scanned < SCAN_BUDGET:
            chunk = await read(
                self.js,
                self.stream(kind),
                subjects=wanted,
                limit=CHUNK,
                start_seq=max(start_seq or 1, last + 1),
                start_ns=start_ns if last == after else None,
            )
            ended = len(chunk) < CHUNK
            for message in chunk:
                past_since = query.since_ns is None or message.time_ns >= query.since_ns
                if (to_seq is not None and message.seq > to_seq) or (
                    past_since and outside_times(message.time_ns, query)
                ):
                    return entries, last, True
                last, scanned = message.seq, scanned + 1
                if not past_since:
                    continue
                entry = await self.entry(kind, message)
                if matches(entry, query, self.experiment_of):
                    entries.append(entry)
                    if len(entries) == limit:
                        return entries, last, ended and message is chunk[-1]
        return entries, last, ended

    async def page(self, query: Query, cursor: Cursor, limit: int) -> Page:
        """The first `limit` matching entries after `cursor`, oldest first across the streams."""
        results = {
            kind: await self._read(kind, query, cursor.get(kind, 0), limit)
            for kind in query.streams
        }
        merged = sorted(
            (e for entries, _, _ in results.values() for e in entries),
            key=lambda e: (e.time, KINDS.index(e.kind), e.seq),
        )
        shown, cut = merged[:limit], merged[limit:]
        position: Cursor = {}
        for kind, (_, last, _) in results.items():
            if any(e.kind == kind for e in cut):
                mine = [e.seq for e in shown if e.kind == kind]
                position[kind] = mine[-1] if mine else cursor.get(kind, 0)
            else:
                position[kind] = last
        more = bool(cut) or not all(ended for _, _, ended in results.values())
        return Page(shown, position, more)

    async def follow(
        self, query: Query, cursor: Cursor
    ) -> AsyncIterator[tuple[Entry | None, Cursor]]:
        """Matching entries from `cursor` on, live; between them (entry None) the cursor moves
        past messages that did not match. Without a position for a stream, it starts at its
        end, unless the query gives `since` or `from_seq`."""
        queue: asyncio.Queue[tuple[Kind, Stored]] = asyncio.Queue()
        position: Cursor = dict(cursor)
        tails: list[Tail] = []
        try:
            for kind in query.streams:
                after = position.get(kind)
                if after is None and query.since_ns is None and query.from_seq is None:
                    after = (await self.js.stream_info(self.stream(kind))).state.last_seq
                position[kind] = after or 0
                wanted, start_seq, start_ns = await self.plan(kind, query, after or 0)
                if wanted:
                    deliver = functools.partial(_enqueue, queue, kind)
                    tails.append(
                        await tail(
                            self.js,
                            self.stream(kind),
                            deliver,
                            subjects=wanted,
                            start_seq=start_seq,
                            start_ns=start_ns,
                        )
                    )
            yield None, dict(position)
            while True:
                kind, message = await queue.get()
                position[kind] = message.seq
                entry = await self.entry(kind, message)
                shown = entry if matches(entry, query, self.experiment_of) else None
                yield (None if outside_times(message.time_ns, query) else shown), dict(position)
        finally:
            for started in tails:
                await started.stop()


def _enqueue(queue: asyncio.Queue[tuple[Kind, Stored]], kind: Kind, message: Stored) -> None:
    queue.put_nowait((kind, message))

"""Snapshots of folded state in the `<PREFIX>_SNAPSHOTS` object store, so a restart replays only
what came after them instead of the whole log (issue 8 §4, docs/architecture.md "Snapshots").

A snapshot is one object named after its model and the last stream sequences it includes,
`decision@INFERNO_EVT=1234` or `readmodel@INFERNO_CMD=56,INFERNO_EVT=1234`. Its bytes are a
4-byte big-endian header length, a msgpack `SnapshotHeader`, then the payload (the model's
msgpack encoding). The header names the format and model versions, the sequences, a mark of the
log message at each sequence (so a snapshot of another log, say one deleted and created again,
is never used) and the payload's sha256.

`load` returns None, logging why, whenever the newest snapshot cannot be trusted: no snapshot,
unknown format or model version, bad checksum, undecodable, ahead of the log, or a log that
differs from the one it was taken from. The caller then replays the whole log, as without
snapshots. Writers call `SnapshotWriter.offer` where their state equals the fold of the log up to
the sequences they pass; encoding happens then, the upload in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

import msgspec
import nats.errors
import structlog
from nats.js import JetStreamContext
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import NotFoundError

from inferno.events.names import Names
from inferno.jetstream.replay import replay

_log = structlog.get_logger(__name__)

T = TypeVar("T")

FORMAT_VERSION = 1
CHUNK_BYTES = 512 * 1024  # below the server's default 1 MiB max_payload
_LENGTH = struct.Struct(">I")
_CHUNKS_IN_FLIGHT = 16  # two pull requests of this many chunks: at most 16 MiB buffered


class SnapshotHeader(msgspec.Struct, kw_only=True, frozen=True):
    format: int
    model: str
    model_version: int
    sequences: dict[str, int]  # stream -> the last sequence the snapshot includes
    marks: dict[str, str]  # stream -> `message_mark` of the message at that sequence
    sha256: str  # of the payload
    taken_at: float
    writer: str = ""


class _FormatOnly(msgspec.Struct):
    """What every format's header has in common, read before trusting the rest."""

    format: int


_format_decoder = msgspec.msgpack.Decoder(_FormatOnly)
_header_decoder = msgspec.msgpack.Decoder(SnapshotHeader)
_encoder = msgspec.msgpack.Encoder()


class SnapshotRejected(ValueError):
    """A snapshot that must not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Snapshot(Generic[T]):
    name: str
    header: SnapshotHeader
    state: T

    @property
    def sequences(self) -> dict[str, int]:
        return self.header.sequences


# the format (pure)


def snapshot_name(model: str, sequences: Mapping[str, int]) -> str:
    return f"{model}@" + ",".join(f"{s}={sequences[s]}" for s in sorted(sequences))


def parse_name(name: str) -> tuple[str, dict[str, int]] | None:
    """(model, sequences) from a snapshot's object name; None if it is not one."""
    model, at, rest = name.partition("@")
    if not at or not model or not rest:
        return None
    sequences: dict[str, int] = {}
    for part in rest.split(","):
        stream, eq, seq = part.partition("=")
        if not eq or not stream or not seq.isdigit():
            return None
        sequences[stream] = int(seq)
    return model, sequences


def message_mark(subject: str, data: bytes) -> str:
    return hashlib.sha256(subject.encode() + b"\0" + data).hexdigest()[:32]


def seal(header: SnapshotHeader, payload: bytes) -> bytes:
    head = _encoder.encode(header)
    return _LENGTH.pack(len(head)) + head + payload


def unseal(blob: bytes, model: str, model_version: int) -> tuple[SnapshotHeader, memoryview]:
    """The header and payload of a snapshot of `model` at `model_version`; raises
    `SnapshotRejected` if it is of another format or version, or corrupt."""
    if len(blob) < _LENGTH.size:
        raise SnapshotRejected("truncated: no header")
    (length,) = _LENGTH.unpack_from(blob)
    head = memoryview(blob)[_LENGTH.size : _LENGTH.size + length]
    try:
        version = _format_decoder.decode(head).format
    except msgspec.DecodeError as error:
        raise SnapshotRejected(f"undecodable header: {error}") from None
    if version != FORMAT_VERSION:
        raise SnapshotRejected(
            f"unknown format version {version} (this code reads {FORMAT_VERSION})"
        )
    try:
        header = _header_decoder.decode(head)
    except msgspec.DecodeError as error:
        raise SnapshotRejected(f"undecodable header: {error}") from None
    if header.model != model:
        raise SnapshotRejected(f"holds model {header.model!r}, not {model!r}")
    if header.model_version != model_version:
        raise SnapshotRejected(
            f"unknown {model} version {header.model_version} (this code reads {model_version})"
        )
    payload = memoryview(blob)[_LENGTH.size + length :]
    if hashlib.sha256(payload).hexdigest() != header.sha256:
        raise SnapshotRejected("checksum mismatch: the payload is corrupt")
    return header, payload


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Decoding a large state makes millions of objects at once, and the cyclic collector would
    walk the growing heap again and again: with it, a 10M-event state decodes in 1.0 s, without
    it in 0.47 s. Reference counting still frees everything; collection resumes afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def newest(names: list[str], model: str) -> list[str]:
    """`model`'s snapshot names, the one that includes the most of the log first."""
    found = [(sum(p[1].values()), n) for n in names if (p := parse_name(n)) and p[0] == model]
    return [n for _, n in sorted(found, reverse=True)]


# the store (I/O)


class SnapshotStore:
    """Snapshots of every model, in the namespace's SNAPSHOTS object store (ensure_log made it)."""

    def __init__(self, js: JetStreamContext, names: Names) -> None:
        self._js, self._names = js, names

    async def available(self, model: str) -> list[str]:
        """The names of `model`'s snapshots, newest first."""
        store = await self._js.object_store(self._names.snapshots_store)
        try:
            infos = await store.list(ignore_deletes=True)
        except NotFoundError:  # nats-py: an empty store
            return []
        return newest([info.name for info in infos], model)

    async def marks(self, sequences: Mapping[str, int]) -> dict[str, str]:
        """The mark of the message at each stream's sequence ("" for 0: nothing included)."""
        marks = {}
        for stream, seq in sequences.items():
            if seq <= 0:
                marks[stream] = ""
                continue
            msg = await self._js.get_msg(stream, seq)
            marks[stream] = message_mark(msg.subject or "", msg.data or b"")
        return marks

    async def save(
        self,
        model: str,
        model_version: int,
        sequences: Mapping[str, int],
        payload: bytes,
        *,
        writer: str = "",
        keep: int = 2,
    ) -> str:
        """Store a snapshot and delete all but the `keep` newest of the model; its name."""
        header = SnapshotHeader(
            format=FORMAT_VERSION,
            model=model,
            model_version=model_version,
            sequences=dict(sequences),
            marks=await self.marks(sequences),
            sha256=await asyncio.to_thread(lambda: hashlib.sha256(payload).hexdigest()),
            taken_at=time.time(),
            writer=writer,
        )
        name = snapshot_name(model, sequences)
        store = await self._js.object_store(self._names.snapshots_store)
        meta = ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK_BYTES))
        await store.put(name, seal(header, payload), meta=meta)
        for old in (await self.available(model))[keep:]:
            with contextlib.suppress(NotFoundError):
                await store.delete(old)
        return name

    async def load(
        self, model: str, model_version: int, decode: Callable[[memoryview], T]
    ) -> Snapshot[T] | None:
        """The newest snapshot of `model`, checked against the log, or None (logged why)."""
        candidates = await self.available(model)
        if not candidates:
            _log.info("no snapshot: full replay", model=model)
            return None
        name, started = candidates[0], time.perf_counter()
        try:
            snapshot = await self._read(name, model, model_version, decode)
        except SnapshotRejected as rejected:
            _log.warning(
                "snapshot rejected: full replay", model=model, name=name, reason=str(rejected)
            )
            return None
        load_ms = round((time.perf_counter() - started) * 1000, 1)
        _log.info("snapshot loaded", model=model, name=name, load_ms=load_ms)
        return snapshot

    async def _read(
        self, name: str, model: str, model_version: int, decode: Callable[[memoryview], T]
    ) -> Snapshot[T]:
        header, payload = unseal(await self._object(name), model, model_version)
        await self._check_log(header)
        try:
            with _no_cyclic_gc():
                state = decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise SnapshotRejected(f"undecodable payload: {error}") from None
        return Snapshot(name, header, state)

    async def _object(self, name: str) -> bytes:
        """An object's bytes, its chunks read with `replay`: nats-py's `get` takes ~1 s for
        30 MB through an ordered push consumer, a pull-based replay 50 ms (docs/benchmarks.md).
        Chunks are requested `_CHUNKS_IN_FLIGHT` at a time, so a large snapshot never
        overruns the subscription's pending-bytes limit."""
        bucket = self._names.snapshots_store
        store = await self._js.object_store(bucket)
        try:
            info = await store.get_info(name)
        except NotFoundError:
            raise SnapshotRejected("the object vanished (deleted by a newer writer?)") from None
        chunks: list[bytes] = []
        try:
            await replay(
                self._js,
                f"OBJ_{bucket}",
                lambda data, _seq: chunks.append(data),
                subjects=f"$O.{bucket}.C.{info.nuid}",  # the object store's chunk subject (ADR-20)
                batch=_CHUNKS_IN_FLIGHT,
            )
        except (nats.errors.Error, TimeoutError) as error:
            raise SnapshotRejected(f"unreadable object: {error!r}") from None
        blob = b"".join(chunks)
        if len(blob) != info.size:
            raise SnapshotRejected(f"incomplete object: {len(blob)} of {info.size} bytes")
        return blob

    async def _check_log(self, header: SnapshotHeader) -> None:
        for stream, seq in header.sequences.items():
            if seq <= 0:
                continue
            last = (await self._js.stream_info(stream)).state.last_seq
            if seq > last:
                raise SnapshotRejected(f"ahead of the log: {stream} ends at {last}, not {seq}")
        try:
            marks = await self.marks(header.sequences)
        except NotFoundError as error:
            raise SnapshotRejected(f"a message it includes is gone: {error}") from None
        for stream, mark in marks.items():
            if mark != header.marks.get(stream):
                raise SnapshotRejected(f"{stream} differs from the log it was taken from")

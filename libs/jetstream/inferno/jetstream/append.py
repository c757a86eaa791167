"""The one write path for decisions: an append of one message or one atomic batch (DESIGN §9).

What the server does (nats-server 2.15.1, pinned by tests/integration/test_jetstream_log.py):
- One message: `js.publish` with `Nats-Msg-Id`; a duplicate id within the stream's duplicate
  window is not an error (the ack carries the original seq and `duplicate: true`). The server
  checks `Nats-Expected-Last-Sequence` BEFORE the id, so a retry whose expected sequence went
  stale comes back as 10071 "wrong last sequence", not as a duplicate.
- Several messages: one atomic batch (ADR-50, stream `allow_atomic`). Every message carries
  `Nats-Batch-Id` and `Nats-Batch-Sequence` (1..n), the last also `Nats-Batch-Commit: 1`. The first
  is a request (the server answers with an empty reply, or an error such as 10174 "atomic publish
  is disabled"), the middle ones are plain publishes, the commit is a request whose PubAck has
  `seq` = the LAST message's sequence, `batch` = the batch id and `count` = n; the batch's
  messages get consecutive sequences. Errors come back on the commit, and then nothing is stored:
  10071 (expected last sequence; the header goes on the first message only, on a later one it
  would count the batch's own earlier messages), 10176 (a message of the batch went missing),
  10201 "atomic publish batch contains duplicate message id". Per-message `Nats-Msg-Id` is
  accepted, and inside a batch the id check comes FIRST: a batch holding any id already in the
  duplicate window is rejected whole (10201, no original sequence), even when its expected
  sequence is also stale.
So a retry after a lost ack never stores anything twice, but it may come back as 10071 or 10201.
`append` then reads the messages right after the expected sequence (or, without one, the last
message on the batch's last subject): if they carry our ids, the earlier attempt did land, and
the result is `duplicate=True` with the original sequences. Outside the duplicate window (2 min)
only the expected sequence protects against a second copy — decisions always pass one.

`append_decisions` appends several independent decisions, each all-or-nothing and all fenced:
a run of single-message decisions goes out pipelined (awaited `js.publish` calls in flight
together on one connection, so the server sees them in order), a multi-message decision as one
atomic batch. Besides its expected sequence, each message of a run after the first carries
`Nats-Expected-Last-Msg-Id` = the id of the message before it: if the first one is refused
because someone else appended exactly one message, the second's sequence would match again, and
only the id chain stops a deposed writer from landing after the foreign message.

`publish_async` is never used here: it loses server errors (nats-py #985).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate, takewhile

import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import PubAck, RawStreamMsg
from nats.js.errors import (
    APIError,
    NoStreamResponseError,
    NotFoundError,
    ServiceUnavailableError,
)

_log = structlog.get_logger(__name__)

MAX_BATCH = 1000  # server limit on messages in one atomic batch

_WRONG_LAST_SEQUENCE = {10071, 10164}
_BATCH_DUPLICATE_ID = 10201
# refusals after which nothing was stored and the same append can simply be tried again:
# cluster unavailable / not leader, msg id being stored right now, batch lost a message or its id
_RETRYABLE = {10008, 10009, 10158, 10175, 10176, 10179}
_LAST_SEQ_IN_ERROR = re.compile(r"wrong last sequence: (\d+)")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to append. `msg_id` must be deterministic (derived from what is being
    decided), so that a retry, or a restarted writer deciding the same thing, is recognised."""

    subject: str
    payload: bytes
    msg_id: str
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Stream sequences of the appended messages; `duplicate`: they were already stored by an
    earlier attempt and nothing new was written."""

    first_seq: int
    last_seq: int
    duplicate: bool


class AppendError(RuntimeError):
    """The server refused the append; nothing of it was stored."""

    def __init__(self, stream: str, err_code: int | None, description: str) -> None:
        self.stream, self.err_code, self.description = stream, err_code, description
        # from `append_decisions`: the results of the decisions before this one, which did land
        self.landed: list[AppendResult] = []
        super().__init__(f"append to {stream} refused: {description} (err_code {err_code})")


class StaleWriter(AppendError):
    """Fencing: someone appended after `expected` (the writer's view of the log is stale, e.g.
    a deposed leader). `actual` is the stream's last sequence when the server said so."""

    def __init__(self, stream: str, expected: int, actual: int | None, description: str) -> None:
        self.expected, self.actual = expected, actual
        super().__init__(stream, 10071, description)


class LogUnavailable(AppendError):
    """No stream leader answered within the retry window (election, partition, server down)."""


class _Retry(Exception):
    """Internal: this attempt stored nothing; try the same messages again."""


@dataclass(frozen=True, slots=True)
class _Refusal:
    err_code: int | None
    code: int | None
    description: str

    @classmethod
    def from_api(cls, error: APIError) -> _Refusal:
        return cls(error.err_code, error.code, error.description or repr(error))


class Appender:
    """Appends through one connection. Safe to share between tasks."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._js = nc.jetstream()

    async def append(
        self,
        stream: str,
        messages: Sequence[Outgoing],
        *,
        expected_last_seq: int | None = None,
        timeout: float = 5.0,
        retry_for: float = 10.0,
    ) -> AppendResult:
        """Append `messages` to `stream` all-or-nothing, with `expected_last_seq` as the fence.

        Transient failures (no stream leader, timeouts) are retried with the same msg ids for
        up to `retry_for` seconds, then `LogUnavailable`. A stale fence raises `StaleWriter`.
        """
        if not messages:
            raise ValueError("nothing to append")
        if len(messages) > MAX_BATCH:
            raise ValueError(f"{len(messages)} messages: an atomic batch holds at most {MAX_BATCH}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        delay = 0.05
        attempt = 1
        while True:
            try:
                if len(messages) == 1:
                    return await self._publish_one(stream, messages[0], expected_last_seq, timeout)
                return await self._publish_batch(stream, messages, expected_last_seq, timeout)
            except _Retry as retry:
                cause = retry.__cause__ or retry
                reason = str(cause) or repr(cause)
                if loop.time() + delay > deadline:
                    raise LogUnavailable(
                        stream, None, f"gave up after {attempt} attempts: {reason}"
                    ) from cause
                _log.info("append retry", stream=stream, attempt=attempt, reason=reason)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                attempt += 1

    async def append_decisions(
        self,
        stream: str,
        decisions: Sequence[Sequence[Outgoing]],
        *,
        expected_last_seq: int,
        timeout: float = 5.0,
        retry_for: float = 10.0,
    ) -> list[AppendResult]:
        """Append independent decisions in order, each all-or-nothing; one result per decision.

        Decision k is fenced at `expected_last_seq` + the messages of the decisions before it.
        Runs of single-message decisions are pipelined; a message that fails goes through `append`
        (read-back of a lost ack, retries, `StaleWriter`), and so does the rest of its run. Any
        `AppendError` (`StaleWriter`, `LogUnavailable`, ...) carries in `landed` the results of
        the decisions before the one that failed: exactly those are stored.
        """
        if not all(0 < len(decision) <= MAX_BATCH for decision in decisions):
            raise ValueError(f"every decision needs 1 to {MAX_BATCH} messages")
        landed: list[AppendResult] = []
        fences = list(accumulate((len(d) for d in decisions), initial=expected_last_seq))
        try:
            while (k := len(landed)) < len(decisions):
                run = list(takewhile(lambda d: len(d) == 1, decisions[k:]))
                if not run:
                    result = await self.append(
                        stream,
                        decisions[k],
                        expected_last_seq=fences[k],
                        timeout=timeout,
                        retry_for=retry_for,
                    )
                    landed.append(result)
                    continue
                messages = [decision[0] for decision in run]
                acks = await asyncio.gather(
                    *(
                        self._send_chained(stream, messages, n, fences[k + n], timeout)
                        for n in range(len(messages))
                    ),
                    return_exceptions=True,
                )
                for ack in acks:
                    if isinstance(ack, BaseException):
                        break
                    landed.append(AppendResult(ack.seq, ack.seq, bool(ack.duplicate)))
                for n in range(len(landed) - k, len(messages)):  # from the first failure on
                    result = await self.append(
                        stream,
                        [messages[n]],
                        expected_last_seq=fences[k + n],
                        timeout=timeout,
                        retry_for=retry_for,
                    )
                    landed.append(result)
        except AppendError as error:
            error.landed = landed
            raise
        return landed

    async def _send_chained(
        self, stream: str, messages: Sequence[Outgoing], n: int, expected: int, timeout: float
    ) -> PubAck:
        """Message n of a pipelined run, fenced by sequence and by the id of message n - 1.
        Any failure is the caller's to sort out (through `append`)."""
        message = messages[n]
        headers = dict(message.headers or {})
        headers["Nats-Msg-Id"] = message.msg_id
        headers["Nats-Expected-Last-Sequence"] = str(expected)
        if n:
            headers["Nats-Expected-Last-Msg-Id"] = messages[n - 1].msg_id
        return await self._js.publish(
            message.subject, message.payload, timeout=timeout, stream=stream, headers=headers
        )

    async def _publish_one(
        self, stream: str, message: Outgoing, expected: int | None, timeout: float
    ) -> AppendResult:
        headers = dict(message.headers or {})
        headers["Nats-Msg-Id"] = message.msg_id
        if expected is not None:
            headers["Nats-Expected-Last-Sequence"] = str(expected)
        try:
            ack = await self._js.publish(
                message.subject, message.payload, timeout=timeout, stream=stream, headers=headers
            )
        except (NoStreamResponseError, nats.errors.TimeoutError) as error:
            raise _Retry from error
        except APIError as error:
            return await self._refused(stream, [message], expected, _Refusal.from_api(error))
        return AppendResult(ack.seq, ack.seq, bool(ack.duplicate))

    async def _publish_batch(
        self, stream: str, messages: Sequence[Outgoing], expected: int | None, timeout: float
    ) -> AppendResult:
        batch_id = uuid.uuid4().hex  # a new id per attempt: the server drops unfinished ones
        last = len(messages)
        reply = b""
        for number, message in enumerate(messages, start=1):
            headers = dict(message.headers or {})
            headers["Nats-Msg-Id"] = message.msg_id
            headers["Nats-Batch-Id"] = batch_id
            headers["Nats-Batch-Sequence"] = str(number)
            if number == 1:
                headers["Nats-Expected-Stream"] = stream
                if expected is not None:
                    headers["Nats-Expected-Last-Sequence"] = str(expected)
            if number == last:
                headers["Nats-Batch-Commit"] = "1"
            if number not in (1, last):
                await self._nc.publish(message.subject, message.payload, headers=headers)
                continue
            try:
                response = await self._nc.request(
                    message.subject, message.payload, timeout=timeout, headers=headers
                )
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError) as error:
                raise _Retry from error
            reply = response.data
            if number == 1 and reply:  # the start of a batch is acknowledged with an empty reply
                return await self._check_ack(stream, messages, expected, reply)
        return await self._check_ack(stream, messages, expected, reply)

    async def _check_ack(
        self, stream: str, messages: Sequence[Outgoing], expected: int | None, data: bytes
    ) -> AppendResult:
        ack = json.loads(data)
        if error := ack.get("error"):
            refusal = _Refusal(error.get("err_code"), error.get("code"), error.get("description"))
            return await self._refused(stream, messages, expected, refusal)
        count = ack.get("count", len(messages))
        if count != len(messages):
            raise AppendError(stream, None, f"batch stored {count} of {len(messages)} messages")
        last_seq = ack["seq"]
        return AppendResult(last_seq - count + 1, last_seq, bool(ack.get("duplicate")))

    async def _refused(
        self,
        stream: str,
        messages: Sequence[Outgoing],
        expected: int | None,
        refusal: _Refusal,
    ) -> AppendResult:
        """Turn a refusal into: the original result (an earlier attempt landed), a retry,
        or the matching exception."""
        err_code, description = refusal.err_code, refusal.description
        if err_code in _WRONG_LAST_SEQUENCE or err_code == _BATCH_DUPLICATE_ID:
            stored = await self._find_stored(stream, messages, expected)
            if stored is not None:
                return stored
        if err_code in _WRONG_LAST_SEQUENCE and expected is not None:
            match = _LAST_SEQ_IN_ERROR.search(description)
            actual = int(match.group(1)) if match else None
            raise StaleWriter(stream, expected, actual, description)
        if err_code in _RETRYABLE or refusal.code == 503:
            raise _Retry(description)
        raise AppendError(stream, err_code, description)

    async def _find_stored(
        self, stream: str, messages: Sequence[Outgoing], expected: int | None
    ) -> AppendResult | None:
        """Where an earlier attempt stored these messages, if it did. With a fence they can only
        be right after it; without one, the batch's last subject says where it ended."""
        if expected is not None:
            first = expected + 1
        else:
            last = await self._get(stream, subject=messages[-1].subject)
            if last is None:
                return None
            assert last.seq is not None  # nats-py types it Optional; a stored message has one
            first = last.seq - len(messages) + 1
        for offset, message in enumerate(messages):
            stored = await self._get(stream, seq=first + offset)
            if stored is None or (stored.headers or {}).get("Nats-Msg-Id") != message.msg_id:
                return None
        return AppendResult(first, first + len(messages) - 1, True)

    async def _get(
        self, stream: str, *, seq: int | None = None, subject: str | None = None
    ) -> RawStreamMsg | None:
        """A stored message from the stream leader (not a possibly lagging direct-get replica)."""
        if seq is not None and seq < 1:
            return None
        try:
            return await self._js.get_msg(stream, seq=seq, subject=subject)
        except NotFoundError:
            return None
        except (
            nats.errors.NoRespondersError,
            nats.errors.TimeoutError,
            NoStreamResponseError,
            ServiceUnavailableError,
        ) as error:
            raise _Retry from error

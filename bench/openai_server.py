"""An OpenAI-compatible stand-in on loopback, for tests and benchmarks of the `openai` backend.

The one stand-in the project allows, because the real thing is a paid API. It serves
`POST /v1/chat/completions` and `POST /v1/completions` from a thread (uvicorn on a free port)
and behaves like a rate-limited provider:

- Answers are a pure function of the prompt text (`answer`, default: the sum in "A + B"), so
  scores are known. If `answer` raises, that prompt gets a 500 every time: a row that never works.
- Tokens are about one per four characters: prompt (chat: the contents joined by newlines) and
  answer, the answer cut to `max_tokens` / `max_completion_tokens`.
- `rpm` and `tpm` are enforced over a sliding window of `window_s` seconds (60 for real time;
  less to scale time). A request is counted when admitted, with the tokens it uses; past either
  limit it gets 429 with `retry-after`, `retry-after-ms` and `x-ratelimit-*` headers, and is not
  counted. Every answer carries the `x-ratelimit-*` headers.
- `error_rate` injects 500s before admission: the k-th time a prompt arrives fails when
  SHA-256(seed, prompt, k) falls under the rate, so a run's failures do not depend on timing.
- `down = True`: every request gets 503 at once.
- `api_key`: when set, other bearer tokens get 401.
- `latency_s`: admitted requests wait this long before the answer (generation time).

`stats()` reports what the server saw (the benchmark reads admissions from it).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn

_SUM = re.compile(r"(-?\d+)\s*\+\s*(-?\d+)")


def arithmetic(prompt: str) -> str:
    """The default answer: the sum of the last "A + B" in the prompt."""
    found = _SUM.findall(prompt)
    if not found:
        return "I do not know."
    a, b = found[-1]
    return str(int(a) + int(b))


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


@dataclass
class ServerStats:
    calls: int = 0  # every POST to an endpoint
    admitted: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, tokens)
    rate_limited: list[float] = field(default_factory=list)  # monotonic times of 429s
    injected_errors: int = 0  # 500s from error_rate
    failed_answers: int = 0  # 500s because `answer` raised
    unavailable: int = 0  # 503s while down
    unauthorized: int = 0
    answered: Counter[str] = field(default_factory=Counter)  # 200s by endpoint (chat, completions)


class OpenAIServer:
    def __init__(
        self,
        answer: Callable[[str], str] = arithmetic,
        *,
        rpm: int | None = None,
        tpm: int | None = None,
        window_s: float = 60.0,
        error_rate: float = 0.0,
        seed: int = 0,
        latency_s: float = 0.0,
        api_key: str | None = None,
    ) -> None:
        self.answer, self.rpm, self.tpm, self.window_s = answer, rpm, tpm, window_s
        self.error_rate, self.seed, self.latency_s, self.api_key = (
            error_rate,
            seed,
            latency_s,
            api_key,
        )
        self.down = False
        self.last_body: dict[str, Any] = {}
        self.last_query = ""  # the raw query string of the last request to an endpoint
        self.last_headers: dict[str, str] = {}  # its headers, names lower-cased
        self._stats = ServerStats()
        self._window: deque[tuple[float, int]] = deque()
        self._window_tokens = 0
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()  # the server thread writes, the test thread reads
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> OpenAIServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app, interface="asgi3", log_level="warning", access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="openai-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OpenAI test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # do not wait out requests still sleeping
            self._thread.join(10)
            self._server = self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> ServerStats:
        with self._lock:
            s = self._stats
            return ServerStats(
                s.calls,
                list(s.admitted),
                list(s.rate_limited),
                s.injected_errors,
                s.failed_answers,
                s.unavailable,
                s.unauthorized,
                Counter(s.answered),
            )

    # HTTP

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["path"] in ("/v1/chat/completions", "/v1/completions"):
            self.last_query = scope["query_string"].decode()
            self.last_headers = headers
        status, extra, payload = await self._handle(scope["method"], scope["path"], headers, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    *((k.encode(), v.encode()) for k, v in extra.items()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})

    async def _handle(
        self, method: str, path: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        kind = {"/v1/chat/completions": "chat", "/v1/completions": "completions"}.get(path)
        if method != "POST" or kind is None:
            return 404, {}, _error(f"no route {method} {path}", "not_found")
        with self._lock:
            self._stats.calls += 1
        if self.down:
            with self._lock:
                self._stats.unavailable += 1
            return 503, {}, _error("the server is down", "server_error")
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            with self._lock:
                self._stats.unauthorized += 1
            return 401, {}, _error("invalid api key", "invalid_request_error")
        try:
            body = json.loads(raw)
            if kind == "chat":
                prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
            else:
                prompt = str(body["prompt"])
            model = str(body["model"])
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            return 400, {}, _error(f"bad request: {error!r}", "invalid_request_error")
        self.last_body = body
        if self._inject_error(prompt):
            with self._lock:
                self._stats.injected_errors += 1
            return 500, {}, _error("injected server error", "server_error")
        try:
            text = self.answer(prompt)
        except Exception as error:
            with self._lock:
                self._stats.failed_answers += 1
            return 500, {}, _error(f"cannot answer: {error}", "server_error")
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and count_tokens(text) > max_tokens:
            text = text[: max_tokens * 4]
        usage = {"prompt_tokens": count_tokens(prompt), "completion_tokens": count_tokens(text)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        admitted, limit_headers = self._admit(usage["total_tokens"])
        if not admitted:
            return 429, limit_headers, _error("rate limit reached", "rate_limit_exceeded")
        with self._lock:
            self._stats.answered[kind] += 1
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        return 200, limit_headers, _completion(kind, model, text, usage)

    def _inject_error(self, prompt: str) -> bool:
        if self.error_rate <= 0:
            return False
        with self._lock:
            self._seen[prompt] += 1
            k = self._seen[prompt]
        digest = hashlib.sha256(f"{self.seed}\0{prompt}\0{k}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.error_rate

    def _admit(self, tokens: int) -> tuple[bool, dict[str, str]]:
        """Count the request if it fits both limits; headers in OpenAI's shape either way."""
        with self._lock:
            now = time.monotonic()
            window = self._window
            while window and window[0][0] <= now - self.window_s:
                self._window_tokens -= window.popleft()[1]
            wait_requests = wait_tokens = 0.0
            if self.rpm is not None and len(window) + 1 > self.rpm:
                wait_requests = window[len(window) - self.rpm][0] + self.window_s - now
            if self.tpm is not None and self._window_tokens + tokens > self.tpm:
                excess, freed = self._window_tokens + tokens - self.tpm, 0
                wait_tokens = math.inf  # a request larger than tpm never fits
                for at, used in window:
                    freed += used
                    if freed >= excess:
                        wait_tokens = at + self.window_s - now
                        break
            admitted = wait_requests <= 0 and wait_tokens <= 0
            if admitted:
                window.append((now, tokens))
                self._window_tokens += tokens
                self._stats.admitted.append((now, tokens))
            else:
                self._stats.rate_limited.append(now)
            headers = self._limit_headers(now)
        if not admitted:
            wait = max(wait_requests, wait_tokens)
            wait = wait if math.isfinite(wait) else self.window_s
            headers["retry-after-ms"] = str(math.ceil(wait * 1000))
            headers["retry-after"] = str(math.ceil(wait))
        return admitted, headers

    def _limit_headers(self, now: float) -> dict[str, str]:
        window, headers = self._window, {}
        if self.rpm is not None:
            reset = window[0][0] + self.window_s - now if window else 0.0
            headers |= {
                "x-ratelimit-limit-requests": str(self.rpm),
                "x-ratelimit-remaining-requests": str(max(self.rpm - len(window), 0)),
                "x-ratelimit-reset-requests": f"{max(reset, 0.0):.3f}s",
            }
        if self.tpm is not None:
            reset = window[0][0] + self.window_s - now if window else 0.0
            headers |= {
                "x-ratelimit-limit-tokens": str(self.tpm),
                "x-ratelimit-remaining-tokens": str(max(self.tpm - self._window_tokens, 0)),
                "x-ratelimit-reset-tokens": f"{max(reset, 0.0):.3f}s",
            }
        return headers


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": kind, "param": None}}


def _completion(kind: str, model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
        obj = "chat.completion"
    else:
        choice["text"] = text
        obj = "text_completion"
    return {
        "id": f"cmpl-{hashlib.sha256(text.encode()).hexdigest()[:12]}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }

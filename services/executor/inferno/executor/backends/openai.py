"""The `openai` backend (DESIGN §5): any OpenAI-compatible endpoint, within its rate limits.

Configuration, all in the pipeline spec:
- `model_config.model`: the model name the endpoint knows (other model_config keys are not read).
- `client_config`: `base_url` (default: OpenAI's), the key (`resolve_api_key`), `endpoint`
  ("chat", the default, or "completions"), `default_headers` (header name -> string, sent with
  every request; an `Authorization` there replaces the bearer key), `max_concurrency` (8),
  `max_attempts` (6), `timeout_s` (60), `backoff_s` (0.5) and `backoff_max_s` (30) for retries,
  `down_after` (16), `rate_window_s` (60; tests scale time with it), and the prices the metrics
  read. Unknown keys are an error, so typos show (`inferno.events.backend_options`).
  A base_url's query parameters (`?api-version=1&api-key=K`) go with every request
  (`split_base_url`); its userinfo (`http://user:pw@host/v1`) is sent as HTTP Basic auth, which
  replaces the bearer key.
- `rpm_limit` / `tpm_limit`: the pipeline's limits; `endpoint_limit`: a limit it shares with
  other pipelines by name. Where the executor keeps limits for the fleet (the default,
  `INFERNO_RATE_LIMITS=fleet`), they hold in total over every executor (`fleet_limits`); with
  `executor`, each engine keeps its own window (`ratelimit`), as before.
- `sampling_params` go into the request body as they are (temperature, max_tokens, top_p, stop,
  seed, and whatever extras the server takes, e.g. vLLM's top_k).

A text prompt is sent as one user message (or as `prompt` to /completions); a message list as
the chat messages. Every attempt goes through the limiter, which reserves the prompt (about one
token per four characters) plus `max_tokens` (256 when unset) and settles with the usage the
server reports. The SDK's own retries are off, so retrying happens here only:
- 429: everyone pauses as the server asks (`server_hint`, else backoff); the row retries.
- 5xx, 408, 409, timeouts, connection errors, 429 `insufficient_quota`: the row retries with
  jittered exponential backoff (at least any Retry-After).
  After `max_attempts` attempts in all the row fails alone: `Generation.error` says why, and
  `endpoint_error` marks it as the endpoint's fault; a shard whose rows all fail so is failed.
- other 4xx (400, 413, 422: this row is bad): the row fails at once.
- 401, 403, 404 (key, permission, model or URL wrong): `EngineConfigError`, the pipeline fails.
- the endpoint is down when `down_after` attempts in a row (across all requests) failed with
  5xx or no answer: `EndpointDown` fails the shard, which the scheduler retries.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from inferno.events.backend_options import CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS, OPENAI_CLIENT_KEYS
from inferno.events.model import PipelineSpec
from inferno.executor.backends.base import (
    Backend,
    EndpointUnavailable,
    EngineAborted,
    EngineConfigError,
    Generation,
    GenerationRequest,
    Prompt,
    reject_unknown_keys,
)
from inferno.executor.fleet_limits import FleetPermit, FleetRateLimiter, FleetRates
from inferno.executor.ratelimit import RateLimiter, Reservation, backoff_s, server_hint
from inferno.secrets.masking import mask_text, remember_secret

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.types.chat import ChatCompletionMessageParam

NO_KEY = "no-key"  # sent when no key is configured (e.g. a local `vllm serve` without --api-key)
_OWN_KEYS = frozenset({"model", "messages", "prompt", "stream", "n"})

_OPTIONS: dict[str, tuple[type, Any]] = {  # client_config key -> (type, default)
    "max_concurrency": (int, 8),
    "max_attempts": (int, 6),
    "timeout_s": (float, 60.0),
    "backoff_s": (float, 0.5),
    "backoff_max_s": (float, 30.0),
    "down_after": (int, 16),
    "rate_window_s": (float, 60.0),
}


class EndpointDown(EndpointUnavailable):
    """The endpoint answers nothing but errors: fail the shard (retryable), not its rows."""


def resolve_api_key(
    client_config: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> str:
    """The key to send: `api_key` as given, or the executor's environment variable named by
    `api_key_env`. The one place keys are resolved. Never falls back to the executor's own
    OPENAI_API_KEY: a pipeline gets only the key it names."""
    if "api_key" in client_config and "api_key_env" in client_config:
        raise EngineConfigError("client_config: give api_key or api_key_env, not both")
    if "api_key" in client_config:
        key = client_config["api_key"]
        if not isinstance(key, str) or not key:
            raise EngineConfigError("client_config.api_key must be a non-empty string")
        return key
    if "api_key_env" in client_config:
        name = client_config["api_key_env"]
        if not isinstance(name, str) or not name:
            raise EngineConfigError("client_config.api_key_env must name an environment variable")
        key = environ.get(name)
        if not key:
            raise EngineConfigError(f"api_key_env: {name} is not set on this executor")
        remember_secret(key)  # masked in this process's logs, like keys resolved from refs
        return key
    return NO_KEY


@dataclass(frozen=True, slots=True)
class OpenAIConfig:
    model: str
    base_url: str | None = field(repr=False)  # may hold credentials (userinfo)
    api_key: str = field(repr=False)
    endpoint: str
    rpm: int | None
    tpm: int | None
    max_concurrency: int
    max_attempts: int
    timeout_s: float
    backoff_s: float
    backoff_max_s: float
    down_after: int
    rate_window_s: float
    default_query: dict[str, str | list[str]] = field(repr=False, default_factory=dict)
    default_headers: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def shown_url(self) -> str:
        """The endpoint as an error message may name it: credentials masked."""
        return mask_text(self.base_url) if self.base_url else "default"

    @classmethod
    def parse(cls, spec: PipelineSpec, environ: Mapping[str, str] = os.environ) -> OpenAIConfig:
        """Validate a pipeline's configuration; `EngineConfigError` names what is wrong."""
        model = spec.model_config.get("model")
        if not isinstance(model, str) or not model:
            raise EngineConfigError("openai model_config.model must be a non-empty string")
        client = spec.client_config
        reject_unknown_keys("openai client_config", client, OPENAI_CLIENT_KEYS)
        base_url = client.get("base_url")
        if base_url is not None and (not isinstance(base_url, str) or not base_url):
            raise EngineConfigError("openai client_config.base_url must be a URL")
        base_url, query = split_base_url(base_url) if base_url else (None, {})
        headers = client.get("default_headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise EngineConfigError(
                "openai client_config.default_headers must map header names to strings"
            )
        endpoint = client.get("endpoint", "chat")
        if endpoint not in ("chat", "completions"):
            raise EngineConfigError(
                f"openai client_config.endpoint must be chat or completions, not {endpoint!r}"
            )
        options = {}
        for key, (kind, default) in _OPTIONS.items():
            value = client.get(key, default)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or (kind is int and not isinstance(value, int)) or not 0 < value < math.inf:
                raise EngineConfigError(
                    f"openai client_config.{key} must be a positive {kind.__name__}, not {value!r}"
                )
            options[key] = kind(value)
        return cls(
            model=model,
            base_url=base_url,
            default_query=query,
            default_headers=headers,
            api_key=resolve_api_key(client, environ),
            endpoint=endpoint,
            rpm=spec.rpm_limit,
            tpm=spec.tpm_limit,
            **options,
        )


def split_base_url(url: str) -> tuple[str, dict[str, str | list[str]]]:
    """(`url` without its query and fragment, the query's parameters): the SDK appends each
    route to its base_url's path, so a query left there would end up inside the path."""
    parts = urlsplit(url)
    query: dict[str, str | list[str]] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        given = query.get(name)
        query[name] = value if given is None else [*_as_list(given), value]  # sent repeated
    return urlunsplit(parts._replace(query="", fragment="")), query


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def prompt_tokens_estimate(prompt: Prompt) -> int:
    """About one token per four characters: what the limiter reserves before the server counts."""
    text = prompt if isinstance(prompt, str) else "\n".join(m.get("content", "") for m in prompt)
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def reserve_tokens(prompt: Prompt, sampling: Mapping[str, Any]) -> int:
    limit = sampling.get("max_tokens", sampling.get("max_completion_tokens"))
    answer = limit if isinstance(limit, int) and limit >= 0 else DEFAULT_MAX_TOKENS
    return prompt_tokens_estimate(prompt) + answer


class _Health:
    """Consecutive failed attempts across all requests; any answer from the server resets it."""

    def __init__(self, down_after: int) -> None:
        self.down_after, self.failures = down_after, 0

    def answered(self) -> None:
        self.failures = 0

    def failed(self) -> bool:
        """Count one failure; True when the endpoint now counts as down."""
        self.failures += 1
        return self.failures >= self.down_after


@dataclass(slots=True)
class _Outcome:
    """How one failed attempt ends: retry (after `delay_s`), or fail the row with `error`."""

    error: str
    retry: bool
    delay_s: float = 0.0


class OpenAIEngine:
    def __init__(
        self,
        config: OpenAIConfig,
        client: AsyncOpenAI,
        *,
        rng: random.Random | None = None,
        limiter: FleetRateLimiter | None = None,
    ) -> None:
        """`limiter`: the fleet's; without one the engine keeps its own window."""
        self.config, self._client = config, client
        self.limiter: RateLimiter | FleetRateLimiter = limiter or RateLimiter(
            config.rpm, config.tpm, window_s=config.rate_window_s
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._health = _Health(config.down_after)
        self._rng = rng or random.Random()
        self._aborted = asyncio.Event()  # replaced after each abort, so later calls run

    async def generate(
        self, requests: Sequence[GenerationRequest], sampling: Mapping[str, Any]
    ) -> list[Generation]:
        if "stream" in sampling or sampling.get("n", 1) != 1:
            raise EngineConfigError("openai sampling_params: stream and n > 1 are not supported")
        if self.config.endpoint == "completions" and any(
            not isinstance(r.prompt, str) for r in requests
        ):
            raise EngineConfigError("openai endpoint completions needs a text prompt, not messages")
        body = {k: v for k, v in sampling.items() if k not in _OWN_KEYS}
        aborted = asyncio.ensure_future(self._aborted.wait())
        tasks = [asyncio.ensure_future(self._row(r.prompt, body)) for r in requests]
        pending: set[asyncio.Future[Any]] = {aborted, *tasks}
        try:
            while len(pending) > 1 or aborted not in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if aborted in done:
                    raise EngineAborted("openai engine aborted")
                for task in done:
                    task.result()  # a shard-level error (EndpointDown, EngineConfigError) ends all
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # nothing left running
        return [task.result() for task in tasks]

    async def abort(self) -> None:
        self._aborted.set()
        self._aborted = asyncio.Event()

    # one row

    async def _row(self, prompt: Prompt, body: dict[str, Any]) -> Generation:
        config = self.config
        reserve = reserve_tokens(prompt, body)
        error = ""
        for attempt in range(1, config.max_attempts + 1):
            async with self._slots:
                reservation = await self.limiter.acquire(reserve)
                try:
                    return await self._send(prompt, body, reservation)
                except Exception as failure:
                    outcome = self._failed(failure, attempt)
                finally:
                    reservation.settle(0)  # no-op when _send settled with the usage
            error = outcome.error
            if not outcome.retry:
                return Generation(text="", error=mask_text(error))  # the server rejects the row
            if attempt < config.max_attempts:
                await asyncio.sleep(outcome.delay_s)
        error = f"failed after {config.max_attempts} attempts: {error}"
        return Generation(text="", error=mask_text(error), endpoint_error=True)  # masked: no key

    async def _send(
        self, prompt: Prompt, body: dict[str, Any], reservation: Reservation | FleetPermit
    ) -> Generation:
        config, client = self.config, self._client
        started = time.perf_counter()
        if config.endpoint == "completions":
            assert isinstance(prompt, str)  # generate() refuses message lists for /completions
            raw_text = await client.completions.with_raw_response.create(
                model=config.model, prompt=prompt, extra_body=body
            )
            text_completion = raw_text.parse()
            text = text_completion.choices[0].text if text_completion.choices else ""
            usage, status, headers = text_completion.usage, raw_text.status_code, raw_text.headers
        else:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            raw_chat = await client.chat.completions.with_raw_response.create(
                model=config.model,
                # role/content dicts as the API takes them; openai types them as one TypedDict
                # per role, which a dict[str, str] from a dataset row cannot be narrowed to
                messages=cast("list[ChatCompletionMessageParam]", messages),
                extra_body=body,
            )
            chat = raw_chat.parse()
            text = (chat.choices[0].message.content or "") if chat.choices else ""
            usage, status, headers = chat.usage, raw_chat.status_code, raw_chat.headers
        latency_ms = (time.perf_counter() - started) * 1000
        self._health.answered()
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
        else:  # some servers do not report usage: count as the limiter does
            prompt_tokens = prompt_tokens_estimate(prompt)
            completion_tokens = math.ceil(len(text) / CHARS_PER_TOKEN)
        reservation.settle(prompt_tokens + completion_tokens)
        if (hint := server_hint(status, headers)) is not None:
            self.limiter.pause(hint)  # the server says its quota is spent until then
        return Generation(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=latency_ms,
        )

    def _failed(self, failure: Exception, attempt: int) -> _Outcome:
        """Classify a failed attempt (module docs); raises what must end the shard."""
        import openai

        config = self.config
        backoff = backoff_s(
            attempt, base_s=config.backoff_s, max_s=config.backoff_max_s, uniform=self._rng.uniform
        )
        if isinstance(failure, openai.APIStatusError):
            status, headers = failure.status_code, failure.response.headers
            error = f"HTTP {status}: {failure.message}"
            hint = server_hint(status, headers)
            if status in (401, 403, 404):
                raise EngineConfigError(f"openai endpoint {config.shown_url}: {error}")
            if status == 429 and failure.code != "insufficient_quota":
                self._health.answered()
                self.limiter.pause(backoff if hint is None else hint)
                return _Outcome(error, retry=True, delay_s=backoff if hint is None else hint)
            if status >= 500 or status in (408, 409, 429):
                if self._health.failed():
                    raise EndpointDown(f"openai endpoint down: {error}") from failure
                return _Outcome(error, retry=True, delay_s=max(backoff, hint or 0.0))
            self._health.answered()
            return _Outcome(error, retry=False)  # the server rejects this row
        if isinstance(failure, openai.APIConnectionError):
            error = f"{type(failure).__name__}: {failure}"
            if self._health.failed():
                raise EndpointDown(f"openai endpoint unreachable: {error}") from failure
            return _Outcome(error, retry=True, delay_s=backoff)
        raise failure


@asynccontextmanager
async def open_openai(
    spec: PipelineSpec, fleet: FleetRates | None = None
) -> AsyncIterator[OpenAIEngine]:
    """A client per engine; its connections close when the engine is unloaded. With `fleet`,
    the pipeline's limits hold across the fleet."""
    import openai

    config = OpenAIConfig.parse(spec)
    limits = fleet.limits_for(spec, config.rate_window_s) if fleet is not None else []
    limiter = fleet.limiter(limits, config.rate_window_s) if fleet and limits else None
    client = openai.AsyncOpenAI(
        api_key=config.api_key,
        base_url=config.base_url,
        default_query=config.default_query or None,
        default_headers=config.default_headers or None,
        timeout=config.timeout_s,
        max_retries=0,  # retries happen in OpenAIEngine, through the limiter
    )
    try:
        yield OpenAIEngine(config, client, limiter=limiter)
    finally:
        await client.close()
        if limiter is not None:
            await limiter.close()


BACKEND = Backend(
    "openai",
    open_openai,
    available=lambda: find_spec("openai") is not None,
    open_in_fleet=open_openai,
)

"""Structured logging for every Inferno process, configured once (structlog).

- JSON, one line per event (`timestamp` ISO 8601 UTC, `level`, `event`, bound context) when
  stdout is not a terminal or `fmt="json"`; structlog's ConsoleRenderer on a terminal or with
  `fmt="console"`.
- Ids bound with `structlog.contextvars.bind_contextvars(pipeline_id=..., shard=..., ic_id=...,
  trace_id=...)` appear on every line logged in that context.
- Secrets never reach a line: values of secret-looking keys (api_key, token, password, secret,
  authorization, ...) become "***", at any depth, and `sk-...` keys, bearer tokens and URL
  credentials (the userinfo, and the value of a query parameter whose name looks secret,
  `is_secret_param`) are masked inside any string, tracebacks included — as is any secret the
  process was told of with `remember_secret` (the values an executor resolved from
  INFERNO_SECRETS). A secret placeholder `{{sec-<32 hex>}}` (`inferno.client.secret_urls`) is a
  reference, not a secret, and is shown as it is.
- Standard-library `logging` (nats-py, uvicorn, ...) goes through the same processors and renderer.

Calling `configure_logging` again replaces the previous configuration.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import unquote_plus

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from inferno.events.config import LOG_FORMATS, LOG_LEVELS, MASK, Settings

# key names (lower-cased, '-' as '_') whose values are secrets; matched on the key's end, so
# `openai_api_key` and `access_token` are masked while `max_tokens` and `secret_ref` are not
_SECRET_KEY = re.compile(
    r"(^|_)(api_?key|token|password|passwd|secret|secret_key|access_key|private_key"
    r"|authorization|credentials|cookie)$"
)
# query parameter names (lower-cased, '-' and '.' as '_') whose values are secrets, beyond the
# secret key names: `?key=`, `?sig=` (Azure SAS), `X-Amz-Signature`, `subscription-key`, ...
_SECRET_PARAM = re.compile(r"(^|_)(key|sig|signature|auth|credential|pass|pwd|jwt|session)$")
PLACEHOLDER = re.compile(r"\{\{(sec-[0-9a-f]{32})\}\}")
"""Where a secret taken out of a string (a URL's credentials) was: `{{<its ref>}}`."""
_SECRET_TEXT = [
    (re.compile(r"sk-[A-Za-z0-9_-]{8,}"), MASK),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+"), rf"\1 {MASK}"),
    (
        re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)(?!\{\{sec-[0-9a-f]{32}\}\}@)[^@/\s,]+@"),
        rf"\1{MASK}@",
    ),
]
_QUERY_PARAM = re.compile(r"([?&])([^=&#?\s\"'<>]+)=([^&#\s\"'<>,]+)")
_HANDLER_NAME = "inferno"
_MIN_KNOWN_SECRET = 8  # shorter strings would mask innocent text everywhere
_known_secrets: tuple[str, ...] = ()  # replaced, never mutated: loggers in threads iterate it


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key.lower().replace("-", "_")))


def is_secret_param(name: str) -> bool:
    """Whether a URL query parameter (percent-decoded) or an HTTP header carries a secret: a
    secret key name, or one ending in key, sig, signature, auth, credential, pass, pwd, jwt or
    session. Wider than `is_secret_key`, since on the wire these names mean credentials."""
    normal = name.lower().replace("-", "_").replace(".", "_")
    return is_secret_key(normal) or bool(_SECRET_PARAM.search(normal))


def is_headers(key: object) -> bool:
    """`default_headers`: a key whose value maps HTTP header names to values."""
    return isinstance(key, str) and key.lower().endswith("headers")


def is_secret_name(key: object, headers: bool = False) -> bool:
    """Whether a config key's value is a secret; `headers`: the key is a header's name (inside
    an `is_headers` mapping), where the wider `is_secret_param` rule applies."""
    return is_secret_key(key) or (headers and isinstance(key, str) and is_secret_param(key))


def remember_secret(value: Any) -> None:
    """Mask the strings in `value` wherever they appear from now on, in this process: for
    secrets it fetched (an executor resolving refs), which no pattern might match."""
    global _known_secrets
    if isinstance(value, str):
        if len(value) >= _MIN_KNOWN_SECRET and value not in _known_secrets:
            _known_secrets = (*_known_secrets, value)
    elif isinstance(value, Mapping):
        for item in value.values():
            remember_secret(item)
    elif isinstance(value, list | tuple):
        for item in value:
            remember_secret(item)


def mask_text(text: str) -> str:
    for known in _known_secrets:
        if known in text:
            text = text.replace(known, MASK)
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return _QUERY_PARAM.sub(_mask_param, text)


def _mask_param(match: re.Match[str]) -> str:
    separator, name, value = match.groups()
    if PLACEHOLDER.fullmatch(value) or not is_secret_param(unquote_plus(name)):
        return match.group(0)
    return f"{separator}{name}={MASK}"


def mask_value(value: Any) -> Any:
    """`value` with secrets masked: secret-named keys of mappings, and secrets inside strings."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {
            k: (MASK if v is not None else None) if is_secret_key(k) else mask_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_value(v) for v in value]
    return value


def mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: runs after exceptions are formatted, right before rendering."""
    return mask_value(event_dict)


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    service: str | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the stdlib root logger to write to `stream` (default stdout)."""
    level = level.lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} must be one of {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} must be one of {', '.join(LOG_FORMATS)}")
    stream = sys.stdout if stream is None else stream
    if fmt == "auto":
        fmt = "console" if _isatty(stream) else "json"
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=_json_fallback)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=_isatty(stream))
    )
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if service:
        shared.append(_add_service(service))
    shared += [
        structlog.processors.StackInfoRenderer(),
        # formatted to text before masking, so secrets in tracebacks are masked as well
        structlog.processors.format_exc_info,
        mask_secrets,
    ]
    level_no = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        context_class=dict,
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        # structlog recommends caching for speed; we give that up (a few microseconds a call) so
        # that a later configure_logging (tests, `inferno up`) reaches module-level loggers too
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)


def log_effective_config(logger: Any, settings: Settings) -> None:
    """Log the effective configuration, secrets masked, as one `effective_config` line."""
    logger.info("effective_config", **settings.masked())


def _json_fallback(value: object) -> str:
    # objects JSON can't encode are rendered with repr(), which may hold secrets: mask it too
    return mask_text(repr(value))


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False

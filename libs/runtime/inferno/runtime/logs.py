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
  INFERNO_SECRETS). A secret placeholder `{{sec-<32 hex>}}` (`inferno.secrets.urls`) is a
  reference, not a secret, and is shown as it is.
- Standard-library `logging` (nats-py, uvicorn, ...) goes through the same processors and renderer.

Calling `configure_logging` again replaces the previous configuration.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from inferno.runtime.settings import LOG_FORMATS, LOG_LEVELS, Settings
from inferno.secrets.masking import mask_text, mask_value

_HANDLER_NAME = "inferno"


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

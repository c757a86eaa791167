from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime

import pytest
import structlog

from inferno.runtime.logs import configure_logging, log_effective_config
from inferno.runtime.settings import Settings
from inferno.secrets.masking import is_secret_key

SECRET = "sk-abcdefghijkl"


pytestmark = pytest.mark.usefixtures("restore_logging")


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_timestamp_level_event_and_service() -> None:
    out = io.StringIO()
    configure_logging("info", "json", service="scheduler", stream=out)
    structlog.get_logger().info("shard_assigned", executor="gpu-0", n=3)

    [line] = lines(out)
    assert line["event"] == "shard_assigned"
    assert line["level"] == "info"
    assert line["service"] == "scheduler"
    assert (line["executor"], line["n"]) == ("gpu-0", 3)
    ts = datetime.fromisoformat(str(line["timestamp"]))
    assert ts.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_bound_context_ids_appear_on_every_line() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger()
    structlog.contextvars.bind_contextvars(pipeline_id=7, shard=2, ic_id=41, trace_id="abc123")
    log.info("first")
    log.warning("second")
    structlog.contextvars.clear_contextvars()
    log.info("third")

    first, second, third = lines(out)
    for line in (first, second):
        assert (line["pipeline_id"], line["shard"], line["ic_id"]) == (7, 2, 41)
        assert line["trace_id"] == "abc123"
    assert second["level"] == "warning"
    assert "pipeline_id" not in third


def test_secrets_never_reach_the_output() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = structlog.get_logger()
    log.info(
        "clone_requested",
        api_key=SECRET,
        token="plain-token-value",
        nats_password="hunter2",
        client_config={
            "base_url": "https://user:pw123@api.example/v1",
            "headers": {"Authorization": "Bearer eyJhbGciOi.payload"},
            "OPENAI_API_KEY": "not-an-sk-but-secret",
            "max_tokens": 256,
        },
        items=[{"secret": "in-a-list"}, f"inline {SECRET} text"],
        note=f"retrying with key {SECRET}",
    )

    text = out.getvalue()
    for leaked in (
        SECRET,
        "plain-token-value",
        "hunter2",
        "pw123",
        "eyJhbGciOi",
        "not-an-sk-but-secret",
        "in-a-list",
    ):
        assert leaked not in text
    [line] = lines(out)
    assert line["api_key"] == "***"
    assert line["token"] == "***"
    assert line["nats_password"] == "***"
    config = line["client_config"]
    assert isinstance(config, dict)
    assert config["max_tokens"] == 256  # counts of tokens are not secrets
    assert config["headers"] == {"Authorization": "***"}
    assert config["base_url"] == "https://***@api.example/v1"
    assert line["note"] == "retrying with key ***"


def test_secrets_in_tracebacks_are_masked() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    try:
        raise RuntimeError(f"upstream rejected {SECRET}")
    except RuntimeError:
        structlog.get_logger().exception("call_failed")

    assert SECRET not in out.getvalue()
    [line] = lines(out)
    assert line["level"] == "error"
    assert "RuntimeError: upstream rejected ***" in str(line["exception"])


def test_stdlib_logging_goes_through_the_same_pipeline() -> None:
    out = io.StringIO()
    configure_logging("info", "json", service="api", stream=out)
    structlog.contextvars.bind_contextvars(trace_id="t-1")
    logging.getLogger("nats.aio.client").warning("reconnecting to %s", "nats://u:p@host:4222")

    [line] = lines(out)
    assert line["event"] == "reconnecting to nats://***@host:4222"
    assert line["logger"] == "nats.aio.client"
    assert line["level"] == "warning"
    assert line["service"] == "api"
    assert line["trace_id"] == "t-1"


def test_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure_logging("warning", "json", stream=out)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    logging.getLogger("lib").info("stdlib info")
    log.error("e")
    assert [line["event"] for line in lines(out)] == ["e"]


def test_console_format_is_human_readable_and_masked() -> None:
    out = io.StringIO()
    configure_logging("debug", "console", stream=out)
    structlog.get_logger().debug("hello_console", api_key=SECRET, n=1)

    text = out.getvalue()
    assert "hello_console" in text
    assert "n=1" in text
    assert SECRET not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_auto_picks_json_off_a_terminal_and_console_on_one() -> None:
    piped, tty = io.StringIO(), FakeTTY()
    configure_logging(stream=piped)
    structlog.get_logger().info("piped")
    assert lines(piped)[0]["event"] == "piped"

    configure_logging(stream=tty)
    structlog.get_logger().info("on_a_tty")
    assert "on_a_tty" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue())


def test_default_stream_is_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    structlog.get_logger().info("to_stdout", api_key=SECRET)
    captured = capsys.readouterr().out
    assert json.loads(captured)["event"] == "to_stdout"
    assert SECRET not in captured


def test_configuring_twice_is_fine_and_the_last_call_wins() -> None:
    first, second = io.StringIO(), io.StringIO()
    module_level_logger = structlog.get_logger("some.module")
    configure_logging("info", "json", stream=first)
    module_level_logger.info("one")
    configure_logging("info", "json", stream=second)
    configure_logging("info", "json", stream=second)
    module_level_logger.info("two")
    logging.getLogger("lib").warning("three")

    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two", "three"]  # no duplicates
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "inferno"]
    assert len(ours) == 1


def test_log_effective_config_is_one_masked_line() -> None:
    out = io.StringIO()
    configure_logging("info", "json", service="executor", stream=out)
    settings = Settings.from_env(
        {
            "NATS_URL": "nats://alice:hunter2@nats:4222",
            "INFERNO_TOKEN": "tok-123456",
            "NATS_USER": "alice",
            "NATS_PASSWORD": "hunter2",
        }
    )
    log_effective_config(structlog.get_logger(), settings)

    assert "hunter2" not in out.getvalue()
    assert "tok-123456" not in out.getvalue()
    [line] = lines(out)
    assert line["event"] == "effective_config"
    assert line["nats_url"] == "nats://***@nats:4222"
    assert line["token"] == "***"
    assert line["nats_password"] == "***"
    assert line["namespace"] == "inferno"
    assert line["api_port"] == 8851


def test_invalid_level_or_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose")
    with pytest.raises(ValueError, match="xml"):
        configure_logging("info", "xml")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("api_key", True),
        ("apiKey", True),
        ("x-api-key", True),
        ("OPENAI_API_KEY", True),
        ("token", True),
        ("access_token", True),
        ("password", True),
        ("nats_password", True),
        ("client_secret", True),
        ("Authorization", True),
        ("max_tokens", False),
        ("prompt_tokens", False),
        ("secret_ref", False),
        ("pipeline_id", False),
        ("event", False),
    ],
)
def test_is_secret_key(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret

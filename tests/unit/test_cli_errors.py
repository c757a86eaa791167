"""The CLI's errors: one line and an exit code, never a traceback; bounded however many pipelines
there are; every flag explained (issue 7 items 3 and 9)."""

from __future__ import annotations

import argparse
import functools
import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inferno.client.arguments import UsageError, resolve_experiment, resolve_pipeline
from inferno.client.cli import build_parser, main

INFERNO = Path(sys.executable).parent / "inferno"


def inferno(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(INFERNO), *args], capture_output=True, text=True, timeout=60, env=env
    )


def actions(parser: argparse.ArgumentParser, path: str = "inferno") -> Iterator[tuple[str, Any]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from actions(sub, f"{path} {name}")
        yield path, action


def test_every_flag_and_argument_has_help_text() -> None:
    missing = [
        f"{path} {'/'.join(a.option_strings) or a.dest}"
        for path, a in actions(build_parser())
        if not a.help or a.help == argparse.SUPPRESS
    ]
    assert missing == []


def test_ps_status_lists_the_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["ps", "--status", "running"])
    assert exited.value.code == 2
    assert "invalid choice: 'running' (choose from 'new', 'ongoing', 'stopped'," in (
        capsys.readouterr().err
    )
    with pytest.raises(SystemExit):
        build_parser().parse_args(["ps", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # as the help wraps it
    assert "only pipelines in this status: new, ongoing, stopped, completed, failed, deleted" in (
        shown
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ops", "--limit", "-1"], "argument --limit: must be 0 or more, not -1"),
        (["up", "--executors", "two"], "argument --executors: 'two' is not a whole number"),
        (["stop", "1", "--wait", "nan"], "argument --wait: must be 0 or more, not nan"),
    ],
)
def test_numbers_are_checked_by_the_parser(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(args)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_port_in_the_environment_is_named_not_a_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "INFERNO_DATA_DIR": str(tmp_path), "INFERNO_API_PORT": "abc"}
    shown = inferno("--help", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "COMMAND" in shown.stdout
    assert shown.stderr == ""
    refused = inferno("ps", env=env)
    assert (refused.returncode, refused.stderr) == (
        2,
        "inferno: error: INFERNO_API_PORT='abc' is not a port number (0-65535)\n",
    )
    refused = inferno("up", env={**env, "INFERNO_API_PORT": "8851", "NATS_URL": "nats://h:x"})
    assert (refused.returncode, refused.stderr) == (
        2,
        "inferno: error: NATS_URL='nats://h:x' does not end in a port number\n",
    )
    refused = inferno("ps", env={**env, "INFERNO_API_URL": "localhost:8851"})
    assert refused.returncode == 2
    assert "INFERNO_API_URL 'localhost:8851' is not an http(s) URL" in refused.stderr


def test_results_into_a_missing_directory_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "nonexistent" / "d" / "x.jsonl"
    assert main(["--api", "http://127.0.0.1:9", "results", "3", "-o", str(target)]) == 2
    assert capsys.readouterr().err == (
        f"inferno: error: -o {target}: cannot write it (no directory {target.parent})\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_demo_refuses_a_data_dir_no_cluster_runs_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--data-dir", str(tmp_path), "demo"]) == 2
    assert f"demo: no cluster is running from {tmp_path}" in capsys.readouterr().err
    assert main(["demo", "--api", "http://127.0.0.1:9", "--executors", "2"]) == 2
    assert "--executors is for a throwaway cluster" in capsys.readouterr().err


def test_demo_with_api_uses_that_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    # no throwaway cluster is started: the story goes to the api named, unreachable here
    assert main(["demo", "--api", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert "the Inferno api at http://127.0.0.1:9 is not reachable" in err


def labelled(n: int, name: str = "p") -> list[dict[str, object]]:
    return [
        {"pipeline_id": i, "pipeline_name": f"{name}{i}", "status": "ongoing"}
        for i in range(1, n + 1)
    ]


def test_errors_list_a_few_pipelines_not_all() -> None:
    with pytest.raises(UsageError) as caught:
        resolve_pipeline("nomatch", labelled(2345, "x" * 100_000))
    cut = "x" * 39 + "…"
    examples = ", ".join(f"{i} ({cut})" for i in range(1, 6))
    assert str(caught.value) == (
        f"no pipeline id or name prefix matches 'nomatch' (2,345 pipelines, e.g. {examples}, …)"
    )
    with pytest.raises(UsageError) as caught:
        resolve_pipeline("p", labelled(2345))
    assert str(caught.value) == (
        "'p' matches 2,345 pipelines, e.g. 1 (p1), 2 (p2), 3 (p3), 4 (p4), 5 (p5), …;"
        " give more of the name, or the id"
    )
    experiments = [{"experiment_id": f"exp-{i}", "experiment_name": "same"} for i in range(900)]
    with pytest.raises(UsageError) as caught:
        resolve_experiment("sa", experiments)
    assert str(caught.value).startswith("'sa' matches 900 experiments, e.g. exp-0 (same),")
    with pytest.raises(UsageError) as caught:
        resolve_pipeline("y" * 100_000, labelled(1))
    assert len(str(caught.value)) < 200


def test_an_error_is_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "/nonexistent/\x1b]0;pwned\x07\nline2.yaml"]) == 2
    assert capsys.readouterr().err == (
        "inferno: error: spec file /nonexistent/\\x1b]0;pwned\\x07\\nline2.yaml not found\n"
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the test reads the CLI's output, not this server's access log."""


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[str]:
    """A web server that is not an Inferno api (a static file server), on loopback."""
    (tmp_path / "api" / "v1").mkdir(parents=True)
    (tmp_path / "api" / "v1" / "pipelines").write_text("<html>hello</html>")
    (tmp_path / "api" / "v1" / "operations").write_text("[1, 2]")
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_api_url_that_is_no_inferno_api_says_so(
    other_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--api", other_server, "ps"]) == 1
    assert capsys.readouterr().err == (
        "inferno: error: GET /api/v1/pipelines answered with something that is not JSON;"
        f" is {other_server} an Inferno api? (HTTP 200)\n"
    )
    # an answer of an unexpected shape is a bug somewhere: still one line, no traceback
    assert main(["--api", other_server, "ops"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("inferno: error: unexpected TypeError: ")
    assert err.endswith("(INFERNO_DEBUG=1 shows where)\n")
    assert err.count("\n") == 1


def test_a_reader_that_leaves_ends_the_output_quietly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(INFERNO), "--data-dir", str(tmp_path), "down"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`: the first write hits a closed pipe
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (141, "")

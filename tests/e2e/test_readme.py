"""The README's "Use it" steps, pasted in order on a fresh cluster, all work (issue 7 item 11).

Both shell blocks of the section run as written, in bash with `set -euo pipefail`, from a
scratch directory that holds `.venv` (this test's virtualenv) and `examples/`, so `inferno up`
makes its data dir there. Only the ports are the test's own (INFERNO_API_PORT and NATS_URL, which
`up` reads), and curl runs with --fail-with-body: every command must exit 0, every HTTP answer
be 2xx.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferno.client.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
STRICT = 'set -euo pipefail -x\ncurl() { command curl --fail-with-body "$@"; }\n'


def use_it_blocks(readme: str) -> list[str]:
    """The ```sh blocks of the README's "## Use it" section, in order."""
    section = readme.split("\n## Use it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.M | re.S)


def test_the_readme_has_the_steps_this_test_runs() -> None:
    blocks = use_it_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 2
    assert blocks[0].startswith(".venv/bin/inferno up ")
    assert "curl" in blocks[1]
    assert "`.venv/bin/inferno down` stops the cluster" in (ROOT / "README.md").read_text()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory laid out like a checkout, and the environment of a fresh shell there."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    api_port = free_port()
    env.update(INFERNO_API_PORT=str(api_port), NATS_URL=f"nats://127.0.0.1:{free_port()}")
    try:
        yield tmp_path, env
    finally:
        down = subprocess.run(
            [".venv/bin/inferno", "down"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        print(down.stdout, down.stderr)


def json_documents(text: str) -> list[dict]:
    """The JSON objects curl printed one after another (with no newline between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def bash(block: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", STRICT + block],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_use_it_steps_work_pasted_in_order(scratch: tuple[Path, dict[str, str]]) -> None:
    cwd, env = scratch
    cli_block, curl_block = use_it_blocks((ROOT / "README.md").read_text())

    out = bash(cli_block, cwd, env)
    assert re.search(r"^pipelines   1 small, 2 medium, 3 large$", out, re.M), out
    assert re.search(r"^stop pipeline 1 \(small\): ic_id \d+ completed$", out, re.M), out
    assert re.search(r"^clone pipeline 3 \(large\) → pipeline 4: ic_id \d+ completed$", out, re.M)
    leaderboard = out.split("\nexperiment exp-", 1)[1]
    title = " (arith) by exact_match, 95% confidence intervals: confidence sequence"
    assert f"{title} (valid at every look)" in leaderboard
    assert re.search(r"^ +\d+ +3 +large +completed +8/8 ", leaderboard, re.M), leaderboard
    rows = [json.loads(line) for line in (cwd / "large.jsonl").read_text().splitlines()]
    assert sorted(r["row_index"] for r in rows) == list(range(96))  # shard by shard
    story = out.split("\npipeline 1\n", 1)[1]  # `inferno history small`
    assert re.search(r"stopped by \S+@\S+: \"diverging\"", story), story
    assert re.search(r"CMD \d+ stop_pipeline .*pipeline 1 by \S+@\S+: \"diverging\"", out), out
    assert re.search(r"^inferno verify, .*: ALL HELD$", out, re.M), out

    api_url = f"http://127.0.0.1:{env['INFERNO_API_PORT']}"
    out = bash(curl_block, cwd, {**env, "INFERNO_API_URL": api_url})
    health, resumed, cloned, stops = json_documents(out)
    assert health["status"] == "ok", health
    assert resumed["operation"] == "resume", resumed
    assert resumed["pipeline_id"] == 1, resumed
    assert cloned["status"] == "completed", cloned
    assert cloned["result"]["pipeline_id"] == 5, cloned
    (stop,) = stops["entries"]
    assert (stop["type"], stop["reason"], stop["ids"]["pipeline_id"]) == (
        "stop_pipeline",
        "diverging",
        1,
    ), stop

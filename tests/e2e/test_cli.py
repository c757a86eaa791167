"""The `inferno` CLI against a real local cluster, run as people run it (separate processes).

`inferno up --detach` starts nats-server, the api, a scheduler and 3 executors from a temp data
dir on free ports, with a bearer token; every later command finds the api through that dir's
up.json and sends the token from INFERNO_TOKEN.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inferno.client.launcher import STATE_FILE, is_running, read_state

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INFERNO = Path(sys.executable).parent / "inferno"
TOKEN = "e2e-cli-token"
EVIL = "ok\x1b[2J\x1b[31mFAKE\x1b]0;pwned\x07\nline2"


def inferno(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(INFERNO), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(env: dict[str, str], *args: str) -> str:
    result = inferno(env, *args)
    assert result.returncode == 0, f"inferno {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture
def cluster(tmp_path: Path, namespace: str) -> Iterator[dict[str, str]]:
    """Environment for `inferno` commands talking to a detached cluster; `down` at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env["INFERNO_DATA_DIR"] = str(tmp_path / "data")
    env["INFERNO_TOKEN"] = TOKEN
    started = time.monotonic()
    try:
        out = ok(
            env,
            "up",
            "--detach",
            "--executors",
            "3",
            "--api-port",
            "0",
            "--nats-port",
            "0",
            "--namespace",
            namespace,
        )
        assert "inferno is up" in out
        print(f"up --detach took {time.monotonic() - started:.1f}s")
        yield env
    finally:
        inferno(env, "down")


def slow_arith(tmp_path: Path) -> Path:
    """examples/arith.yaml with ~1 s shards, so pipelines still run while the test steers."""
    spec = yaml.safe_load((EXAMPLES / "arith.yaml").read_text())
    spec["dataset"]["path"] = str(EXAMPLES / spec["dataset"]["path"])
    for pipeline in spec["pipelines"]:
        pipeline["model_config"]["latency_ms_per_row"] = 80
    path = tmp_path / "arith-slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def pipeline_rows(table: str) -> dict[str, list[str]]:
    """`ps` output → {name: cells}."""
    rows = [line.split() for line in table.strip().splitlines()[1:]]
    return {cells[1]: cells for cells in rows}


def test_up_run_steer_down(cluster: dict[str, str], tmp_path: Path) -> None:
    env = cluster
    state = read_state(Path(env["INFERNO_DATA_DIR"]))
    assert state is not None
    assert set(state["children"]) == {"nats", "api", "scheduler", "exec-1", "exec-2", "exec-3"}

    out = ok(env, "run", str(slow_arith(tmp_path)), "--wait", "10")
    assert re.search(r"^experiment  exp-\w+  \(arith\)$", out, re.M), out
    assert re.search(r"^ic_id       \d+  \(completed\)$", out, re.M), out
    assert re.search(r"^pipelines   1 small, 2 medium, 3 large$", out, re.M), out

    out = ok(env, "stop", "sma")
    assert re.fullmatch(r"stop pipeline 1 \(sma\): ic_id \d+ completed\n", out), out
    rows = pipeline_rows(ok(env, "ps"))
    assert set(rows) == {"small", "medium", "large"}
    assert rows["small"][3] == "stopped"
    out = ok(env, "resume", "smal")
    assert re.fullmatch(r"resume pipeline 1 \(smal\): ic_id \d+ completed\n", out), out

    failed = inferno(env, "resume", "small")  # it runs again, or has finished its last shards
    assert failed.returncode == 1
    assert re.search(r"cannot resume pipeline 1: it is (ongoing|completed)\b", failed.stderr)
    failed = inferno(env, "stop", "999")
    assert failed.returncode == 1
    assert failed.stderr == "inferno: error: stop pipeline 999: pipeline 999 not found (HTTP 404)\n"
    failed = inferno(env, "stop", "zzz")
    assert failed.returncode == 2
    assert "no pipeline id or name prefix matches 'zzz' (3 pipelines: 1 (small)" in failed.stderr

    watched = ok(env, "watch")  # returns once every pipeline has settled, the last table says so
    last = pipeline_rows("ID  NAME" + watched.rsplit("ID  NAME", 1)[1])
    assert {cells[3] for cells in last.values()} == {"completed"}, watched
    final = pipeline_rows(ok(env, "ps"))
    assert {name: cells[3:5] for name, cells in final.items()} == {
        name: ["completed", "8/8"] for name in ("small", "medium", "large")
    }

    # the refused resume (409) and stop of 999 (404) never reached the log
    ops = [line.split() for line in ok(env, "ops").strip().splitlines()[1:]]
    assert [(op[1], op[3]) for op in ops] == [
        ("create_experiment", "completed"),
        ("stop", "completed"),
        ("resume", "completed"),
    ]

    processes = [(p["pid"], p["start"]) for p in state["children"].values()]
    processes.append((state["pid"], state["start"]))
    ok(env, "down")
    assert not (Path(env["INFERNO_DATA_DIR"]) / STATE_FILE).exists()
    assert [pid for pid, start in processes if is_running(pid, start)] == []
    assert "no cluster running" in ok(env, "down")


def test_hostile_names_reach_no_terminal_raw(cluster: dict[str, str], tmp_path: Path) -> None:
    env = cluster
    names = [EVIL, "\u202eexe.txt", "n" * 256, *(f"p{i}" for i in range(30))]
    spec = {
        "experiment_name": f"evil{EVIL}",
        "num_shards": 1,
        "dataset": {"rows": [{"question": "1 + 1 = ?", "answer": "2"}]},
        "eval": {"prompt": "{question}", "scorers": [{"name": "exact_match", "target": "answer"}]},
        "pipelines": [
            {"pipeline_name": name, "pipeline_type": "sim", "model_config": {"model": "m"}}
            for name in names
        ],
    }
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(spec))
    printed = [ok(env, "run", str(path))]
    printed.append(ok(env, "watch", "--interval", "0.2"))
    table = ok(env, "ps")
    printed += [table, ok(env, "ops"), ok(env, "results", "--compare", "evil")]
    nomatch = inferno(env, "stop", "nomatch")
    printed.append(nomatch.stderr)
    for text in printed:
        assert not {"\x1b", "\x07", "\u202e"} & set(text), text
    assert len(table.splitlines()) == 1 + len(names)  # the newline in a name made no line
    assert max(len(line) for line in table.splitlines()) < 200
    assert " ok\\x1b[2J\\x1b[31mFAKE\\x1b]0;pwned\\x07\\n… " in table  # cut at 40
    assert nomatch.returncode == 2
    assert "(33 pipelines, e.g. 1 (ok\\x1b[2J" in nomatch.stderr
    assert len(nomatch.stderr) < 400


def test_a_missing_or_wrong_token_names_the_setting(cluster: dict[str, str]) -> None:
    anonymous = {k: v for k, v in cluster.items() if k != "INFERNO_TOKEN"}
    refused = inferno(anonymous, "ps")
    assert (refused.returncode, refused.stderr) == (
        1,
        "inferno: error: missing bearer token (HTTP 401);"
        " set INFERNO_TOKEN or pass --token with the api's token\n",
    )
    refused = inferno(anonymous, "ops", "--token", "wrong")
    assert refused.returncode == 1
    assert refused.stderr.startswith("inferno: error: invalid bearer token (HTTP 401); set INF")
    assert ok(anonymous, "executors", "--token", TOKEN).count("exec-") == 3


def test_demo_runs_on_the_cluster_api_names(cluster: dict[str, str]) -> None:
    api_url = read_state(Path(cluster["INFERNO_DATA_DIR"]))["api_url"]
    out = ok(cluster, "demo", "--api", api_url)
    assert f"running the story on the cluster at {api_url} (it stays up)" in out
    assert re.search(r"stopped the worst pipeline 1:small \(exact_match [\d.]+\)", out), out
    rows = pipeline_rows(ok(cluster, "ps"))  # still up, and holding the demo's pipelines
    assert rows["small"][3] == "stopped"
    assert rows["large-t07"][3:5] == ["completed", "8/8"]


def test_demo_runs_to_completion() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [str(INFERNO), "demo"], capture_output=True, text=True, timeout=120, cwd=EXAMPLES.parent
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert re.search(r"stopped the worst pipeline 1:small \(exact_match [\d.]+\)", out), out
    assert re.search(r"cloned the best pipeline 3:large .* as pipeline 4 \(large-t07\)", out), out
    table = out.split("\npipelines\n", 1)[1]
    rows = pipeline_rows(table.split("\n\n", 1)[0])
    assert rows["small"][3] == "stopped"
    assert rows["large-t07"][3:5] == ["completed", "8/8"]
    assert rows["large-t07"][-1] == "3"  # its parent
    print(f"demo took {time.monotonic() - started:.1f}s")


def foreground_up(tmp_path: Path, namespace: str) -> tuple[subprocess.Popen[str], dict]:
    """`inferno up` in the foreground; returns it and its up.json once the cluster is ready."""
    data_dir = tmp_path / "fg"
    proc = subprocess.Popen(
        [
            str(INFERNO),
            "--data-dir",
            str(data_dir),
            "up",
            "--api-port",
            "0",
            "--nats-port",
            "0",
            "--executors",
            "2",
            "--namespace",
            namespace,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while (state := read_state(data_dir)) is None:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no up.json after 30 s"
        time.sleep(0.1)
    return proc, state


def gone(state: dict, timeout: float = 10) -> list[str]:
    """Names of the recorded processes still alive after up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [n for n, p in state["children"].items() if is_running(p["pid"], p["start"])]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def test_ctrl_c_stops_everything(tmp_path: Path, namespace: str) -> None:
    proc, state = foreground_up(tmp_path, namespace)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert gone(state, timeout=0) == []
    assert not (tmp_path / "fg" / STATE_FILE).exists()
    # every child's lines came through with its prefix
    for name in ("nats", "api", "scheduler", "exec-1", "exec-2", "up"):
        assert re.search(rf"^{re.escape(name)} +\| ", out, re.M), (name, out)
    assert "up        | stopping" in out


def test_children_die_with_the_launcher(tmp_path: Path, namespace: str) -> None:
    proc, state = foreground_up(tmp_path, namespace)
    proc.kill()
    proc.communicate()
    assert gone(state) == []

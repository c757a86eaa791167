"""`inferno down`'s bookkeeping: up.json, recognising its processes, stopping them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from inferno.client import launcher


def sleeper(mark: Path | None = None, *, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    """A process that sleeps; on SIGTERM it writes "term" to `mark` and exits (or ignores it).
    `stop_detached` reaps processes it finds to be its own children, so tests look at the mark,
    not at exit codes."""
    code = "import pathlib, signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    elif mark:
        code += (
            f"def term(*_):\n    pathlib.Path({str(mark)!r}).write_text('term')\n    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, term)\n"
        )
    code += "print('ready', flush=True)\ntime.sleep(60)\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()  # the handler is in place
    return proc


def record(data_dir: Path, supervisor: int, **children: int) -> None:
    state = {
        "pid": supervisor,
        "start": launcher.proc_start(supervisor),
        "api_url": "http://127.0.0.1:1",
        "children": {n: {"pid": p, "start": launcher.proc_start(p)} for n, p in children.items()},
    }
    (data_dir / launcher.STATE_FILE).write_text(json.dumps(state))


def test_down_terminates_the_supervisor_and_kills_stragglers(tmp_path: Path) -> None:
    supervisor, stubborn = sleeper(tmp_path / "sup"), sleeper(ignore_term=True)
    record(tmp_path, supervisor.pid, api=stubborn.pid)
    assert launcher.stop_detached(tmp_path, timeout=1.0)
    assert (tmp_path / "sup").read_text() == "term"
    assert not launcher.is_running(stubborn.pid)  # SIGKILLed after the timeout
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_down_terminates_children_when_the_supervisor_is_gone(tmp_path: Path) -> None:
    supervisor, child = sleeper(), sleeper(tmp_path / "child")
    record(tmp_path, supervisor.pid, api=child.pid)
    supervisor.kill()
    supervisor.wait()
    assert launcher.stop_detached(tmp_path, timeout=5.0)
    assert (tmp_path / "child").read_text() == "term"
    assert not launcher.is_running(child.pid)


def test_down_with_nothing_running(tmp_path: Path) -> None:
    assert not launcher.stop_detached(tmp_path)
    proc = sleeper()
    record(tmp_path, proc.pid)
    proc.kill()
    proc.wait()
    assert not launcher.stop_detached(tmp_path)
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_a_reused_pid_is_not_ours(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        assert launcher.is_running(proc.pid, launcher.proc_start(proc.pid))
        assert not launcher.is_running(proc.pid, -1)
    finally:
        proc.kill()
        proc.wait()
    assert not launcher.is_running(proc.pid)


def test_a_live_cluster_claims_its_data_dir(tmp_path: Path) -> None:
    proc = sleeper()
    try:
        record(tmp_path, proc.pid)
        with pytest.raises(launcher.ClusterError, match=r"already running from .*inferno down"):
            launcher.claim_data_dir(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    launcher.claim_data_dir(tmp_path)  # a dead one's up.json is forgotten
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_cluster_children_are_the_services(tmp_path: Path) -> None:
    cluster = launcher.LocalCluster(tmp_path, executors=2, schedulers=2, namespace="ns")
    assert [c.name for c in cluster.children] == [
        "api",
        "scheduler-1",
        "scheduler-2",
        "exec-1",
        "exec-2",
    ]
    api, sched, _, exec1, _ = cluster.children
    assert api.argv[1:] == ["-m", "inferno.api"]
    assert sched.argv[1:] == ["-m", "inferno.scheduler", "--scheduler-id", "scheduler-1"]
    assert exec1.argv[1:] == ["-m", "inferno.executor"]
    assert exec1.env["INFERNO_EXECUTOR_ID"] == "exec-1"
    assert exec1.env["NATS_URL"] == cluster.nats_url
    assert exec1.env["INFERNO_NAMESPACE"] == "ns"
    assert exec1.env["INFERNO_API_PORT"] == str(cluster.api_port)


def test_a_stale_up_json_is_taken_over(tmp_path: Path) -> None:
    """A launcher killed with -9 leaves up.json behind, maybe with a child that outlived it: the
    next `up` stops that child and forgets the file instead of refusing the data dir."""
    supervisor, leftover = sleeper(), sleeper(tmp_path / "leftover")
    record(tmp_path, supervisor.pid, nats=leftover.pid)
    supervisor.kill()
    supervisor.wait()
    launcher.claim_data_dir(tmp_path)
    assert (tmp_path / "leftover").read_text() == "term"
    assert not launcher.is_running(leftover.pid)
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_an_unreadable_up_json_is_not_a_cluster(tmp_path: Path) -> None:
    (tmp_path / launcher.STATE_FILE).write_text('["not", "ours"]')
    assert launcher.read_state(tmp_path) is None
    launcher.claim_data_dir(tmp_path)
    assert not (tmp_path / launcher.STATE_FILE).exists()


def test_exit_text_names_the_signal() -> None:
    assert launcher.exit_text(-9) == "was killed by SIGKILL"
    assert launcher.exit_text(3) == "exited with code 3"
    assert launcher.exit_text(-200) == "was killed by signal 200"


def test_a_lease_counts_only_when_its_term_began_since_the_start() -> None:
    def readiness(leader: dict) -> dict:
        return {"status": "ready", "checks": {"leader": {"ok": True, **leader}}}

    assert launcher.leads_since(readiness({"since": 100.0, "term": 7}), began=100.0)
    assert not launcher.leads_since(readiness({"since": 99.5, "term": 6}), began=100.0)
    assert not launcher.leads_since(readiness({}), began=0.0)  # nobody holds it
    assert not launcher.leads_since({"status": "not ready"}, began=0.0)

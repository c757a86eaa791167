"""`inferno watch`, `run --watch` and `executors --watch` against a real detached cluster, as
people run them: piped (plain lines, one per change) and on a terminal (a pseudo-terminal the
test reads: the rich table's content, redrawn in place)."""

from __future__ import annotations

import fcntl
import itertools
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import INFERNO, inferno, ok, slow_arith
from tests.waiting import until_blocking

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One detached cluster (3 executors, a token) for the module's tests; `down` at the end."""
    root = tmp_path_factory.mktemp("watch")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERNO_", "NATS_"))}
    env |= {"INFERNO_DATA_DIR": str(root / "data"), "INFERNO_TOKEN": "e2e-watch-token"}
    namespace = f"w{os.getpid()}"
    try:
        ok(env, "up", "--detach", "--executors", "3", "--api-port", "0", "--nats-port", "0",
           "--namespace", namespace)  # fmt: skip
        yield env
    finally:
        inferno(env, "down")


class Output:
    """A child's output, read by a thread as it comes (from a pipe or a pty's master side)."""

    def __init__(self, fd: int) -> None:
        self.chunks: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:  # a pty's master reads EIO once the child side closed
                return
            if not data:
                return
            self.chunks.append(data.decode(errors="replace"))

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    def has(self, pattern: str) -> bool:
        return re.search(pattern, self.text, re.M) is not None


def start(env: dict[str, str], *args: str, tty: bool = False) -> tuple[subprocess.Popen, Output]:
    """`inferno ARGS` with stdout a pipe, or a 200x60 pseudo-terminal when `tty`."""
    if not tty:
        child = subprocess.Popen([str(INFERNO), *args], env=env, stdout=subprocess.PIPE)
        assert child.stdout is not None
        return child, Output(child.stdout.fileno())
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
    child = subprocess.Popen(
        [str(INFERNO), *args], env={**env, "TERM": "xterm-256color"}, stdout=slave, stderr=slave
    )
    os.close(slave)
    return child, Output(master)


def finished(child: subprocess.Popen, output: Output, what: str, timeout: float = 180) -> str:
    until_blocking(lambda: child.poll() is not None, what, timeout)
    output.thread.join(timeout=10)
    assert child.returncode == 0, output.text
    return output.text


def test_run_watch_prints_one_line_per_change_then_the_table(
    env: dict[str, str], tmp_path: Path
) -> None:
    child, output = start(env, "run", str(slow_arith(tmp_path)), "--watch")
    until_blocking(lambda: output.has(r"pipeline 1 \(small\) ongoing"), "small ongoing")
    ok(env, "stop", "small", "--reason", "diverging: below the others")
    until_blocking(lambda: output.has(r"pipeline 1 \(small\) stopped"), "the stop shown")
    ok(env, "resume", "small", "--reason", "false alarm")
    text = finished(child, output, "run --watch to return once all settled")

    lines = text.splitlines()
    stamp = r"^\d\d:\d\d:\d\d "
    assert re.search(stamp + r'operation \d+: stop pipeline 1 by .+ \("diverging: below the '
                     r'others"\): completed$', text, re.M), text  # fmt: skip
    assert re.search(stamp + r'operation \d+: resume pipeline 1 by .+ \("false alarm"\): '
                     r"completed$", text, re.M), text  # fmt: skip
    for pid, name in ((1, "small"), (2, "medium"), (3, "large")):
        mine = [line[9:] for line in lines if line[9:].startswith(f"pipeline {pid} ({name}) ")]
        assert all(a != b for a, b in itertools.pairwise(mine)), mine  # a line per change
        assert re.fullmatch(
            rf"pipeline {pid} \({name}\) completed 8/8 shards, exact_match \d\.\d{{3}} "
            r"\[\d\.\d{3}, \d\.\d{3}\], \d+\.\d rows/s",
            mine[-1],
        ), mine
        assert any(", ETA " in line for line in mine), mine
    assert "all settled:" in text
    table = text.rsplit("all settled:\n", 1)[1].splitlines()
    assert table[0].startswith("ID  NAME")
    assert [row.split()[3:5] for row in table[1:4]] == [["completed", "8/8"]] * 3
    assert "\x1b" not in text  # not a terminal: no escape sequences


def test_watch_on_a_terminal_draws_the_live_table(env: dict[str, str], tmp_path: Path) -> None:
    out = ok(env, "run", str(slow_arith(tmp_path)))
    experiment = re.search(r"^experiment  (exp-\w+)", out, re.M)
    small = re.search(r"^pipelines   (\d+) small", out, re.M)
    assert experiment is not None, out
    assert small is not None, out
    child, output = start(env, "watch", "--experiment", experiment[1], tty=True)
    until_blocking(lambda: output.has(r"ongoing"), "the table on the terminal")
    ok(env, "stop", small[1], "--reason", "tty check")
    text = finished(child, output, "watch to return once all settled")

    assert "\x1b[" in text  # drawn in place with escape sequences
    screen = ANSI.sub("", text)
    last = screen.rsplit(f"experiment {experiment[1]}", 1)[1]
    assert "(all settled)" in last, screen[-3000:]
    for header in ("PROGRESS", "SHARDS", "exact_match [interval]", "ROWS/S", "ETA", "PARENT"):
        assert header in last, last
    assert "━" in last  # the bars
    # as the log has it: stopped, or completed if every shard it had left was already running
    # or queued when the stop came (a stop lets those finish and count)
    listed = ok(env, "ps", "--experiment", experiment[1])
    final = re.search(rf"^\s*{small[1]}\s+small\s+sim\s+(\w+)", listed, re.M)
    assert final is not None, listed
    assert final[1] in ("stopped", "completed"), listed
    assert re.search(rf"│ small\s+│ {final[1]}\s+│", last), last
    for name in ("medium", "large"):
        assert re.search(rf"│ {name}\s+│ completed │ ━+ │ 8/8 ", last), last
    assert re.search(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", last), last
    assert "latest operations" in last
    assert "create_experiment" in last
    assert re.search(rf"stop pipeline {small[1]}\s+│ [^│]+│ tty check\s+│ completed", last), last
    ours = set(re.findall(r"(\d+) (?:small|medium|large)", out))
    assert set(re.findall(r"(?:stop|resume) pipeline (\d+)", last)) <= ours  # this experiment's


def test_executors_watch_is_live_until_ctrl_c(env: dict[str, str]) -> None:
    child, output = start(env, "executors", "--watch", "--interval", "0.5", tty=True)
    until_blocking(lambda: output.text.count("s ago") >= 6, "two redraws of 3 executors")
    child.send_signal(signal.SIGINT)
    until_blocking(lambda: child.poll() is not None, "executors --watch to end on Ctrl-C")
    assert child.returncode == 130
    screen = ANSI.sub("", output.text)
    for header in ("EXECUTOR", "SLOTS", "BUSY", "FREE", "MODELS", "HEARTBEAT"):
        assert header in screen
    assert {"exec-1", "exec-2", "exec-3"} <= set(re.findall(r"exec-\d", screen))
    assert "Traceback" not in screen

    child, output = start(env, "executors", "--watch", "--interval", "0.5")
    until_blocking(lambda: output.text.count("exec-") >= 3, "the executors, piped")
    child.send_signal(signal.SIGINT)
    until_blocking(lambda: child.poll() is not None, "piped executors --watch to end")
    assert child.returncode == 130
    assert output.text.splitlines()[1].startswith("EXECUTOR  SLOTS  BUSY")

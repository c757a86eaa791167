"""A whole Inferno cluster on one machine: the embedded nats-server, the api, scheduler(s) and
executors as child processes started the way people start them (`python -m inferno.<service>`).

Foreground (`inferno up`): each child's output is streamed line by line with a coloured, aligned
prefix (`api | ...`), and every child dies with the launcher (PR_SET_PDEATHSIG), so nothing
outlives a crash or a closed terminal. With a `log_dir` the output goes to `<log_dir>/<name>.log`
instead (the demo, detached clusters).

Detached (`inferno up --detach`): the launcher re-runs itself as a supervisor process in its own
session (`python -m inferno.client.launcher supervise ...`), which runs the foreground cluster
with log files. The CLI returns once the supervisor wrote `<data_dir>/up.json`; the cluster does
not die with the CLI, yet still dies with its supervisor. `stop_detached` (`inferno down`)
SIGTERMs the supervisor, which shuts the cluster down in order, and SIGKILLs whatever is left.

Supervision (`serve`): a process that dies (nats-server included) is reported in one line and
started again, the same way and on the same ports and data dir, after a delay that grows while it
keeps crashing at once (`restarts.Backoff`); after too many such crashes the launcher gives up on
it and says so. The rest keeps running meanwhile: services reconnect to a restarted nats-server.
A launcher killed with its cluster leaves an up.json whose processes are gone; the next `up` from
that data dir takes it over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any, Self, TextIO

import httpx

from inferno.client.embedded import EmbeddedNats, NatsServerError, die_with_parent_hook, free_port
from inferno.client.restarts import Backoff, after_crash
from inferno.client.terminal import printable

STATE_FILE = "up.json"
_COLORS = ("36", "35", "33", "32", "34", "91", "96", "95", "93", "92")
_TAIL_LINES = 30
MAX_LINE = 4000
"""Characters of a child's log line shown (a traceback line or a long event stays readable)."""


class ClusterError(RuntimeError):
    """A child exited early or the cluster did not become ready; the message has log tails."""


def default_data_dir() -> Path:
    return Path(os.environ.get("INFERNO_DATA_DIR") or ".inferno")


@dataclass
class Run:
    """Supervision bookkeeping of one process: when its current run started, how many quick
    crashes came right before it, when it is due to start again (None while it runs)."""

    started_at: float = 0.0
    quick_crashes: int = 0
    restart_at: float | None = None
    gave_up: bool = False


def exit_text(returncode: int) -> str:
    """`exited with code 3`, or `was killed by SIGKILL` for a negative (signal) code."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-returncode).name}"
        return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    """One service process, with the last lines it wrote (for error messages)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: Path | None = None
    metrics_port: int = 0  # where a scheduler or executor serves /metrics (the api: on its own)
    process: subprocess.Popen[bytes] | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    reader: threading.Thread | None = None
    reported_exit: bool = False
    log_offset: int = 0  # where this run's output starts in `log_file` (it is appended to)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_lines(self) -> str:
        if self.log_file is not None:
            return _tail(self.log_file, self.log_offset)
        return "\n".join(self.tail)


class LocalCluster:
    """nats + api + `schedulers` schedulers + `executors` executors. Port 0 = a free port."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        api_port: int = 0,
        nats_port: int = 0,
        executors: int = 1,
        schedulers: int = 1,
        namespace: str = "inferno",
        sync_always: bool = True,
        log_dir: str | Path | None = None,
        out: TextIO | None = None,
        color: bool | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        if executors < 0 or schedulers < 1:
            raise ValueError("a cluster needs at least one scheduler and zero or more executors")
        self.data_dir = Path(data_dir)
        self.namespace = namespace
        self.api_port = api_port or free_port()
        self.nats = EmbeddedNats(self.data_dir / "nats", port=nats_port, sync_always=sync_always)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.out = out if out is not None else sys.stdout
        self.color = _wants_color(self.out) if color is None else color
        self._lock = threading.Lock()
        self.backoff = backoff or Backoff()
        scheduler_names = (
            ["scheduler"]
            if schedulers == 1
            else [f"scheduler-{i}" for i in range(1, schedulers + 1)]
        )
        self.children = [self._child("api", "api", [])]
        self.children += [
            self._child(name, "scheduler", ["--scheduler-id", name]) for name in scheduler_names
        ]
        self.children += [
            self._child(f"exec-{i}", "executor", [], INFERNO_EXECUTOR_ID=f"exec-{i}")
            for i in range(1, executors + 1)
        ]
        self._width = max(len(name) for name in ["nats", *(c.name for c in self.children)])
        self.runs = {name: Run() for name in ["nats", *(c.name for c in self.children)]}

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def nats_url(self) -> str:
        return self.nats.url

    @property
    def executor_count(self) -> int:
        return sum(c.name.startswith("exec-") for c in self.children)

    @property
    def metrics_urls(self) -> dict[str, str]:
        """name -> the /metrics URL of every service, for a scrape config."""
        urls = {"api": f"{self.api_url}/metrics"}
        urls.update(
            (c.name, f"http://127.0.0.1:{c.metrics_port}/metrics")
            for c in self.children
            if c.metrics_port
        )
        return urls

    def _child(self, name: str, service: str, args: list[str], **extra: str) -> Child:
        metrics_port = 0 if service == "api" else free_port()
        env = dict(os.environ)
        env.setdefault("INFERNO_LOG_FORMAT", "console")
        env.update(
            NATS_URL=self.nats.url,
            INFERNO_NAMESPACE=self.namespace,
            INFERNO_API_PORT=str(self.api_port),
            PYTHONUNBUFFERED="1",  # lines reach us as they are written
            INFERNO_METRICS_HOST="127.0.0.1",
            INFERNO_METRICS_PORT=str(metrics_port),
            **extra,
        )
        log_file = self.log_dir / f"{name}.log" if self.log_dir is not None else None
        argv = [sys.executable, "-m", f"inferno.{service}", *args]
        return Child(name, argv, env, log_file, metrics_port=metrics_port)

    # lifecycle
    def start(self, timeout: float = 60.0) -> Self:
        """Start nats, then every child at once, and wait until the api is ready and every
        executor has registered. On failure everything started is stopped again."""
        began = time.time()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.runs["nats"].started_at = time.monotonic()
            self.nats.start()
            self.say("nats", f"nats-server on {self.nats.url} (log: {self.nats.log_file})")
            for child in self.children:
                self._spawn(child)
            # readers start after every fork: a preexec_fn is unsafe while other threads run
            for child in self.children:
                self._read(child)
            self.wait_ready(timeout, began=began)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, child: Child) -> None:
        self.runs[child.name].started_at = time.monotonic()
        with contextlib.ExitStack() as stack:
            stdout: Any = subprocess.PIPE
            if child.log_file is not None:
                child.log_file.parent.mkdir(parents=True, exist_ok=True)
                stdout = stack.enter_context(child.log_file.open("ab"))
                child.log_offset = stdout.tell()
            child.process = subprocess.Popen(
                child.argv,
                env=child.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the launcher only, which stops us
                preexec_fn=die_with_parent_hook(),
            )

    def restart(self, child: Child) -> None:
        """Start a child that died again as it was first started (same argv, environment, ports
        and log): the supervisor's restart, and the tests' after a kill. Call it from the thread
        that started the cluster: the kernel ties a child's death signal to that thread."""
        assert not child.alive, f"{child.name} is running"
        child.reported_exit = False
        self._spawn(child)
        self._read(child)

    def _nats_tail(self) -> str:
        """The end of nats-server's log: its last lines say why it stopped, below a banner."""
        return "\n".join(self.nats.log_tail().splitlines()[-8:])

    def _read(self, child: Child) -> None:
        """Stream a piped child's output to `out` from a thread (log files need none)."""
        if child.process is not None and child.process.stdout is not None:
            child.reader = threading.Thread(
                target=self._pump,
                args=(child, child.process.stdout),
                name=f"log-{child.name}",
                daemon=True,
            )
            child.reader.start()

    def _pump(self, child: Child, stream: IO[bytes]) -> None:
        for raw in stream:
            # a child's line can quote a pipeline name: show it as the CLI shows any text
            line = printable(raw.decode(errors="replace").rstrip("\r\n"), MAX_LINE)
            child.tail.append(line)
            self.say(child.name, line)

    def say(self, name: str, line: str) -> None:
        """Write one line to `out` with `name`'s prefix."""
        prefix = f"{name:<{self._width}} |"
        if self.color:
            names = ["nats", *(c.name for c in self.children)]
            code = _COLORS[names.index(name) % len(_COLORS)] if name in names else "1"  # bold
            prefix = f"\033[{code}m{prefix}\033[0m"
        with self._lock:
            try:
                self.out.write(f"{prefix} {line}\n")
                self.out.flush()
            except (OSError, ValueError):  # closed or broken terminal: keep running
                pass

    def wait_ready(self, timeout: float = 60.0, *, began: float = 0.0) -> None:
        """Until /readyz passes on a lease taken at or after `began` (Unix time: a lease's
        `since` is its scheduler's clock, this machine's) and every executor has registered.
        A killed scheduler's lease stays for up to its TTL: ready on it, the api turned
        unready once it lapsed."""
        deadline = time.monotonic() + timeout
        waiting = "the api's /readyz"
        api = next(c for c in self.children if c.name == "api")
        token = api.env.get("INFERNO_TOKEN", "").strip()  # probes pass auth like any client
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(
            base_url=self.api_url, headers=headers, timeout=2.0, trust_env=False
        ) as http:
            while True:
                for child in self.children:
                    if not child.alive:
                        raise ClusterError(self._exited(child))
                suspect = "api"
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    ready = http.get("/readyz")
                    if ready.is_success and not leads_since(ready.json(), began):
                        waiting = "a lease taken since the start (the last leader's to lapse)"
                        suspect = "scheduler"
                    elif ready.is_success:
                        waiting, suspect = f"{self.executor_count} executors to register", "exec-"
                        if self._registered(http) >= self.executor_count:
                            return
                    else:  # the api says which check fails: the leader's is the schedulers'
                        body = ready.json()
                        waiting = f"the api's /readyz: {body.get('error')}"
                        suspect = "scheduler" if "leader" in body.get("failed", []) else "api"
                if time.monotonic() > deadline:
                    suspects = [c for c in self.children if c.name.startswith(suspect)]
                    tails = "\n".join(f"--- {c.name}:\n{c.last_lines()}" for c in suspects)
                    raise ClusterError(
                        f"cluster not ready after {timeout:.0f}s (waiting for {waiting})\n{tails}"
                    )
                time.sleep(0.1)

    @staticmethod
    def _registered(http: httpx.Client) -> int:
        body = http.get("/api/v1/executors").json()
        if isinstance(body, dict):
            body = body.get("executors", [])
        return len(body)

    def _exited(self, child: Child) -> str:
        code = child.process.returncode if child.process else None
        return f"{child.name} exited with code {code}; its last lines:\n{child.last_lines()}"

    def supervise(self) -> list[str]:
        """One round of supervision, called every fraction of a second from the thread that
        started the cluster (PR_SET_PDEATHSIG follows that thread): report each process that died
        since the last round and set when it starts again; start those that are due. Returns the
        lines to show. Raises `ClusterError` on giving up on nats or the api, without which
        nothing works; on giving up on another child the rest keeps running."""
        now = time.monotonic()
        messages = []
        procs = [("nats", self.nats.process, self._nats_tail, self.nats.spawn)]
        procs += [
            (c.name, c.process, c.last_lines, partial(self.restart, c)) for c in self.children
        ]
        for name, process, last_lines, start in procs:
            run = self.runs[name]
            if run.gave_up or process is None:
                continue
            if run.restart_at is not None:
                if now >= run.restart_at:
                    run.restart_at = None
                    run.started_at = now
                    start()
                    messages.append(f"{name} started again (pid {self.processes()[name]['pid']})")
                continue
            if process.poll() is None:
                continue
            ran_for = now - run.started_at
            verdict = after_crash(self.backoff, run.quick_crashes, ran_for)
            run.quick_crashes = verdict.quick_in_a_row
            died = f"{name} {exit_text(process.returncode)} after {ran_for:.1f}s"
            if verdict.delay_s is not None:
                run.restart_at = now + verdict.delay_s
                messages.append(f"{died}; restarting it in {verdict.delay_s:g}s")
                continue
            run.gave_up = True
            gave_up = (
                f"{died}; {verdict.quick_in_a_row} crashes in a row, each within"
                f" {self.backoff.quick_s:g}s of starting: giving up on it"
            )
            if name in ("nats", "api"):
                raise ClusterError(
                    f"{gave_up}; nothing works without it, so the cluster stops."
                    f" Its last lines:\n{last_lines()}"
                )
            messages.append(f"{gave_up}; the rest keeps running. Its last lines:\n{last_lines()}")
        return messages

    def check(self) -> list[str]:
        """Messages for children that exited since the last call; raises `ClusterError` when
        nats or the api is gone (nothing works without them). Schedulers and executors may die
        (crash tests kill them); the rest keeps running."""
        if not self.nats.running:
            raise ClusterError(f"nats-server exited\n{self.nats.log_tail()}")
        messages = []
        for child in self.children:
            if child.alive or child.reported_exit or child.process is None:
                continue
            child.reported_exit = True
            if child.name == "api":
                raise ClusterError(self._exited(child))
            messages.append(f"{child.name} exited with code {child.process.returncode}")
        return messages

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM executors, schedulers and the api (in that order), wait, SIGKILL stragglers,
        then stop nats. Safe to call repeatedly."""
        order = [c for c in self.children if c.name.startswith("exec-")]
        order += [c for c in self.children if c.name.startswith("scheduler")]
        order += [c for c in self.children if c.name == "api"]
        for child in order:
            if child.alive:
                assert child.process is not None
                child.process.terminate()
        deadline = time.monotonic() + timeout
        for child in order:
            if child.process is None:
                continue
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.say(child.name, f"still running after {timeout:.0f}s: killed")
                child.process.kill()
                child.process.wait()
        for child in order:
            if child.reader is not None:
                child.reader.join(2.0)
        self.nats.stop()

    def processes(self) -> dict[str, dict[str, Any]]:
        """name -> {"pid", "start"} of every running process, for up.json."""
        procs = {"nats": self.nats.pid, **{c.name: c.pid for c in self.children}}
        return {n: {"pid": p, "start": proc_start(p)} for n, p in procs.items() if p is not None}

    def describe(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "start": proc_start(os.getpid()),
            "data_dir": str(self.data_dir.resolve()),
            "namespace": self.namespace,
            "api_url": self.api_url,
            "api_port": self.api_port,
            "nats_url": self.nats_url,
            "nats_port": self.nats.port,
            "executors": self.executor_count,
            "metrics": self.metrics_urls,
            "children": self.processes(),
            "logs": str(self.log_dir.resolve()) if self.log_dir else None,
        }

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _wants_color(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# running in the foreground until a signal
class _Shutdown(Exception):
    pass


def serve(cluster: LocalCluster, on_ready: Callable[[LocalCluster], None] | None = None) -> int:
    """Start `cluster`, record it in `<data_dir>/up.json`, supervise it until SIGINT/SIGTERM
    (up.json follows the restarts), stop it. Returns 0 after a requested shutdown, 1 after giving
    up on nats or the api; a cluster that does not start raises `ClusterError` (or
    `NatsServerError`) after stopping what had started."""

    def shutdown(_signum: int, _frame: object) -> None:
        raise _Shutdown

    # SIGINT too: a shell starts background jobs with it ignored, which Python would inherit
    previous = {sig: signal.signal(sig, shutdown) for sig in (signal.SIGTERM, signal.SIGINT)}
    state_file = cluster.data_dir / STATE_FILE
    try:
        claim_data_dir(cluster.data_dir)
        try:
            cluster.start()  # stops what it started when it fails or is interrupted
        except _Shutdown:
            return 0
        try:
            write_state(state_file, cluster.describe())
            if on_ready:
                on_ready(cluster)
            while True:
                time.sleep(0.2)
                if messages := cluster.supervise():
                    for message in messages:
                        cluster.say("up", message)
                    write_state(state_file, cluster.describe())
        except _Shutdown:
            cluster.say("up", "stopping")
            return 0
        except ClusterError as error:
            cluster.say("up", f"error: {error}")
            return 1
        finally:
            for sig in previous:  # a second Ctrl-C or SIGTERM must not cut stop() short
                signal.signal(sig, signal.SIG_IGN)
            cluster.stop()
            remove_state(state_file)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# up.json and processes we did not start ourselves
def proc_start(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), which tells a pid reused later apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def is_running(pid: int, start: int | None = None) -> bool:
    """Whether `pid` is a live (not zombie) process, the same one as recorded when `start` is."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True  # not Linux: trust kill(0)
    if state == "Z":
        return False
    return start is None or proc_start(pid) == start


def read_state(data_dir: Path) -> dict[str, Any] | None:
    """`<data_dir>/up.json`, or None when there is none (or it is not one we wrote)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("pid"), int) else None


def write_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


def remove_state(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def claim_data_dir(data_dir: Path) -> None:
    """Refuse a data dir a live cluster runs from. Take over from a dead one (its launcher
    crashed or was killed): stop whatever it recorded that still runs, forget its up.json."""
    state = read_state(data_dir)
    if state and is_running(state["pid"], state.get("start")):
        raise ClusterError(
            f"a cluster is already running from {data_dir} (pid {state['pid']}, api"
            f" {state.get('api_url')}); stop it with `inferno down` first"
        )
    if state:
        stop_detached(data_dir, timeout=5.0)  # its leftovers hold the ports and the store
    remove_state(data_dir / STATE_FILE)


def start_detached(data_dir: Path, timeout: float = 90.0, **options: Any) -> dict[str, Any]:
    """Run `serve` for a `LocalCluster(data_dir, log_dir=data_dir/logs, **options)` in a
    supervisor process of its own session; return its up.json once it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    claim_data_dir(data_dir)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    config = json.dumps({"data_dir": str(data_dir.resolve()), **options})
    with (logs / "up.log").open("ab") as log:
        offset = log.tell()
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "inferno.client.launcher", "supervise", config],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the CLI and its terminal
        )
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(data_dir)
        if state and state.get("pid") == supervisor.pid:
            return state
        if supervisor.poll() is not None:
            raise ClusterError(f"the cluster did not start:\n{_tail(logs / 'up.log', offset)}")
        if time.monotonic() > deadline:
            stop_detached(data_dir, pid=supervisor.pid)
            tail = _tail(logs / "up.log", offset)
            raise ClusterError(f"cluster not ready after {timeout:.0f}s:\n{tail}")
        time.sleep(0.1)


def stop_detached(data_dir: Path, timeout: float = 20.0, pid: int | None = None) -> bool:
    """Stop the cluster recorded in `<data_dir>/up.json` (or the supervisor `pid`): SIGTERM the
    supervisor, which stops its children in order (if it is gone, SIGTERM the children), wait,
    then SIGKILL anything recorded that is still alive. False when nothing was running."""
    state = read_state(data_dir) or {}
    supervisor = (state["pid"], state.get("start")) if state else (pid, None)
    children = [(c["pid"], c.get("start")) for c in state.get("children", {}).values()]
    alive = [(p, s) for p, s in [supervisor, *children] if p is not None and is_running(p, s)]
    if not alive:
        remove_state(data_dir / STATE_FILE)
        return False
    targets = alive[:1] if supervisor in alive else alive  # alive lists the supervisor first
    for p, _ in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(is_running(p, s) for p, s in alive) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p, s in alive:
        if is_running(p, s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5.0  # SIGKILL is not instant either
    while any(is_running(p, s) for p, s in alive) and time.monotonic() < deadline:
        time.sleep(0.05)
    remove_state(data_dir / STATE_FILE)
    return True


def leads_since(readiness: dict[str, Any], began: float) -> bool:
    """Whether a /readyz body's leader took the lease at or after `began` (Unix time)."""
    since = readiness.get("checks", {}).get("leader", {}).get("since")
    return isinstance(since, int | float) and since >= began


def _tail(path: Path, offset: int = 0, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines written to `path` from `offset` on."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(offset, size - 8000))
            text = log.read().decode(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """`python -m inferno.client.launcher supervise '<json options>'`: the detached supervisor."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "supervise":
        print(
            "usage: python -m inferno.client.launcher supervise '<json options>'", file=sys.stderr
        )
        return 2
    options = json.loads(args[1])
    data_dir = Path(options.pop("data_dir"))
    try:  # children write their own logs; the supervisor's lines go to its stdout, up.log
        cluster = LocalCluster(data_dir, log_dir=data_dir / "logs", color=False, **options)
        return serve(cluster)
    except (ValueError, ClusterError, NatsServerError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())

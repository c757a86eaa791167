"""The embedded nats-server launcher against the real binary: start, durability settings,
restart with data kept, no orphans when the parent dies, and a 3-node cluster losing a node."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from inferno.client.embedded import (
    EmbeddedNats,
    NatsServerError,
    find_nats_server,
    free_port,
    port_in_use,
)
from inferno.events.names import Names


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_binary_comes_from_the_wheel() -> None:
    assert Path(find_nats_server()).name == "nats-server"


async def test_session_server_acks_a_jetstream_publish(js: JetStreamContext, names: Names) -> None:
    await js.add_stream(name=names.evt_stream, subjects=[names.evt_subjects])
    ack = await js.publish(names.pipeline_evt(1, "created"), b"{}")
    assert (ack.stream, ack.seq) == (names.evt_stream, 1)


def test_sync_always_is_configured_and_reported(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "always") as server:
        assert "sync_interval: always" in server.config_file.read_text()
        # v2.15.1 reports `sync_always: true`; `sync_interval` still shows the 2 min default.
        assert server.monitor("varz")["jetstream"]["config"]["sync_always"] is True
    with EmbeddedNats(tmp_path / "default", sync_always=False) as server:
        assert "sync_interval" not in server.config_file.read_text()
        assert not server.monitor("varz")["jetstream"]["config"].get("sync_always")


def test_stop_and_kill_are_idempotent(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path)
    server.stop()  # never started
    server.start()
    process = server.process
    assert process is not None
    assert server.running
    server.stop()
    server.stop()
    server.kill()
    assert process.returncode is not None
    assert not server.running


def test_early_exit_raises_with_the_log_tail(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "a") as first:
        clash = EmbeddedNats(tmp_path / "b", port=first.port)
        with pytest.raises(NatsServerError, match="address already in use"):
            clash.start(timeout=5)


def _plain_bind_fails(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_a_crashed_servers_time_wait_does_not_hold_its_port() -> None:
    """A server that closes its connections first (as a killed one does) leaves them in TIME_WAIT
    for a minute: a plain bind of its port fails, which made `inferno up` refuse the port after a
    crash, though nats-server and uvicorn (SO_REUSEADDR) can listen on it again at once."""
    port = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    assert port_in_use(port)
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server's side closes first: it is the one in TIME_WAIT
    assert client.recv(1) == b""
    client.close()
    server.close()
    assert _plain_bind_fails(port)  # what the old check saw
    assert not port_in_use(port)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from inferno.client.embedded import EmbeddedNats
        server = EmbeddedNats(Path(sys.argv[1])).start()
        print(server.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        server_pid = int(parent.stdout.readline())
        assert _alive(server_pid)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while _alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(server_pid):
        os.kill(server_pid, signal.SIGKILL)
        pytest.fail("nats-server outlived its parent")


async def test_restart_after_kill_keeps_data(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path).start()
    try:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        await js.publish("keep.one", b"acked before the crash")
        await nc.close()
        first_pid = server.pid
        server.kill()
        server.start()
        assert server.pid != first_pid
        nc = await nats.connect(server.url)
        msg = await nc.jetstream().get_msg("KEEP", 1)
        assert msg.data == b"acked before the crash"
        await nc.close()
    finally:
        server.stop()


_RETRYABLE = (NoStreamResponseError, ServiceUnavailableError, nats.errors.TimeoutError)


async def _publish_with_retry(
    js: JetStreamContext, subject: str, data: bytes, msg_id: str, within: float = 15.0
) -> int:
    """Publish until acked, always with the same Nats-Msg-Id, as services do (nats-notes.md)."""
    deadline = time.monotonic() + within
    while True:
        try:
            ack = await js.publish(subject, data, timeout=2, headers={"Nats-Msg-Id": msg_id})
        except _RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)
        else:
            return ack.seq


@pytest.mark.cluster
async def test_cluster_survives_losing_the_stream_leader(nats_cluster) -> None:
    nc = await nats.connect(
        servers=nats_cluster.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    js = nc.jetstream()
    try:
        await js.add_stream(StreamConfig(name="R3", subjects=["r3.>"], num_replicas=3))
        assert await _publish_with_retry(js, "r3.a", b"1", "a") == 1
        leader = (await js.stream_info("R3")).cluster.leader
        victim = next(i for i, n in enumerate(nats_cluster.nodes) if n.server_name == leader)
        nats_cluster.kill(victim)
        try:
            assert await _publish_with_retry(js, "r3.b", b"2", "b") == 2
            assert await _publish_with_retry(js, "r3.b", b"2", "b") == 2  # dedup across failover
        finally:
            nats_cluster.restart(victim)
        deadline = time.monotonic() + 10  # the restarted node catches up as a current replica
        while True:
            info = await js.stream_info("R3")
            peers = {p.name for p in info.cluster.replicas or [] if p.current}
            if peers | {info.cluster.leader} == {n.server_name for n in nats_cluster.nodes}:
                break
            assert time.monotonic() < deadline, f"replicas never current: {info.cluster}"
            await asyncio.sleep(0.1)
        assert info.state.messages == 2
        await js.delete_stream("R3")
    finally:
        await nc.close()


def test_free_ports_are_never_handed_out_twice() -> None:
    """A cluster asks for a port per child before any child binds one: the same port twice
    made an executor exit with "address already in use" in CI."""
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)

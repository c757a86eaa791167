"""The log on a 3-node cluster with R3 streams: appends go on through the loss of the stream
leader (DESIGN §1 "at scale"), each stored exactly once, and the node rejoins afterwards."""

from __future__ import annotations

import asyncio
import time

import pytest

from inferno.events.names import Names
from inferno.jetstream import Appender, Outgoing, connect, ensure_log, replay

pytestmark = pytest.mark.cluster


def _event(names: Names, i: int) -> Outgoing:
    return Outgoing(names.shard_evt(1, i, "completed"), str(i).encode(), f"shard-1-{i}")


async def _all_replicas_current(js, stream: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        cluster = (await js.stream_info(stream)).cluster
        if cluster.leader and all(p.current and not p.offline for p in cluster.replicas or []):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{stream} replicas not current: {cluster}")
        await asyncio.sleep(0.2)


async def test_appends_go_on_through_the_loss_of_the_stream_leader(nats_cluster, names):
    nc = await connect(nats_cluster.urls, name="cluster-test", reconnect_time_wait=0.2)
    js = nc.jetstream()
    try:
        # "created", or "exists" where a create timed out on the new cluster and was retried
        assert len(await ensure_log(js, names, replicas=3)) == 11  # 4 streams, 4 kv, 3 objects
        stream = names.evt_stream
        assert (await js.stream_info(stream)).config.num_replicas == 3
        appender = Appender(nc)

        last = 0
        for i in range(10):
            result = await appender.append(stream, [_event(names, i)], expected_last_seq=last)
            last = result.last_seq

        leader = (await js.stream_info(stream)).cluster.leader
        victim = [node.server_name for node in nats_cluster.nodes].index(leader)
        nats_cluster.kill(victim)
        try:
            for i in range(10, 40, 3):  # batches of 3 and the fence, through the election
                batch = [_event(names, j) for j in range(i, i + 3)]
                result = await appender.append(stream, batch, expected_last_seq=last, retry_for=30)
                assert (result.first_seq, result.duplicate) == (last + 1, False)
                last = result.last_seq
            assert (await js.stream_info(stream)).cluster.leader != leader
        finally:
            nats_cluster.restart(victim)  # from the loop thread: see EmbeddedNats on PDEATHSIG

        await _all_replicas_current(js, stream)
        seen: list[tuple[int, bytes]] = []
        await replay(js, stream, lambda data, seq: seen.append((seq, data)))
        assert seen == [(i + 1, str(i).encode()) for i in range(40)]
    finally:
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.removeprefix("KV_").removeprefix("OBJ_").startswith(f"{names.prefix}_"):
                await js.delete_stream(name)
        await nc.close()


async def _replayed(js, stream: str) -> tuple[int, list[int]]:
    """What `replay` returns, and the sequences it delivered."""
    seen: list[int] = []
    last = await replay(js, stream, lambda _data, seq: seen.append(seq))
    return last, seen


async def test_replay_delivers_the_whole_stream_from_every_node(nats_cluster, names):
    """A replay's new consumer may lead on another node than the one a client is connected to;
    until its interest reaches that node, a pull request gets 503 (no responders). That must not
    end the replay: every replay from every node delivers every message (it once returned
    nothing, one time in four, and a restarted api served an empty projection)."""
    writer = await connect(nats_cluster.urls, name="cluster-test", reconnect_time_wait=0.2)
    try:
        js = writer.jetstream()
        await ensure_log(js, names, replicas=3)
        for i in range(50):
            await js.publish(names.shard_evt(1, i, "completed"), str(i).encode())
        for node in nats_cluster.nodes:
            nc = await connect(node.url, name="cluster-test-reader")
            try:
                for _ in range(12):
                    assert await _replayed(nc.jetstream(), names.evt_stream) == (
                        50,
                        list(range(1, 51)),
                    ), node.server_name
            finally:
                await nc.close()
    finally:
        for info in await js.streams_info():
            name = info.config.name or ""
            if name.removeprefix("KV_").removeprefix("OBJ_").startswith(f"{names.prefix}_"):
                await js.delete_stream(name)
        await writer.close()

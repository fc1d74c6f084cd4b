"""The application on a Redis Cluster: a master is killed while clients listen on two uvicorn
processes and events are published through both; the cluster promotes its replica.

Every client ends with every changed key refetched (the checks of test_redis_faults_e2e.py's
`scenario`). Streams of the failed shard get a new epoch (the promoted replica is another Redis
process): their clients resync. Streams of the other shards keep their epoch. Publishing
resumes within a second of the promotion.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest
from processes import AppProcess, AppProcesses
from redis_server import redis_server_available
from redis_topology import ClusterTopology
from test_redis_faults_e2e import TIMINGS, epochs, outage_seen, scenario, streams_of

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

PREFIX = "e2e"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterTopology]:
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with ClusterTopology(tmp_path) as cluster:
        yield cluster


@pytest.fixture
def cluster_servers(
    cluster: ClusterTopology, app_processes: AppProcesses
) -> Iterator[tuple[AppProcess, AppProcess]]:
    env = {"LIVEUPDATES_BACKPLANE": cluster.backplane_url(prefix=PREFIX, **TIMINGS)}
    first, second = app_processes.start("apps.redis_app:app", env=env, count=2)
    yield first, second
    for server in (first, second):
        assert server.running, f"{server!r} died"
        assert "Traceback" not in server.logs(), f"{server!r} logged an exception"


def meta(stream: str) -> str:
    return "{" + PREFIX + ":" + stream + "}:meta"


async def test_a_master_killed_and_its_replica_promoted(
    cluster: ClusterTopology, cluster_servers: tuple[AppProcess, AppProcess]
) -> None:
    master = cluster.master_of(meta("topic:jobs"))
    async with (
        httpx.AsyncClient(timeout=10) as http,
        scenario(http, cluster_servers) as (publisher, clients),
    ):
        failing = {
            s for c in clients for s in streams_of(c) if cluster.master_of(meta(s)) is master
        }
        before = epochs(clients)
        killed = time.monotonic()
        cluster.kill9(master)
        await outage_seen(publisher, clients[-1], http)
        await anyio.to_thread.run_sync(cluster.wait_for_failover, master)
        promoted = time.monotonic()
        ok = list(publisher.ok)
        with anyio.fail_after(10):
            await publisher.wait_for(
                lambda: all(b > a for a, b in zip(ok, publisher.ok, strict=True))
            )
        resumed = time.monotonic() - promoted
        assert resumed < 1.0, f"publishing resumed {resumed:.2f} s after the promotion"
        print(f"failover {promoted - killed:.2f} s, publishing resumed {resumed:.2f} s after it")
    after = epochs(clients)
    assert "topic:jobs" in failing
    for client in clients:
        for stream in streams_of(client):
            if stream in failing:  # served by the promoted replica: a new epoch, a resync
                assert after[client.name][stream] != before[client.name][stream], (client, stream)
                assert client.refetched_since(stream, killed), (client, stream)
            else:  # the other shards kept their history: the same epoch
                assert after[client.name][stream] == before[client.name][stream], (client, stream)

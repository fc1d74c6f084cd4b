"""The application over Redis with Sentinel: the master is killed while clients listen on two
uvicorn processes and events are published through both; the sentinels promote the replica.

Every client ends with every changed key refetched (the checks of test_redis_faults_e2e.py's
`scenario`): the promoted replica is another Redis process, so every stream gets a new epoch
and clients resync; and publishing resumes within a second of the promotion.
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
from redis_topology import SentinelTopology
from test_redis_faults_e2e import TIMINGS, epochs, outage_seen, scenario, streams_of

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with SentinelTopology(tmp_path) as topology:
        yield topology


@pytest.fixture
def sentinel_servers(
    topology: SentinelTopology, app_processes: AppProcesses
) -> Iterator[tuple[AppProcess, AppProcess]]:
    env = {"LIVEUPDATES_BACKPLANE": topology.backplane_url(prefix="e2e", **TIMINGS)}
    first, second = app_processes.start("apps.redis_app:app", env=env, count=2)
    yield first, second
    for server in (first, second):
        assert server.running, f"{server!r} died"
        assert "Traceback" not in server.logs(), f"{server!r} logged an exception"


async def test_master_killed_and_replica_promoted(
    topology: SentinelTopology,
    sentinel_servers: tuple[AppProcess, AppProcess],
) -> None:
    async with (
        httpx.AsyncClient(timeout=10) as http,
        scenario(http, sentinel_servers) as (publisher, clients),
    ):
        before = epochs(clients)
        killed = time.monotonic()
        topology.master.kill9()
        await outage_seen(publisher, clients[-1], http)
        await anyio.to_thread.run_sync(topology.wait_for_failover)
        promoted = time.monotonic()
        ok = list(publisher.ok)
        with anyio.fail_after(10):
            await publisher.wait_for(
                lambda: all(b > a for a, b in zip(ok, publisher.ok, strict=True))
            )
        resumed = time.monotonic() - promoted
        failover = promoted - killed
        assert resumed < 1.0, f"publishing resumed {resumed:.2f} s after the promotion"
        print(f"failover {failover:.2f} s, publishing resumed {resumed:.2f} s after it")
    after = epochs(clients)
    for client in clients:
        for stream in streams_of(client):
            assert after[client.name][stream] != before[client.name][stream], (client, stream)
            assert client.refetched_since(stream, killed), (client, stream)  # resynced

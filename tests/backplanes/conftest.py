"""Fixtures of the backplane tests: backplane factories over every backplane.

The redis-server fixtures (`redis_server`, `own_redis_server`, `redis_prefix`) are in
tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis_server import RedisServer, redis_server_available
from redis_topology import ClusterTopology, SentinelTopology

from liveupdates.backplanes.base import Backplane
from liveupdates.backplanes.memory import MemoryBackplane
from liveupdates.testing import BackplaneFactory

BACKPLANE_CASES = (
    pytest.param(("memory", "asyncio"), id="memory-asyncio"),
    pytest.param(("memory", "trio"), id="memory-trio"),
    pytest.param(("redis", "asyncio"), id="redis-asyncio", marks=pytest.mark.redis),
    pytest.param(("redis-sentinel", "asyncio"), id="sentinel-asyncio", marks=pytest.mark.redis),
    pytest.param(("redis-cluster", "asyncio"), id="cluster-asyncio", marks=pytest.mark.redis),
)


@pytest.fixture(scope="session")
def sentinel_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    """A master, a replica and three sentinels shared by the session (do not kill them)."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with SentinelTopology(tmp_path_factory.mktemp("sentinel")) as topology:
        yield topology


@pytest.fixture(scope="session")
def cluster_topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """A Redis Cluster (three masters, a replica each) shared by the session (do not kill or
    reshard it)."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with ClusterTopology(tmp_path_factory.mktemp("cluster")) as topology:
        yield topology


@pytest.fixture(params=BACKPLANE_CASES)
def backplane_case(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(backplane, event loop): memory on asyncio and trio, redis (standalone, through
    Sentinel, and on a Redis Cluster) on asyncio only.

    A test module using it sets ``anyio_backend`` from it (see test_conformance.py).
    """
    case: tuple[str, str] = request.param
    return case


@pytest.fixture
def backplane_factory(
    backplane_case: tuple[str, str], request: pytest.FixtureRequest
) -> BackplaneFactory:
    """A conformance-kit factory for the backplane of `backplane_case`."""
    if backplane_case[0] == "memory":
        return BackplaneFactory(MemoryBackplane)
    from liveupdates.backplanes.redis import RedisBackplane

    prefix = request.getfixturevalue("redis_prefix")
    if backplane_case[0] == "redis-sentinel":
        topology: SentinelTopology = request.getfixturevalue("sentinel_topology")
        base = topology.backplane_url(prefix=prefix, timeout=2)
    elif backplane_case[0] == "redis-cluster":
        cluster: ClusterTopology = request.getfixturevalue("cluster_topology")
        base = cluster.backplane_url(prefix=prefix, timeout=2)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        base = f"{server.url}?prefix={prefix}&timeout=2"

    def make(*, history_size: int, history_ttl: float) -> Backplane:
        url = f"{base}&history_size={history_size}&history_ttl={history_ttl}"
        return RedisBackplane.from_url(url)

    return BackplaneFactory(make, shared_store=True)

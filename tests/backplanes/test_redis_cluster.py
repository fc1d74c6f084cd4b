"""The Redis backplane on a Redis Cluster (three masters, a replica each, started by the test
suite: tests/redis_topology.py): sharded pub/sub, streams on every shard, resharding and a
master's failover end in delivery or a resync, never silence.

Two backplanes on one cluster stand for two processes: each has its own connections.
"""

from __future__ import annotations

import shlex
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis_server import RedisServer, redis_server_available
from redis_topology import ClusterTopology

from liveupdates import Invalidate, Producer, Topic
from liveupdates.backplanes import backplane_from_url
from liveupdates.backplanes._redis_errors import acl_rule
from liveupdates.backplanes.redis import RedisBackplane
from liveupdates.errors import BackplaneError, BackplaneUnavailable
from liveupdates.positions import Position, Publication
from liveupdates.testing import RecordingReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TIMINGS = {"health_check_interval": 0.1, "timeout": 0.5, "max_reconnect_delay": 0.2}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTopology]:
    """A cluster for the tests that leave it as they found it."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with ClusterTopology(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[ClusterTopology]:
    """A cluster for this test only, which it may kill nodes of or reshard."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    with ClusterTopology(tmp_path) as cluster:
        yield cluster


@asynccontextmanager
async def backplanes(
    url: str, count: int = 2
) -> AsyncIterator[list[tuple[RedisBackplane, RecordingReceiver]]]:
    async with AsyncExitStack() as stack:
        started = []
        for _ in range(count):
            backplane = backplane_from_url(url)
            assert isinstance(backplane, RedisBackplane)
            receiver = RecordingReceiver()
            await backplane.start(receiver)
            stack.push_async_callback(backplane.aclose)
            started.append((backplane, receiver))
        yield started


def streams_on_every_master(cluster: ClusterTopology, backplane: RedisBackplane) -> list[str]:
    """One stream per master (their keys hash to slots of three different masters)."""
    found: dict[int, str] = {}
    for i in range(1000):
        stream = f"topic:s{i}"
        found.setdefault(cluster.master_of(backplane.names(stream).meta).port, stream)
        if len(found) == len(cluster.masters()):
            return list(found.values())
    raise AssertionError("no stream for some master")


async def delivered(receiver: RecordingReceiver, stream: str, publication: Publication) -> None:
    with anyio.fail_after(10):
        await receiver.wait_for(lambda: publication in receiver.of(stream))


async def test_delivery_across_processes_on_every_shard_with_sharded_pubsub(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    url = shared_cluster.backplane_url(prefix=redis_prefix)
    before = {n.port: _spublishes(n.command("INFO", "commandstats")) for n in shared_cluster.nodes}
    async with backplanes(url) as [(one, _), (two, received)]:
        streams = streams_on_every_master(shared_cluster, one)
        for stream in streams:
            await two.listen(stream)
        published = {stream: await one.publish(stream, b"{}") for stream in streams}
        for stream, publication in published.items():
            await delivered(received, stream, publication)
            replay = await two.replay(stream, Position(publication.epoch, 0))
            assert replay.complete and replay.publications == [publication]
        assert (received.resets, two.reconnects) == (0, 0)
    # Each publication was SPUBLISHed once, by the master of its stream's slot only.
    for node in shared_cluster.nodes:
        calls = _spublishes(node.command("INFO", "commandstats")) - before[node.port]
        owned = [s for s in streams if shared_cluster.master_of(one.names(s).meta) is node]
        assert calls == len(owned), (node.port, calls, owned)


def _spublishes(stats: dict[str, Any]) -> int:
    return int(stats.get("cmdstat_spublish", {}).get("calls", 0))


async def test_a_redis_cluster_client(shared_cluster: ClusterTopology, redis_prefix: str) -> None:
    nodes = [ClusterNode("127.0.0.1", node.port) for node in shared_cluster.nodes]
    client = RedisCluster(startup_nodes=nodes)
    backplane = RedisBackplane(client, prefix=redis_prefix)
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        for stream in streams_on_every_master(shared_cluster, backplane):
            await backplane.listen(stream)
            publication = await backplane.publish(stream, b"{}")
            await delivered(receiver, stream, publication)
    finally:
        await backplane.aclose()
    assert await client.ping()  # the application's client: not closed
    await client.aclose()


async def test_a_producer_opens_no_sharded_pubsub_connection(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    """A `Producer` starts the backplane publish-only: on a cluster it keeps the connections
    of redis-py's cluster client that its scripts use (one per master, as its publishes here
    never overlap) and opens no ``SSUBSCRIBE`` connection (there was one more per master);
    its publishes reach a listening backplane on every shard."""
    name = "producer-" + redis_prefix
    url = shared_cluster.backplane_url(prefix=redis_prefix)
    async with backplanes(url, count=1) as [(listener, received)]:
        streams = streams_on_every_master(shared_cluster, listener)
        for stream in streams:
            await listener.listen(stream)
        # No PING (it could overlap a publish and open a second connection to a master).
        quiet = shared_cluster.backplane_url(
            prefix=redis_prefix, client_name=name, health_check_interval=0
        )
        async with Producer(quiet) as producer:
            for stream in streams:
                to = Topic(stream.removeprefix("topic:"))
                (publication,) = await producer.publish(Invalidate(["jobs"]), to=to)
                await delivered(received, stream, publication)
            named = {node.port: _clients(node, name) for node in shared_cluster.nodes}
        masters = {node.port for node in shared_cluster.masters()}
        for port, entries in named.items():
            assert not any(_is_pubsub(entry) for entry in entries), (port, entries)
            # (redis-py's cluster client keeps the connection that asked a startup node for
            # the topology, on whichever node answered first: not counted.)
            used = [entry for entry in entries if entry["cmd"] != "cluster|slots"]
            assert len(used) == (1 if port in masters else 0), (port, entries)
        # (The listener's sharded pub/sub connections, one per master, are there.)
        for node in shared_cluster.masters():
            assert any(int(entry["ssub"]) for entry in _clients(node, "")), node.port


async def test_a_producer_on_a_cluster_pings_the_connections_its_scripts_use(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    """Publish-only on a cluster there is no pub/sub connection to PING: the watchdog PINGs
    every master through the cluster client, so on the connections that run the scripts, and
    nothing mistakes that for a lost link."""
    name = "producer-" + redis_prefix
    url = shared_cluster.backplane_url(prefix=redis_prefix, client_name=name, **TIMINGS)
    backplane = backplane_from_url(url)
    assert isinstance(backplane, RedisBackplane)
    async with Producer(backplane) as producer:
        streams = streams_on_every_master(shared_cluster, backplane)
        for stream in streams:
            await producer.publish(Invalidate(["jobs"]), to=Topic(stream.removeprefix("topic:")))
        masters = shared_cluster.masters()

        def pinged() -> bool:  # every connection that ran a script has run a PING since
            used = [
                [e["cmd"] for e in _clients(master, name) if e["cmd"] != "cluster|slots"]
                for master in masters
            ]
            return all(commands and set(commands) == {"ping"} for commands in used)

        with anyio.fail_after(10):
            while not pinged():  # noqa: ASYNC110 - what redis-server sees: poll it
                await anyio.sleep(0.01)
        for stream in streams:
            (again,) = await producer.publish(
                Invalidate(["jobs"]), to=Topic(stream.removeprefix("topic:"))
            )
            assert again.offset == 2
        assert backplane.connected and backplane.reconnects == 0
        entries = [e for node in shared_cluster.nodes for e in _clients(node, name)]
        assert not any(_is_pubsub(e) for e in entries), entries


def _clients(node: RedisServer, name: str) -> list[dict[str, str]]:
    with redis.Redis(port=node.port, socket_timeout=2) as client:
        listed: list[dict[str, str]] = client.client_list()
    return [entry for entry in listed if entry["name"] == name]


def _is_pubsub(entry: dict[str, str]) -> bool:
    return int(entry["sub"]) + int(entry["psub"]) + int(entry["ssub"]) > 0


async def test_a_cluster_node_given_as_one_server_says_to_use_the_cluster_url(
    shared_cluster: ClusterTopology,
) -> None:
    """It used to start, then lose publishes to MOVED and close handshakes with 1013."""
    backplane = RedisBackplane.from_url(shared_cluster.nodes[0].url)
    with anyio.fail_after(10), pytest.raises(Exception, match="redis\\+cluster://"):
        await backplane.start(RecordingReceiver())


async def test_resharding_a_listened_stream_ends_in_delivery_or_a_resync(
    own_cluster: ClusterTopology,
) -> None:
    url = own_cluster.backplane_url(prefix="r", **TIMINGS)
    async with backplanes(url) as [(one, _), (two, received)]:
        moved, kept = streams_on_every_master(own_cluster, one)[:2]
        for stream in (moved, kept):
            await two.listen(stream)
        first = {s: await one.publish(s, b"{}") for s in (moved, kept)}
        for stream, publication in first.items():
            await delivered(received, stream, publication)
        slot = int(own_cluster.nodes[0].command("CLUSTER", "KEYSLOT", one.names(moved).meta))
        target = own_cluster.master_of(one.names(kept).meta)
        own_cluster.move_slot(slot, target)
        with anyio.fail_after(10):
            await received.wait_for(lambda: received.resets >= 1)  # the shard unsubscribed it
        after = await _publish_until_accepted(one, moved)
        with anyio.fail_after(10):  # (`two` may still be subscribing: then `reset` follows)
            while after not in received.of(moved) and received.resets < 2:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        # The keys moved with their slot to a Redis process that did not write them: a new
        # epoch, so clients resync rather than trust offsets the old master assigned.
        assert after.epoch != first[moved].epoch
        assert not (await two.replay(moved, first[moved].position)).complete
        again = await one.publish(kept, b"{}")
        await delivered(received, kept, again)
        assert (await two.replay(kept, first[kept].position)).publications == [again]


async def test_a_master_killed_and_its_replica_promoted(own_cluster: ClusterTopology) -> None:
    url = own_cluster.backplane_url(prefix="f", **TIMINGS)
    async with backplanes(url) as [(one, _), (two, received)]:
        failing, other = streams_on_every_master(own_cluster, one)[:2]
        for stream in (failing, other):
            await two.listen(stream)
        first = {s: await one.publish(s, b"{}") for s in (failing, other)}
        for stream, publication in first.items():
            await delivered(received, stream, publication)
        master = own_cluster.master_of(one.names(failing).meta)
        own_cluster.kill9(master)
        await anyio.to_thread.run_sync(own_cluster.wait_for_failover, master)
        promoted = anyio.current_time()
        after = await _publish_until_accepted(one, failing)
        resumed = anyio.current_time() - promoted
        # The listening process reconnected (perhaps after `after`: then it may have missed
        # it live) and reset its receiver, so its hub reads the history: not complete, since
        # the replica is another Redis process and started a new epoch. So: a resync.
        with anyio.fail_after(10):
            await received.wait_for(lambda: received.resets >= 1)
        assert after.epoch != first[failing].epoch
        assert not (await two.replay(failing, first[failing].position)).complete
        live = await one.publish(failing, b"{}")
        await delivered(received, failing, live)
        assert (await two.replay(failing, after.position)).publications == [live]
        again = await one.publish(other, b"{}")  # the other shards kept their history
        await delivered(received, other, again)
        assert (await two.replay(other, first[other].position)).publications == [again]
        assert resumed < 1.0, f"publishing resumed {resumed:.2f} s after the promotion"


async def _publish_until_accepted(backplane: RedisBackplane, stream: str) -> Publication:
    with anyio.fail_after(15):
        while True:
            try:
                return await backplane.publish(stream, b"{}")
            except BackplaneUnavailable:
                await anyio.sleep(0.01)  # reconnecting with the new topology


async def test_the_documented_minimal_acl_rule_is_enough_on_a_cluster(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    user = "lu" + redis_prefix
    rule = acl_rule(redis_prefix, cluster=True, user=user).replace(">password", ">s3cret")
    for node in shared_cluster.nodes:  # ACL users are per node
        node.command(*shlex.split(rule))
    hosts = ",".join(f"127.0.0.1:{node.port}" for node in shared_cluster.nodes)
    url = f"redis+cluster://{user}:s3cret@{hosts}/?prefix={redis_prefix}"
    async with backplanes(url) as [(one, _), (two, received)]:
        for stream in streams_on_every_master(shared_cluster, one):
            await two.listen(stream)
            publication = await one.publish(stream, b"{}")
            await delivered(received, stream, publication)
            replay = await two.replay(stream, Position(publication.epoch, 0))
            assert replay.publications == [publication]


async def test_a_missing_acl_permission_on_a_cluster_names_it(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    user = "lu" + redis_prefix
    rule = acl_rule(redis_prefix, cluster=True, user=user).replace(">password", ">s3cret")
    for node in shared_cluster.nodes:
        node.command(*shlex.split(rule + " -spublish"))
    url = f"redis+cluster://{user}:s3cret@127.0.0.1:{shared_cluster.nodes[0].port}/"
    backplane = backplane_from_url(f"{url}?prefix={redis_prefix}")
    with anyio.fail_after(10), pytest.raises(BackplaneError) as caught:
        await backplane.start(RecordingReceiver())
    assert f"spublish {{{redis_prefix}:liveupdates-acl-check}}:ch" in str(caught.value)
    assert "+spublish +ssubscribe" in str(caught.value)  # the rule for a cluster


async def test_concurrent_publishes_each_get_their_own_position(
    shared_cluster: ClusterTopology, redis_prefix: str
) -> None:
    """Many publishes in flight at once, on streams of every shard (redis-py's cluster
    pipelines refuse EVALSHA: each runs on its own)."""
    url = shared_cluster.backplane_url(prefix=redis_prefix)
    async with backplanes(url, count=1) as [(backplane, _)]:
        streams = streams_on_every_master(shared_cluster, backplane)
        got: dict[str, list[Publication]] = {stream: [] for stream in streams}

        async def publish(stream: str) -> None:
            got[stream].append(await backplane.publish(stream, stream.encode()))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(40):
                    for stream in streams:
                        tg.start_soon(publish, stream)
        for stream, publications in got.items():
            assert sorted(p.offset for p in publications) == list(range(1, 41))
            assert {p.body for p in publications} == {stream.encode()}
            assert len({p.epoch for p in publications}) == 1


async def test_a_slot_caught_half_migrated_ends_in_delivery_or_a_resync(
    own_cluster: ClusterTopology,
) -> None:
    """While a slot migrates, a publish may find its two keys on two nodes (Redis answers
    TRYAGAIN, or ASK): it fails as `BackplaneUnavailable`, never silently, and once the slot
    has moved publishing works and listeners are reset (then resync: a new epoch)."""
    url = own_cluster.backplane_url(prefix="m", **TIMINGS)
    async with backplanes(url) as [(one, sent), (two, received)]:
        stream = "topic:m"
        await two.listen(stream)
        first = await one.publish(stream, b"{}")
        await delivered(received, stream, first)
        names = one.names(stream)
        node = own_cluster.nodes[0]
        slot = int(node.command("CLUSTER", "KEYSLOT", names.meta))
        source = own_cluster.master_of_slot(slot)
        target = next(m for m in own_cluster.masters() if m is not source)
        target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", own_cluster.node_id(source))
        source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", own_cluster.node_id(target))
        source.command("MIGRATE", "127.0.0.1", target.port, names.log, 0, 5000)
        with anyio.fail_after(10), pytest.raises(BackplaneUnavailable):
            await one.publish(stream, b"{}")  # meta here, log there
        with anyio.fail_after(10):
            await sent.wait_for(lambda: sent.resets >= 1)  # what failed is followed by a reset
        own_cluster.move_slot(slot, target)  # (the rest of the keys, then the slot)
        after = await _publish_until_accepted(one, stream)
        with anyio.fail_after(10):
            await received.wait_for(lambda: received.resets >= 1)
        assert after.epoch != first.epoch  # served by another Redis process now: resync
        assert not (await two.replay(stream, first.position)).complete
        live = await one.publish(stream, b"{}")
        await delivered(received, stream, live)

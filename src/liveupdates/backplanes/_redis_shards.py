"""Sharded pub/sub on a Redis Cluster: one `Subscriber` (``SSUBSCRIBE``) per master.

With sharded pub/sub (Redis >= 7.0) a message published with ``SPUBLISH`` reaches only the
shard that owns the channel's slot, so traffic grows with shards instead of reaching every
node. `Shards` opens one pub/sub connection to every master of the cluster (as redis-py's
``RedisCluster`` knows them when it connects), subscribes each channel on the master that
serves its slot, and behaves as one `Subscriber`: it is lost as soon as any of its connections
is, or when a master unsubscribes a channel by itself (its slot moved by resharding or
failover), or when a channel's slot belongs to a master it has no connection to. The backplane
then reconnects with the cluster's fresh topology and resets its receiver.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import suppress

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.cluster import RedisCluster

from ._redis_subscriber import Subscriber

__all__ = ("Shards",)


class Shards:
    """The sharded pub/sub connections of `cluster`; see the module docstring."""

    def __init__(self, cluster: RedisCluster, on_message: Callable[[bytes, bytes], None]) -> None:
        self._cluster = cluster
        self._on_message = on_message
        self._clients: dict[str, aioredis.Redis] = {}  # node name -> a client of that node
        self._shards: dict[str, Subscriber] = {}  # node name -> its pub/sub connection
        self._readers: list[asyncio.Task[None]] = []
        self._owners: dict[bytes, str] = {}  # channel -> node name
        self._failed = asyncio.Event()
        self.lost: str | None = None

    async def connect(self) -> None:
        """Connect to every master and start reading each connection."""
        for node in self._cluster.get_primaries():
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            client = aioredis.Redis.from_pool(pool)
            self._clients[node.name] = client
            shard = Subscriber(client, self._on_message, sharded=True)
            self._shards[node.name] = shard
            await shard.connect()
        loop = asyncio.get_running_loop()
        self._readers = [loop.create_task(self._read(s)) for s in self._shards.values()]

    async def run(self) -> None:
        """Until any connection is lost; then raise why."""
        await self._failed.wait()
        raise rx.ConnectionError(self.lost or "a shard's pub/sub connection was lost")

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """SSUBSCRIBE each channel on the master of its slot; returns once all confirmed."""
        self._check()
        by_node: dict[str, list[bytes]] = defaultdict(list)
        for channel in channels:
            node = self._cluster.get_node_from_key(channel.decode())
            if node is None or node.name not in self._shards:
                self.fail(f"the slot of {channel!r} is served by a master not connected to")
                self._check()
            assert node is not None
            by_node[node.name].append(channel)
        for name, group in by_node.items():
            for channel in group:
                self._owners[channel] = name
        await asyncio.gather(*(self._shards[name].subscribe(g) for name, g in by_node.items()))

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        self._check()
        by_node: dict[str, list[bytes]] = defaultdict(list)
        for channel in channels:
            name = self._owners.pop(channel, None)
            if name is not None:
                by_node[name].append(channel)
        for name, group in by_node.items():
            await self._shards[name].unsubscribe(group)

    async def ping(self) -> None:
        """PING every master's connection; returns once each answered."""
        self._check()
        await asyncio.gather(*(shard.ping() for shard in self._shards.values()))
        self._check()

    def fail(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        for shard in self._shards.values():
            shard.fail(reason)
        self._failed.set()

    async def close(self) -> None:
        self.fail("closed")
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for shard in self._shards.values():
            with suppress(rx.RedisError, OSError):
                await shard.close()
        for client in self._clients.values():
            with suppress(rx.RedisError, OSError):
                await client.aclose()

    async def _read(self, shard: Subscriber) -> None:
        try:
            await shard.run()
        except Exception as exc:
            self.fail(f"{type(exc).__name__}: {exc}")

    def _check(self) -> None:
        if self.lost is not None:
            raise rx.ConnectionError(f"the sharded pub/sub connections were lost: {self.lost}")

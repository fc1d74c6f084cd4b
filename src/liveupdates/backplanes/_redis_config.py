"""Redis backplane URLs: which client to build for standalone Redis and Sentinel.

- ``redis://[[user]:password@]host[:port][/db][?options]``, ``rediss://`` (TLS) and
  ``unix:///path/redis.sock[?db=N]``: one Redis server (also a managed one).
- ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?options]`` and
  ``rediss+sentinel://``: the master of `service`, found through the sentinels listed;
  ``sentinel_username`` and ``sentinel_password`` authenticate to the sentinels.
- ``redis+cluster://[[user]:password@]host:port[,host:port...][/][?options]`` and
  ``rediss+cluster://``: a Redis Cluster, found through any of the nodes listed.

The backplane's own options (`BACKPLANE_OPTIONS`) are taken out of the query; every other
option goes to redis-py (``ssl_ca_certs``, ``socket_keepalive``, ``max_connections``, ...).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

__all__ = ("BACKPLANE_OPTIONS", "SCHEMES", "client_from_url", "split_options", "undecoded")

BACKPLANE_OPTIONS: Final = frozenset(
    {"prefix", "history_size", "history_ttl", "health_check_interval", "timeout",
     "max_reconnect_delay"}
)  # fmt: skip
SCHEMES: Final = (
    "redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
    "rediss+cluster",
)  # fmt: skip
_SENTINEL_OPTIONS: Final = frozenset({"sentinel_username", "sentinel_password"})


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """`url` without the backplane's options, and those options."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {key: value for key, value in query if key in BACKPLANE_OPTIONS}
    rest = urlencode([(key, value) for key, value in query if key not in BACKPLANE_OPTIONS])
    return urlunsplit(parts._replace(query=rest)), ours


def _connection_options(timeout: float) -> dict[str, Any]:
    # Commands are bounded by `timeout` and never retried by redis-py: the backplane decides
    # (a failed publish raises, the hub resyncs its clients after the reconnection).
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
    }


def client_from_url(url: str, timeout: float) -> aioredis.Redis | RedisCluster:
    """A client for `url` (without backplane options); raises `ValueError` for a bad one."""
    parts = urlsplit(url)
    if parts.scheme.endswith("+sentinel"):
        return _sentinel_client(url, timeout)
    if parts.scheme.endswith("+cluster"):
        return _cluster_client(url, timeout)
    # A blocking pool waits for a connection rather than failing as if Redis were down.
    pool = aioredis.BlockingConnectionPool.from_url(
        url, timeout=timeout, **_connection_options(timeout)
    )
    client = aioredis.Redis.from_pool(pool)
    _probe(client)
    return client


def _sentinel_client(url: str, timeout: float) -> aioredis.Redis:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    path = [unquote(part) for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or not hosts:
        raise ValueError(
            "a Sentinel URL names the sentinels and the service: "
            "redis+sentinel://[user:password@]host:port[,host:port]/service[/db]"
        )
    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_options = {k.removeprefix("sentinel_"): v for k, v in query if k in _SENTINEL_OPTIONS}
    rest = urlencode([(k, v) for k, v in query if k not in _SENTINEL_OPTIONS])
    # redis-py parses the master's options (types, credentials, db) as for a redis:// URL.
    master_url = urlunsplit(
        ("redis", (userinfo + "@" if userinfo else "") + "sentinel", "/" + "/".join(path[1:]),
         rest, "")
    )  # fmt: skip
    master: dict[str, Any] = {**_connection_options(timeout), **parse_url(master_url)}
    for key in ("host", "port", "connection_class"):
        master.pop(key, None)
    if parts.scheme.startswith("rediss"):
        master["ssl"] = True
    master.pop("max_connections", None)  # (the Sentinel pool does not take it)
    addresses = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "26379")
        try:
            addresses.append((name.strip("[]"), int(port)))
        except ValueError:
            raise ValueError(f"invalid sentinel address {host!r}") from None
    make_sentinel: Any = Sentinel  # (untyped in redis-py)
    sentinel = make_sentinel(
        addresses,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **sentinel_options,
        },
        **master,
    )
    client: aioredis.Redis = sentinel.master_for(path[0])
    _probe(client)
    return client


def _cluster_client(url: str, timeout: float) -> RedisCluster:
    parts = urlsplit(url)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    nodes = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "6379")
        try:
            nodes.append((name.strip("[]"), int(port)))
        except ValueError:
            raise ValueError(f"invalid cluster node address {host!r}") from None
    if not nodes or parts.path.strip("/"):
        raise ValueError(
            "a Cluster URL names nodes, without a database: "
            "redis+cluster://[user:password@]host:port[,host:port][?options]"
        )
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    first = urlunsplit((scheme, (userinfo + "@" if userinfo else "") + hosts.split(",")[0],
                        "", parts.query, ""))  # fmt: skip
    make: Any = RedisCluster.from_url  # (untyped in redis-py)
    try:
        client: RedisCluster = make(
            first,
            startup_nodes=[ClusterNode(host, port) for host, port in nodes[1:]],
            **{**_connection_options(timeout), "retry": Retry(NoBackoff(), 0)},
        )
    except TypeError as exc:
        raise ValueError(f"unknown redis+cluster:// option: {exc}") from None
    return client


def _probe(client: aioredis.Redis) -> None:
    """Unknown options fail here rather than when connecting."""
    try:
        make: Any = client.connection_pool.make_connection  # (untyped in redis-py)
        make()
    except TypeError as exc:
        raise ValueError(f"unknown redis:// option: {exc}") from None


def undecoded(client: aioredis.Redis) -> tuple[aioredis.Redis, bool]:
    """`client`, or one like it with ``decode_responses=False`` (and whether it is new).

    The backplane's values are msgpack: they must reach it as bytes.
    """
    pool = client.connection_pool
    if not pool.connection_kwargs.get("decode_responses"):
        return client, False
    kwargs = {**pool.connection_kwargs, "decode_responses": False}
    if isinstance(pool, SentinelConnectionPool):
        make_pool: Any = SentinelConnectionPool  # (untyped in redis-py)
        raw: aioredis.ConnectionPool = make_pool(pool.service_name, pool.sentinel_manager, **kwargs)
    else:
        raw = type(pool)(
            connection_class=pool.connection_class, max_connections=pool.max_connections, **kwargs
        )
    return aioredis.Redis.from_pool(raw), True

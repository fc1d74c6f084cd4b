"""The Redis backplane (``redis://``): hubs in many processes and machines share streams.

Needs the ``[redis]`` extra (redis-py; ``[hiredis]`` adds its C parser) and Redis >= 6.2 (Lua,
Streams, pub/sub). redis-py's client is asyncio-only, so this backplane runs on asyncio only
(the memory one also runs on trio).

Per stream, with the prefix ``lu`` and the stream ``topic:jobs``, three names share one hash tag,
so they live in one Redis Cluster slot:

- ``{lu:topic:jobs}:meta``, a hash: ``epoch``, ``offset`` and ``server`` (the ``run_id`` of the
  Redis process that last wrote it);
- ``{lu:topic:jobs}:log``, a Redis Stream: the history, one entry per publication, with the
  fields ``o`` (offset) and ``p`` (msgpack of body, slot and ts), trimmed to about
  `history_size` entries and to `history_ttl` seconds;
- ``{lu:topic:jobs}:ch``, the pub/sub channel that carries each msgpack-encoded `Publication`.

One Lua script publishes: it assigns the next offset, appends to the log, trims it, sets both
keys to expire after `history_ttl` and PUBLISHes, atomically (`_redis_scripts`). The script
starts a new epoch (Redis ``TIME`` plus a random suffix) when the meta hash is missing (never
used, expired, evicted, or Redis restarted without persistence) or was written by another
Redis process (restored from an RDB/AOF file, or a replica promoted by failover): then
history, or its newest offsets, may have been lost. The log is emptied with it. A replay reads
the head and the newest entries in one script, and older entries in chunks (`REPLAY_CHUNK`),
each checked against the epoch, so that a long replay never holds the event loop.

Everything goes through redis-py's public API. Scripts run with ``EVALSHA``, pipelined on one
connection of redis-py's (`_redis_pipeline`); one ``PubSub`` connection is subscribed to every
listened stream and read by one task that fans each publication out as it is parsed
(`_redis_subscriber`). On a Redis Cluster (``redis+cluster://`` or a ``RedisCluster``
client), scripts go through redis-py's cluster client to the master of their slot
(`_redis_commands`), publications travel over sharded pub/sub (``SPUBLISH``), and there is one
``SSUBSCRIBE`` connection per master (`_redis_shards`). A watchdog PINGs the pub/sub
connections every `health_check_interval` seconds. When one is lost (or a slot moved), or a
command fails for want of Redis, the backplane reconnects with full-jitter exponential backoff
(a `publish` or `replay` that finds it down makes it try again at once, at most every
`_MIN_RETRY_SPACING` seconds), subscribes every stream again, then calls
`Receiver.reset` once. Meanwhile `publish` and `replay` raise `BackplaneUnavailable` at once.
Every command is bounded by `timeout` seconds; redis-py errors become `BackplaneError` or
`BackplaneUnavailable` with redis-py's message and a hint of what to do (`_redis_errors`).

A process that only publishes (a `Producer`) starts the backplane with `start_publishing`: it
opens no pub/sub connection (no ``SSUBSCRIBE`` connection on a cluster), and on one Redis it
closes the idle connection of redis-py's pool that the checks at start used, so its command
pipeline is its one connection to Redis. Its link is then `_redis_link.CommandLink`: the
watchdog PINGs through the command pipeline (on a cluster, every master through the cluster
client), and losing the pipeline or a PING is losing the link: the same reconnection and
`Receiver.reset` follow. `listen` raises `RuntimeError` (a programming error).
"""

from __future__ import annotations

try:
    import redis.asyncio as aioredis
    from redis import exceptions as rx
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.connection import AbstractConnection
except ModuleNotFoundError as exc:  # pragma: no cover - tested in a subprocess
    if exc.name != "redis" and not (exc.name or "").startswith("redis."):
        raise
    raise ModuleNotFoundError(
        "the Redis backplane needs redis-py: pip install 'liveupdates[redis]'", name=exc.name
    ) from exc

import asyncio
import enum
import logging
import math
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from typing import Any, Final, NamedTuple

import anyio
import msgspec

from ..errors import BackplaneError, BackplaneUnavailable, HubClosed
from ..positions import Position, Publication, Replay
from ._redis_commands import Commands, Script
from ._redis_config import client_from_url, split_options, undecoded
from ._redis_errors import REDIS_ERRORS, acl_rule, describe, to_backplane_error
from ._redis_link import CommandLink
from ._redis_pipeline import Pipeline, answered, bulk, bulks, pack
from ._redis_scripts import PERMISSIONS_LUA, PUBLISH_LUA, READ_LUA, REPLAY_LUA
from ._redis_shards import Shards
from ._redis_subscriber import Subscriber
from .base import Backplane, Receiver

__all__ = ("REPLAY_CHUNK", "RedisBackplane", "StreamNames")

_log = logging.getLogger(__name__)

REPLAY_CHUNK: Final = 64
"""History entries read per round trip by `replay` (bounds the work between two awaits)."""
_BACKOFF_BASE: Final = 0.05
_MIN_RETRY_SPACING: Final = 0.05  # seconds between reconnection attempts a publish asks for
_NAMES_CACHE: Final = 4096
# Errors of a cluster whose topology changed: reconnect with the new one, never a refusal.
_MOVING: Final = (
    rx.AskError,
    rx.TryAgainError,
    rx.ClusterDownError,
)  # streams whose names are kept
_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(tuple[bytes, str | None, float]).decode
_decode_publication = msgspec.msgpack.Decoder(Publication).decode

_PUBLISH: Final = Script.of(PUBLISH_LUA)
_REPLAY: Final = Script.of(REPLAY_LUA)
_READ: Final = Script.of(READ_LUA)
_PERMISSIONS: Final = Script.of(PERMISSIONS_LUA)


class StreamNames(NamedTuple):
    """The Redis names of one stream: meta hash, history log and pub/sub channel."""

    meta: str
    log: str
    channel: str


class _Stream(NamedTuple):
    """What a publish of one stream sends, prepared once."""

    keys: tuple[str, str]
    channel: str
    head: bytes  # the start of the pub/sub message: a Publication is an array of 6
    command: bytes  # the EVALSHA command packed up to the entry (not on a cluster)


class _State(enum.Enum):
    NEW = "not started"
    RUNNING = "running"
    CLOSED = "closed"


class RedisBackplane(Backplane):
    """Events, positions and history shared through Redis by hubs of many processes.

    `client` is a ``redis.asyncio.Redis`` (standalone, or ``Sentinel.master_for``) or a
    ``redis.asyncio.cluster.RedisCluster`` (with ``decode_responses=False``); it is closed by
    `aclose` only when `close_client` is true (as it is for `from_url`). A ``Redis`` client's
    ``decode_responses`` setting does not matter. History keeps the newest `history_size`
    events of a stream that are younger than `history_ttl` seconds; a stream idle for
    `history_ttl` is forgotten and gets a new epoch. Every command gives up after `timeout`
    seconds; the pub/sub connection (publish-only: the command connection) is PINGed every
    `health_check_interval` seconds (0 disables it); reconnection waits at most
    `max_reconnect_delay` seconds between attempts.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str = "lu",
        history_size: int = 1000,
        history_ttl: float = 600.0,
        health_check_interval: float = 1.0,
        timeout: float = 2.0,
        max_reconnect_delay: float = 5.0,
        close_client: bool = False,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be non-empty, without '{' or '}'")
        if history_size < 1 or history_ttl < 0.001:
            raise ValueError("history_size must be >= 1 and history_ttl >= 0.001")
        if health_check_interval < 0 or timeout <= 0 or max_reconnect_delay <= 0:
            raise ValueError("health_check_interval must be >= 0, timeouts and delays > 0")
        if not isinstance(client, aioredis.Redis | RedisCluster):
            raise TypeError(
                "RedisBackplane needs a redis.asyncio.Redis or RedisCluster client, not "
                f"{type(client).__name__} (for Sentinel: Sentinel(...).master_for(service))"
            )
        self._cluster = isinstance(client, RedisCluster)
        if self._cluster and client.get_encoder().decode_responses:
            raise ValueError("pass a RedisCluster with decode_responses=False")
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._ttl_ms = math.ceil(history_ttl * 1000)
        self._client = client
        self._close_client = close_client
        self._redis: Any
        if isinstance(client, RedisCluster):
            self._redis, self._close_redis = client, False
        else:
            self._redis, self._close_redis = undecoded(client)
        self._health_check_interval = health_check_interval
        self._timeout = timeout
        self._max_reconnect_delay = max_reconnect_delay
        self._commands = Commands(self._redis, timeout)
        self._state = _State.NEW
        self._publish_only = False  # started with `start_publishing`
        self._receiver: Receiver | None = None
        self._task: asyncio.Task[None] | None = None
        self._listened: dict[str, bytes] = {}  # stream -> channel
        self._streams: dict[bytes, str] = {}  # channel -> stream
        # The link, while connected: the pub/sub connection(s), or when publish-only the
        # `CommandLink` that stands for them.
        self._subscriber: Subscriber | Shards | CommandLink | None = None
        self._pipeline: Pipeline | None = None  # commands (not on a cluster), while connected
        self._open_pipeline: Pipeline | None = None  # until closed
        # The open pub/sub connection and its reader, until closed (`_subscriber` is None as
        # soon as the connection is found broken; this one stays until it is closed).
        self._open: tuple[Subscriber | Shards | CommandLink, asyncio.Task[None]] | None = None
        self._lost = asyncio.Event()  # set when the connection is found broken
        self._hurry = asyncio.Event()  # set when a caller found the connection down
        # A new epoch is Redis' TIME and this suffix (random, so that two processes starting
        # an epoch in the same microsecond on two Redis servers still differ).
        self._nonce = secrets.token_hex(2)
        publish = "SPUBLISH" if self._cluster else "PUBLISH"  # sharded pub/sub on a cluster
        self._publish_tail = (history_size, self._ttl_ms, self._nonce, publish)
        self._packed_tail = bulks(self._publish_tail)
        self._prepared: dict[str, _Stream] = {}
        self.reconnects = 0
        """How many times the link was lost and opened again (the pub/sub connection, or the
        command connection of a publish-only backplane)."""

    @classmethod
    def from_url(cls, url: str) -> RedisBackplane:
        """A backplane for a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``
        or ``redis+cluster://`` URL (see docs/scaling-out.md for every form).

        Options of the backplane: ``prefix``, ``history_size``, ``history_ttl``,
        ``health_check_interval``, ``timeout`` and ``max_reconnect_delay``. Every other query
        option goes to redis-py. The connect and socket timeouts are `timeout` and commands
        are not retried by redis-py.
        """
        rest, ours = split_options(url)
        try:
            options: dict[str, Any] = {
                "prefix": ours.get("prefix", "lu"),
                "history_size": int(ours.get("history_size", 1000)),
                "history_ttl": float(ours.get("history_ttl", 600.0)),
                "health_check_interval": float(ours.get("health_check_interval", 1.0)),
                "timeout": float(ours.get("timeout", 2.0)),
                "max_reconnect_delay": float(ours.get("max_reconnect_delay", 5.0)),
            }
        except ValueError as exc:
            raise ValueError(f"invalid redis:// backplane option: {exc}") from None
        if options["timeout"] <= 0:
            raise ValueError("health_check_interval must be >= 0, timeouts and delays > 0")
        client = client_from_url(rest, options["timeout"])
        return cls(client, close_client=True, **options)

    @property
    def connected(self) -> bool:
        """Whether the link is up (the pub/sub connection, or the command connection of a
        publish-only backplane): publish and replay are attempted."""
        return self._subscriber is not None

    def names(self, stream: str) -> StreamNames:
        """The Redis key and channel names of `stream` (one hash tag, one cluster slot)."""
        tag = "{" + self.prefix + ":" + stream + "}"
        return StreamNames(tag + ":meta", tag + ":log", tag + ":ch")

    async def start(self, receiver: Receiver) -> None:
        """Connect, check permissions and subscribe; raises `BackplaneUnavailable` if Redis
        cannot be reached and `BackplaneError` (saying what to do) if it refuses.

        Call it from asyncio (redis-py's client is asyncio-only). From then on the backplane
        keeps its pub/sub connection up by itself until `aclose`.
        """
        await self._start(receiver, publish_only=False)

    async def start_publishing(self, receiver: Receiver) -> None:
        """`start` for a process that publishes but never listens (a `Producer`).

        No pub/sub connection: on one Redis (or through Sentinel) the backplane holds one
        connection, its command pipeline, PINGed every `health_check_interval`; on a cluster,
        the connections of redis-py's cluster client that its scripts use, and no
        ``SSUBSCRIBE`` connection. Losing the link is followed by the same reconnection and
        `Receiver.reset` as after `start`. `listen` raises `RuntimeError`.
        """
        await self._start(receiver, publish_only=True)

    async def _start(self, receiver: Receiver, *, publish_only: bool) -> None:
        if self._state is _State.CLOSED:
            raise HubClosed("the backplane is closed")
        if self._state is _State.RUNNING:
            raise RuntimeError("the backplane is already started")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("RedisBackplane needs asyncio (redis.asyncio)") from None
        self._receiver = receiver
        self._publish_only = publish_only
        self._state = _State.RUNNING
        try:
            try:
                await self._commands.load(_PUBLISH, _REPLAY, _READ)
                await self._check_not_cluster()
                await self._check_permissions()
                await self._connect()
                if publish_only:
                    await self._release_idle()
            except REDIS_ERRORS as exc:
                raise to_backplane_error(
                    exc, "connect", self.prefix, cluster=self._cluster
                ) from exc
        except BaseException:
            await self.aclose()
            raise
        self._task = loop.create_task(self._supervise(), name="liveupdates-redis-backplane")

    async def aclose(self) -> None:
        """Stop the pub/sub connection, and close the client if this backplane owns it."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        task, self._task = self._task, None
        with anyio.CancelScope(shield=True):
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=self._timeout * 2)
            await self._disconnect("the backplane is closed")
            with anyio.move_on_after(self._timeout):
                if self._close_redis:
                    await self._redis.aclose()
                if self._close_client:
                    await self._client.aclose()
                    # from_url's Sentinel: its connections to the sentinels too
                    pool = getattr(self._client, "connection_pool", None)
                    manager = getattr(pool, "sentinel_manager", None)
                    for sentinel in getattr(manager, "sentinels", ()):
                        await sentinel.aclose()

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        """Append to the stream's log and PUBLISH, atomically; see the module docstring.

        Raises `BackplaneUnavailable` at once while the pub/sub connection is down, or when
        Redis does not answer within `timeout`, and `BackplaneError` when Redis refuses.
        """
        self._check_usable()
        ts = time.time()
        entry = _encode(body) + _encode(slot) + _encode(ts)
        prepared = self._prepared.get(stream) or self._prepare(stream)
        if self._cluster:
            args = (prepared.channel, prepared.head, entry, *self._publish_tail)
            epoch, offset = await self._run(_PUBLISH, prepared.keys, args, "publish")
        else:  # the command packed once but for its entry
            command = prepared.command + bulk(entry) + self._packed_tail
            epoch, offset = await self._run_packed(_PUBLISH, command, "publish")
        return Publication(stream, _text(epoch), int(offset), bytes(body), slot, ts)

    def _prepare(self, stream: str) -> _Stream:
        names = self.names(stream)
        head = b"\x96" + _encode(stream)
        args = ("EVALSHA", _PUBLISH.sha, 2, names.meta, names.log, names.channel, head)
        command = b"*%d\r\n" % (len(args) + 5) + bulks(args)  # + the entry and the tail's 4
        prepared = _Stream((names.meta, names.log), names.channel, head, command)
        if len(self._prepared) >= _NAMES_CACHE:
            self._prepared.clear()
        self._prepared[stream] = prepared
        return prepared

    async def replay(self, stream: str, since: Position | None) -> Replay:
        """The stream's head and what follows `since`.

        Complete only when `since` is of the current epoch, not ahead of the head, and every
        publication after it is among the newest `history_size` ones, younger than
        `history_ttl`. Reading a stream keeps its epoch alive for another `history_ttl`.
        The newest entries come with the head; older ones `REPLAY_CHUNK` at a time, each
        chunk checked against the epoch, decoded before the next is read.
        """
        self._check_usable()
        asked = ("", 0) if since is None else (since.epoch, since.offset)
        names = self.names(stream)
        keys = (names.meta, names.log)
        args = (*asked, self.history_size, self._ttl_ms, self._nonce, REPLAY_CHUNK)
        epoch, offset, complete, horizon, entries = await self._run(_REPLAY, keys, args, "replay")
        head = Position(_text(epoch), int(offset))
        if since is None or not complete:
            return Replay(head, [], since is None)
        publications: list[Publication] = []  # newest first
        expected = head.offset
        horizon_ms = int(horizon)
        while expected > since.offset:
            for entry_id, fields in entries:
                if int(entry_id.split(b"-")[0]) < horizon_ms:
                    return Replay(head, [], False)  # older than history_ttl
                publication = _publication(stream, head.epoch, expected, fields)
                if publication is None:
                    _log.error("history of %r is not contiguous after %s", stream, since)
                    return Replay(head, [], False)
                publications.append(publication)
                expected -= 1
                if expected == since.offset:
                    break
            else:
                if len(entries) < REPLAY_CHUNK and expected > since.offset:
                    return Replay(head, [], False)  # trimmed meanwhile
                read_epoch, entries = await self._run(
                    _READ, keys, (entries[-1][0], REPLAY_CHUNK), "replay"
                )
                if read_epoch is None or _text(read_epoch) != head.epoch:
                    return Replay(head, [], False)  # a new epoch meanwhile
        publications.reverse()
        return Replay(head, publications, True)

    async def listen(self, stream: str) -> None:
        """SUBSCRIBE to the stream's channel; returns once Redis confirmed it.

        Never fails because of the connection: while it is down the stream is subscribed on
        reconnection, which is followed by `Receiver.reset`. Raises `BackplaneError` (naming
        the channel and the ACL rule) when Redis refuses the subscription. Raises
        `RuntimeError` on a backplane started with `start_publishing`.
        """
        if self._publish_only:
            raise RuntimeError(
                "this Redis backplane was started with start_publishing (as a Producer's): it "
                "has no pub/sub connection and cannot listen; start it with start() instead"
            )
        channel = self.names(stream).channel.encode()
        self._listened[stream] = channel
        self._streams[channel] = stream
        subscriber = self._subscriber
        if subscriber is None or self._state is not _State.RUNNING:
            return
        try:
            with anyio.fail_after(self._timeout):
                await subscriber.subscribe([channel])
        except _MOVING as exc:  # the slot moved: subscribe it where it is now
            self._link_lost(f"SUBSCRIBE failed: {describe(exc)}")
        except rx.ResponseError as exc:
            self._listened.pop(stream, None)
            self._streams.pop(channel, None)
            raise to_backplane_error(
                exc, f"SUBSCRIBE to {channel.decode()!r}", self.prefix, cluster=self._cluster
            ) from exc
        except Exception as exc:
            self._link_lost(f"SUBSCRIBE failed: {describe(exc)}")

    async def unlisten(self, stream: str) -> None:
        """UNSUBSCRIBE from the stream's channel; its late publications are dropped."""
        channel = self._listened.pop(stream, None)
        if channel is None:
            return
        self._streams.pop(channel, None)
        subscriber = self._subscriber
        if subscriber is not None:
            try:
                await subscriber.unsubscribe([channel])
            except Exception as exc:
                self._link_lost(f"UNSUBSCRIBE failed: {describe(exc)}")

    # Commands

    def _check_usable(self) -> None:
        if self._state is not _State.RUNNING:
            raise HubClosed(f"the backplane is {self._state.value}")
        if self._subscriber is None:
            self._hurry.set()  # try to reconnect now rather than after the backoff
            raise BackplaneUnavailable("the connection to Redis was lost; reconnecting")

    async def _run(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], action: str
    ) -> Any:
        """Run `script`; when Redis is unavailable, reconnect so that `reset()` follows."""
        try:
            if self._cluster:
                return await self._commands.run(script, keys, args)
            command = pack(("EVALSHA", script.sha, len(keys), *keys, *args))
            return await self._evalsha(script, command)
        except REDIS_ERRORS as exc:
            error = to_backplane_error(exc, action, self.prefix, cluster=self._cluster)
            if isinstance(error, BackplaneUnavailable):
                self._link_lost(f"a command failed: {error}")
            raise error from exc

    async def _run_packed(self, script: Script, command: bytes, action: str) -> Any:
        """`_run` of an EVALSHA command packed already (not on a cluster)."""
        try:
            return await self._evalsha(script, command)
        except REDIS_ERRORS as exc:
            error = to_backplane_error(exc, action, self.prefix)
            if isinstance(error, BackplaneUnavailable):
                self._link_lost(f"a command failed: {error}")
            raise error from exc

    async def _evalsha(self, script: Script, command: bytes) -> Any:
        pipeline = self._pipeline
        if pipeline is None:
            raise rx.ConnectionError("the connection to Redis was lost; reconnecting")
        try:
            return await pipeline.call_packed(command)
        except rx.NoScriptError:  # Redis restarted, or SCRIPT FLUSH
            await pipeline.call("SCRIPT", "LOAD", script.source)
            return await pipeline.call_packed(command)

    async def _check_permissions(self) -> None:
        """Fail at start, naming what to add, when the ACL user lacks a permission."""
        probe = self.names("liveupdates-acl-check")
        try:
            with anyio.fail_after(self._timeout):
                denied = await self._redis.eval(
                    PERMISSIONS_LUA, 2, probe.meta, probe.log, probe.channel,
                    "spublish" if self._cluster else "publish",
                    "ssubscribe" if self._cluster else "subscribe",
                )  # fmt: skip
        except rx.ResponseError as exc:
            if "acl_check_cmd" in str(exc):
                return  # Redis < 7.0: the first command refused will say it
            raise
        if denied:
            commands = ", ".join(_text(command) for command in denied)
            raise BackplaneError(
                f"the Redis ACL user may not run: {commands}. Give it at least: "
                + acl_rule(self.prefix, cluster=self._cluster)
                + " (docs: Scaling out, ACL)."
            )

    async def _check_not_cluster(self) -> None:
        """Refuse a node of a Redis Cluster given as one server (its keys live on other nodes
        too), saying which URL to use."""
        if self._cluster:
            return
        try:
            with anyio.fail_after(self._timeout):
                info = await self._redis.info("cluster")
        except rx.NoPermissionError:
            return  # (the permission check names INFO)
        if int(info.get("cluster_enabled", 0)):
            raise BackplaneError(
                "this Redis is a node of a Redis Cluster: use a redis+cluster:// URL "
                "(redis+cluster://host:port[,host:port]) or a RedisCluster client"
            )

    # The pub/sub connection

    async def _connect(self) -> None:
        """Open the pub/sub connection, subscribed to exactly the listened streams (when
        publish-only: only the command pipeline, and its `CommandLink`)."""
        subscriber: Subscriber | Shards | CommandLink
        pipeline = None
        if self._publish_only:
            if not self._cluster:
                pipeline = Pipeline(self._new_connection(), self._timeout, self._pipeline_lost)
            subscriber = self._command_link(pipeline)
        elif self._cluster:
            subscriber = Shards(self._redis, self._on_message)
        else:
            subscriber = Subscriber(self._redis, self._on_message)
            pipeline = Pipeline(self._new_connection(), self._timeout, self._pipeline_lost)
        try:
            with anyio.fail_after(self._timeout):
                await subscriber.connect()
                if pipeline is not None:
                    await pipeline.connect()
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                await subscriber.close()
                if pipeline is not None:
                    await pipeline.close()
            raise
        reader = asyncio.get_running_loop().create_task(subscriber.run())
        subscribed: set[bytes] = set()
        try:
            with anyio.fail_after(self._timeout):
                while True:  # until subscribed to exactly the listened streams
                    if missing := set(self._streams) - subscribed:
                        await self._subscribe_all(subscriber, sorted(missing))
                        subscribed |= missing
                    elif stale := subscribed - set(self._streams):
                        await subscriber.unsubscribe(sorted(stale))
                        subscribed -= stale
                    else:
                        break
            if pipeline is not None and pipeline.lost is not None:
                raise rx.ConnectionError(f"the connection to Redis was lost: {pipeline.lost}")
        except BaseException:
            reader.cancel()
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                await subscriber.close()
                if pipeline is not None:
                    await pipeline.close()
            raise
        # no await since the last check: listen() takes over from here
        self._subscriber, self._open = subscriber, (subscriber, reader)
        self._pipeline, self._open_pipeline = pipeline, pipeline
        self._lost = asyncio.Event()

    def _command_link(self, pipeline: Pipeline | None) -> CommandLink:
        """The link of a publish-only backplane: PINGs through `pipeline`, or on a cluster
        (no pipeline) to every master through redis-py's cluster client."""
        if pipeline is not None:
            call = pipeline.call
            return CommandLink(lambda: call("PING"))
        cluster = self._redis
        return CommandLink(
            lambda: cluster.ping(target_nodes=RedisCluster.PRIMARIES), check_at_connect=True
        )

    async def _release_idle(self) -> None:
        """Publish-only, not on a cluster: close the idle connections of redis-py's pool (the
        checks at start used one) and of the sentinels' clients (a Sentinel client asks them
        for the master), so that the command pipeline is the process's one connection. A pool
        opens a connection again if it is used."""
        if self._cluster:
            return
        pools = [self._redis.connection_pool]
        manager = getattr(pools[0], "sentinel_manager", None)
        pools += [sentinel.connection_pool for sentinel in getattr(manager, "sentinels", ())]
        for pool in pools:
            with anyio.move_on_after(self._timeout), suppress(rx.RedisError, OSError):
                await pool.disconnect(inuse_connections=False)

    def _new_connection(self) -> AbstractConnection:
        """A connection like the pool's, without a socket timeout (`Pipeline` bounds each
        command by `timeout` itself, and must not time out while it waits for commands)."""
        pool = self._redis.connection_pool
        options = {**pool.connection_kwargs, "socket_timeout": None}
        connection: AbstractConnection = pool.connection_class(**options)
        return connection

    def _pipeline_lost(self, reason: str) -> None:
        self._link_lost(f"the command connection failed: {reason}")

    async def _subscribe_all(
        self, subscriber: Subscriber | Shards | CommandLink, channels: list[bytes]
    ) -> None:
        try:
            await subscriber.subscribe(channels)
        except _MOVING:
            raise
        except rx.ResponseError:  # some channel refused: find which, drop it loudly
            for channel in channels:
                try:
                    await subscriber.subscribe([channel])
                except rx.ResponseError as exc:
                    stream = self._streams.pop(channel, None)
                    self._listened.pop(stream or "", None)
                    error = to_backplane_error(
                        exc, f"SUBSCRIBE to {channel!r}", self.prefix, cluster=self._cluster
                    )
                    _log.error("%s", error)

    async def _disconnect(self, reason: str) -> None:
        self._subscriber = None  # (so that closing the pipeline reports no loss)
        pipeline, self._open_pipeline, self._pipeline = self._open_pipeline, None, None
        if pipeline is not None:
            pipeline.fail(reason)
            with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                await pipeline.close()
        opened, self._open, self._subscriber = self._open, None, None
        if opened is not None:
            subscriber, reader = opened
            reader.cancel()
            subscriber.fail(reason)
            shielded = anyio.CancelScope(shield=True)
            with shielded, anyio.move_on_after(self._timeout), suppress(rx.RedisError, OSError):
                await subscriber.close()
                await asyncio.wait({reader}, timeout=self._timeout)

    async def _supervise(self) -> None:
        """Serve the connection; when it is lost, open another and reset the receiver."""
        while True:
            try:
                await self._serve()
            except Exception:
                _log.exception("the Redis pub/sub connection failed unexpectedly")
            await self._disconnect("the connection to Redis was lost")
            await self._reconnect()
            if self._publish_only:
                await self._release_idle()
            self.reconnects += 1
            _log.info("reconnected to Redis, %d streams subscribed", len(self._streams))
            try:
                if self._receiver is not None:
                    self._receiver.reset()
            except Exception:
                _log.exception("Receiver.reset failed")

    async def _serve(self) -> None:
        """Until the connection is lost: the reader reads, the watchdog PINGs."""
        assert self._open is not None
        (subscriber, reader), lost = self._open, self._lost
        waits: set[asyncio.Future[Any]] = {reader, asyncio.ensure_future(lost.wait())}
        if self._health_check_interval:
            waits.add(asyncio.ensure_future(self._watch(subscriber)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if reader.done() and not reader.cancelled() and (exc := reader.exception()):
            self._link_lost(_reason(exc))

    async def _reconnect(self) -> None:
        """Connect again, with full-jitter exponential backoff between attempts; a caller
        that found the connection down (`_hurry`) cuts the wait short."""
        loop = asyncio.get_running_loop()
        attempt, last = 0, -math.inf
        while True:
            ceiling = min(self._max_reconnect_delay, _BACKOFF_BASE * 2 ** min(attempt, 30))
            self._hurry.clear()
            with anyio.move_on_after(random.uniform(0, ceiling)):
                await self._hurry.wait()
            await anyio.sleep(max(0.0, last + _MIN_RETRY_SPACING - loop.time()))
            attempt += 1
            try:
                if self._cluster:  # the topology may have changed (failover, resharding)
                    await self._redis.nodes_manager.initialize()
                else:  # idle command connections may lead to the lost server: drop them
                    await self._redis.connection_pool.disconnect(inuse_connections=False)
                await self._connect()
                return
            except Exception as exc:
                _log.debug("reconnecting to Redis failed (attempt %d): %s", attempt, describe(exc))
                last = (
                    loop.time()
                )  # the next attempt starts at least the spacing after this one ended

    async def _watch(self, subscriber: Subscriber | Shards | CommandLink) -> None:
        """PING every `health_check_interval`; the link is lost if no reply comes in time (of
        Redis' silence, not of the process' lateness: `answered`)."""
        while True:
            await anyio.sleep(self._health_check_interval)
            try:
                await answered(subscriber.ping(), self._timeout)
            except Exception as exc:
                self._link_lost(f"no reply to PING within {self._timeout} s ({describe(exc)})")
                return

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel not in self._streams:
            return
        try:
            publication = _decode_publication(data)
        except msgspec.DecodeError:
            _log.error("dropped a message that is not a Publication on %r", channel)
            return
        if self._receiver is not None:
            try:
                self._receiver.deliver(publication)
            except Exception:
                _log.exception("Receiver.deliver failed")

    def _link_lost(self, reason: str) -> None:
        if self._subscriber is not None and not self._lost.is_set():
            link = "connection" if self._publish_only else "pub/sub connection"
            _log.warning("lost the Redis %s: %s", link, reason)
            self._subscriber = None  # publish and replay fail fast from now on
            self._pipeline = None
            self._lost.set()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, rx.InvalidResponse):
        return f"Redis sent what is not RESP2 or RESP3 ({describe(exc)})"
    return describe(exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _publication(stream: str, epoch: str, offset: int, fields: Any) -> Publication | None:
    """The publication of a log entry, or None if it is not the expected offset."""
    values: Iterator[Any] = iter(fields)
    entry: dict[Any, Any] = dict(zip(values, values, strict=True))
    if int(entry.get(b"o", -1)) != offset:
        return None
    body, slot, ts = _decode_entry(b"\x93" + entry[b"p"])
    return Publication(stream, epoch, offset, body, slot, ts)

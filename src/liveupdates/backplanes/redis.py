"""The Redis backplane (``redis://``): hubs in many processes and machines share streams.

Needs the ``[redis]`` extra (redis-py) and Redis >= 6.2 (Lua, Streams, pub/sub). redis-py's
client is asyncio-only, so this backplane runs on asyncio only (the memory one also runs on
trio). Its own tasks use anyio.

Per stream, with the prefix ``lu`` and the stream ``topic:jobs``, three names share one hash tag,
so they live in one Redis Cluster slot:

- ``{lu:topic:jobs}:meta``, a hash: ``epoch``, ``offset`` and ``server`` (the ``run_id`` of the
  Redis process that last wrote it);
- ``{lu:topic:jobs}:log``, a Redis Stream: the history, one entry per publication, with the
  fields ``o`` (offset) and ``p`` (msgpack of body, slot and ts), trimmed to about
  `history_size` entries and to `history_ttl` seconds;
- ``{lu:topic:jobs}:ch``, the pub/sub channel that carries each msgpack-encoded `Publication`.

One Lua script publishes: it assigns the next offset, appends to the log, trims it, sets both
keys to expire after `history_ttl` and PUBLISHes, atomically. The script starts a new epoch
(Redis ``TIME`` plus a random suffix) when the meta hash is missing (never used, expired,
evicted, or Redis restarted without persistence) or was written by another Redis process
(restored from an RDB/AOF file, or a replica promoted by failover): then history, or its newest
offsets, may have been lost. The log is emptied with it.

Live fan-out uses one pub/sub connection per backplane, subscribed to every listened stream. A
watchdog PINGs it every `health_check_interval` seconds. `publish` and `replay` run their
scripts on a second connection of the backplane's own, pipelined (`_redis_pipeline`): each
command is written at once and answered in order, without a pool, lock or timer per command.
redis-py opens both connections (every option of the URL applies); then the backplane reads
them itself, in the event loop's callbacks (`_redis_link`): a publication is fanned out in the
callback that read it.
Either connection lost is reopened, both together, with full-jitter exponential backoff, every
stream subscribed again, then `Receiver.reset` is called once. Meanwhile `publish` and `replay`
raise `BackplaneUnavailable` at once, and they (and `listen`) cut the backoff short: the next
attempt starts at once, but one at a time, and never sooner than `_MIN_SPACING` (50 ms) after
the previous one ended, however many calls fail. So publishing resumes as soon as Redis is
back, without a reconnection storm. Every command is bounded by `timeout` seconds; redis-py
errors become `BackplaneError` or `BackplaneUnavailable`. A command that fails for want of Redis
restarts both connections, so that every `BackplaneUnavailable` is followed by one
`Receiver.reset` once Redis is usable again.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import math
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import BackplaneError, BackplaneUnavailable, HubClosed
from ..positions import Position, Publication, Replay
from ._redis_link import Subscriber
from ._redis_pipeline import Pipeline
from ._redis_scripts import PUBLISH_LUA, REPLAY_LUA
from ._resp import bulk, bulks, pack
from .base import Backplane, Receiver

__all__ = ("RedisBackplane", "StreamNames")

_log = logging.getLogger(__name__)

_URL_OPTIONS: Final = frozenset(
    {"prefix", "history_size", "history_ttl", "health_check_interval", "timeout",
     "max_reconnect_delay"}
)  # fmt: skip
_Command = Callable[..., Awaitable[Any]]  # redis-py's untyped command methods
_BACKOFF_BASE: Final = 0.05
_MIN_SPACING: Final = 0.05  # seconds at least from the end of an attempt to the next one
_COMMAND_CACHE: Final = 4096  # streams whose publish command is kept packed
_encode = msgspec.msgpack.Encoder().encode
_decode_entry = msgspec.msgpack.Decoder(tuple[bytes, str | None, float]).decode
_decode_publication = msgspec.msgpack.Decoder(Publication).decode


class _Script(NamedTuple):
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> _Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


_PUBLISH: Final = _Script.of(PUBLISH_LUA)
_REPLAY: Final = _Script.of(REPLAY_LUA)


class StreamNames(NamedTuple):
    """The Redis names of one stream: meta hash, history log and pub/sub channel."""

    meta: str
    log: str
    channel: str


class _State(enum.Enum):
    NEW = "not started"
    RUNNING = "running"
    CLOSED = "closed"


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    """Map redis-py (and socket, and deadline) errors to `BackplaneError` at this boundary."""
    try:
        yield
    except (rx.ConnectionError, rx.TimeoutError, rx.ReadOnlyError, OSError) as exc:
        raise BackplaneUnavailable(f"Redis is unavailable ({action}): {exc!r}") from exc
    except rx.RedisError as exc:
        raise BackplaneError(f"Redis failed to {action}: {exc}") from exc


class RedisBackplane(Backplane):
    """Events, positions and history shared through Redis by hubs of many processes.

    `client` is a ``redis.asyncio.Redis`` (standalone or Sentinel); it is closed by `aclose`
    only when `close_client` is true (as it is for `from_url`). Its ``decode_responses``
    setting does not matter. History keeps the newest `history_size` events of a stream that
    are younger than `history_ttl` seconds; a stream idle for `history_ttl` is forgotten and
    gets a new epoch. Every command gives up after `timeout` seconds; the pub/sub connection is
    PINGed every `health_check_interval` seconds (0 disables it); reconnection waits at most
    `max_reconnect_delay` seconds between attempts.
    """

    def __init__(
        self,
        client: aioredis.Redis,
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
        self.prefix = prefix
        self.history_size = history_size
        self.history_ttl = history_ttl
        self._ttl_ms = math.ceil(history_ttl * 1000)
        self._client = client
        self._close_client = close_client
        self._health_check_interval = health_check_interval
        self._timeout = timeout
        self._max_reconnect_delay = max_reconnect_delay
        self._state = _State.NEW
        self._receiver: Receiver | None = None
        self._task: asyncio.Task[None] | None = None
        self._listened: dict[str, bytes] = {}  # stream -> channel
        self._streams: dict[bytes, str] = {}  # channel -> stream
        self._conn: Subscriber | None = None  # the pub/sub connection, while usable
        self._pipeline: Pipeline | None = None  # the commands' connection, with `_conn`
        self._lost: anyio.Event | None = None  # set when `_conn` is found broken
        self._hurried: anyio.Event | None = None  # set to cut the reconnection backoff short
        # A new epoch is Redis' TIME and this suffix (random, so that two processes starting
        # an epoch in the same microsecond on two Redis servers still differ).
        self._nonce = secrets.token_hex(2)
        self._publish_tail = bulks((history_size, self._ttl_ms, self._nonce))
        self._publish_heads: dict[str, bytes] = {}  # stream -> EVALSHA command up to the entry
        self.reconnects = 0
        """How many times the pub/sub connection was lost and opened again."""

    @classmethod
    def from_url(cls, url: str) -> RedisBackplane:
        """A backplane for ``redis://[[user]:password@]host[:port][/db][?options]``.

        Options of the backplane: ``prefix``, ``history_size``, ``history_ttl``,
        ``health_check_interval``, ``timeout`` and ``max_reconnect_delay``. Every other query
        option (``rediss://`` and ``unix://`` too) goes to redis-py's ``from_url``. By default
        the connect and socket timeouts are `timeout` and commands are not retried.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {key: value for key, value in query if key in _URL_OPTIONS}
        rest = urlencode([(key, value) for key, value in query if key not in _URL_OPTIONS])
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
        timeout = options["timeout"]
        # (The pool only loads the scripts at start; publish and replay are pipelined on a
        # connection of the backplane's own.) A blocking pool waits for a connection rather
        # than failing as if Redis were down.
        pool = aioredis.BlockingConnectionPool.from_url(
            urlunsplit(parts._replace(query=rest)),
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        client = aioredis.Redis.from_pool(pool)
        probe: Callable[[], object] = client.connection_pool.make_connection
        try:
            probe()  # unknown options fail here rather than when connecting
        except TypeError as exc:
            raise ValueError(f"unknown redis:// option: {exc}") from None
        return cls(client, close_client=True, **options)

    @property
    def connected(self) -> bool:
        """Whether the pub/sub connection is up (publish and replay are attempted)."""
        return self._conn is not None

    def names(self, stream: str) -> StreamNames:
        """The Redis key and channel names of `stream` (one hash tag, one cluster slot)."""
        tag = "{" + self.prefix + ":" + stream + "}"
        return StreamNames(tag + ":meta", tag + ":log", tag + ":ch")

    async def start(self, receiver: Receiver) -> None:
        """Connect and subscribe; raises `BackplaneUnavailable` if Redis cannot be reached.

        Call it from asyncio (redis-py's client is asyncio-only). From then on the backplane
        keeps its pub/sub connection up by itself until `aclose`.
        """
        if self._state is _State.CLOSED:
            raise HubClosed("the backplane is closed")
        if self._state is _State.RUNNING:
            raise RuntimeError("the backplane is already started")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("RedisBackplane needs asyncio (redis.asyncio)") from None
        self._receiver = receiver
        self._state = _State.RUNNING
        try:
            command: _Command = self._client.execute_command
            with _mapped("connect"), anyio.fail_after(self._timeout):
                for script in (_PUBLISH, _REPLAY):
                    await command("SCRIPT", "LOAD", script.source)
            with _mapped("connect"):
                conn = await self._connect()
        except BaseException:
            await self.aclose()
            raise
        self._task = loop.create_task(self._supervise(conn), name="liveupdates-redis-backplane")

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
            conn, pipeline, self._conn, self._pipeline = self._conn, self._pipeline, None, None
            if conn is not None:
                conn.fail("the backplane is closed")
                await self._hang_up(conn.conn)
            if pipeline is not None:
                pipeline.fail("the backplane is closed")
                await self._hang_up(pipeline.conn)
            if self._close_client:
                await self._client.aclose()

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        """Append to the stream's log and PUBLISH, atomically; see the module docstring.

        Raises `BackplaneUnavailable` at once while the pub/sub connection is down, or when
        Redis does not answer within `timeout`, and `BackplaneError` when Redis refuses.
        """
        self._check_usable()
        ts = time.time()
        entry = _encode(body) + _encode(slot) + _encode(ts)
        command = self._publish_heads.get(stream) or self._publish_head(stream)
        epoch, offset = await self._eval(_PUBLISH, command + bulk(entry) + self._publish_tail)
        return Publication(stream, epoch.decode(), int(offset), bytes(body), slot, ts)

    def _publish_head(self, stream: str) -> bytes:
        """The publish command of `stream` up to its entry: keys, channel, message head."""
        names = self.names(stream)
        head = b"\x96" + _encode(stream)  # Publication is an array of 6: stream, epoch, ...
        args = ("EVALSHA", _PUBLISH.sha, 2, names.meta, names.log, names.channel, head)
        command = b"*%d\r\n" % (len(args) + 4) + bulks(args)  # + entry and the tail's three
        if len(self._publish_heads) >= _COMMAND_CACHE:
            self._publish_heads.clear()
        self._publish_heads[stream] = command
        return command

    async def replay(self, stream: str, since: Position | None) -> Replay:
        """The stream's head and what follows `since`, read atomically by a Lua script.

        Complete only when `since` is of the current epoch, not ahead of the head, and every
        publication after it is among the newest `history_size` ones, younger than
        `history_ttl`. Reading a stream keeps its epoch alive for another `history_ttl`.
        """
        self._check_usable()
        asked = ("", 0) if since is None else (since.epoch, since.offset)
        names = self.names(stream)
        epoch, offset, complete, entries = await self._eval(
            _REPLAY,
            pack(("EVALSHA", _REPLAY.sha, 2, names.meta, names.log, *asked, self.history_size,
                  self._ttl_ms, self._nonce)),
        )  # fmt: skip
        head = Position(epoch.decode(), int(offset))
        if since is None or not complete:
            return Replay(head, [], since is None)
        publications = list(_entries(stream, head, since.offset, reversed(entries)))
        if len(publications) != head.offset - since.offset:
            _log.error("history of %r is not contiguous after %s", stream, since)
            return Replay(head, [], False)
        return Replay(head, publications, True)

    async def listen(self, stream: str) -> None:
        """SUBSCRIBE to the stream's channel; returns once Redis confirmed it.

        Never fails because of the connection: while it is down the stream is subscribed on
        reconnection, which is followed by `Receiver.reset`.
        """
        channel = self.names(stream).channel.encode()
        self._listened[stream] = channel
        self._streams[channel] = stream
        conn = self._conn
        if conn is None or self._state is not _State.RUNNING:
            self._hurry()
            return
        try:
            with anyio.fail_after(self._timeout):
                await conn.subscribe([channel])
        except Exception as exc:
            self._link_lost(conn, f"SUBSCRIBE failed: {exc!r}")

    async def unlisten(self, stream: str) -> None:
        """UNSUBSCRIBE from the stream's channel; its late publications are dropped."""
        channel = self._listened.pop(stream, None)
        if channel is None:
            return
        self._streams.pop(channel, None)
        if self._conn is not None:
            self._conn.command("UNSUBSCRIBE", channel)

    # Commands

    def _check_usable(self) -> None:
        if self._state is not _State.RUNNING:
            raise HubClosed(f"the backplane is {self._state.value}")
        if self._conn is None:
            self._hurry()
            raise BackplaneUnavailable("the connection to Redis was lost; reconnecting")

    def _hurry(self) -> None:
        """Someone needs Redis while the link is down: end the reconnection backoff now."""
        if self._hurried is not None:
            self._hurried.set()

    async def _eval(self, script: _Script, command: bytes) -> Any:
        """Run `command` (EVALSHA of `script`, packed); when Redis is unavailable, reconnect so
        that `reset()` follows."""
        pipeline, conn = self._pipeline, self._conn
        if pipeline is None or conn is None:
            self._hurry()
            raise BackplaneUnavailable("the connection to Redis was lost; reconnecting")
        try:
            with _mapped("run a script"):
                try:
                    return await pipeline.call_packed(command)
                except rx.NoScriptError:  # Redis restarted, or SCRIPT FLUSH
                    await pipeline.call("SCRIPT", "LOAD", script.source)
                    return await pipeline.call_packed(command)
        except BackplaneUnavailable as exc:  # (from the pipeline, or a read-only replica)
            self._link_lost(conn, f"a command failed: {exc}")
            raise

    # The connections

    def _new_connection(self) -> AbstractConnection:
        pool = self._client.connection_pool
        options = {
            **pool.connection_kwargs,
            "decode_responses": False,
            "protocol": 2,
            "socket_timeout": None,  # (redis-py only runs the handshake; the links read)
            "socket_connect_timeout": self._timeout,
            "health_check_interval": 0,
            "retry": Retry(NoBackoff(), 0),
            "retry_on_timeout": False,
            "retry_on_error": [],
        }
        if "maint_notifications_config" in options:  # redis-py >= 7: a RESP3-only feature
            options["maint_notifications_config"] = None
            options.pop("maint_notifications_pool_handler", None)
        connection: AbstractConnection = pool.connection_class(**options)
        return connection

    async def _connect(self) -> Subscriber:
        """A pub/sub link, subscribed to every listened stream, and with it the commands'
        pipeline. redis-py connects both (and runs its handshake); the links take over."""
        conn, commands = self._new_connection(), self._new_connection()

        def on_lost(reason: str) -> None:
            self._link_lost(link, reason)

        link = Subscriber(conn, on_lost, self._on_message)
        pipeline = Pipeline(commands, self._timeout, on_lost)
        connects: list[_Command] = [conn.connect, commands.connect]
        subscribed: set[bytes] = set()
        try:
            with anyio.fail_after(self._timeout):
                for connect in connects:
                    await connect()
                link.take_over()
                pipeline.take_over()
                while True:  # until subscribed to exactly the listened streams
                    if missing := set(self._streams) - subscribed:
                        await link.subscribe(sorted(missing))
                        subscribed |= missing
                    elif stale := subscribed - set(self._streams):
                        link.command("UNSUBSCRIBE", *stale)
                        subscribed -= stale
                    else:
                        break
            if link.lost or pipeline.lost:
                raise BackplaneUnavailable(f"Redis is unavailable: {link.lost or pipeline.lost}")
        except BaseException:
            link.fail("connecting failed")
            pipeline.fail("connecting failed")
            await self._hang_up(conn)
            await self._hang_up(commands)
            raise
        # no await since the last check: listen() takes over from here
        self._conn, self._pipeline, self._lost = link, pipeline, anyio.Event()
        return link

    async def _supervise(self, conn: Subscriber) -> None:
        """Serve the connection; when it is lost, open another and reset the receiver."""
        while True:
            try:
                await self._serve(conn)
            except Exception:
                _log.exception("the Redis pub/sub connection failed unexpectedly")
            conn = await self._reconnect()
            self.reconnects += 1
            _log.info("reconnected to Redis, %d streams subscribed", len(self._streams))
            try:
                if self._receiver is not None:
                    self._receiver.reset()
            except Exception:
                _log.exception("Receiver.reset failed")

    async def _serve(self, conn: Subscriber) -> None:
        """Until the link is lost: the links read by themselves; the watchdog PINGs."""
        lost, pipeline = self._lost, self._pipeline
        try:
            async with anyio.create_task_group() as tg:
                if self._health_check_interval:
                    tg.start_soon(self._watch, conn)
                if lost is not None:
                    await lost.wait()
                tg.cancel_scope.cancel()
        finally:
            self._conn, self._pipeline = None, None
            conn.fail("the connection to Redis was lost")
            await self._hang_up(conn.conn)
            if pipeline is not None:
                pipeline.fail("the connection to Redis was lost")
                await self._hang_up(pipeline.conn)

    async def _reconnect(self) -> Subscriber:
        """Connect again, with full-jitter exponential backoff between attempts, cut short
        when a caller finds the link down (`_hurry`); one attempt at a time, each at least
        `_MIN_SPACING` after the previous one ended."""
        attempt = 0
        self._hurried = anyio.Event()
        ended = -math.inf  # when the previous attempt ended
        while True:
            ceiling = min(self._max_reconnect_delay, _BACKOFF_BASE * 2 ** min(attempt, 30))
            with anyio.move_on_after(random.uniform(0, ceiling)):
                await self._hurried.wait()
            await anyio.sleep_until(ended + _MIN_SPACING)
            self._hurried = anyio.Event()  # callers failing from now on hurry the next attempt
            attempt += 1
            try:
                # Idle command connections may lead to the lost server: drop them first.
                await self._client.connection_pool.disconnect(inuse_connections=False)
                return await self._connect()
            except Exception as exc:
                _log.debug("reconnecting to Redis failed (attempt %d): %r", attempt, exc)
            ended = anyio.current_time()

    async def _watch(self, conn: Subscriber) -> None:
        """PING every `health_check_interval`; the link is lost if no reply comes in time."""
        while True:
            await anyio.sleep(self._health_check_interval)
            try:
                with anyio.fail_after(self._timeout):
                    await conn.ping()
            except Exception as exc:
                self._link_lost(conn, f"no reply to PING within {self._timeout} s ({exc!r})")
                return

    def _on_message(self, channel: bytes, data: bytes) -> None:
        if channel in self._streams:
            self._deliver(channel, data)

    def _deliver(self, channel: bytes, data: bytes) -> None:
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

    def _link_lost(self, conn: Subscriber, reason: str) -> None:
        if conn is self._conn and self._lost is not None and not self._lost.is_set():
            _log.warning("lost the Redis pub/sub connection: %s", reason)
            self._conn = None  # publish and replay fail fast from now on
            self._lost.set()

    async def _hang_up(self, conn: AbstractConnection) -> None:
        shielded = anyio.CancelScope(shield=True)
        with shielded, anyio.move_on_after(self._timeout), suppress(rx.RedisError, OSError):
            await conn.disconnect(nowait=True)


def _entries(
    stream: str, head: Position, after: int, entries: Iterable[Any]
) -> Iterator[Publication]:
    """Publications from log entries (oldest first), stopping at the first gap."""
    expected = after + 1
    for _id, fields in entries:
        values = dict(zip(fields[::2], fields[1::2], strict=True))
        if int(values[b"o"]) != expected:
            return
        body, slot, ts = _decode_entry(b"\x93" + values[b"p"])
        yield Publication(stream, head.epoch, expected, body, slot, ts)
        expected += 1

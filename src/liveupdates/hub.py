"""The hub: the registry of connections, publishing, local fan-out and recovery.

The application creates and owns a hub (``async with hub:`` or ``lifespan=hub.lifespan``).
Transports (the ASGI endpoints) register connections with it; the application publishes::

    await hub.publish(Invalidate(["jobs"]), to=User("alice"))
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.lowlevel import EventLoopToken

from .auth import Authenticate, Authorize, AuthRequest, Principal, allow_all, anonymous, call_hook
from .backplanes import Backplane, backplane_from_url
from .connection import Connection, ConnectionState
from .control import Disconnect
from .errors import CloseCode, ErrorCode, HubClosed, Unauthorized
from .events import Event
from .flusher import Flusher
from .limits import Limits
from .metrics import HubStats, Metrics
from .outbox import control_message
from .positions import Position, Publication
from .protocol import (
    PROTOCOL_VERSION,
    Error,
    Goodbye,
    Hello,
    Refreshed,
    Unsubscribed,
    Welcome,
)
from .publisher import Prepared, Publisher, prepare
from .streams import Streams
from .sweeper import sweep
from .targets import EVERYONE_STREAM, Target, Topic, is_valid_topic
from .throttle import Throttle, ThrottleRule
from .transaction import Transaction

logger = logging.getLogger("liveupdates")
YIELD_BUDGET = 0.02  # seconds a publishing loop may run before the flusher gets a turn
# After a drain, how long the server keeps serving before it gets the signal back: the clients'
# replies to the close frames arrive meanwhile. A socket closed with unread input resets the
# connection, and a client then loses what was still in flight to it (its goodbye, the 1001).
CLOSE_LINGER = 0.5


_control = control_message  # the transports' name for it


class Hub:
    """Connection manager: per-user, per-topic and everyone targeting over a backplane."""

    def __init__(
        self,
        backplane: str | Backplane = "memory://",
        *,
        authenticate: Authenticate = anonymous,
        authorize: Authorize = allow_all,
        limits: Limits | None = None,
        throttle: Iterable[ThrottleRule] = (),
        drain_signals: Iterable[signal.Signals] = (signal.SIGTERM,),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backplane = backplane_from_url(backplane) if isinstance(backplane, str) else backplane
        self.authenticate_hook = authenticate
        self.authorize_hook = authorize
        self.limits = limits or Limits()
        self.clock = clock
        self.drain_signals = tuple(drain_signals)
        self._throttle = Throttle(list(throttle), clock)
        self._conns: dict[str, Connection] = {}
        self._users: dict[str, dict[Connection, None]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._tg: TaskGroup | None = None
        self._running = False
        self._drained: anyio.Event | None = None
        self._token: EventLoopToken | None = None
        self._thread = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # on asyncio, while running
        self.metrics = Metrics()
        self._flusher = Flusher(self.metrics, clock, self.limits.flush_interval, self._spawn)
        self._routes = Streams(
            self.backplane, self.metrics, self._spawn, self._on_backplane_reset, self._flusher
        )
        self._publisher = Publisher(self.backplane)
        self._accepting = False
        self._last_yield = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        if self._running:
            raise RuntimeError("this hub is already running")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self.backplane.start(self._routes)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        self._running = self._accepting = True
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()
        self._loop = _running_asyncio_loop()
        self._tg.start_soon(sweep, self._conns, self.limits, self.clock, self._routes.sent_at)
        self._tg.start_soon(self._flusher.run)
        if self.drain_signals and threading.current_thread() is threading.main_thread():
            self._tg.start_soon(self._drain_on_signal)
        if self._throttle.rules:
            self._tg.start_soon(self._throttle.run, self._publish_stream)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Drain every connection (see `drain`), then stop the backplane and the hub's tasks."""
        if not self._running or self._tg is None:
            return
        with anyio.CancelScope(shield=True):
            await self.drain()
            self._running = False
            await self.backplane.aclose()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        self._token, self._loop = None, None

    async def drain(self) -> None:
        """Stop accepting connections; tell every client to come back within the retry window.

        Each connection gets a `goodbye` (``retry_ms`` = `Limits.goodbye_retry`) after what was
        pending for it, and is closed with `1001` once that is sent. Clients reconnect at a
        random moment within the window, so thousands of them do not all come back at once.
        Waits at most `Limits.drain_timeout` before closing the rest.
        """
        self._accepting = False
        goodbye = _control(Goodbye(int(self.limits.goodbye_retry * 1000)))
        for conn in list(self._conns.values()):
            conn.push(goodbye)
            conn.close_when_flushed(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.move_on_after(self.limits.drain_timeout):
            await self._wait_until_empty()
        for conn in list(self._conns.values()):
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.move_on_after(1.0):
            await self._wait_until_empty()

    async def _drain_on_signal(self) -> None:
        """On SIGTERM (by default): drain, then hand the signal to whoever handled it before.

        Under uvicorn, that lets every client hear `goodbye` before the server closes sockets
        on its own (with no retry window); uvicorn then shuts down as usual. It gets the signal
        `CLOSE_LINGER` seconds after the last connection closed: uvicorn closes at once the
        sockets whose close frame was sent, without waiting for the client's reply.
        """
        previous = {sig: signal.getsignal(sig) for sig in self.drain_signals}
        with anyio.open_signal_receiver(*self.drain_signals) as signals:
            async for signum in signals:
                logger.info("draining on %s", signal.Signals(signum).name)
                await self.drain()
                await anyio.sleep(CLOSE_LINGER)
                break
        signal.signal(signum, previous[signum])
        signal.raise_signal(signum)

    async def _wait_until_empty(self) -> None:
        while self._conns:
            self._drained = anyio.Event()
            await self._drained.wait()

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the hub for the life of an ASGI app: ``Starlette(lifespan=hub.lifespan)``."""
        async with self:
            yield

    @property
    def running(self) -> bool:
        return self._running

    @property
    def accepting(self) -> bool:
        """Whether new connections are accepted (False once draining)."""
        return self._accepting

    @property
    def reconciling(self) -> int:
        """How many streams are being reconciled after a backplane gap (0 when settled)."""
        return self._routes.reconciling

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, event: Event, to: Target | Iterable[Target]) -> None:
        """Send `event` to every connection of the target(s), in every process.

        The event is encoded once. Throttled events may be held for the trailing edge of their
        window. Raises `HubClosed` when the hub is not running and `BackplaneError` when the
        backplane cannot take the event (nothing is silently dropped).
        """
        await self.publish_prepared(prepare(event, to))

    def transaction(self) -> Transaction:
        """Events published through it are held until it commits (publish after commit)."""
        return Transaction(self.publish_prepared, self._call_soon)

    async def publish_prepared(self, prepared: Prepared) -> list[Publication | None]:
        """`publish` for an event encoded already (`publisher.prepare`): its position in each
        stream, None where the throttle holds it for the trailing edge of its window."""
        if not self._running:
            raise HubClosed("the hub is not running: use `async with hub:` or its lifespan")
        event, body, slot = prepared.event, prepared.body, prepared.slot
        positions: list[Publication | None] = []
        for stream in prepared.streams:
            admitted = self._throttle.admit(stream, event, body, slot)
            positions.append(await self._publish_stream(stream, body, slot) if admitted else None)
        return positions

    async def _publish_stream(self, stream: str, body: bytes, slot: str | None) -> Publication:
        flusher = self._flusher
        flusher.waiting += 1  # (a broadcast meanwhile gives it a turn every SLICE)
        try:
            publication = await self._publisher.publish_stream(stream, body, slot)
        finally:
            flusher.waiting -= 1
        self.metrics.publishes += 1
        # A publisher in a tight loop lets the writers run every YIELD_BUDGET seconds, or as soon
        # as an outbox is half full: events of a burst leave together (one frame per client),
        # nobody waits long for the loop, and a client that keeps up never overflows. A publisher
        # that waited for its backplane (Redis) meanwhile has let them run already.
        now = time.perf_counter()
        if (
            self._routes.filling
            or now - max(self._last_yield, self._flusher.turn_at) > YIELD_BUDGET
        ):
            self._routes.filling = False
            await anyio.lowlevel.cancel_shielded_checkpoint()
            self._last_yield = time.perf_counter()  # the budget counts the publisher's own time
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()
        return publication

    # -- backplane receiver ---------------------------------------------------------------

    def deliver(self, publication: Publication) -> None:
        """What the backplane calls for each publication (see `Streams.deliver`)."""
        self._routes.deliver(publication)

    def reset(self) -> None:
        """What the backplane calls once it reconnected (see `Streams.reset`)."""
        self._routes.reset()

    def _on_backplane_reset(self) -> None:
        if self._publisher.unannounced:
            self._spawn(self._publisher.announce)  # still down: the next reset tries again

    def _spawn(self, func: Callable[..., Any], *args: Any) -> None:
        if self._tg is None or not self._running:
            return
        loop = self._loop
        if loop is not None and asyncio.current_task(loop) is None:
            # An asyncio callback outside any task (the Redis links deliver in the one that read
            # the bytes), where anyio may not tell which event loop runs: start it from a task.
            loop.create_task(self._spawn_from_task(func, args))  # (its first step holds it)
            return
        self._tg.start_soon(func, *args)

    async def _spawn_from_task(self, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._spawn(func, *args)

    def _call_soon(self, func: Callable[[], Awaitable[Any]]) -> None:
        """Run `func` in the hub's task group, from the event loop's thread or any other."""
        if self._token is None:
            raise HubClosed("the hub is not running")
        if threading.get_ident() == self._thread:
            self._spawn(func)
        else:
            anyio.from_thread.run_sync(self._spawn, func, token=self._token)

    # -- connections ----------------------------------------------------------------------

    async def authenticate(self, request: AuthRequest) -> Principal:
        """Run the application's authentication hook; raises `Unauthorized` to refuse."""
        try:
            principal = await call_hook(self.authenticate_hook, request)
        except Unauthorized:
            self.metrics.auth_failures += 1
            raise
        except Exception as exc:
            self.metrics.auth_failures += 1
            self.metrics.errors += 1
            logger.exception("the authentication hook failed")
            raise Unauthorized("authentication failed") from exc
        if principal is None:
            self.metrics.auth_failures += 1
            raise Unauthorized("credentials rejected" if request.token else "no credentials")
        if not isinstance(principal, Principal):
            raise TypeError("the authentication hook must return a Principal or None")
        return principal

    async def admit(self, request: AuthRequest) -> Connection:
        """Authenticate a connection attempt and register it (for transports).

        Raises `Unauthorized` (logged with where the token came from, never the token) or
        `HubClosed` when the hub does not accept connections (it is draining).
        """
        try:
            principal = await self.authenticate(request)
        except Unauthorized as exc:
            extra = {"transport": request.transport, "token_source": request.token_source}
            logger.info("connection refused: %s", exc, extra=extra)
            raise
        conn = self.connect(principal, request.transport)
        logger.info(
            "connection opened",
            extra={"conn": conn.id, "user": conn.user, "transport": conn.transport},
        )
        return conn

    def connect(self, principal: Principal, transport: str) -> Connection:
        """Register a new connection for `principal` (not yet on any stream)."""
        if not self._accepting:
            raise HubClosed("the hub is not accepting connections")
        conn_id = f"{self._id_prefix}-{next(self._ids)}"
        conn = Connection(
            conn_id, principal, transport, self.limits, self.clock(), self.metrics,
            self._flusher.schedule, self._flusher.guard,
        )  # fmt: skip
        self._conns[conn_id] = conn
        if principal.user is not None:
            self._users.setdefault(principal.user, {})[conn] = None
        return conn

    async def open(self, conn: Connection, hello: Hello) -> None:
        """Complete the handshake: `welcome`, then join the implicit streams and hello topics."""
        conn.state = ConnectionState.OPEN
        limits = self.limits
        heartbeat_ms = int(limits.heartbeat_interval * 1000)
        welcome = Welcome(PROTOCOL_VERSION, conn.id, conn.user, heartbeat_ms, limits.public())
        conn.push(_control(welcome))
        since = {name: cursor.position() for name, cursor in hello.since.items()}
        await self._routes.join(conn, EVERYONE_STREAM, since.get(EVERYONE_STREAM), None)
        if conn.user is not None:
            user_stream = "user:" + conn.user
            await self._routes.join(conn, user_stream, since.get(user_stream), None)
        for topic in dict.fromkeys(hello.topics):
            await self.subscribe(conn, topic, since.get("topic:" + topic))

    async def subscribe(
        self, conn: Connection, topic: str, since: Position | None = None, id: int | None = None
    ) -> bool:
        """Subscribe `conn` to `topic` if valid and authorised; answers the client either way."""
        if not is_valid_topic(topic):
            conn.push(_control(Error(ErrorCode.INVALID_TOPIC, "invalid topic name", topic, id)))
            return False
        if topic.startswith("user:"):
            message = "personal streams are joined implicitly, by their user only"
            conn.push(_control(Error(ErrorCode.FORBIDDEN, message, topic, id)))
            return False
        if topic not in conn.topics and len(conn.topics) >= self.limits.max_subscriptions:
            message = f"at most {self.limits.max_subscriptions} subscriptions"
            conn.push(_control(Error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, message, topic, id)))
            return False
        if not await self._authorized(conn.principal, topic):
            message = f"not allowed to subscribe to {topic!r}"
            conn.push(_control(Error(ErrorCode.FORBIDDEN, message, topic, id)))
            return False
        conn.topics.add(topic)
        await self._routes.join(conn, Topic(topic).stream, since, id)
        return True

    async def _authorized(self, principal: Principal, topic: str) -> bool:
        try:
            return await call_hook(self.authorize_hook, principal, topic) is True
        except Exception:
            self.metrics.errors += 1
            logger.exception("the authorisation hook failed for topic %r", topic)
            return False

    def unsubscribe(self, conn: Connection, topic: str, id: int | None = None) -> None:
        """Remove `conn` from `topic` (answered with `unsubscribed` even if it was not on it)."""
        stream = "topic:" + topic
        if topic in conn.topics:
            conn.topics.discard(topic)
            self._routes.leave(conn, stream)
        conn.push(_control(Unsubscribed(stream, id)))

    def unregister(self, conn: Connection) -> None:
        """Forget a connection (its transport calls this when the connection has ended)."""
        if self._conns.pop(conn.id, None) is None:
            return
        if not self._conns and self._drained is not None:
            self._drained.set()
        conn.state = ConnectionState.CLOSED
        conn.detach()
        metrics, outbox = self.metrics, conn.outbox
        metrics.coalesced += outbox.merged
        metrics.overflows += outbox.overflows
        metrics.resyncs["overflow"] += outbox.overflow_resyncs
        code = conn.close_code
        metrics.closes[CloseCode(code).name.lower() if code in _CODES else "client"] += 1
        for stream in list(conn.streams):
            self._routes.leave(conn, stream)
        if conn.user is not None:
            tabs = self._users.get(conn.user)
            if tabs is not None:
                tabs.pop(conn, None)
                if not tabs:
                    del self._users[conn.user]
        logger.info(
            "connection closed",
            extra={"conn": conn.id, "user": conn.user, "transport": conn.transport, "code": code},
        )

    async def disconnect(
        self,
        *,
        user: str | None = None,
        connection: str | None = None,
        reason: str = "disconnected by the application",
    ) -> None:
        """Close every connection of `user`, or the connection `connection`, in every process.

        For revocation, logout and admin action: the command travels through the backplane
        and closes the connections opened before it, with code `4403`. Raises
        `BackplaneError` when the backplane cannot carry it.
        """
        if (user is None) == (connection is None):
            raise ValueError("disconnect needs exactly one of user= or connection=")
        if not self._running:
            raise HubClosed("the hub is not running")
        stream = "user:" + user if user is not None else EVERYONE_STREAM
        await self._publisher.command(stream, Disconnect(connection, reason))

    async def refresh(self, conn: Connection, principal: Principal) -> None:
        """Adopt a refreshed credential: topics no longer authorised are left (`forbidden`)."""
        conn.principal, conn.warned = principal, False
        for topic in sorted(conn.topics):
            if not await self._authorized(principal, topic):
                self.unsubscribe(conn, topic)
                message = f"no longer allowed to subscribe to {topic!r}"
                conn.push(_control(Error(ErrorCode.FORBIDDEN, message, topic, None)))
        expires_in = None
        if principal.expires_at is not None:
            expires_in = max(0, int((principal.expires_at - time.time()) * 1000))
        conn.push(_control(Refreshed(expires_in)))

    def connections(self, user: str | None = None) -> list[Connection]:
        """Every local connection, or those of one user."""
        if user is None:
            return list(self._conns.values())
        return list(self._users.get(user, ()))

    def stats(self) -> HubStats:
        """The figures of this process: counters, gauges and the lag histogram."""
        m, conns = self.metrics, list(self._conns.values())
        by_transport: dict[str, int] = {}
        for conn in conns:
            by_transport[conn.transport] = by_transport.get(conn.transport, 0) + 1
        resyncs = dict(m.resyncs)
        resyncs["overflow"] = resyncs.get("overflow", 0) + sum(
            c.outbox.overflow_resyncs for c in conns
        )
        recoveries = dict(m.recoveries)
        return HubStats(
            connections=len(conns),
            users=len(self._users),
            streams=len(self._routes),
            publishes=m.publishes,
            deliveries=m.deliveries,
            frames=m.frames,
            throttled=self._throttle.held,
            resyncs=sum(resyncs.values()),
            recovered=recoveries.get("recovered", 0),
            errors=m.errors,
            connections_by_transport=by_transport,
            subscriptions=sum(len(c.topics) for c in conns),
            bytes_sent=m.bytes_sent,
            coalesced=m.coalesced + sum(c.outbox.merged for c in conns),
            overflows=m.overflows + sum(c.outbox.overflows for c in conns),
            resyncs_by_reason={k: v for k, v in resyncs.items() if v},
            recoveries_by_outcome=recoveries,
            closes_by_code=dict(m.closes),
            auth_failures=m.auth_failures,
            backplane_resets=m.backplane_resets,
            lag_buckets=m.lag.cumulative(),
            lag_sum=m.lag.sum,
            lag_count=m.lag.count,
        )


_CODES = frozenset(CloseCode)


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio event loop running this task; None on trio."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

"""The hub: the registry of connections, publishing, local fan-out and recovery.

The application creates and owns a hub (``async with hub:`` or ``lifespan=hub.lifespan``).
Transports (the ASGI endpoints) register connections with it; the application publishes::

    await hub.publish(Invalidate(["jobs"]), to=User("alice"))
"""

from __future__ import annotations

import itertools
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.lowlevel import EventLoopToken

from .auth import Authenticate, Authorize, AuthRequest, Principal, allow_all, anonymous, call_hook
from .backplanes import Backplane, backplane_from_url
from .connection import Connection, ConnectionState
from .errors import BackplaneError, CloseCode, ErrorCode, HubClosed, Unauthorized
from .events import Event, encode_event, event_slot
from .limits import Limits
from .outbox import Message, event_message, position_prefix
from .positions import Position, Publication
from .protocol import (
    PROTOCOL_VERSION,
    Error,
    Goodbye,
    Hello,
    Outcome,
    ServerMessage,
    ServerPing,
    Subscribed,
    Unsubscribed,
    Welcome,
    encode_message,
)
from .targets import EVERYONE_STREAM, Target, Topic, is_valid_topic, streams_of
from .throttle import Throttle, ThrottleRule
from .transaction import Transaction

logger = logging.getLogger("liveupdates")
YIELD_BUDGET = 0.02  # seconds a publishing loop may run before the writers get a turn


@dataclass(frozen=True, slots=True)
class HubStats:
    """A snapshot of a hub's counters (this process only)."""

    connections: int
    users: int
    streams: int
    publishes: int
    deliveries: int
    frames: int
    throttled: int
    resyncs: int
    recovered: int
    errors: int


class _Stream:
    """What this process knows of one stream it has local connections on."""

    __slots__ = ("again", "conns", "epoch", "head", "pending", "prefix", "reconciling")

    def __init__(self) -> None:
        self.conns: dict[Connection, None] = {}
        self.head: Position | None = None
        self.pending: list[Publication] | None = None  # held until a gap is reconciled
        self.reconciling = False  # a reconcile task is running
        self.again = False  # ...and must run once more when it ends
        self.epoch = ""
        self.prefix = ""


def _control(message: ServerMessage) -> Message:
    return Message(encode_message(message))


_PING = _control(ServerPing())


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backplane = backplane_from_url(backplane) if isinstance(backplane, str) else backplane
        self.authenticate_hook = authenticate
        self.authorize_hook = authorize
        self.limits = limits or Limits()
        self.clock = clock
        self._throttle = Throttle(list(throttle), clock)
        self._conns: dict[str, Connection] = {}
        self._users: dict[str, dict[Connection, None]] = {}
        self._streams: dict[str, _Stream] = {}
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._tg: TaskGroup | None = None
        self._running = False
        self._drained: anyio.Event | None = None
        self._token: EventLoopToken | None = None
        self._thread = 0
        self._publishes = self._deliveries = self._resyncs = self._recovered = self._errors = 0
        self._frames = 0
        self._last_yield = 0.0
        self._filling = False  # an outbox is half full: let the writers run

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        if self._running:
            raise RuntimeError("this hub is already running")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self.backplane.start(self)
        except BaseException:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            raise
        self._running = True
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()
        self._tg.start_soon(self._sweep)
        if self._throttle.rules:
            self._tg.start_soon(self._throttle.run, self._publish_stream)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Say goodbye to every connection, close them and stop the backplane."""
        if not self._running or self._tg is None:
            return
        self._running = False
        goodbye = _control(Goodbye(int(self.limits.goodbye_retry * 1000)))
        for conn in list(self._conns.values()):
            conn.push(goodbye)
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.limits.send_timeout):
                while self._conns:
                    self._drained = anyio.Event()
                    await self._drained.wait()
            await self.backplane.aclose()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._tg = None
        self._token = None

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the hub for the life of an ASGI app: ``Starlette(lifespan=hub.lifespan)``."""
        async with self:
            yield

    @property
    def running(self) -> bool:
        return self._running

    @property
    def reconciling(self) -> int:
        """How many streams are being reconciled after a backplane gap (0 when settled)."""
        return sum(state.pending is not None for state in self._streams.values())

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, event: Event, to: Target | Iterable[Target]) -> None:
        """Send `event` to every connection of the target(s), in every process.

        The event is encoded once. Throttled events may be held for the trailing edge of their
        window. Raises `HubClosed` when the hub is not running and `BackplaneError` when the
        backplane cannot take the event (nothing is silently dropped).
        """
        await self._publish_encoded(event, encode_event(event), event_slot(event), streams_of(to))

    def transaction(self) -> Transaction:
        """Events published through it are held until it commits (publish after commit)."""
        return Transaction(self)

    async def _publish_encoded(
        self, event: Event, body: bytes, slot: str | None, streams: list[str]
    ) -> None:
        if not self._running:
            raise HubClosed("the hub is not running: use `async with hub:` or its lifespan")
        for stream in streams:
            if self._throttle.admit(stream, event, body, slot):
                await self._publish_stream(stream, body, slot)

    async def _publish_stream(self, stream: str, body: bytes, slot: str | None) -> None:
        await self.backplane.publish(stream, body, slot)
        self._publishes += 1
        # A publisher in a tight loop lets the writers run every YIELD_BUDGET seconds, or as soon
        # as an outbox is half full: events of a burst leave together (one frame per client),
        # nobody waits long for the loop, and a client that keeps up never overflows.
        now = time.perf_counter()
        if self._filling or now - self._last_yield > YIELD_BUDGET:
            self._last_yield, self._filling = now, False
            await anyio.lowlevel.cancel_shielded_checkpoint()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()

    # -- backplane receiver ---------------------------------------------------------------

    def deliver(self, publication: Publication) -> None:
        """Fan a publication out to the local connections of its stream (never waits)."""
        state = self._streams.get(publication.stream)
        if state is None:
            return
        if state.pending is not None:
            state.pending.append(publication)
            return
        head = state.head
        if head is not None:
            if publication.epoch == head.epoch:
                if publication.offset <= head.offset:
                    return  # seen already
                gap = publication.offset > head.offset + 1
            else:
                gap = True
            if gap:
                state.pending = [publication]
                self._start_reconcile(publication.stream, state)
                return
        self._fan_out(state, publication)

    def reset(self) -> None:
        """The backplane reconnected: check every stream for publications this process missed."""
        for stream, state in self._streams.items():
            if state.pending is None:
                state.pending = []
            self._start_reconcile(stream, state)

    def _start_reconcile(self, stream: str, state: _Stream) -> None:
        if state.reconciling:
            state.again = True  # what it read may predate this call: read once more
        else:
            state.reconciling = True
            self._spawn(self._reconcile, stream, state)

    def _fan_out(self, state: _Stream, publication: Publication) -> None:
        state.head = Position(publication.epoch, publication.offset)
        message = self._message(state, publication)
        filling = False
        for conn in state.conns:
            if conn.push(message):
                filling = True
        self._filling |= filling
        self._deliveries += len(state.conns)

    def _message(self, state: _Stream, publication: Publication) -> Message:
        if state.epoch != publication.epoch:
            state.epoch = publication.epoch
            state.prefix = position_prefix(publication.stream, publication.epoch)
        return event_message(
            state.prefix, publication.stream, publication.epoch, publication.offset,
            publication.body, publication.slot, publication.ts,
        )  # fmt: skip

    async def _reconcile(self, stream: str, state: _Stream) -> None:
        """Catch up a stream after a gap: replay what is missing, or resync its connections.

        Publications held before the history read that belong to another epoch than the
        backplane's current one are stale (the resync covers them); those held during the read
        go through `deliver` again, which reconciles once more if they still do not fit. When
        the backplane cannot be read, publications stay held until its next `reset`.
        """
        try:
            while self._streams.get(stream) is state:
                state.again = False
                await self._reconcile_once(stream, state)
                if not state.again:  # nobody asked for a fresh look meanwhile
                    return
        finally:
            state.reconciling = False

    async def _reconcile_once(self, stream: str, state: _Stream) -> None:
        held_before, state.pending = state.pending or [], []
        try:
            replay = await self.backplane.replay(stream, state.head)
        except BackplaneError:
            state.pending = held_before + state.pending
            logger.warning("cannot read the history of %s; waiting for the backplane", stream)
            return
        head = replay.head
        if replay.complete:
            for publication in replay.publications:
                self._fan_out(state, publication)
        else:
            state.head = head
            for conn in state.conns:
                conn.outbox.resync(stream, head.epoch, head.offset, "backplane")
            self._resyncs += len(state.conns)
            logger.info("resync of %s for %d connections (backplane gap)", stream, len(state.conns))
        held_during, state.pending = state.pending, None
        for publication in held_before:
            if publication.epoch == head.epoch:
                self.deliver(publication)
        for publication in held_during:
            self.deliver(publication)

    def _spawn(self, func: Callable[..., Any], *args: Any) -> None:
        if self._tg is not None and self._running:
            self._tg.start_soon(func, *args)

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
            raise
        except Exception as exc:
            self._errors += 1
            logger.exception("the authentication hook failed")
            raise Unauthorized("authentication failed") from exc
        if principal is None:
            raise Unauthorized("credentials rejected" if request.token else "no credentials")
        if not isinstance(principal, Principal):
            raise TypeError("the authentication hook must return a Principal or None")
        return principal

    def connect(self, principal: Principal, transport: str) -> Connection:
        """Register a new connection for `principal` (not yet on any stream)."""
        if not self._running:
            raise HubClosed("the hub is not running")
        conn_id = f"{self._id_prefix}-{next(self._ids)}"
        conn = Connection(conn_id, principal, transport, self.limits, self.clock())
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
        await self._join(conn, EVERYONE_STREAM, since.get(EVERYONE_STREAM), None)
        if conn.user is not None:
            user_stream = "user:" + conn.user
            await self._join(conn, user_stream, since.get(user_stream), None)
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
        try:
            allowed = await call_hook(self.authorize_hook, conn.principal, topic)
        except Exception:
            self._errors += 1
            logger.exception("the authorisation hook failed for topic %r", topic)
            allowed = False
        if allowed is not True:
            message = f"not allowed to subscribe to {topic!r}"
            conn.push(_control(Error(ErrorCode.FORBIDDEN, message, topic, id)))
            return False
        conn.topics.add(topic)
        await self._join(conn, Topic(topic).stream, since, id)
        return True

    def unsubscribe(self, conn: Connection, topic: str, id: int | None = None) -> None:
        """Remove `conn` from `topic` (answered with `unsubscribed` even if it was not on it)."""
        stream = "topic:" + topic
        if topic in conn.topics:
            conn.topics.discard(topic)
            self._leave(conn, stream)
        conn.push(_control(Unsubscribed(stream, id)))

    async def _join(
        self, conn: Connection, stream: str, since: Position | None, id: int | None
    ) -> None:
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = _Stream()
            await self.backplane.listen(stream)
        conn.hold(stream)
        state.conns[conn] = None
        conn.streams.add(stream)
        replay = await self.backplane.replay(stream, since)
        head = replay.head
        if state.head is None and state.pending is None:
            state.head = head
        outcome: Outcome
        reason = None
        if since is None:
            outcome = "fresh"
        elif replay.complete:
            outcome = "recovered"
            self._recovered += 1
        else:
            outcome, reason = "resync", _resync_reason(since, head)
            self._resyncs += 1
        conn.outbox.push(_control(Subscribed(stream, head.epoch, head.offset, outcome, reason, id)))
        for publication in replay.publications:
            conn.outbox.push(self._message(state, publication))
        conn.release(stream, head.epoch, head.offset)

    def _leave(self, conn: Connection, stream: str) -> None:
        conn.streams.discard(stream)
        state = self._streams.get(stream)
        if state is None:
            return
        state.conns.pop(conn, None)
        if not state.conns:
            del self._streams[stream]
            self._spawn(self._unlisten, stream)

    async def _unlisten(self, stream: str) -> None:
        if stream not in self._streams:
            try:
                await self.backplane.unlisten(stream)
            except BackplaneError:
                logger.warning("cannot stop listening to %s", stream)

    def disconnect(self, conn: Connection) -> None:
        """Unregister a connection (the transport calls this when the connection ends)."""
        if self._conns.pop(conn.id, None) is None:
            return
        if not self._conns and self._drained is not None:
            self._drained.set()
        conn.state = ConnectionState.CLOSED
        conn.outbox.close()
        for stream in list(conn.streams):
            self._leave(conn, stream)
        if conn.user is not None:
            tabs = self._users.get(conn.user)
            if tabs is not None:
                tabs.pop(conn, None)
                if not tabs:
                    del self._users[conn.user]

    def connections(self, user: str | None = None) -> list[Connection]:
        """Every local connection, or those of one user."""
        if user is None:
            return list(self._conns.values())
        return list(self._users.get(user, ()))

    def count_frame(self) -> None:
        self._frames += 1

    def count_error(self) -> None:
        self._errors += 1

    def stats(self) -> HubStats:
        """The counters of this process."""
        return HubStats(
            connections=len(self._conns),
            users=len(self._users),
            streams=len(self._streams),
            publishes=self._publishes,
            deliveries=self._deliveries,
            frames=self._frames,
            throttled=self._throttle.held,
            resyncs=self._resyncs + sum(c.outbox.overflows for c in self._conns.values()),
            recovered=self._recovered,
            errors=self._errors,
        )

    # -- heartbeats -----------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Heartbeats, dead peers and slow consumers: one task for every connection."""
        limits = self.limits
        idle = limits.heartbeat_interval / 2
        period = min(idle, limits.send_timeout / 2)
        while True:
            await anyio.sleep(period)
            now = self.clock()
            for conn in list(self._conns.values()):
                if conn.state is not ConnectionState.OPEN:
                    continue
                if conn.sending_since and now - conn.sending_since > limits.send_timeout:
                    conn.close(CloseCode.SLOW_CONSUMER, "the client does not read")
                elif now - conn.last_received > limits.heartbeat_timeout:
                    conn.close(CloseCode.HEARTBEAT_TIMEOUT, "no traffic from the client")
                elif now - conn.last_sent >= idle:
                    conn.push(_PING)


def _resync_reason(since: Position, head: Position) -> str:
    if since.epoch != head.epoch:
        return "epoch"
    if since.offset > head.offset:
        return "ahead"
    return "expired"

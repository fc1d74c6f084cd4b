"""The session layer: what a transport calls, from a connection attempt to its end.

A transport (the WebSocket and SSE endpoints of `liveupdates.asgi`, or one of your own) runs
one session per client: `admit` authenticates the attempt and registers a `Connection`;
`open` sends `welcome` and joins the implicit streams and the hello's topics; `subscribe`,
`unsubscribe` and `refresh` follow the client's frames; `unregister` forgets the connection
once the transport is done with it. `Sessions` holds the registry of local connections (by id
and by user); the hub owns it (`Hub.sessions`) and drains it.

The hub's application-facing side (publishing, lifecycle, stats) lives in `liveupdates.hub`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import Callable, Mapping

import anyio

from ._pipeline.connection import Connection, ConnectionState, SendFrame
from ._pipeline.flusher import Flusher
from ._pipeline.outbox import control_message
from ._pipeline.streams import Streams
from .auth import Authenticate, Authorize, AuthRequest, Principal, call_hook
from .errors import (
    CloseCode,
    ErrorCode,
    HookFailed,
    HubClosed,
    PeerGone,
    TokenExpired,
    Unauthorized,
    close_code_name,
)
from .limits import Limits
from .metrics import Metrics
from .positions import Position
from .protocol import PROTOCOL_VERSION, Error, Hello, Refreshed, Unsubscribed, Welcome
from .targets import EVERYONE_STREAM, Topic, is_valid_topic

__all__ = (
    "Connection",
    "ConnectionState",
    "PeerGone",
    "SendFrame",
    "Sessions",
    "control_message",
)

logger = logging.getLogger("liveupdates")


class Sessions:
    """The local connections of one hub and everything a transport asks of it."""

    def __init__(
        self,
        *,
        authenticate: Authenticate,
        authorize: Authorize,
        limits: Limits,
        clock: Callable[[], float],
        metrics: Metrics,
        streams: Streams,
        flusher: Flusher,
    ) -> None:
        self.authenticate_hook, self.authorize_hook = authenticate, authorize
        self.limits, self.clock, self.metrics = limits, clock, metrics
        self._streams, self._flusher = streams, flusher
        self._conns: dict[str, Connection] = {}
        self._users: dict[str, dict[Connection, None]] = {}
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)
        self._emptied: anyio.Event | None = None
        self.accepting = False  # the hub opens and closes the door

    def __len__(self) -> int:
        return len(self._conns)

    @property
    def registry(self) -> Mapping[str, Connection]:
        """The live mapping of connection id to connection (the sweeper walks it)."""
        return self._conns

    @property
    def users(self) -> int:
        """How many users have a connection here."""
        return len(self._users)

    def connections(self, user: str | None = None) -> list[Connection]:
        """Every local connection, or those of one user."""
        if user is None:
            return list(self._conns.values())
        return list(self._users.get(user, ()))

    async def wait_until_empty(self) -> None:
        """Return once every connection has been unregistered."""
        while self._conns:
            self._emptied = anyio.Event()
            await self._emptied.wait()

    async def authenticate(self, request: AuthRequest) -> Principal:
        """Run the application's authentication hook.

        Raises `Unauthorized` when the hook refuses (returns None or raises it), `TokenExpired`
        when the principal's `expires_at` is already past, and `HookFailed` when the hook
        raises anything else (logged with its traceback: a server error, not a refusal).
        """
        try:
            principal = await call_hook(self.authenticate_hook, request)
        except Unauthorized:
            self.metrics.auth_failures += 1
            raise
        except Exception as exc:
            self.metrics.errors += 1
            extra = {"transport": request.transport, "token_source": request.token_source}
            logger.exception("the authentication hook failed", extra=extra)
            raise HookFailed("authentication failed: server error") from exc
        if principal is None:
            self.metrics.auth_failures += 1
            raise Unauthorized("credentials rejected" if request.token else "no credentials")
        if not isinstance(principal, Principal):
            self.metrics.errors += 1
            logger.error(
                "the authentication hook must return a Principal or None, not %s",
                type(principal).__name__,
            )
            raise HookFailed("authentication failed: server error")
        if principal.expires_at is not None and principal.expires_at <= time.time():
            self.metrics.auth_failures += 1
            raise TokenExpired("the credential has expired")
        return principal

    async def admit(self, request: AuthRequest) -> Connection:
        """Authenticate a connection attempt and register it (for transports).

        Raises `Unauthorized` or `TokenExpired` (logged with where the token came from, never
        the token), `HookFailed` when the hook raised (see `authenticate`) or `HubClosed` when
        the hub does not accept connections (it is draining).
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
        if not self.accepting:
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
        conn.opened()
        limits = self.limits
        heartbeat_ms = int(limits.heartbeat_interval * 1000)
        welcome = Welcome(PROTOCOL_VERSION, conn.id, conn.user, heartbeat_ms, limits.public())
        conn.push(control_message(welcome))
        since = {name: cursor.position() for name, cursor in hello.since.items()}
        await self._streams.join(conn, EVERYONE_STREAM, since.get(EVERYONE_STREAM), None)
        if conn.user is not None:
            user_stream = "user:" + conn.user
            await self._streams.join(conn, user_stream, since.get(user_stream), None)
        await self._subscribe_hello_topics(conn, hello.topics, since)

    async def _subscribe_hello_topics(
        self, conn: Connection, topics: list[str], since: dict[str, Position]
    ) -> None:
        """Subscribe a hello's topics, each answered, until the connection holds
        `max_subscriptions` topics or as many were refused (invalid or forbidden); the topics
        left after that get one `too_many_subscriptions` error, naming the first and the count.

        So a hello of any size gets at most 2 * `max_subscriptions` + 1 topic answers and
        calls the authorisation hook at most 2 * `max_subscriptions` times.
        """
        limit = self.limits.max_subscriptions
        wanted = list(dict.fromkeys(topics))
        refused = 0
        for n, topic in enumerate(wanted):
            if len(conn.topics) >= limit or refused >= limit:
                left = len(wanted) - n
                message = (
                    f"at most {limit} subscriptions: {left} topic{'s' if left > 1 else ''}"
                    f" from {topic!r} on not subscribed"
                )
                conn.push(control_message(Error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, message, topic)))
                return
            if not await self.subscribe(conn, topic, since.get("topic:" + topic)):
                refused += 1

    async def subscribe(
        self, conn: Connection, topic: str, since: Position | None = None, id: int | None = None
    ) -> bool:
        """Subscribe `conn` to `topic` if valid and authorised; answers the client either way."""
        if not is_valid_topic(topic):
            conn.push(
                control_message(Error(ErrorCode.INVALID_TOPIC, "invalid topic name", topic, id))
            )
            return False
        if topic.startswith("user:"):
            message = "personal streams are joined implicitly, by their user only"
            conn.push(control_message(Error(ErrorCode.FORBIDDEN, message, topic, id)))
            return False
        if topic not in conn.topics and len(conn.topics) >= self.limits.max_subscriptions:
            message = f"at most {self.limits.max_subscriptions} subscriptions"
            conn.push(control_message(Error(ErrorCode.TOO_MANY_SUBSCRIPTIONS, message, topic, id)))
            return False
        if not await self._authorized(conn.principal, topic):
            message = f"not allowed to subscribe to {topic!r}"
            conn.push(control_message(Error(ErrorCode.FORBIDDEN, message, topic, id)))
            return False
        conn.subscribed(topic)
        await self._streams.join(conn, Topic(topic).stream, since, id)
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
        if conn.unsubscribed(topic):
            self._streams.leave(conn, stream)
        conn.push(control_message(Unsubscribed(stream, id)))

    def unregister(self, conn: Connection) -> None:
        """Forget a connection (its transport calls this when the connection has ended)."""
        if self._conns.pop(conn.id, None) is None:
            return
        if not self._conns and self._emptied is not None:
            self._emptied.set()
        conn.closed()
        metrics, outbox = self.metrics, conn.outbox
        metrics.coalesced += outbox.merged
        metrics.overflows += outbox.overflows
        metrics.resyncs["overflow"] += outbox.overflow_resyncs
        code = conn.close_code
        metrics.closes[close_code_name(code, "client")] += 1
        for stream in list(conn.streams):
            self._streams.leave(conn, stream)
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

    async def refresh(self, conn: Connection, request: AuthRequest) -> None:
        """Authenticate a `refresh` and adopt the new credential: topics no longer authorised
        are left (`forbidden`), then `refreshed`. A refused, expired or failed credential, or one
        that names another user, closes the connection (4401, 4440, 1011)."""
        try:
            principal = await self.authenticate(request)
        except (Unauthorized, HookFailed) as exc:
            conn.close(exc.close_code, str(exc))
            return
        if principal.user != conn.user:
            conn.close(CloseCode.UNAUTHORIZED, "a refreshed token must name the same user")
            return
        conn.refreshed(principal)
        for topic in sorted(conn.topics):
            if not await self._authorized(principal, topic):
                self.unsubscribe(conn, topic)
                message = f"no longer allowed to subscribe to {topic!r}"
                conn.push(control_message(Error(ErrorCode.FORBIDDEN, message, topic, None)))
        expires_in = None
        if principal.expires_at is not None:
            expires_in = max(0, int((principal.expires_at - time.time()) * 1000))
        conn.push(control_message(Refreshed(expires_in)))

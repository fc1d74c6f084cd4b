"""The hub: the object an application creates, runs and publishes through.

The application creates and owns a hub (``async with hub:`` or ``lifespan=hub.lifespan``) and
publishes::

    await hub.publish(Invalidate(["jobs"]), to=User("alice"))

The hub wires the pipeline (`liveupdates._pipeline`: publisher, streams, flusher, sweeper)
to its backplane and runs its tasks. Transports reach it through its session layer
(`Hub.sessions`, see `liveupdates.session`), never through the hub itself.
"""

from __future__ import annotations

import asyncio
import logging
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

from ._pipeline.connection import Connection
from ._pipeline.control import Disconnect
from ._pipeline.flusher import Flusher
from ._pipeline.outbox import control_message
from ._pipeline.publisher import Prepared, Publisher, prepare
from ._pipeline.streams import Streams
from ._pipeline.sweeper import sweep
from .auth import Authenticate, Authorize, allow_all, anonymous
from .backplanes import Backplane, backplane_from_url
from .errors import (
    CloseCode,
    HubClosed,
)
from .events import Event
from .limits import Limits
from .metrics import HubStats, Metrics, OutboxSource
from .positions import Publication
from .protocol import (
    Goodbye,
)
from .session import Sessions
from .targets import EVERYONE_STREAM, Target
from .throttle import Throttle, ThrottleRule
from .transaction import Transaction

logger = logging.getLogger("liveupdates")
YIELD_BUDGET = 0.02  # seconds a publishing loop may run before the flusher gets a turn
# After a drain, how long the server keeps serving before it gets the signal back: the clients'
# replies to the close frames arrive meanwhile. A socket closed with unread input resets the
# connection, and a client then loses what was still in flight to it (its goodbye, the 1001).
CLOSE_LINGER = 0.5


class Hub:
    """The application's object: publish to users, topics and everyone over a backplane, run
    the pipeline's tasks (lifespan, drain), and report figures. Transports reach the
    connections through its session layer, `sessions`."""

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
        self.limits = limits or Limits()
        self.clock = clock
        self.drain_signals = tuple(drain_signals)
        self._throttle = Throttle(list(throttle), clock)
        self._tg: TaskGroup | None = None
        self._running = False
        self._started = False  # it ran at least once (so not accepting means shutting down)
        self._token: EventLoopToken | None = None
        self._thread = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # on asyncio, while running
        self.metrics = Metrics()
        self._flusher = Flusher(self.metrics, clock, self.limits.flush_interval, self._spawn)
        self._routes = Streams(
            self.backplane, self.metrics, self._spawn, self._on_backplane_reset, self._flusher
        )
        self._publisher = Publisher(self.backplane)
        self._outboxes: list[OutboxSource] = []
        self.sessions = Sessions(
            authenticate=authenticate, authorize=authorize, limits=self.limits, clock=clock,
            metrics=self.metrics, streams=self._routes, flusher=self._flusher,
        )  # fmt: skip
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
        self._running = self._started = self.sessions.accepting = True
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()
        self._loop = _running_asyncio_loop()
        self._tg.start_soon(
            sweep, self.sessions.registry, self.limits, self.clock, self._routes.sent_at
        )
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
        sessions = self.sessions
        sessions.accepting = False
        goodbye = control_message(Goodbye(int(self.limits.goodbye_retry * 1000)))
        for conn in sessions.connections():
            conn.push(goodbye)
            conn.close_when_flushed(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.move_on_after(self.limits.drain_timeout):
            await sessions.wait_until_empty()
        for conn in sessions.connections():
            conn.close(CloseCode.GOING_AWAY, "server shutting down")
        with anyio.move_on_after(1.0):
            await sessions.wait_until_empty()

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

    @asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Run the hub for the life of an ASGI app: ``Starlette(lifespan=hub.lifespan)``."""
        async with self:
            yield

    @property
    def running(self) -> bool:
        return self._running

    @property
    def started(self) -> bool:
        """Whether the hub was started (`async with hub:` or its lifespan), even if it stopped."""
        return self._started

    @property
    def accepting(self) -> bool:
        """Whether new connections are accepted (False once draining)."""
        return self.sessions.accepting

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
        await self._publish_all([prepare(event, to)])

    def transaction(self) -> Transaction:
        """Events published through it are held until it commits (publish after commit)."""
        return Transaction(self._publish_all, self._call_soon)

    async def publish_prepared(self, prepared: Prepared) -> list[Publication | None]:
        """`publish` for an event prepared already (`prepare`, or the HTTP publish API): its
        position in each stream, None where the throttle holds it for its trailing edge."""
        return (await self._publish_all([prepared]))[0]

    async def _publish_all(self, batch: list[Prepared]) -> list[list[Publication | None]]:
        if not self._running:
            raise HubClosed("the hub is not running: use `async with hub:` or its lifespan")
        return await self._publisher.publish_all(batch, self._send_stream)

    async def _send_stream(self, stream: str, prepared: Prepared) -> Publication | None:
        """One stream of a publish: through the throttle, then paced with the flusher."""
        event, body, slot = prepared.event, prepared.body, prepared.slot
        if not self._throttle.admit(stream, event, body, slot):
            return None  # held for the trailing edge of its window
        return await self._publish_stream(stream, body, slot)

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
        now = self.clock()  # (the flusher's clock: `turn_at`)
        if (
            self._routes.filling
            or now - max(self._last_yield, self._flusher.turn_at) > YIELD_BUDGET
        ):
            self._routes.filling = False
            await anyio.lowlevel.cancel_shielded_checkpoint()
            self._last_yield = self.clock()  # the budget counts the publisher's own time
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()
        return publication

    def _on_backplane_reset(self) -> None:
        if self._publisher.unannounced:
            self._spawn(self._publisher.announce)  # still down: the next reset tries again

    def _spawn(self, func: Callable[..., Any], *args: Any) -> None:
        if self._tg is None or not self._running:
            return
        loop = self._loop
        if loop is not None and asyncio.current_task(loop) is None:
            # An asyncio callback outside any task (a backplane may deliver in the one that read
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

    def connections(self, user: str | None = None) -> list[Connection]:
        """Every local connection, or those of one user (`Connection.info()` for a snapshot)."""
        return self.sessions.connections(user)

    def report_outbox(self, relay: OutboxSource) -> None:
        """Include an outbox relay's figures in `stats` (`OutboxRelay.in_hub` calls this)."""
        self._outboxes.append(relay)

    def stats(self) -> HubStats:
        """The figures of this process: counters, gauges and the lag histogram."""
        m, conns = self.metrics, self.sessions.connections()
        by_transport: dict[str, int] = {}
        for conn in conns:
            by_transport[conn.transport] = by_transport.get(conn.transport, 0) + 1
        resyncs = dict(m.resyncs)
        resyncs["overflow"] = resyncs.get("overflow", 0) + sum(
            c.outbox.overflow_resyncs for c in conns
        )
        recoveries = dict(m.recoveries)
        outboxes = [relay.stats() for relay in self._outboxes]
        return HubStats(
            connections=len(conns),
            users=self.sessions.users,
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
            outbox_published=sum(o.published for o in outboxes),
            outbox_errors=sum(o.errors for o in outboxes),
            outbox_pending=max((o.pending for o in outboxes), default=0),  # (the table's)
            outbox_lag=max((o.lag for o in outboxes), default=0.0),
        )


def _running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio event loop running this task; None on trio."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

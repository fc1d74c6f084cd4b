"""A publish-only client: publish from a worker, a script or a service that holds no connections.

Every browser connected to a hub on the same backplane receives what it publishes::

    async with Producer.from_url("redis://localhost:6379/0") as producer:
        await producer.publish(Invalidate(["jobs"]), to=User("alice"))

Events, targets and encoding are those of `Hub.publish` (the same `publisher.prepare` and
`Publisher`), so a failed publish raises `BackplaneError` and is announced (a `resync` of the
stream) before the next publish, or as soon as the backplane reconnects. There is no throttle
(it would need the process to stay up for the trailing edge). Code without an event loop uses
`SyncProducer` (`liveupdates.sync_producer`), which runs a `Producer` in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.abc import TaskGroup
from anyio.lowlevel import EventLoopToken

from ._pipeline.publisher import Prepared, Publisher, prepare
from .backplanes import Backplane, backplane_from_url
from .errors import ProducerClosed
from .events import Event
from .positions import Publication
from .targets import Target
from .transaction import Transaction

logger = logging.getLogger("liveupdates")
CLOSE_ANNOUNCE_TIMEOUT = 2.0  # seconds `aclose` tries to announce failed publishes


class Producer:
    """Publishes to every hub on `backplane` (a URL or a `Backplane`); holds no client
    connections.

    Use it as ``async with`` (or `start` and `aclose`). The backplane is started publish-only
    (`Backplane.start_publishing`) with a receiver that ignores deliveries: the producer listens
    to no stream, so the Redis backplane keeps one connection to Redis for it (its commands), no
    pub/sub connection.
    """

    def __init__(self, backplane: str | Backplane) -> None:
        self.backplane = backplane_from_url(backplane) if isinstance(backplane, str) else backplane
        self._publisher = Publisher(self.backplane)
        self._tg: TaskGroup | None = None
        self._token: EventLoopToken | None = None
        self._thread = 0
        self._running = False
        self.publishes = 0  # events published (an event to n streams counts once)

    @classmethod
    def from_url(cls, url: str) -> Producer:
        """A producer for ``memory://`` (this process only: tests) or ``redis://...``."""
        return cls(backplane_from_url(url))

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the backplane, publish-only; raises `BackplaneError` if it cannot (Redis
        unreachable)."""
        if self._running:
            raise RuntimeError("this producer is already running")
        if self._tg is not None:
            raise ProducerClosed("a closed producer cannot be started again")
        tg = self._tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await self.backplane.start_publishing(_Receiver(self))
        except BaseException:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            self._tg = None  # (it may be started again)
            raise
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.get_ident()
        self._running = True

    async def aclose(self) -> None:
        """Announce failed publishes if the backplane is back (bounded), then disconnect."""
        if not self._running or self._tg is None:
            return
        self._running = False
        with anyio.CancelScope(shield=True):
            if self._publisher.unannounced:
                with anyio.move_on_after(CLOSE_ANNOUNCE_TIMEOUT):
                    if not await self._publisher.announce():
                        logger.warning(
                            "closing with unannounced failed publishes on %s",
                            ", ".join(sorted(self._publisher.unannounced)),
                        )
            await self.backplane.aclose()
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)
        self._token = None

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def running(self) -> bool:
        return self._running

    @property
    def unannounced(self) -> frozenset[str]:
        """Streams whose publish failed and whose `resync` announcement is still to be sent."""
        return frozenset(self._publisher.unannounced)

    # -- publishing -----------------------------------------------------------------------

    async def publish(self, event: Event, to: Target | Iterable[Target]) -> list[Publication]:
        """Send `event` to every connection of the target(s), in every hub process.

        Returns its publication (position) on each target stream. Raises TypeError or
        ValueError for an event or target that cannot be encoded, `ProducerClosed` when not
        running and `BackplaneError` when the backplane cannot take the event.
        """
        return await self.publish_prepared(prepare(event, to))

    async def publish_prepared(self, prepared: Prepared) -> list[Publication]:
        """`publish` for an event encoded already (`prepare`, or the HTTP publish API)."""
        return (await self.publish_batch([prepared]))[0]

    def transaction(self) -> Transaction:
        """Events published through it are held until it commits (publish after commit)."""
        return Transaction(self.publish_batch, self._call_soon)

    async def publish_batch(self, batch: list[Prepared]) -> list[list[Publication]]:
        """Prepared events in order; at a failure the streams of the rest are announced too."""
        if not self._running:
            raise ProducerClosed("the producer is not running: use `async with producer:`")
        results = await self._publisher.publish_all(batch)
        self.publishes += len(batch)
        return [[p for p in positions if p is not None] for positions in results]

    # -- internals ------------------------------------------------------------------------

    def _spawn(self, func: Callable[[], Any]) -> None:
        if self._tg is not None and self._running:
            self._tg.start_soon(func)

    def _call_soon(self, func: Callable[[], Awaitable[Any]]) -> None:
        """Run `func` in the producer's tasks, from its event loop's thread or any other."""
        if self._token is None or not self._running:
            raise ProducerClosed("the producer is not running")
        if threading.get_ident() == self._thread:
            self._spawn(func)
        else:
            anyio.from_thread.run_sync(self._spawn, func, token=self._token)

    def _on_reset(self) -> None:
        if self._publisher.unannounced:
            self._spawn(self._publisher.announce)  # still down: the next reset tries again


class _Receiver:
    """The backplane's receiver for a producer: deliveries are ignored (it listens to nothing);
    a reconnection announces the publishes that failed meanwhile."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer

    def deliver(self, publication: Publication) -> None:
        pass

    def reset(self) -> None:
        self._producer._on_reset()

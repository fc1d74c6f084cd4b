"""The relay: publishes committed outbox rows through the backplane, then deletes them.

It runs inside hub processes (``async with OutboxRelay(db, hub.backplane):`` in the app's
lifespan) or as a process of its own (`run_relay`). Several may run against one table: each
row is claimed by one relay at a time (see store.py), and a stream's rows are published in id
order. A row is deleted only after its publication was acknowledged, so a relay that dies
mid-batch leaves the rest (and possibly some already published) to the next claim: delivery is
at least once.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc

from .._pipeline.publisher import Publisher
from ..backplanes import Backplane, backplane_from_url
from ..hub import Hub
from ..positions import Publication
from .schema import DEFAULT_TABLE, checked_table
from .store import Store, connector, open_store

logger = logging.getLogger("liveupdates.durable")
_CONTENDED = 0.05  # seconds to wait when another relay holds the rows of every stream we hold


@dataclass(frozen=True, slots=True)
class RelayStats:
    """A snapshot of a relay's figures (this relay only; `pending` and `lag` are the table's)."""

    running: bool
    cycles: int  # looks at the table (claims, empty or not)
    published: int  # rows published (a row published again after a crash counts again)
    batches: int  # claims that published at least one row
    errors: int  # failed cycles (database or backplane), each logged and retried
    pending: int  # rows in the table at the last check
    lag: float  # age in seconds of the oldest row at the last check (0.0 when empty)
    last_error: str | None = None


class OutboxRelay:
    """Publishes the outbox rows of `database` through `backplane`.

    `database` is ``postgresql://...``, ``sqlite:///path`` (SQLAlchemy's form: four slashes
    for an absolute path) or a callable returning a psycopg or sqlite3 connection. The relay
    opens its own connections. `backplane` must be started (a hub's, or `run_relay`'s).

    - `batch_size`: rows claimed (and at most published) per transaction.
    - `poll_interval`: seconds between looks at the table when nothing wakes the relay
      (SQLite always; PostgreSQL wakes on ``NOTIFY`` and polls as a fallback).
    - `lease`: SQLite only, seconds a claim is exclusive; it must exceed a batch's publish time.
    - `retry_max`: the longest back-off after an error (it starts at 0.1 s and doubles).
    """

    def __init__(
        self,
        database: str | Callable[[], Any],
        backplane: Backplane,
        *,
        table: str = DEFAULT_TABLE,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        lease: float = 30.0,
        retry_max: float = 5.0,
        listen: bool = True,
    ) -> None:
        if batch_size < 1 or poll_interval <= 0 or lease <= 0 or retry_max <= 0:
            raise ValueError("batch_size >= 1, and poll_interval, lease, retry_max > 0")
        self._connect = connector(database)
        self.publisher = Publisher(backplane)
        self.table = checked_table(table)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = lease
        self.retry_max = retry_max
        self.listen = listen
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._store: Store | None = None
        self._running = False
        self._stopping = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._cycles = self._published = self._batches = self._errors = self._pending = 0
        self._changed: anyio.Event | None = None
        self._lag = 0.0
        self._last_error: str | None = None
        self._checked = -math.inf

    @classmethod
    def in_hub(cls, hub: Hub, database: str | Callable[[], Any], **options: Any) -> OutboxRelay:
        """A relay over `hub`'s backplane whose figures `hub.stats()` reports (the
        ``outbox_*`` fields): ``async with OutboxRelay.in_hub(hub, url): ...``."""
        relay = cls(database, hub.backplane, **options)
        hub.report_outbox(relay)
        return relay

    # -- figures --------------------------------------------------------------------------

    def stats(self) -> RelayStats:
        return RelayStats(
            self._running, self._cycles, self._published, self._batches, self._errors,
            self._pending, self._lag, self._last_error,
        )  # fmt: skip

    async def wait_for(self, predicate: Callable[[RelayStats], bool]) -> None:
        """Wait until `predicate(self.stats())` holds, checked after each cycle and error.
        Bound the wait with ``anyio.fail_after``."""
        while not predicate(self.stats()):
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- running --------------------------------------------------------------------------

    async def __aenter__(self) -> OutboxRelay:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.run)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self.stop()
        await self._tg.__aexit__(exc_type, exc, tb)
        self._tg = None

    def stop(self) -> None:
        """Finish the batch under way, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Publish rows as they are committed, until `stop` (or cancellation)."""
        self._running = True
        delay = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    published, held = await self._cycle()
                except Exception as exc:  # a database or backplane failure: log, back off
                    self._failed(exc, delay)
                    await self._close_store()
                    with anyio.move_on_after(delay):
                        await self._stopping.wait()
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = 0.1
                if published >= self.batch_size:
                    continue  # more may be waiting
                await self._wait(_CONTENDED if published or held else self.poll_interval)
        finally:
            self._running = False
            self._wake()
            with anyio.CancelScope(shield=True):
                await self._close_store()

    async def publish_pending(self) -> int:
        """Publish every row this relay can claim now and return how many, then close the
        relay's connections (for scripts and tests; raises what a cycle raises)."""
        total = 0
        try:
            while True:
                published, held = await self._cycle()
                total += published
                if not published and not held:
                    return total
                if not published:
                    await anyio.sleep(_CONTENDED)  # another relay holds them: its turn
        finally:
            with anyio.CancelScope(shield=True):
                await self._close_store()

    async def _cycle(self) -> tuple[int, int]:
        """One claim: publish its rows in order, delete them. Returns (published, held)."""
        store = await self._open_store()
        claim = await anyio.to_thread.run_sync(store.claim, self.batch_size)
        published: list[int] = []
        try:
            for row in claim.rows:
                if claim.deadline is not None and time.monotonic() >= claim.deadline:
                    break  # the lease runs out: the rest is claimed again
                await self.publisher.publish_stream(row.stream, row.body, row.slot)
                published.append(row.id)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(store.finish, published)
            self._published += len(published)
            self._batches += 1 if published else 0
        await self._check_backlog(store, idle=not claim.rows)
        self._cycles += 1
        self._wake()
        return len(published), claim.held

    async def _check_backlog(self, store: Store, *, idle: bool) -> None:
        now = time.monotonic()
        if idle or now - self._checked >= 1.0:
            self._checked = now
            self._pending, self._lag = await anyio.to_thread.run_sync(store.backlog)

    async def _wait(self, seconds: float) -> None:
        """Until a notification, `seconds` or `stop`."""
        store = self._store
        fileno = store.listen_fileno() if store is not None else None
        async with anyio.create_task_group() as tg:

            async def stopped() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stopped)
            with anyio.move_on_after(seconds):
                if fileno is not None and store is not None:
                    await anyio.wait_readable(fileno)
                    try:
                        store.drain_notifications()
                    except Exception:  # the listening connection is gone: reopen both
                        logger.debug("outbox relay: lost its LISTEN connection", exc_info=True)
                        await self._close_store()
                else:
                    await anyio.sleep(seconds)
            tg.cancel_scope.cancel()

    async def _open_store(self) -> Store:
        if self._store is None:
            self._store = await anyio.to_thread.run_sync(self._open_store_sync)
        return self._store

    def _open_store_sync(self) -> Store:
        return open_store(
            self._connect, self.table, owner=self.owner, lease=self.lease, listen=self.listen
        )

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            try:
                await anyio.to_thread.run_sync(store.close)
            except Exception:  # already broken: nothing left to release
                logger.debug("outbox relay: closing the database connection failed", exc_info=True)

    def _failed(self, exc: Exception, delay: float) -> None:
        self._errors += 1
        self._last_error = f"{type(exc).__name__}: {exc}".strip()
        self._wake()
        logger.warning(
            "outbox relay (%s): %s; retrying in %.1f s", self.table, self._last_error, delay
        )


class _NoReceiver:
    """A relay process listens to no stream: it only publishes (`start_publishing`: over Redis,
    one connection)."""

    def deliver(self, publication: Publication) -> None:
        pass

    def reset(self) -> None:
        pass


async def run_relay(
    database: str | Callable[[], Any],
    backplane: str | Backplane,
    *,
    handle_signals: bool = True,
    **options: Any,
) -> None:
    """Run an `OutboxRelay` as a process of its own, until SIGTERM or SIGINT (the batch under
    way is finished first) or cancellation. `backplane` is a URL or a backplane object (started
    and closed here); `options` are `OutboxRelay`'s."""
    plane = backplane_from_url(backplane) if isinstance(backplane, str) else backplane
    await plane.start_publishing(_NoReceiver())  # (it listens to nothing)
    try:
        relay = OutboxRelay(database, plane, **options)
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_stop_on_signal, relay)
            await relay.run()
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await plane.aclose()


async def _stop_on_signal(relay: OutboxRelay) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("outbox relay: %s, stopping after the batch under way", signum.name)
            relay.stop()
            return

"""The publish-only client for code without an event loop: Celery, RQ, Django views, scripts.

::

    producer = SyncProducer("redis://localhost:6379/0")   # module level: connects lazily

    @app.task
    def finish(job_id: int, owner: str) -> None:
        ...
        producer.publish(Invalidate(["jobs", job_id]), to=User(owner))

A `SyncProducer` runs one asyncio event loop in a daemon thread, started by the first publish
and reused by every later call from any thread: the backplane's connections are opened once
per process. It is safe across ``fork`` (Celery prefork, gunicorn ``--preload``,
multiprocessing): a child process never uses its parent's connections or thread; it opens its
own at its first publish, and the parent goes on with its own. Each call waits at most
`timeout` seconds. Errors are those of `Producer.publish`, raised in the calling thread.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ._pipeline.publisher import Prepared, prepare
from .backplanes import Backplane, backplane_from_url
from .errors import BackplaneUnavailable, ProducerClosed
from .events import Event
from .positions import Publication
from .producer import Producer
from .targets import Target
from .transaction import Transaction

T = TypeVar("T")
logger = logging.getLogger("liveupdates")
BackplaneFactory = Callable[[], Backplane]

_live: weakref.WeakSet[SyncProducer] = weakref.WeakSet()
_orphans: list[object] = []  # in a forked child: the parent's loop threads, never touched


class _Runner:
    """One event loop in a daemon thread, running a started `Producer` until `stop`."""

    def __init__(self, factory: BackplaneFactory) -> None:
        self._factory = factory
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.producer: Producer | None = None
        self.error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._main, name="liveupdates-producer", daemon=True)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with Producer(self._factory()) as producer:
                self.producer = producer
                self.ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the caller waiting for `ready`
            self.error = exc
        finally:
            self.producer = None
            self.ready.set()

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and self.producer is not None

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]

    def stop(self, timeout: float) -> None:
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and self.thread.is_alive():
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop closed meanwhile
                return
            self.thread.join(timeout)


class SyncProducer:
    """A blocking `Producer`, usable from any thread of any process; see the module docstring.

    `backplane` is a URL (``redis://...``) or a function that makes a `Backplane` (called in
    the producer's thread, once per process). Each call gives up after `timeout` seconds with
    `BackplaneUnavailable`.
    """

    def __init__(self, backplane: str | BackplaneFactory, *, timeout: float = 10.0) -> None:
        if isinstance(backplane, str):
            url = backplane
            backplane_from_url(url)  # a bad URL fails here, not at the first publish
            self._factory: BackplaneFactory = lambda: backplane_from_url(url)
        else:
            self._factory = backplane
        self.timeout = timeout
        self._runner: _Runner | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        _live.add(self)

    # -- publishing -----------------------------------------------------------------------

    def publish(self, event: Event, to: Target | Iterable[Target]) -> list[Publication]:
        """Send `event` to every connection of the target(s), in every hub process.

        Blocks until the backplane took it; returns its position in each stream. Raises like
        `Producer.publish` (TypeError or ValueError at once, `BackplaneError`, and
        `ProducerClosed` after `close`).
        """
        return self.publish_prepared(prepare(event, to))

    def publish_prepared(self, prepared: Prepared) -> list[Publication]:
        """`publish` for an event encoded already (`publisher.prepare`)."""
        return self._call(lambda producer: producer.publish_prepared(prepared))

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold events until the block ends: published then (blocking), dropped if it raises.

        ::

            with producer.transaction() as tx, connection:   # sqlite3: commits at the end
                connection.execute("UPDATE jobs ...")
                tx.publish(Invalidate(["jobs"]), to=Topic("jobs"))

        Put the transaction outside the database block so that it commits after the data.
        `tx.schedule_commit()` (for ORM hooks) publishes in the background instead.
        """
        tx = Transaction(self._publish_in_loop, self._call_soon)
        try:
            yield tx
        except BaseException:
            tx.rollback()
            raise
        if len(tx):
            self._call(lambda producer: tx.commit())
        else:
            tx.rollback()

    async def _publish_in_loop(self, batch: list[Prepared]) -> list[list[Publication]]:
        runner = self._runner  # (runs in the runner's thread: it exists)
        if runner is None or runner.producer is None:
            raise ProducerClosed("the producer is closed")
        return await runner.producer.publish_batch(batch)

    def _call_soon(self, func: Callable[[], Awaitable[Any]]) -> None:
        future = self._running().submit(func())
        future.add_done_callback(_log_failure)

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Announce failed publishes if it can, disconnect and stop the thread. Idempotent;
        called at interpreter exit for every producer still open."""
        with self._lock:
            self._closed = True
            runner, self._runner = self._runner, None
        if runner is not None and self._pid == os.getpid():
            runner.stop(self.timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _call(self, make: Callable[[Producer], Awaitable[T]]) -> T:
        runner = self._running()
        if threading.current_thread() is runner.thread:
            raise RuntimeError("SyncProducer called from its own thread: await a Producer")
        assert runner.producer is not None
        future = runner.submit(make(runner.producer))
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BackplaneUnavailable(
                f"the backplane did not answer within {self.timeout} s"
            ) from None

    def _running(self) -> _Runner:
        """This process's runner, started (connected) if need be."""
        with self._lock:
            if self._pid != os.getpid():
                self._forget_parent()
            if self._closed:
                raise ProducerClosed("the producer is closed")
            runner = self._runner
            if runner is not None and runner.alive:
                return runner
            runner = _Runner(self._factory)
            runner.thread.start()
            if not runner.ready.wait(self.timeout):
                runner.stop(0)
                raise BackplaneUnavailable(f"could not connect within {self.timeout} s")
            if runner.error is not None or runner.producer is None:
                raise runner.error or ProducerClosed("the producer stopped")
            self._runner = runner
            return runner

    def _forget_parent(self) -> None:
        """In a forked child: leave the parent's thread and connections alone, forever."""
        if self._runner is not None:
            _orphans.append(self._runner)
        self._runner = None
        self._lock = threading.Lock()  # (it may have been held by a parent's thread)
        self._pid = os.getpid()


def _log_failure(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("publishing after commit failed", exc_info=future.exception())


def _after_fork_in_child() -> None:
    for producer in list(_live):
        producer._forget_parent()


def _close_all() -> None:
    for producer in list(_live):
        if producer._pid == os.getpid():
            producer.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)

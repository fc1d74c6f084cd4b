"""Sending: one flusher per hub, instead of a writer task per connection.

A fan-out queues messages (`Outbox.push`); an outbox that stops being empty puts its connection
on the flusher's list. Once the publisher yields, the flusher drains each listed connection into
one frame and starts sending it. An event that finds the process quiet skips the outboxes: its
frame goes to each connection as the fan-out reaches it, as in a bare send loop, for one slice
(2 ms while a publisher waits for its backplane, else 10 ms); then the flusher carries the
broadcast on from where it stopped, slice by slice. While
a broadcast is in progress, anything queued for a connection first puts the broadcast's message
into every outbox it has yet to reach (`OrderGuard`), so each connection keeps the order.
Either way:

- On asyncio the send starts eagerly, inside the flusher, and runs up to its first suspension.
  A send into a socket that takes the bytes at once (the usual case) is complete right there:
  a broadcast to N clients costs N calls, not N task wake-ups, and an idle connection has no
  task waiting to write.
- A send that has to wait (a client that reads slowly, a full socket buffer) goes on in a task
  of its own, so no other client waits for it; that task also sends what its connection queues
  meanwhile, then ends. On other event loops (trio) every send runs in such a task.

`Connection.sending_since` is set while a send is under way: the hub's sweeper closes a
connection whose send takes longer than `Limits.send_timeout` (a slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import Callable, Coroutine, Generator, Iterable, Iterator
from typing import Any

import anyio
import anyio.lowlevel

from ._pipeline.connection import Connection, SendFrame
from ._pipeline.outbox import Message, OrderGuard
from .errors import CloseCode, PeerGone
from .metrics import Metrics

logger = logging.getLogger("liveupdates")
Spawn = Callable[..., None]
# A pass over many connections yields every SLICE seconds: a publisher waiting for its backplane
# (Redis) adds its next events meanwhile, so the connections not yet flushed get them in the
# same frame, and the process keeps reading its sockets.
SLICE = 0.002
# A broadcast sent straight to the sockets while no publisher waits yields every QUIET_SLICE
# seconds instead: each time the flusher gives way costs the sends after it their warm caches
# (measured: 2 ms slices made such a fan-out about 10 % slower than none at all, 10 ms 3 %).
QUIET_SLICE = 0.01
# An event that finds the process quiet (nothing flushed for QUIET seconds) is sent as it is
# fanned out, as a bare send loop would: isolated events leave at once, close followers are
# batched through the outboxes.
QUIET = 0.01


class Flusher:
    """Sends what the connections of one hub have pending (`run` is the hub's task)."""

    def __init__(
        self, metrics: Metrics, clock: Callable[[], float], flush_interval: float, spawn: Spawn
    ) -> None:
        self.metrics, self.clock, self.flush_interval = metrics, clock, flush_interval
        self._spawn = spawn
        self._dirty: list[Connection] = []
        self._wake: anyio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet_from = 0.0  # perf_counter time from which the process counts as quiet
        self.turn_at = 0.0  # perf_counter time the flusher last got a turn (publishers see it)
        # a broadcast in progress: its message, and the connections it has yet to reach
        self._broadcast: tuple[Message, Iterator[Connection]] | None = None
        self.waiting = 0  # publishers waiting for their backplane (the hub counts them)
        self.guard = OrderGuard(self._settle)
        self._driver = _driver()

    def fan_out(self, conns: Iterable[Connection], message: Message) -> bool:
        """Queue `message` for each of `conns`; True when an outbox is at least half full.

        When the process is quiet, the message is sent to each connection as the fan-out
        reaches it, as a bare send loop would; after `SLICE` seconds the flusher carries on
        from there (the broadcast is then in progress). Otherwise, or to a connection that has
        something else pending, it goes through the outbox.
        """
        if self._broadcast is not None:
            self._settle()  # the broadcast in progress first, in every outbox
        if (
            self._loop is None
            or self.flush_interval
            or self._dirty
            or time.perf_counter() < self._quiet_from  # a flush a moment ago: batch this one
        ):
            return _push_all(conns, message)
        remaining = iter(conns)
        filling, done = self._send(remaining, message)
        if done:
            self._quiet_from = time.perf_counter() + QUIET
        else:  # (a snapshot: conns may change meanwhile)
            self._broadcast = message, iter(list(remaining))
            self.guard.active = True
            self._wake_up()
        return filling

    def schedule(self, conn: Connection) -> None:
        """`conn` has something to send (its outbox stopped being empty)."""
        self._dirty.append(conn)
        self._wake_up()

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def _send(self, conns: Iterator[Connection], message: Message) -> tuple[bool, bool]:
        """Send `message` straight to `conns` for about `SLICE` seconds (`QUIET_SLICE` when no
        publisher waits for its backplane).

        Returns (an outbox is at least half full, `conns` are exhausted).
        """
        loop, frame, stream, now = self._loop, message.frame, message.stream, self.clock()
        assert loop is not None
        perf_counter = time.perf_counter
        deadline = perf_counter() + (SLICE if self.waiting else QUIET_SLICE)
        filling, done, sent = False, True, 0
        drive = self._driver.send  # (`_start`, inlined: this loop is the fan-out's hot path)
        for count, conn in enumerate(conns, 1):
            sender, gates = conn.sender, conn.gates
            if (
                sender is None
                or conn.writer is not None
                or (gates and stream in gates)  # (a gate on another stream is no matter)
                or conn.outbox.items
            ):
                filling |= conn.push(message)  # the outbox keeps its order, the gate its rules
                self._flush_one(conn, now)  # (nothing, if not attached or a task sends)
            else:
                try:
                    step = drive(sender(frame))
                except BaseException as exc:
                    self._send_failed(conn, exc)
                    drive = self._driver.send
                else:
                    if step is _DONE:
                        sent += 1  # (`conn.last_sent` is the stream's: `Streams.sent_at`)
                    else:
                        self._suspended(loop, conn, sender, frame, step, now)
                        drive = self._driver.send
            if not count & 15 and perf_counter() > deadline:
                done = False
                break
        self._count(sent, frame, message.ts)
        return filling, done

    def _settle(self) -> None:
        """Something else is queued while a broadcast is in progress: queue its message first
        in every outbox it has yet to reach, so that each connection keeps the order."""
        broadcast, self._broadcast = self._broadcast, None
        self.guard.active = False
        if broadcast is not None:
            message, conns = broadcast
            _push_all(conns, message)

    async def run(self) -> None:
        """Send the broadcast in progress and flush the scheduled connections, forever."""
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: sends run in tasks
            self._loop = None
        while True:
            while not self._dirty and self._broadcast is None:
                self._wake = anyio.Event()
                await self._wake.wait()
                self.turn_at = time.perf_counter()
            broadcast = self._broadcast
            if broadcast is not None:
                self.guard.active = False  # (its own pushes need no settling)
                _, finished = self._send(broadcast[1], broadcast[0])
                if finished:
                    self._broadcast = None
                    self._quiet_from = time.perf_counter() + QUIET
                else:
                    self.guard.active = True
                await self._give_way()
                continue
            if self.flush_interval:
                await anyio.sleep(self.flush_interval)  # let more pile up: fewer, larger frames
            dirty, self._dirty = self._dirty, []
            done = self._flush(dirty, 0)
            while done < len(dirty):  # a long pass lets publishers and readers in meanwhile
                await self._give_way()
                done = self._flush(dirty, done)
            self._quiet_from = time.perf_counter() + QUIET

    async def _give_way(self) -> None:
        """Between two slices: let run, first, every task that what arrived from the network
        meanwhile wakes (Redis' reply to a publisher, its pub/sub message, a client's frame).

        One checkpoint is not enough: this task's next step is queued before the callbacks of
        the I/O that the loop polls next. Those wake their task at once on uvloop, one turn
        later on asyncio's own loop (I/O callback, then the task); three turns let both go
        first. Otherwise a publisher waiting for Redis waits one or two slices more per event,
        and a burst through Redis leaves in many more, smaller frames.
        """
        if self._loop is not None:  # (asyncio's own turn: anyio's adds 5-10 us to each)
            for _ in range(3):
                await asyncio.sleep(0)
        else:
            for _ in range(3):
                await anyio.lowlevel.checkpoint()
        self.turn_at = time.perf_counter()

    def _flush(self, conns: list[Connection], start: int) -> int:
        """Send what `conns[start:]` have pending, for about `SLICE` seconds; where it stopped."""
        now, end = self.clock(), len(conns)
        deadline = time.perf_counter() + SLICE
        for index in range(start, end):
            if not index % 16 and time.perf_counter() > deadline:
                return index
            self._flush_one(conns[index], now)
        return end

    def _flush_one(self, conn: Connection, now: float) -> None:
        sender = conn.sender
        if sender is None or conn.writer is not None:
            return  # not attached yet, closed, or its task sends what is pending
        frame = conn.outbox.drain()
        if frame is None:
            return
        loop = self._loop
        if loop is None:
            conn.writer = scope = anyio.CancelScope()
            self._spawn(self._write_in_scope, conn, sender, scope, frame)
            return
        if self._start(loop, conn, sender, frame, now):
            self._sent(conn, frame, now)

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        sender: SendFrame,
        frame: str,
        now: float,
    ) -> bool:
        """Start sending `frame` eagerly; True when the send completed right here.

        A send that must wait goes on in a task of its own (`conn.writer`), which also sends
        what `conn` queues meanwhile.
        """
        try:
            step = self._driver.send(sender(frame))
        except BaseException as exc:
            self._send_failed(conn, exc)
            return False
        if step is _DONE:
            return True
        self._suspended(loop, conn, sender, frame, step, now)
        return False

    def _suspended(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: Connection,
        sender: SendFrame,
        frame: str,
        step: Any,
        now: float,
    ) -> None:
        """The send of `frame`, started eagerly, waits (at `step`): a task finishes it."""
        driver, self._driver = self._driver, _driver()  # the old one is inside the send
        conn.sending_since = now
        conn.writer = loop.create_task(self._write(conn, sender, frame, (driver, step)))

    def _send_failed(self, conn: Connection, exc: BaseException) -> None:
        """A send started eagerly raised `exc` (which ends the driver)."""
        self._driver = _driver()
        if not isinstance(exc, Exception):
            raise exc
        self._lost(conn, exc)

    def _lost(self, conn: Connection, exc: Exception) -> None:
        """A send to `conn` raised `exc`: see `Connection.attach`."""
        if isinstance(exc, PeerGone):
            return  # the transport ends the connection
        handler = conn.on_send_error
        if handler is None:
            self._failed(conn)
            return
        try:
            handler(exc)
        except Exception:  # a bug in the transport: as if it had no handler
            self._failed(conn)

    def _sent(self, conn: Connection, frame: str, now: float) -> bool:
        """Count a frame sent; True when that was the last one before closing."""
        conn.last_sent = now
        outbox = conn.outbox
        self._count(1, frame, outbox.drained_ts)
        if conn.closing is not None and not len(outbox):
            conn.close(*conn.closing)
            return True
        return False

    def _count(self, frames: int, frame: str, published: float) -> None:
        """Count `frames` sends of `frame`, whose oldest event was published at `published`."""
        metrics = self.metrics
        metrics.frames += frames
        metrics.bytes_sent += frames * len(frame)
        if published and frames:
            metrics.lag.observe(max(0.0, time.time() - published), frames)

    def _failed(self, conn: Connection) -> None:
        self.metrics.errors += 1
        logger.exception("sending to %s failed", conn.id)
        conn.close(CloseCode.INTERNAL_ERROR, "internal error")

    async def _write_in_scope(
        self, conn: Connection, sender: SendFrame, scope: anyio.CancelScope, frame: str
    ) -> None:
        with scope:
            if not scope.cancel_called:  # (the connection closed before this task started)
                await self._write(conn, sender, frame)

    async def _write(
        self,
        conn: Connection,
        sender: SendFrame,
        frame: str,
        started: tuple[_Driver, Any] | None = None,
    ) -> None:
        """Send `frame` (or finish its `started` send), then what `conn` queues meanwhile."""
        clock = self.clock
        try:
            while True:
                if started is None:
                    conn.sending_since = clock()
                    await sender(frame)
                else:
                    await _resume(*started)
                    started = None
                conn.sending_since = 0.0
                if self._sent(conn, frame, clock()) or conn.sender is not sender:
                    return  # closed meanwhile
                next_frame = conn.outbox.drain()
                if next_frame is None:
                    return
                frame = next_frame
        except Exception as exc:
            self._lost(conn, exc)
        finally:
            conn.sending_since = 0.0
            conn.writer = None


def _push_all(conns: Iterable[Connection], message: Message) -> bool:
    filling = False
    for conn in conns:
        if conn.push(message):
            filling = True
    return filling


_DONE = object()  # what a driver yields once the send it was given completed
_Driver = Generator[Any, Coroutine[Any, Any, None] | None, None]


def _driver() -> _Driver:
    """A new driver, ready for its first send (`_drive`)."""
    driver = _drive()
    driver.send(None)
    return driver


@types.coroutine
def _drive() -> _Driver:
    """A driver of eager sends: ``driver.send(coroutine)`` runs the coroutine up to its first
    suspension and returns what it yielded to the event loop, or `_DONE` once it completed.

    Calling ``coroutine.send(None)`` directly would do the same, but a coroutine that completes
    raises StopIteration; here it returns inside ``yield from``, and the send of a broadcast
    costs no exception (about 0.5 us of a 30 us send). An exception from the coroutine ends the
    driver; so must a suspension, the driver being inside the coroutine (`_resume` finishes it).
    """
    coroutine = yield None  # (`_driver` primes it)
    while True:
        assert coroutine is not None
        yield from coroutine
        coroutine = yield _DONE


@types.coroutine
def _resume(driver: _Driver, step: Any) -> Generator[Any, Any, None]:
    """Drive the send in `driver`, started eagerly and suspended at `step`, from the task
    awaiting this, until it completes.

    The event loop sees what the send yields and sends or throws back what it would have: the
    task that runs this takes over exactly where the eager start stopped.
    """
    try:
        while step is not _DONE:
            try:
                sent = yield step
            except BaseException as exc:
                step = driver.throw(exc)
            else:
                step = driver.send(sent)
    finally:
        driver.close()

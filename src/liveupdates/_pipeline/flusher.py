"""Sending: one flusher per hub, instead of a writer task per connection.

A fan-out queues messages (`Outbox.push`); an outbox that stops being empty puts its connection
on the flusher's list. Once the publisher yields, the flusher drains each listed connection into
one frame and starts sending it. An event that finds the process quiet skips the outboxes: its
frame goes to each connection as the fan-out reaches it, as in a bare send loop, for one slice
(2 ms while a publisher waits for its backplane, else 10 ms); then the flusher carries the
broadcast on from where it stopped, slice by slice. While
a broadcast is in progress, anything queued for a connection first puts the broadcast's message
into every outbox it has yet to reach (`OrderGuard`), so each connection keeps the order.

This module holds that policy. How a send is started is a `SendEngine`'s, chosen once when the
flusher starts, for the event loop it runs on:

- asyncio (`_send_asyncio.EagerSends`): the send starts eagerly, inside the flusher, and runs up
  to its first suspension. A send into a socket that takes the bytes at once (the usual case)
  is complete right there: a broadcast to N clients costs N calls, not N task wake-ups, and an
  idle connection has no task waiting to write. Only this engine sends a quiet process's
  broadcast straight to the sockets.
- A send that has to wait (a client that reads slowly, a full socket buffer) goes on in a task
  of its own (`Flusher.write`), so no other client waits for it; that task also sends what its
  connection queues meanwhile, then ends. On other event loops (trio,
  `_send_tasks.TaskSends`) every send runs in such a task.

All its time comes from the hub's clock (`Hub(clock=...)`): slices, quiet detection and the
turns it gets. `Connection.sending_since` is set while a send is under way: the hub's sweeper
closes a connection whose send takes longer than `Limits.send_timeout` (a slow consumer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Protocol

import anyio

from ..errors import CloseCode, PeerGone
from ..metrics import Metrics
from ._send_asyncio import EagerSends
from ._send_tasks import TaskSends
from .connection import Connection, SendFrame
from .outbox import Message, OrderGuard

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


class SendEngine(Protocol):
    """How the flusher starts sends on one kind of event loop."""

    direct: bool  # whether a quiet process's broadcast goes straight to the sockets (`send`)

    def start(self, conn: Connection, sender: SendFrame, frame: str, now: float) -> bool:
        """Start sending `frame`, drained from `conn`'s outbox; True when it completed here."""
        ...

    def send(
        self, conns: Iterator[Connection], message: Message, now: float, deadline: float
    ) -> tuple[bool, bool]:
        """Send `message` straight to `conns` until `deadline` (only when `direct`).

        Returns (an outbox is at least half full, `conns` are exhausted).
        """
        ...

    async def give_way(self) -> None:
        """Let run every task that what arrived from the network meanwhile wakes."""
        ...


class Flusher:
    """Sends what the connections of one hub have pending (`run` is the hub's task)."""

    def __init__(
        self, metrics: Metrics, clock: Callable[[], float], flush_interval: float, spawn: Spawn
    ) -> None:
        self.metrics, self.clock, self.flush_interval = metrics, clock, flush_interval
        # How long after a send the process counts as busy: events within it are batched. With
        # a flush interval, the leading edge still leaves at once (an isolated event is not
        # delayed) and what follows within the interval gathers into the next frame.
        self._quiet = max(QUIET, flush_interval)
        self.spawn = spawn
        self._dirty: list[Connection] = []
        # whether events were queued in outboxes since the flusher last took `_dirty`: only
        # events make the process busy (pings, pongs and replies do not batch the next event)
        self._queued = False
        self._wake: anyio.Event | None = None
        self._engine: SendEngine | None = None  # chosen by `run`, for its event loop
        self._direct = False  # its `direct`: the fan-out's hot path reads it
        self._quiet_from = 0.0  # clock time from which the process counts as quiet
        self.turn_at = 0.0  # clock time the flusher last got a turn (publishers see it)
        # a broadcast in progress: its message, and the connections it has yet to reach
        self._broadcast: tuple[Message, Iterator[Connection]] | None = None
        self.waiting = 0  # publishers waiting for their backplane (the hub counts them)
        self.guard = OrderGuard(self._settle)

    def fan_out(self, conns: Iterable[Connection], message: Message) -> bool:
        """Queue `message` for each of `conns`; True when an outbox is at least half full.

        When the process is quiet, the message is sent to each connection as the fan-out
        reaches it, as a bare send loop would; after `SLICE` seconds the flusher carries on
        from there (the broadcast is then in progress). Otherwise, or to a connection that has
        something else pending, it goes through the outbox.
        """
        if self._broadcast is not None:
            self._settle()  # the broadcast in progress first, in every outbox
        if not self._direct or self._queued or asyncio.current_task() is None:
            # (outside any task, in a backplane's plain callback, a send cannot run: one that
            # needs its task's context, anyio's, raises there; the flusher's task sends it)
            self._queued = True
            return _push_all(conns, message)
        now = self.clock()
        if now < self._quiet_from:  # a flush a moment ago: batch this one
            self._queued = True
            return _push_all(conns, message)
        engine = self._engine
        assert engine is not None
        remaining = iter(conns)
        filling, done = engine.send(remaining, message, now, self._deadline(now))
        if done:
            self._quiet_from = self.clock() + self._quiet
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

    def _deadline(self, now: float) -> float:
        """When a broadcast's slice that starts `now` ends: `SLICE` seconds while a publisher
        waits for its backplane, else `QUIET_SLICE`."""
        return now + (SLICE if self.waiting else QUIET_SLICE)

    def _settle(self) -> None:
        """Something else is queued while a broadcast is in progress: queue its message first
        in every outbox it has yet to reach, so that each connection keeps the order."""
        broadcast, self._broadcast = self._broadcast, None
        self.guard.active = False
        if broadcast is not None:
            message, conns = broadcast
            self._queued = True
            _push_all(conns, message)

    async def run(self) -> None:
        """Send the broadcast in progress and flush the scheduled connections, forever."""
        self._engine = engine = _engine_for_this_loop(self)
        self._direct = engine.direct
        clock = self.clock
        while True:
            while not self._dirty and self._broadcast is None:
                self._wake = anyio.Event()
                await self._wake.wait()
                self.turn_at = clock()
            broadcast = self._broadcast
            if broadcast is not None:
                self.guard.active = False  # (its own pushes need no settling)
                now = clock()
                _, finished = engine.send(broadcast[1], broadcast[0], now, self._deadline(now))
                if finished:
                    self._broadcast = None
                    self._quiet_from = clock() + self._quiet
                else:
                    self.guard.active = True
                await self._give_way()
                continue
            if self.flush_interval and clock() < self._quiet_from:
                # let more pile up: fewer, larger frames (after a quiet spell, the leading
                # edge leaves at once, as a direct send does)
                await anyio.sleep(self.flush_interval)
            dirty, self._dirty = self._dirty, []
            events, self._queued = self._queued, False
            done = self._flush(dirty, 0)
            while done < len(dirty):  # a long pass lets publishers and readers in meanwhile
                await self._give_way()
                done = self._flush(dirty, done)
            if events:  # (a pass of pings or replies leaves the process quiet)
                self._quiet_from = clock() + self._quiet

    async def _give_way(self) -> None:
        """Between two slices: let the rest of the process run (`SendEngine.give_way`)."""
        assert self._engine is not None
        await self._engine.give_way()
        self.turn_at = self.clock()

    def _flush(self, conns: list[Connection], start: int) -> int:
        """Send what `conns[start:]` have pending, for about `SLICE` seconds; where it stopped."""
        clock = self.clock
        now, end = clock(), len(conns)
        deadline = now + SLICE
        for index in range(start, end):
            if not index % 16 and clock() > deadline:
                return index
            self.flush_one(conns[index], now)
        return end

    def flush_one(self, conn: Connection, now: float) -> None:
        """Start sending what `conn` has pending, unless a task sends it already."""
        sender = conn.sender
        if sender is None or conn.writer is not None:
            return  # not attached yet, closed, or its task sends what is pending
        frame = conn.outbox.drain()
        if frame is None:
            return
        assert self._engine is not None
        if self._engine.start(conn, sender, frame, now):
            self.sent(conn, frame, now)

    def lost(self, conn: Connection, exc: Exception) -> None:
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

    def sent(self, conn: Connection, frame: str, now: float) -> bool:
        """Count a frame sent; True when that was the last one before closing."""
        conn.frame_sent(now)
        outbox = conn.outbox
        self.count(1, frame, outbox.drained_ts)
        if conn.closing is not None and not len(outbox):
            conn.close(*conn.closing)
            return True
        return False

    def count(self, frames: int, frame: str, published: float) -> None:
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

    async def write(
        self,
        conn: Connection,
        sender: SendFrame,
        frame: str,
        started: Awaitable[None] | None = None,
    ) -> None:
        """Send `frame` (or finish its `started` send), then what `conn` queues meanwhile: the
        task of a send that has to wait (every send, on trio)."""
        clock = self.clock
        try:
            while True:
                if started is None:
                    conn.send_started(clock())
                    await sender(frame)
                else:
                    await started
                    started = None
                conn.send_ended()
                if self.sent(conn, frame, clock()) or conn.sender is not sender:
                    return  # closed meanwhile
                next_frame = conn.outbox.drain()
                if next_frame is None:
                    return
                frame = next_frame
        except Exception as exc:
            self.lost(conn, exc)
        finally:
            conn.writer_ended()


def _push_all(conns: Iterable[Connection], message: Message) -> bool:
    filling = False
    for conn in conns:
        if conn.push(message):
            filling = True
    return filling


def _engine_for_this_loop(flusher: Flusher) -> SendEngine:
    """The send engine for the running event loop: eager sends on asyncio, tasks elsewhere."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio (trio): every send runs in a task
        return TaskSends(flusher)
    return EagerSends(flusher, loop)

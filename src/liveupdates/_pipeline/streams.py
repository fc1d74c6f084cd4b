"""The streams a process has local connections on: delivery, fan-out and recovery.

The backplane delivers publications here (this is its `Receiver`). Each is fanned out, as one
shared message, to the local connections of its stream, in offset order: a publication that
skips offsets or changes epoch makes the stream hold its live publications while it reads the
history, then replay what was missing or resync its connections. Joining a stream reads the
history since the client's cursor the same way (`recovered`, or `resync`). Control
publications (`control`) are applied here and never reach clients.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..backplanes import Backplane
from ..errors import BackplaneError, CloseCode
from ..metrics import Metrics
from ..positions import Position, Publication
from ..protocol import Outcome, Subscribed
from .connection import Connection
from .control import CONTROL_SLOT, ResyncStream, decode_control
from .flusher import Flusher
from .outbox import Message, control_message, event_message, position_prefix

logger = logging.getLogger("liveupdates")
Spawn = Callable[..., None]


class _Stream:
    """What this process knows of one stream it has local connections on."""

    __slots__ = ("again", "conns", "epoch", "head", "pending", "prefix", "reconciling", "sent_at")

    def __init__(self) -> None:
        self.conns: dict[Connection, None] = {}
        self.head: Position | None = None
        self.pending: list[Publication] | None = None  # held until a gap is reconciled
        self.reconciling = False  # a reconcile task is running
        self.again = False  # ...and must run once more when it ends
        self.epoch = ""
        self.prefix = ""
        self.sent_at = 0.0  # (hub clock) when its last event was fanned out to its connections


class Streams:
    """The stream registry of one hub, and the backplane's receiver."""

    def __init__(
        self,
        backplane: Backplane,
        metrics: Metrics,
        spawn: Spawn,
        on_reset: Callable[[], None],
        flusher: Flusher,
    ) -> None:
        self.backplane, self.metrics, self.flusher = backplane, metrics, flusher
        self._spawn, self._on_reset = spawn, on_reset
        self._streams: dict[str, _Stream] = {}
        self.filling = False  # a fan-out found an outbox half full: let the writers run

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def reconciling(self) -> int:
        """How many streams are being reconciled after a backplane gap (0 when settled)."""
        return sum(state.pending is not None for state in self._streams.values())

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

    def sent_at(self, stream: str) -> float:
        """When the last event of `stream` was fanned out here (0: never); the sweeper's
        measure of a connection's last send, along with `Connection.last_sent`."""
        state = self._streams.get(stream)
        return 0.0 if state is None else state.sent_at

    def reset(self) -> None:
        """The backplane reconnected: check every stream for publications this process missed."""
        self.metrics.backplane_resets += 1
        for stream, state in self._streams.items():
            if state.pending is None:
                state.pending = []
            self._start_reconcile(stream, state)
        self._on_reset()

    def _start_reconcile(self, stream: str, state: _Stream) -> None:
        if state.reconciling:
            state.again = True  # what it read may predate this call: read once more
        else:
            state.reconciling = True
            self._spawn(self._reconcile, stream, state)

    def _fan_out(self, state: _Stream, publication: Publication) -> None:
        state.head = Position(publication.epoch, publication.offset)
        if publication.slot == CONTROL_SLOT:
            self._apply_control(state, publication)
            return
        message = self._message(state, publication)
        state.sent_at = self.flusher.clock()  # (a direct send records nothing per connection)
        if self.flusher.fan_out(state.conns, message):
            self.filling = True
        self.metrics.deliveries += len(state.conns)

    def _apply_control(self, state: _Stream, publication: Publication) -> None:
        command = decode_control(publication.body)
        if isinstance(command, ResyncStream):
            for conn in state.conns:
                conn.outbox.resync(publication.stream, publication.epoch, publication.offset,
                                   command.reason)  # fmt: skip
            self.metrics.resyncs[command.reason] += len(state.conns)
            return
        if command is None:
            logger.warning("unknown control publication on %s", publication.stream)
            return
        for conn in list(state.conns):
            # only connections opened before the command: a replayed one spares new logins
            if conn.since < publication.ts and command.connection in (None, conn.id):
                conn.close(CloseCode.DISCONNECTED, command.reason)

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
            self.metrics.resyncs["backplane"] += len(state.conns)
            logger.info("resync of %s for %d connections (backplane gap)", stream, len(state.conns))
        held_during, state.pending = state.pending, None
        for publication in held_before:
            if publication.epoch == head.epoch:
                self.deliver(publication)
        for publication in held_during:
            self.deliver(publication)

    async def join(
        self, conn: Connection, stream: str, since: Position | None, id: int | None
    ) -> None:
        while True:
            state = self._streams.get(stream)
            if state is None:
                state = self._streams[stream] = _Stream()
                await self.backplane.listen(stream)
            elif state.head is None:
                # The join that created the stream may still be in `listen`: reading history
                # before live delivery starts would miss what is published in between.
                await self.backplane.listen(stream)
            if self._streams.get(stream) is state:
                break  # (else every other join left meanwhile and the stream was dropped)
        conn.hold(stream)
        state.conns[conn] = None
        replay = await self.backplane.replay(stream, since)
        head = replay.head
        if state.head is None and state.pending is None:
            state.head = head
        outcome: Outcome
        reason = None
        events = [p for p in replay.publications if p.slot != CONTROL_SLOT]
        at = head.offset
        if since is None:
            outcome = "fresh"
        elif not replay.complete:
            outcome, reason = "resync", _resync_reason(since, head)
        elif (reason := _announced_resync(replay.publications)) is not None:
            outcome = "resync"  # a publish after the cursor failed: its change was never sent
        else:
            outcome = "recovered"
            # The replay leaves the client's cursor on its last event: report that position,
            # not the head, which a trailing control publication (never sent) may be beyond.
            at = events[-1].offset if events else since.offset
        if outcome == "resync":
            self.metrics.resyncs[str(reason)] += 1
            events = []  # the resync covers them
        self.metrics.recoveries[outcome] += 1
        conn.outbox.push(control_message(Subscribed(stream, head.epoch, at, outcome, reason, id)))
        for publication in events:
            conn.outbox.push(self._message(state, publication))
        conn.release(stream, head.epoch, head.offset, state.head if state.pending is None else None)

    def leave(self, conn: Connection, stream: str) -> None:
        conn.left(stream)
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


def _announced_resync(publications: list[Publication]) -> str | None:
    """The reason of the last `ResyncStream` command among replayed publications, if any.

    A hub whose publish failed announces it on the stream once the backplane is back: the
    announcement is part of the stream's history, so a replay across it must resync.
    """
    reason = None
    for publication in publications:
        if publication.slot == CONTROL_SLOT:
            command = decode_control(publication.body)
            if isinstance(command, ResyncStream):
                reason = command.reason
    return reason


def _resync_reason(since: Position, head: Position) -> str:
    if since.epoch != head.epoch:
        return "epoch"
    if since.offset > head.offset:
        return "ahead"
    return "expired"

"""One client connection: who it is, which streams it is on, its outbox and its writer.

State machine::

    CONNECTING --hello accepted--> OPEN --close()/peer gone--> CLOSING --> CLOSED

A transport (WebSocket or SSE endpoint) creates the connection, `attach`es its frame sender
once the handshake is done, runs its own reader loop inside `scope`, and after `scope` ends
sends the close with `close_code`. The hub's flusher sends what the outbox holds (flusher.py).
"""

from __future__ import annotations

import enum
import functools
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from ..auth import Principal
from ..errors import CloseCode
from ..limits import Limits, RateLimiter
from ..metrics import Metrics
from ..positions import Position
from .outbox import Message, OrderGuard, Outbox

SendFrame = Callable[[str], Coroutine[Any, Any, None]]
"""A transport's frame sender (`Connection.attach`): a function of the frame's text that
returns the coroutine sending it."""
SendError = Callable[[Exception], None]


class _Cancellable(Protocol):
    def cancel(self) -> object: ...


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What an operator sees of a connection (`Connection.info`)."""

    id: str
    user: str | None
    transport: str
    state: str
    since: float  # Unix time it connected
    topics: list[str]
    outbox_messages: int
    outbox_bytes: int


class ConnectionState(enum.Enum):
    """Where a connection is: admitted (`CONNECTING`), handshake accepted (`OPEN`), asked to
    close (`CLOSING`), forgotten by its transport (`CLOSED`)."""

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Connection:
    """A client connection registered with a hub."""

    __slots__ = (
        "__weakref__",
        "close_code",
        "close_reason",
        "closing",
        "gates",
        "heartbeat_jitter",
        "id",
        "last_received",
        "last_sent",
        "limits",
        "metrics",
        "on_send_error",
        "outbox",
        "pinged",
        "principal",
        "rate",
        "scope",
        "sender",
        "sending_since",
        "since",
        "state",
        "streams",
        "topics",
        "transport",
        "warned",
        "writer",
    )  # fmt: skip

    def __init__(
        self,
        id: str,
        principal: Principal,
        transport: str,
        limits: Limits,
        now: float,
        metrics: Metrics | None = None,
        on_pending: Callable[[Connection], None] | None = None,
        guard: OrderGuard | None = None,
    ) -> None:
        self.id = id
        self.metrics = metrics or Metrics()
        self.warned = False  # told that its credential is about to expire
        self.closing: tuple[int, str] | None = None  # close once flushed
        self.principal = principal
        self.transport = transport
        self.limits = limits
        self.state = ConnectionState.CONNECTING
        self.outbox = Outbox(
            limits.outbox_max_messages,
            limits.outbox_max_bytes,
            None if on_pending is None else functools.partial(on_pending, self),
            guard,
        )
        self.sender: SendFrame | None = None  # the transport's, once attached
        self.on_send_error: SendError | None = None  # the transport's, if any
        self.writer: _Cancellable | None = None  # the task of a send that had to wait
        self.rate = RateLimiter(limits.rate, limits.burst, now)
        self.streams: set[str] = set()
        self.topics: set[str] = set()
        self.since = time.time()
        self.last_received = self.last_sent = now
        self.pinged = now  # when the sweeper last pinged it (the last ping's reply, at least)
        # how much sooner than the heartbeat rules say this connection is next pinged, as a
        # fraction of the most (see the sweeper): drawn anew for each ping, so that connections
        # opened together (after a deploy) are not pinged together, every interval
        self.heartbeat_jitter = random.random()
        self.sending_since = 0.0  # when the send under way started; 0 when none
        self.scope = anyio.CancelScope()
        self.close_code: int | None = None
        self.close_reason = ""
        # stream -> held messages while the stream is being joined, or an offset floor; None
        # when there are none (the usual case: a broadcast need not look)
        self.gates: dict[str, list[Message] | tuple[str, int]] | None = None

    @property
    def user(self) -> str | None:
        return self.principal.user

    def push(self, message: Message) -> bool:
        """Queue a message for this client without waiting; True when its outbox fills up."""
        gates = self.gates
        if gates is not None and message.stream in gates:
            stream = message.stream
            gate = gates[stream]
            if isinstance(gate, list):
                gate.append(message)
                return False
            if message.epoch == gate[0] and message.offset <= gate[1]:
                return False  # already replayed to this client
            del gates[stream]
            if not gates:
                self.gates = None
        return self.outbox.push(message)

    def push_unordered(self, message: Message) -> bool:
        """Queue a control message that may arrive before or after any event (a ping, an
        expiry warning): see `Outbox.push_unordered`."""
        return self.outbox.push_unordered(message)

    def hold(self, stream: str) -> None:
        """Join `stream`, holding its live messages aside while the stream is being joined."""
        self.streams.add(stream)
        if self.gates is None:
            self.gates = {}
        self.gates[stream] = []

    def release(self, stream: str, epoch: str, offset: int, live: Position | None = None) -> None:
        """Stop holding `stream`: queue held messages newer than (epoch, offset).

        Messages of `stream` up to `offset` that arrive later (a backplane's live path lagging
        behind its history) are dropped, unless the stream's `live` position has reached
        them: the stream itself drops what is not newer than its head.
        """
        gates = self.gates or {}
        held = gates.pop(stream, None)
        floor = offset
        for message in held if isinstance(held, list) else ():
            if message.epoch != epoch or message.offset > floor:
                self.outbox.push(message)
                epoch, floor = message.epoch, message.offset
        if live is None or live.epoch != epoch or live.offset < floor:
            gates[stream] = (epoch, floor)
        self.gates = gates or None

    # -- state changes (every write of a connection's state is here) ------------------------

    def opened(self) -> None:
        """The handshake is accepted: `welcome` and the stream joins follow."""
        self.state = ConnectionState.OPEN

    def heard(self, now: float) -> None:
        """A frame (or, over SSE, a completed write) came from the client: a sign of life."""
        self.last_received = now

    def pinged_at(self, now: float) -> None:
        """The sweeper queued a `ping`; the next one gets a jitter of its own."""
        self.pinged = now
        self.heartbeat_jitter = random.random()

    def warned_of_expiry(self) -> None:
        """The sweeper queued `expiring`: once per credential."""
        self.warned = True

    def refreshed(self, principal: Principal) -> None:
        """A new credential of the same user; `expiring` may come again for it."""
        self.principal, self.warned = principal, False

    def subscribed(self, topic: str) -> None:
        self.topics.add(topic)

    def unsubscribed(self, topic: str) -> bool:
        """Forget `topic`; False when the connection was not on it."""
        if topic not in self.topics:
            return False
        self.topics.discard(topic)
        return True

    def left(self, stream: str) -> None:
        """The connection is no longer on `stream` (its live messages stop)."""
        self.streams.discard(stream)

    def closed(self) -> None:
        """Its transport is done with it: nothing more is sent."""
        self.state = ConnectionState.CLOSED
        self.detach()

    # -- the flusher's bookkeeping of its sends (the sweeper reads it) ----------------------

    def send_started(self, now: float) -> None:
        """A send is under way since `now` (the slow-consumer check measures it)."""
        self.sending_since = now

    def send_ended(self) -> None:
        self.sending_since = 0.0

    def frame_sent(self, now: float) -> None:
        """A frame went out through the outbox (a direct fan-out records nothing here)."""
        self.last_sent = now

    def writing(self, writer: _Cancellable) -> None:
        """A task of its own finishes this connection's sends (`detach` cancels it)."""
        self.writer = writer

    def writer_ended(self) -> None:
        self.sending_since, self.writer = 0.0, None

    def attach(self, sender: SendFrame, on_send_error: SendError | None = None) -> None:
        """Start sending with `sender` (the transport's), beginning with what is pending.

        A send that raises `PeerGone` ends nothing by itself: the transport ends the session.
        Any other exception is passed to `on_send_error` when given (a transport whose sends
        fail only once the peer is gone); without it, or if it raises, the connection is closed
        with 1011 and the error logged.
        """
        self.sender, self.on_send_error = sender, on_send_error
        on_pending = self.outbox.on_pending
        if len(self.outbox) and on_pending is not None:
            on_pending()

    def detach(self) -> None:
        """Stop sending: nothing more goes out, and a send under way is cancelled."""
        self.sender = None
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.cancel()

    def close_when_flushed(self, code: int, reason: str = "") -> None:
        """Close with `code` once everything pending has been sent."""
        self.outbox.settle()
        if not len(self.outbox) and self.writer is None:
            self.close(code, reason)
        else:
            self.closing = (code, reason)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Ask the transport to close this connection with `code`. Idempotent."""
        if self.state in (ConnectionState.CLOSING, ConnectionState.CLOSED):
            return
        self.state = ConnectionState.CLOSING
        self.close_code, self.close_reason = int(code), reason
        self.detach()
        self.scope.cancel()

    def info(self) -> ConnectionInfo:
        """A snapshot for operators: who, how, since when, on what, how far behind."""
        return ConnectionInfo(
            self.id, self.user, self.transport, self.state.value, self.since,
            sorted(self.topics), len(self.outbox), self.outbox.pending_bytes,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user!r} {self.state.value}>"

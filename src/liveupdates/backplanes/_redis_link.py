"""A connection of the Redis backplane, read in the event loop's own callbacks.

redis-py opens the connection and runs its handshake (TCP, TLS or a Unix socket, AUTH or
HELLO, SELECT, the client name: whatever the URL asks for); then `Link.take_over` makes the
link the transport's protocol. From then on each chunk of bytes is parsed where it arrives
(`_resp.Parser`) and each reply handed to `received` in the same callback: no stream reader,
reader task or parser coroutine per reply. The redis-py connection is kept to close the
transport (`AbstractConnection.disconnect`).

A link is lost once: when the connection closes, when Redis sends what is not RESP2, or when
its owner says so (`fail`); `on_lost` is called then, with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection

from ..errors import BackplaneUnavailable
from ._resp import Arg, Parser, ProtocolError, pack

__all__ = ("Link", "Subscriber")

_log = logging.getLogger("liveupdates.backplanes.redis")
SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE command


class Link(asyncio.Protocol):
    """One connection to Redis, read by a protocol of ours; see the module docstring."""

    def __init__(self, conn: AbstractConnection, on_lost: Callable[[str], None]) -> None:
        self.conn = conn
        self.lost: str | None = None  # why the link is lost, once it is
        self._on_lost = on_lost
        self._parser = Parser()
        self._transport: asyncio.WriteTransport | None = None

    def take_over(self) -> None:
        """Become the protocol of `conn`'s transport (connected by redis-py, handshake done)."""
        reader, writer = self.conn._reader, self.conn._writer  # redis-py's streams
        if (
            reader is None
            or writer is None
            or reader.at_eof()
            or reader.exception() is not None
            or writer.is_closing()
        ):
            raise ConnectionError("the connection to Redis closed during the handshake")
        leftover = bytes(getattr(reader, "_buffer", b""))  # (none after a handshake)
        self._transport = writer.transport
        self._transport.set_protocol(self)
        if leftover:
            self.data_received(leftover)

    def write(self, data: bytes) -> None:
        """Send `data` (dropped once the link is lost: its commands fail anyway)."""
        transport = self._transport
        if self.lost is None and transport is not None and not transport.is_closing():
            transport.write(data)

    def fail(self, reason: str) -> None:
        """The link is lost (the caller closes the connection)."""
        if self.lost is None:
            self.lost = reason
            self.failed(reason)
            self._on_lost(reason)

    def failed(self, reason: str) -> None:
        """What the link does once lost (subclasses: fail or release what waits)."""

    def received(self, reply: Any) -> None:
        """Handle one reply (subclasses; never raises)."""
        raise NotImplementedError

    # asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError as exc:
            self.fail(f"Redis sent what is not RESP2: {exc}")
            if self._transport is not None:
                self._transport.abort()
            return
        for reply in replies:
            self.received(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail("the connection closed" + (f": {exc!r}" if exc else ""))


class Subscriber(Link):
    """The pub/sub connection: each message to `on_message(channel, data)`, SUBSCRIBE
    confirmations to the callers of `subscribe`, any reply to `ping`'s caller."""

    def __init__(
        self,
        conn: AbstractConnection,
        on_lost: Callable[[str], None],
        on_message: Callable[[bytes, bytes], None],
    ) -> None:
        super().__init__(conn, on_lost)
        self._on_message = on_message
        self._confirming: dict[bytes, deque[asyncio.Future[None]]] = {}
        self._heard: asyncio.Future[None] | None = None

    def command(self, *args: Arg) -> None:
        self.write(pack(args))

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """SUBSCRIBE to `channels`; returns once Redis confirmed every one."""
        self._check()
        loop = asyncio.get_running_loop()
        confirmations = []
        for channel in channels:
            confirmation = loop.create_future()
            self._confirming.setdefault(channel, deque()).append(confirmation)
            confirmations.append(confirmation)
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            self.command("SUBSCRIBE", *channels[start : start + SUBSCRIBE_BATCH])
        for confirmation in confirmations:
            await confirmation
        self._check()

    async def ping(self) -> None:
        """PING; returns once anything arrives (its PONG, or any other reply)."""
        self._check()
        heard = self._heard = asyncio.get_running_loop().create_future()
        self.command("PING")
        await heard
        self._check()

    def _check(self) -> None:
        if self.lost is not None:
            raise BackplaneUnavailable(f"Redis is unavailable: {self.lost}")

    def received(self, reply: Any) -> None:
        heard = self._heard
        if heard is not None:
            self._heard = None
            if not heard.done():
                heard.set_result(None)
        if type(reply) is not list or len(reply) != 3:
            return  # PONG, or an error reply (the next PING tells)
        kind, channel = reply[0], reply[1]
        if kind == b"message":
            try:
                self._on_message(channel, reply[2])
            except Exception:
                _log.exception("handling a message from Redis failed")
        elif kind == b"subscribe":
            waiting = self._confirming.get(channel)
            if waiting:
                confirmation = waiting.popleft()
                if not waiting:
                    del self._confirming[channel]
                if not confirmation.done():
                    confirmation.set_result(None)

    def failed(self, reason: str) -> None:
        """Wake whoever waits: they find the link lost (`_check`)."""
        waiting = [f for futures in self._confirming.values() for f in futures]
        if self._heard is not None:
            waiting.append(self._heard)
        self._confirming.clear()
        for future in waiting:
            if not future.done():
                future.set_result(None)

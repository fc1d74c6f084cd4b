"""The Redis backplane's pub/sub connection, on redis-py's ``PubSub``.

One task (`run`) reads the connection; each message is handed to `on_message(channel, data)`
in that task, as soon as it is parsed: no queue and no task per message between Redis and the
hub's fan-out. `subscribe` returns once Redis confirmed the subscription, and raises the error
Redis answered instead (``NOPERM`` for a channel the ACL user may not use). `ping` returns once
anything arrives after its PING. Sharded pub/sub (``SSUBSCRIBE``, Redis >= 7.0) is used when
`sharded` is true.

The connection is lost once: when `run` raises (the connection closed, or Redis sent what is
not RESP), or when `fail` is called; whoever waits then raises `ConnectionError`.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as rx

__all__ = ("Subscriber",)

SUBSCRIBE_BATCH = 1000  # channels per SUBSCRIBE command

_MESSAGES = (b"message", b"smessage")
_CONFIRMATIONS = (b"subscribe", b"ssubscribe")
_UNSUBSCRIBED = (b"unsubscribe", b"sunsubscribe")


class Subscriber:
    """A pub/sub connection of `client`; see the module docstring."""

    def __init__(
        self, client: Any, on_message: Callable[[bytes, bytes], None], *, sharded: bool = False
    ) -> None:
        self._pubsub = client.pubsub()
        self._on_message = on_message
        self._subscribe = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        # SUBSCRIBE commands not confirmed yet, oldest first: channels still to confirm, and
        # the future that tells their caller
        self._commands: deque[tuple[Counter[bytes], asyncio.Future[None]]] = deque()
        self._heard: asyncio.Future[None] | None = None
        self._wanted: set[bytes] = set()  # channels subscribed to, or being subscribed
        self.lost: str | None = None  # why the connection is lost, once it is

    async def connect(self) -> None:
        """Open the connection (before `run` reads it)."""
        await self._pubsub.connect()

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """SUBSCRIBE to `channels`; returns once Redis confirmed every one.

        Raises redis-py's error when Redis refuses (``NoPermissionError``), `ConnectionError`
        once the connection is lost.
        """
        self._check()
        self._wanted.update(channels)
        loop = asyncio.get_running_loop()
        commands = []
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            batch = channels[start : start + SUBSCRIBE_BATCH]
            done: asyncio.Future[None] = loop.create_future()
            self._commands.append((Counter(batch), done))
            commands.append(done)
            await self._pubsub.execute_command(self._subscribe, *batch)
        for done in commands:
            await done  # (raises what Redis answered instead)
            self._check()

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        """UNSUBSCRIBE (without waiting for the confirmation)."""
        self._check()
        self._wanted.difference_update(channels)
        await self._pubsub.execute_command(self._unsubscribe, *channels)

    async def ping(self) -> None:
        """PING; returns once anything arrives after it (its PONG, or any other reply)."""
        self._check()
        heard = self._heard = asyncio.get_running_loop().create_future()
        await self._pubsub.execute_command("PING")
        await heard
        self._check()

    async def run(self) -> None:
        """Read the connection until it is lost (then raise why)."""
        parse = self._pubsub.parse_response
        while True:
            try:
                response = await parse(block=True)
            except rx.ResponseError as exc:  # an error reply: the oldest SUBSCRIBE's
                self._heard_something()
                self._refused(exc)
                continue
            except BaseException as exc:
                self.fail(f"{type(exc).__name__}: {exc}")
                raise
            self._heard_something()
            self._received(response)
            if self.lost is not None:
                raise rx.ConnectionError(self.lost)

    def fail(self, reason: str) -> None:
        """The connection is lost: wake whoever waits (they raise `ConnectionError`)."""
        if self.lost is not None:
            return
        self.lost = reason
        waiting = [done for _, done in self._commands]
        if self._heard is not None:
            waiting.append(self._heard)
        self._commands.clear()
        for future in waiting:
            if not future.done():
                future.set_result(None)

    async def close(self) -> None:
        self.fail("closed")
        await self._pubsub.aclose()

    def _check(self) -> None:
        if self.lost is not None:
            raise rx.ConnectionError(f"the pub/sub connection to Redis was lost: {self.lost}")

    def _heard_something(self) -> None:
        heard, self._heard = self._heard, None
        if heard is not None and not heard.done():
            heard.set_result(None)

    def _received(self, response: Any) -> None:
        if not isinstance(response, list) or len(response) != 3:
            return  # PONG
        kind, channel = response[0], response[1]
        if kind in _MESSAGES:
            self._on_message(channel, response[2])
        elif kind in _CONFIRMATIONS:
            # Commands are answered in order: this confirms the oldest that waits for it.
            for remaining, done in self._commands:
                if remaining[channel]:
                    remaining[channel] -= 1
                    if remaining.total() == 0 and not done.done():
                        done.set_result(None)
                    break
            while self._commands and self._commands[0][0].total() == 0:
                self._commands.popleft()
        elif kind in _UNSUBSCRIBED and channel in self._wanted:
            # Not asked for: on a cluster, the channel's slot moved to another shard.
            self.fail(f"Redis unsubscribed {channel!r} by itself (its slot moved)")

    def _refused(self, exc: rx.ResponseError) -> None:
        """Redis answered an error: it is the reply to the oldest unconfirmed SUBSCRIBE."""
        if self._commands:
            _, done = self._commands.popleft()
            if not done.done():
                done.set_exception(exc)

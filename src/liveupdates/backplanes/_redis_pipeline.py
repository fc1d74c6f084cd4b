"""The Redis backplane's commands, pipelined on one connection of their own.

Each command is written as it comes and its reply awaited in order: no pool, lock, task or
timer per command, and concurrent publishers share round trips. Replies come back in the order
the commands were written, so one reader task hands each to the oldest command waiting.

A broken connection, or a command left without a reply for `timeout` seconds (one timer, for
the oldest command in flight), fails every command in flight with `BackplaneUnavailable` and
tells the backplane (`on_lost`), which reconnects; a broken pipeline is not used again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

from ..errors import BackplaneUnavailable

__all__ = ("Pipeline", "pack")

Arg = bytes | str | int


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP: an array of bulk strings (str as UTF-8, int in decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(parts)


class Pipeline:
    """Commands on `conn`, answered in order; see the module docstring."""

    def __init__(
        self, conn: AbstractConnection, timeout: float, on_lost: Callable[[str], None]
    ) -> None:
        self.conn = conn
        self._timeout = timeout
        self._on_lost = on_lost
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline)
        self._timer: asyncio.TimerHandle | None = None
        self._broken: str | None = None

    async def call(self, *args: Arg) -> Any:
        """Send a command; its reply (bytes, not decoded). A Redis error reply is raised."""
        if self._broken is not None:
            raise BackplaneUnavailable(f"Redis is unavailable: {self._broken}")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._waiting.append((reply, deadline))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        try:
            await self.conn.send_packed_command(pack(args), check_health=False)
        except Exception as exc:
            self.fail(f"writing failed: {exc!r}")
        return await reply  # (if this is cancelled, the reader drops the reply)

    async def run(self) -> None:
        """Hand each reply to its command, until the connection fails."""
        conn, waiting = self.conn, self._waiting
        try:
            while True:
                try:
                    response: Any = await conn.read_response(disable_decoding=True)
                except rx.ResponseError as exc:  # an error reply: the connection is fine
                    response = exc
                reply, _ = waiting.popleft()  # (IndexError: a reply nobody asked for)
                if reply.done():
                    continue  # its caller was cancelled
                if isinstance(response, rx.ResponseError):
                    reply.set_exception(response)
                else:
                    reply.set_result(response)
        except Exception as exc:
            self.fail(f"reading failed: {exc!r}")

    def fail(self, reason: str) -> None:
        """Fail every command in flight, and every later one; tell the backplane once."""
        if self._broken is not None:
            return
        self._broken = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            reply, _ = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(BackplaneUnavailable(f"Redis is unavailable: {reason}"))
        self._on_lost(reason)

    def _expire(self) -> None:
        self._timer = None
        if not self._waiting:
            return
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0][1]
        if loop.time() >= deadline:
            self.fail(f"no reply within {self._timeout} s")
        else:
            self._timer = loop.call_at(deadline, self._expire)

"""The Redis backplane's commands, pipelined on one connection of their own.

Each command is written as it comes and its reply awaited in order: no pool, lock, task or
timer per command, and concurrent publishers share round trips. Replies come back in the order
the commands were written; the link (`_redis_link`) hands each, in the callback that read it,
to the oldest command waiting. Writing never waits: each caller waits for its own reply, so
what the transport buffers is bounded by the callers waiting, for `timeout` seconds at most.

A lost link, or a command left without a reply for `timeout` seconds (one timer, for the
oldest command in flight), fails every command in flight with `BackplaneUnavailable` and tells
the backplane (`on_lost`), which reconnects; a lost pipeline is not used again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

from ..errors import BackplaneUnavailable
from ._redis_link import Link
from ._resp import Arg, pack

__all__ = ("Pipeline",)


class Pipeline(Link):
    """Commands on `conn`, answered in order; see the module docstring."""

    def __init__(
        self, conn: AbstractConnection, timeout: float, on_lost: Callable[[str], None]
    ) -> None:
        super().__init__(conn, on_lost)
        self._timeout = timeout
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline)
        self._timer: asyncio.TimerHandle | None = None

    async def call(self, *args: Arg) -> Any:
        """Send a command; its reply (bytes, not decoded). A Redis error reply is raised."""
        return await self.call_packed(pack(args))

    async def call_packed(self, command: bytes) -> Any:
        """`call` with the command packed already (`_resp.pack`)."""
        if self.lost is not None:
            raise BackplaneUnavailable(f"Redis is unavailable: {self.lost}")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._waiting.append((reply, deadline))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        self.write(command)
        return await reply  # (if this is cancelled, its reply is dropped when it comes)

    def received(self, reply: Any) -> None:
        if not self._waiting:
            self.fail("Redis sent a reply nobody asked for")
            return
        future, _ = self._waiting.popleft()
        if future.done():
            return  # its caller was cancelled
        if isinstance(reply, rx.RedisError):
            future.set_exception(reply)
        else:
            future.set_result(reply)

    def failed(self, reason: str) -> None:
        """Fail every command in flight (later ones fail in `call_packed`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            reply, _ = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(BackplaneUnavailable(f"Redis is unavailable: {reason}"))

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

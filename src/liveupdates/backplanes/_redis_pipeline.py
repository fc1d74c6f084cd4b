"""The Redis backplane's commands, pipelined on one connection of redis-py's.

Each command is written as it comes (redis-py packs and writes it) and its caller waits for its
reply, which one reader task reads with redis-py's parser, in order, and hands to the oldest
caller waiting. No pool, lock or task per command, and concurrent publishers share round
trips: the reader resolves every reply that arrived in one wake-up. The reader reads only while
commands wait for replies.

A lost connection, or Redis silent for `timeout` seconds while a command waits (one timer: the
oldest command in flight has waited that long and no reply came meanwhile), fails every command
in flight with ``ConnectionError`` and tells the backplane (`on_lost`), which reconnects; a
lost pipeline is not used again. An error reply fails its own command only.

The timeout is Redis' silence, not the process' own lateness. A hub busy for seconds (a storm
of handshakes on a loaded machine) has replies waiting in its socket when its timer comes due,
and an event loop runs due timers before the task that would read them (asyncio queues that
task's wake-up behind the timer; uvloop runs timers before it polls). So the timer does not
decide at once: it looks again once the loop has polled the sockets and the reader has had its
turn (`_GRACE`): a reply read meanwhile means Redis answers, and moves the deadline. Without
that, such a hub took Redis for lost, closed the sessions that needed it and reconnected, in
the middle of the storm.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeVar

from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection

__all__ = ("Pipeline", "answered", "bulk", "bulks", "pack")

Arg = bytes | str | int | float
_GRACE = 0.001  # s: a due timer looks again after this (a poll and the reader's turn between)
_T = TypeVar("_T")


async def answered(awaitable: Awaitable[_T], timeout: float) -> _T:  # noqa: ASYNC109 (see below)
    """Await a reply from Redis for `timeout` seconds; `TimeoutError` if it did not come.

    As for the pipeline's commands (see the module docstring), a reply that is waiting in the
    socket when the time is up counts: the time up, this looks again once the loop has polled
    the sockets and the readers have had their turns, a few turns of the loop later.
    """
    task = asyncio.ensure_future(awaitable)
    task.add_done_callback(_ignore_outcome)  # (if this is cancelled or gives up meanwhile)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:
            await asyncio.sleep(_GRACE)
            for _ in range(3):  # the reader's turn, then the awaiting task's
                if task.done():
                    break
                await asyncio.sleep(0)
        if not task.done():
            raise TimeoutError(f"no reply within {timeout} s")
        return task.result()
    finally:
        task.cancel()  # (given up, or this is cancelled: its end is nobody's business)


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # (retrieved: asyncio logs no "exception was never retrieved")


def bulk(arg: Arg) -> bytes:
    """One RESP bulk string (str as UTF-8, numbers in decimal): part of a packed command."""
    data = arg if isinstance(arg, bytes) else str(arg).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


def bulks(args: tuple[Arg, ...]) -> bytes:
    return b"".join(map(bulk, args))


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command as redis-py's `send_packed_command` takes it (redis-py's own packer costs
    several times more per publish; the backplane also keeps the constant start of each
    stream's publish command packed)."""
    return b"*%d\r\n" % len(args) + bulks(args)


class Pipeline:
    """Commands on `conn` (not yet connected), answered in order; see the module docstring."""

    def __init__(
        self, conn: AbstractConnection, timeout: float, on_lost: Callable[[str], None]
    ) -> None:
        self.conn = conn
        self.lost: str | None = None
        self._timeout = timeout
        self._on_lost = on_lost
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (reply, deadline)
        self._wake = asyncio.Event()
        self._timer: asyncio.Handle | None = None  # (`_expire`, soon or at its deadline)
        self._reader: asyncio.Task[None] | None = None
        self._replied_at = 0.0  # loop time of the last reply read

    async def connect(self) -> None:
        """Connect (redis-py runs the handshake) and start reading."""
        connect: Any = self.conn.connect  # (untyped in redis-py)
        await connect()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def call(self, *args: Arg) -> Any:
        """Send a command; its reply. An error reply is raised (redis-py's exception)."""
        return await self.call_packed(pack(args))

    async def call_packed(self, packed: bytes) -> Any:
        """`call` with the command packed already (`pack`)."""
        if self.lost is not None:
            raise rx.ConnectionError(f"the connection to Redis was lost: {self.lost}")
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self._timeout
        self._waiting.append((reply, deadline))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        self._wake.set()
        try:
            # Written in the order of `_waiting`: nothing suspends before the write itself.
            await self.conn.send_packed_command(packed, check_health=False)
        except Exception as exc:
            self.fail(f"writing a command failed: {type(exc).__name__}: {exc}")
            raise rx.ConnectionError(f"the connection to Redis was lost: {self.lost}") from exc
        return await reply  # (if this is cancelled, its reply is dropped when it comes)

    def fail(self, reason: str) -> None:
        """The pipeline is lost: fail every command in flight, stop reading."""
        if self.lost is not None:
            return
        self.lost = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            reply, _ = self._waiting.popleft()
            if not reply.done():
                reply.set_exception(rx.ConnectionError(f"Redis is unavailable: {reason}"))
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
        self._on_lost(reason)

    async def close(self) -> None:
        self.fail("closed")
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=self._timeout)
        with suppress(rx.RedisError, OSError):
            await self.conn.disconnect(nowait=True)

    async def _read(self) -> None:
        while self.lost is None:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                reply: Any = await self.conn.read_response(disconnect_on_error=False)
            except rx.ResponseError as exc:
                reply = exc
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.fail(f"{type(exc).__name__}: {exc}")
                return
            if not self._waiting:
                self.fail("Redis sent a reply nobody asked for")
                return
            future, _ = self._waiting.popleft()
            self._replied_at = asyncio.get_running_loop().time()
            if not self._waiting and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if future.done():
                continue  # its caller was cancelled
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def _expire(self, second_look: bool = False) -> None:
        """The timer: Redis has been silent for `timeout` while a command waits, or not yet.

        When due, it looks again once the reader had its turn (`_look_again`), and fails the
        pipeline only if it is still due then (a reply read meanwhile moves the deadline).
        """
        self._timer = None
        if not self._waiting or self.lost is not None:
            return
        loop = asyncio.get_running_loop()
        # due when the oldest command has waited `timeout` and no reply came for as long
        deadline = max(self._waiting[0][1], self._replied_at + self._timeout)
        if loop.time() < deadline:
            self._timer = loop.call_at(deadline, self._expire)
        elif not second_look:  # once the sockets were polled and the reader had its turn
            self._timer = loop.call_later(_GRACE, self._look_again)
        else:
            self.fail(f"no reply within {self._timeout} s")

    def _look_again(self) -> None:
        # (queued behind the wake-ups of the reads that the poll before it found)
        self._timer = asyncio.get_running_loop().call_soon(self._expire, True)

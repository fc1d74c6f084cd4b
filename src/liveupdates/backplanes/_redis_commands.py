"""The Redis backplane's scripts on a Redis Cluster, run through redis-py's cluster client.

(On one Redis, the backplane pipelines its commands on a connection of its own instead:
`_redis_pipeline`.) A script runs as ``EVALSHA`` (loaded again with ``SCRIPT LOAD`` after a
restart, a failover or a ``SCRIPT FLUSH``). A call runs at once, on a connection of the client's pool, while fewer than
`max_in_flight` are running; beyond that, calls queue, and the next round trip carries every
queued call in one redis-py pipeline (``transaction=False``): under load, concurrent publishers
share round trips, and the connections in use stay bounded. On a cluster, redis-py routes each
call to the master of its keys' slot and follows ``MOVED`` and ``ASK``.

Every call is bounded by `timeout` seconds. Errors are redis-py's (the caller maps them).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import anyio
from redis import exceptions as rx

__all__ = ("Commands", "Script")

_Arg = bytes | str | int | float


class Script(NamedTuple):
    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


class _Call(NamedTuple):
    script: Script
    keys: Sequence[str]
    args: Sequence[_Arg]


class Commands:
    """Scripts run on `client` (``redis.asyncio.Redis`` or ``RedisCluster``); see the module
    docstring."""

    def __init__(self, client: Any, timeout: float, max_in_flight: int = 8) -> None:
        self._client = client
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._queue: list[tuple[_Call, asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[_Arg]) -> Any:
        """The script's reply; raises redis-py's error (or `TimeoutError` after `timeout`)."""
        call = _Call(script, keys, args)
        if self._in_flight < self._max_in_flight and not self._queue:
            self._in_flight += 1
            try:
                with anyio.fail_after(self._timeout):
                    return await self._one(call)
            finally:
                self._done()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((call, future))
        with anyio.fail_after(self._timeout):
            return await future  # (if cancelled, its call still runs and its reply is dropped)

    async def load(self, *scripts: Script) -> None:
        """``SCRIPT LOAD`` each script (on every master of a cluster)."""
        for script in scripts:
            with anyio.fail_after(self._timeout):
                await self._client.script_load(script.source)

    def cancel(self) -> None:
        """Fail every queued call and stop the batches in flight (the backplane is closing)."""
        queue, self._queue = self._queue, []
        for _, future in queue:
            if not future.done():
                future.set_exception(rx.ConnectionError("the backplane is closed"))
        for task in self._tasks:
            task.cancel()

    async def _one(self, call: _Call) -> Any:
        evalsha = self._client.evalsha
        try:
            return await evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        except rx.NoScriptError:
            await self._client.script_load(call.script.source)
            return await evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)

    def _done(self) -> None:
        self._in_flight -= 1
        if self._queue and self._in_flight < self._max_in_flight:
            batch, self._queue = self._queue, []
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[tuple[_Call, asyncio.Future[Any]]]) -> None:
        try:
            with anyio.fail_after(self._timeout):
                replies = await self._many([call for call, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else TimeoutError())
            if not isinstance(exc, Exception):
                raise
        else:
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        finally:
            self._done()

    async def _many(self, calls: list[_Call]) -> list[Any]:
        replies = await self._pipeline(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, rx.NoScriptError)]
        if missing:  # Redis restarted, or SCRIPT FLUSH: load and run those again
            await self.load(*{calls[i].script for i in missing})
            again = await self._pipeline([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        return replies

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        pipe = self._client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies

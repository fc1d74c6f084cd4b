"""The link of a publish-only Redis backplane (`RedisBackplane.start_publishing`).

A listening backplane's link to Redis is its pub/sub connection (`Subscriber`, or `Shards` on a
cluster): its reader notices when the connection is lost, the watchdog PINGs it, and the
backplane reconnects and resets its receiver when it is lost. A publish-only backplane (a
`Producer`'s) listens to nothing, so it opens no pub/sub connection: `CommandLink` stands where
the pub/sub connection would, and the link's health is that of the connections its commands
use. `ping` sends a PING where the commands go (through the command pipeline on one Redis; to
every master through redis-py's cluster client on a cluster), and the link is lost when the
backplane calls `fail` (the pipeline was lost, a PING or a command failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis import exceptions as rx

__all__ = ("CommandLink",)


class CommandLink:
    """The link of a publish-only backplane; see the module docstring.

    `ping` PINGs where the commands go. With `check_at_connect`, `connect` PINGs too (on a
    cluster, so that a reconnection waits for every master, as the pub/sub connections do);
    otherwise the command pipeline, which connects right after, is the check.
    """

    def __init__(
        self, ping: Callable[[], Awaitable[Any]], *, check_at_connect: bool = False
    ) -> None:
        self._ping = ping
        self._check_at_connect = check_at_connect
        self._failed = asyncio.Event()
        self.lost: str | None = None  # why the link is lost, once it is

    async def connect(self) -> None:
        if self._check_at_connect:
            await self.ping()

    async def run(self) -> None:
        """Until the link is lost (`fail`); then raise why."""
        await self._failed.wait()
        raise rx.ConnectionError(self.lost or "the connection to Redis was lost")

    async def ping(self) -> None:
        """PING where the commands go; returns once answered (an error reply is an answer:
        Redis is there), raises if not."""
        self._check()
        try:
            await self._ping()
        except rx.ResponseError as exc:
            if isinstance(exc, rx.ClusterError):  # (redis-py's CLUSTERDOWN: not an answer)
                raise
        self._check()

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        raise RuntimeError("a publish-only Redis backplane subscribes to nothing")

    async def unsubscribe(self, channels: Sequence[bytes]) -> None:
        raise RuntimeError("a publish-only Redis backplane subscribes to nothing")

    def fail(self, reason: str) -> None:
        """The link is lost: `run` raises why."""
        if self.lost is not None:
            return
        self.lost = reason
        self._failed.set()

    async def close(self) -> None:
        self.fail("closed")

    def _check(self) -> None:
        if self.lost is not None:
            raise rx.ConnectionError(f"the connection to Redis was lost: {self.lost}")

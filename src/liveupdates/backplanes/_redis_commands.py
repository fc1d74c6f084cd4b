"""The Redis backplane's scripts on a Redis Cluster, run through redis-py's cluster client.

(On one Redis, the backplane pipelines its commands on a connection of its own instead:
`_redis_pipeline`.) A script runs as ``EVALSHA`` (loaded again with ``SCRIPT LOAD`` after a
restart, a failover or a ``SCRIPT FLUSH``) on the master of its keys' slot: redis-py routes it
and follows ``MOVED`` and ``ASK``. Concurrent calls run concurrently, each on a connection of
its master's pool (redis-py's cluster pipelines refuse ``EVALSHA``). Every call is bounded by
`timeout` seconds. Errors are redis-py's (the caller maps them).
"""

from __future__ import annotations

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


class Commands:
    """Scripts run on `client` (a ``RedisCluster``); see the module docstring."""

    def __init__(self, client: Any, timeout: float) -> None:
        self._client = client
        self._timeout = timeout

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[_Arg]) -> Any:
        """The script's reply; raises redis-py's error (or `TimeoutError` after `timeout`)."""
        evalsha = self._client.evalsha
        with anyio.fail_after(self._timeout):
            try:
                return await evalsha(script.sha, len(keys), *keys, *args)
            except rx.NoScriptError:
                await self._client.script_load(script.source)
                return await evalsha(script.sha, len(keys), *keys, *args)

    async def load(self, *scripts: Script) -> None:
        """``SCRIPT LOAD`` each script (on every master of a cluster)."""
        for script in scripts:
            with anyio.fail_after(self._timeout):
                await self._client.script_load(script.source)

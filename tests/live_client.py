"""A WebSocket client that follows the protocol as the browser client does, for end-to-end tests.

`LiveClient.run` connects to `url`, sends ``hello`` with its cursors as ``since``, applies every
message, and whenever the connection ends (``1013`` while the backplane is down, ``1001``, a
reset, a refused handshake) connects again with full-jitter backoff, until `stop`. Set `url`
and call `drop` to move it to another server process. It never answers for the application:
it only records, on the test's clock (``time.monotonic()``), what an application would do:

- `cursors`: stream -> (epoch, offset) of the last message applied;
- `refetched`: stream -> times the whole stream was refetched (the ``fresh`` or ``resync``
  outcome of ``subscribed``, a ``resync`` message);
- `invalidated`: stream -> {query key as a tuple -> the last time an ``invalidate`` named it};
- `values`: stream -> {query key as a tuple -> the data of the last ``set``};
- `epochs`: stream -> the epochs seen, in order; `outcomes`: every ``subscribed`` message;
- `closes`: the close codes received; `violations`: protocol breaches (an offset not above
  the cursor, an epoch change without ``subscribed`` or ``resync``, a message of a stream it
  did not ask for, such as another user's, or an event before its stream's ``subscribed``).

A ``resync`` that arrives before its stream's ``subscribed`` (a hub reconciling the stream
while the connection joins it) is applied like any ``resync`` and counted in `early_resyncs`.

Wait for what it has seen with ``await client.wait_for(predicate)`` under ``anyio.fail_after``.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
import httpx
from httpx_ws import AsyncWebSocketSession, HTTPXWSException, WebSocketDisconnect, aconnect_ws

Key = tuple[Any, ...]


def _leaves(group: BaseExceptionGroup[Any]) -> Iterator[Any]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def as_key(query_key: Iterable[Any]) -> Key:
    return tuple(query_key)


class LiveClient:
    """One resuming client: user `token` (or anonymous), subscribed to `topics`."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        topics: Iterable[str] = (),
        name: str = "",
        max_backoff: float = 0.2,
    ) -> None:
        self.url = url
        self.token = token
        self.topics = list(topics)
        self.name = name or (token or "anonymous")
        self.max_backoff = max_backoff
        self.cursors: dict[str, tuple[str, int]] = {}
        self.refetched: dict[str, list[float]] = defaultdict(list)
        self.invalidated: dict[str, dict[Key, float]] = defaultdict(dict)
        self.values: dict[str, dict[Key, Any]] = defaultdict(dict)
        self.epochs: dict[str, list[str]] = defaultdict(list)
        self.outcomes: list[dict[str, Any]] = []
        self.closes: list[int] = []
        self.errors: list[str] = []
        self.violations: list[str] = []
        self.welcomes = 0
        self.early_resyncs = 0  # `resync` of a stream before its `subscribed` (harmless)
        self.asked = {"all", *("topic:" + topic for topic in self.topics)}
        if token is not None:
            self.asked.add("user:" + token)
        self._joined: set[str] = set()  # streams of the current connection
        self._changed = anyio.Event()
        self._connection = anyio.CancelScope()
        self._stopped = False

    # -- what the test uses ------------------------------------------------------------------

    @property
    def streams(self) -> set[str]:
        """The streams the current connection has joined."""
        return set(self._joined)

    def hello(self) -> dict[str, Any]:
        since = {s: {"epoch": e, "offset": o} for s, (e, o) in self.cursors.items()}
        hello: dict[str, Any] = {"type": "hello", "topics": self.topics, "since": since}
        if self.token is not None:
            hello["token"] = self.token
        return hello

    def refetched_since(self, stream: str, moment: float) -> bool:
        """Whether the whole stream was refetched at or after `moment`."""
        return any(t >= moment for t in self.refetched.get(stream, ()))

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; checked after every message (bound it yourself)."""
        while not predicate():
            await self._changed.wait()

    def drop(self) -> None:
        """Close the current connection from the client side; `run` connects again."""
        self._connection.cancel()

    def stop(self) -> None:
        self._stopped = True
        self._connection.cancel()

    # -- the connection loop -----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, apply, reconnect with full-jitter backoff; until `stop`."""
        attempt = 0
        async with httpx.AsyncClient() as http:
            while not self._stopped:
                welcomes = self.welcomes
                self._connection = anyio.CancelScope()
                with self._connection:
                    await self._session(http)
                self._joined.clear()
                self._notify()
                if self._stopped:
                    return
                attempt = 0 if self.welcomes > welcomes else attempt + 1
                await anyio.sleep(random.uniform(0, min(self.max_backoff, 0.01 * 2**attempt)))

    async def _session(self, http: httpx.AsyncClient) -> None:
        try:
            async with aconnect_ws(
                self.url + "/live",
                http,
                keepalive_ping_interval_seconds=None,
                session_class=AsyncWebSocketSession,
            ) as ws:
                await ws.send_text(json.dumps(self.hello()))
                while True:
                    frame = json.loads(await ws.receive_text())
                    now = time.monotonic()
                    for message in frame:
                        self.apply(message, now)
                        if message.get("type") == "ping":
                            await ws.send_text('{"type":"pong"}')
                    self._notify()
        except* WebSocketDisconnect as group:  # httpx-ws may raise it inside a group
            self.closes += [exc.code for exc in _leaves(group)]
        except* (HTTPXWSException, httpx.HTTPError, OSError) as group:
            self.errors += [repr(exc) for exc in _leaves(group)]

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # -- applying messages -------------------------------------------------------------------

    def apply(self, message: dict[str, Any], now: float) -> None:
        """What the browser client does with one server message."""
        kind = message.get("type")
        stream = message.get("stream")
        if kind == "welcome":
            self.welcomes += 1
            return
        if not isinstance(stream, str) or kind == "unsubscribed":
            return  # pong, ping, error, ...
        if kind == "subscribed":
            self.outcomes.append(message)
            self._joined.add(stream)
            self._see_epoch(stream, message["epoch"])
            if message["outcome"] != "recovered":  # fresh or resync: refetch what it covers
                self.refetched[stream].append(now)
                self.cursors[stream] = (message["epoch"], message["offset"])
            return
        if stream not in self.asked:
            self._violation(f"{kind} on {stream}, which it did not ask for")
            return
        if kind == "resync":  # may come before `subscribed` (see `early_resyncs`)
            self.early_resyncs += stream not in self._joined
            self._see_epoch(stream, message["epoch"])
            self.refetched[stream].append(now)
            self.cursors[stream] = (message["epoch"], message["offset"])
            return
        if stream not in self._joined:
            self._violation(f"{kind} on {stream} before its `subscribed`")
            return
        position = (message["epoch"], message["offset"])
        cursor = self.cursors.get(stream)
        if cursor is not None and cursor[0] != position[0]:
            self._violation(f"silent epoch change on {stream}: {cursor} -> {position}")
        elif cursor is not None and position[1] <= cursor[1]:
            self._violation(f"duplicate on {stream}: {position} after {cursor}")
            return
        self._see_epoch(stream, position[0])
        self.cursors[stream] = position
        if kind == "invalidate":
            for query_key in message["keys"]:
                self.invalidated[stream][as_key(query_key)] = now
        elif kind == "set":
            self.values[stream][as_key(message["key"])] = message["data"]

    def _violation(self, text: str) -> None:
        self.violations.append(f"{self.name}: {text}")

    def _see_epoch(self, stream: str, epoch: str) -> None:
        epochs = self.epochs[stream]
        if not epochs or epochs[-1] != epoch:
            epochs.append(epoch)

    def __repr__(self) -> str:
        return f"<LiveClient {self.name} {self.url} cursors={self.cursors}>"


async def publish(
    http: httpx.AsyncClient,
    server_url: str,
    to: str | Iterable[str],
    *keys: Iterable[Any],
    data: Any = None,
) -> httpx.Response:
    """``POST /publish`` of tests/apps/redis_app.py: invalidate `keys` (or set `data`) on `to`.

    Returns the response: 200 once published, 503 when the backplane is unavailable.
    """
    params: list[tuple[str, str | int | float | bool | None]] = (
        [("to", to)] if isinstance(to, str) else [("to", t) for t in to]
    )
    params += [("key", json.dumps(list(key))) for key in keys]
    if data is not None:
        params.append(("data", json.dumps(data)))
    return await http.post(server_url + "/publish", params=params)

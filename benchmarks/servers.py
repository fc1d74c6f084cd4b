"""The servers the delivery benchmark compares, as ASGI apps (run each under uvicorn, one worker).

- ``bare_app``: the tutorial ConnectionManager: a list of sockets; each message is encoded once
  with `json.dumps` and sent with ``await send_text`` to each socket in turn.
- ``liveupdates_app``: liveupdates with the backplane of ``LIVEUPDATES_BACKPLANE`` (default
  ``memory://``), ``Limits.flush_interval`` from ``BENCH_FLUSH_INTERVAL`` (seconds, default 0)
  and a throttle window on invalidations of ``BENCH_WINDOW`` (default 0.1 s).
- ``broadcaster_app``: `broadcaster` over Redis (``BENCH_REDIS_URL``): each WebSocket handler
  subscribes to one channel and forwards every message with ``send_text``.
- ``socketio_app``: python-socketio's ``AsyncServer`` with an ``AsyncRedisManager``
  (``BENCH_REDIS_URL``); the HTTP routes are a Starlette app behind ``socketio.ASGIApp``.

All expose ``POST /publish?count=K&rate=R&kind=tick|flood`` (rate 0: back to back; publishing
happens inside the server) and ``GET /stats`` (``{"connections": n}``). Tick events carry their
publish wall time ``ts`` and 120 bytes of padding (``BENCH_PAD``; about 200 bytes on the wire) so
that clients measure latency; flood events invalidate one of 5 keys.

The dashboard workload posts its events from another process (`benchmarks/publisher.py`) to
``POST /api/live/publish`` (``Authorization: Bearer`` ``BENCH_API_KEY``; the body of
`liveupdates.asgi.PublishAPI`'s route, ``{"to": ..., "event": {...}}``): for liveupdates it is
`PublishAPI` itself, mounted on the hub; the other stacks send the event's JSON to every client,
as each sends its own events. With ``BENCH_WORKLOAD=dashboard`` the liveupdates hub runs with
the library's defaults (``Limits()`` but for ``BENCH_FLUSH_INTERVAL``, no throttle rule)
instead of the tick workload's raised limits and throttle rule.

``BENCH_WS_WINDOW=9`` (a benchmark-only patch of uvicorn's default WebSocket implementation,
which offers no setting for it): permessage-deflate with 2^9-byte windows and ``memLevel=1``,
the smallest zlib allows, instead of uvicorn's 2^12 and ``memLevel=5``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from liveupdates import Event, Everyone, Hub, Invalidate, Limits, ThrottleRule
from liveupdates.asgi import PublishAPI, WebSocketEndpoint


class Tick(Event, tag="bench.tick"):
    seq: int
    ts: float
    pad: str


PAD = "x" * int(os.environ.get("BENCH_PAD", "120"))  # about 200 bytes per event on the wire
FLOOD_KEYS = [["jobs", n] for n in range(5)]
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0")
CHANNEL = "bench"
WORKLOAD = os.environ.get("BENCH_WORKLOAD", "tick")
API_KEY = os.environ.get("BENCH_API_KEY", "bench-publish-key-0123456789")
FLUSH_INTERVAL = float(os.environ.get("BENCH_FLUSH_INTERVAL", "0"))


def _small_deflate_window(bits: int) -> None:
    """uvicorn's websockets-sansio protocol with permessage-deflate windows of 2^`bits` bytes
    and ``memLevel=1`` (it hard-codes 2^12 and 5)."""
    from uvicorn.protocols.websockets import websockets_sansio_impl as impl
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    def factory(**_: Any) -> ServerPerMessageDeflateFactory:
        return ServerPerMessageDeflateFactory(
            server_max_window_bits=bits,
            client_max_window_bits=bits,
            compress_settings={"memLevel": 1},
        )

    setattr(impl, "ServerPerMessageDeflateFactory", factory)  # noqa: B010 (a patch)


if os.environ.get("BENCH_WS_WINDOW"):
    _small_deflate_window(int(os.environ["BENCH_WS_WINDOW"]))


def message(kind: str, n: int) -> dict[str, Any]:
    """The JSON the stacks other than liveupdates send for publication `n` of `kind`."""
    if kind == "flood":
        return {"type": "invalidate", "keys": [FLOOD_KEYS[n % len(FLOOD_KEYS)]]}
    return {"type": "bench.tick", "seq": n, "ts": time.time(), "pad": PAD}


async def paced(count: int, rate: float, send: Callable[[int], Awaitable[None]]) -> None:
    """Call `send(n)` `count` times, at `rate` per second (0: back to back)."""
    start = time.perf_counter()
    for n in range(count):
        if rate:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
        await send(n)


def publish_route(send_for: Callable[[str], Callable[[int], Awaitable[None]]]) -> Route:
    """``POST /publish``: `send_for(kind)` returns the coroutine function publishing number n."""

    async def publish(request: Request) -> Response:
        count, rate = int(request.query_params["count"]), float(request.query_params["rate"])
        await paced(count, rate, send_for(request.query_params.get("kind", "tick")))
        return JSONResponse({"published": count})

    return Route("/publish", publish, methods=["POST"])


def api_publish_route(send_event: Callable[[dict[str, Any]], Awaitable[None]]) -> Route:
    """``POST /api/live/publish`` for the stacks other than liveupdates: the event of the body
    (`PublishAPI`'s ``{"to": ..., "event": {...}}``) to every client, answered once sent."""

    async def publish(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        if not hmac.compare_digest(authorization.encode(), f"Bearer {API_KEY}".encode()):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        await send_event(json.loads(await request.body())["event"])
        return JSONResponse({"positions": [None]})

    return Route("/api/live/publish", publish, methods=["POST"])


def stats_route(connections: Callable[[], int]) -> Route:
    async def stats(request: Request) -> Response:
        return JSONResponse({"connections": connections()})

    return Route("/stats", stats)


async def until_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) client frames until the client goes away."""
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass


# the bare loop: the tutorial ConnectionManager ---------------------------------------------

sockets: list[WebSocket] = []


async def bare_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    sockets.append(websocket)
    try:
        await until_disconnect(websocket)
    finally:
        sockets.remove(websocket)


async def bare_broadcast(text: str) -> None:
    for websocket in list(sockets):
        try:
            await websocket.send_text(text)
        except Exception:  # what the tutorial does: drop the socket, lose the message
            if websocket in sockets:
                sockets.remove(websocket)


def bare_send(kind: str) -> Callable[[int], Awaitable[None]]:
    async def send(n: int) -> None:
        await bare_broadcast(json.dumps(message(kind, n)))  # encoded once, sent to every socket

    return send


async def bare_event(event: dict[str, Any]) -> None:
    await bare_broadcast(json.dumps(event))


bare_app = Starlette(
    routes=[
        publish_route(bare_send),
        api_publish_route(bare_event),
        stats_route(lambda: len(sockets)),
        WebSocketRoute("/live", bare_ws),
    ]
)


# liveupdates ------------------------------------------------------------------------------

hub = (
    Hub(  # the dashboard workload: the library's defaults
        os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"),
        limits=Limits(flush_interval=FLUSH_INTERVAL),
    )
    if WORKLOAD == "dashboard"
    else Hub(
        os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"),
        limits=Limits(
            rate=1000,
            burst=1000,
            outbox_max_messages=100_000,
            outbox_max_bytes=64 << 20,
            flush_interval=FLUSH_INTERVAL,
        ),
        throttle=[ThrottleRule(float(os.environ.get("BENCH_WINDOW", "0.1")), type="invalidate")],
    )
)


def lu_send(kind: str) -> Callable[[int], Awaitable[None]]:
    if kind == "flood":

        async def send(n: int) -> None:
            await hub.publish(Invalidate(FLOOD_KEYS[n % len(FLOOD_KEYS)]), to=Everyone)
    else:

        async def send(n: int) -> None:
            await hub.publish(Tick(n, time.time(), PAD), to=Everyone)

    return send


liveupdates_app = Starlette(
    routes=[
        publish_route(lu_send),
        stats_route(lambda: hub.stats().connections),
        WebSocketRoute("/live", WebSocketEndpoint(hub, allowed_origins="*")),
        Mount("/api/live", PublishAPI(hub, api_keys=[API_KEY])),
    ],
    lifespan=hub.lifespan,
)


# broadcaster over Redis ---------------------------------------------------------------------

_broadcast: Any = None  # broadcaster.Broadcast, created in the lifespan (imported lazily)
_broadcast_clients = 0


@asynccontextmanager
async def broadcaster_lifespan(app: Starlette) -> AsyncIterator[None]:
    """Connect, and hold one subscription to the channel for the server's lifetime.

    Two races of broadcaster 0.3.1 make it lose every message otherwise: concurrent first
    subscribers each SUBSCRIBE and overwrite each other's queue set, and its Redis listener
    wakes before redis-py records the channel, sees no subscription and goes back to sleep. One
    subscription taken before any client connects, and the listener woken after it, avoid both.
    """
    global _broadcast
    from broadcaster import Broadcast

    _broadcast = Broadcast(REDIS_URL)
    await _broadcast.connect()
    async with _broadcast.subscribe(channel=CHANNEL) as holder:
        _broadcast._backend._ready.set()

        async def drain() -> None:
            async for _ in holder:
                pass

        task = asyncio.create_task(drain())
        try:
            yield
        finally:
            task.cancel()
    await _broadcast.disconnect()


async def broadcaster_ws(websocket: WebSocket) -> None:
    """The broadcaster README's chat room: a sender task forwards, the handler reads."""
    global _broadcast_clients
    await websocket.accept()
    async with _broadcast.subscribe(channel=CHANNEL) as subscriber:

        async def sender() -> None:
            async for event in subscriber:
                await websocket.send_text(event.message)

        _broadcast_clients += 1
        task = asyncio.create_task(sender())
        try:
            await until_disconnect(websocket)
        finally:
            _broadcast_clients -= 1
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def broadcaster_send(kind: str) -> Callable[[int], Awaitable[None]]:
    async def send(n: int) -> None:
        await _broadcast.publish(channel=CHANNEL, message=json.dumps(message(kind, n)))

    return send


async def broadcaster_event(event: dict[str, Any]) -> None:
    await _broadcast.publish(channel=CHANNEL, message=json.dumps(event))


broadcaster_app = Starlette(
    routes=[
        publish_route(broadcaster_send),
        api_publish_route(broadcaster_event),
        stats_route(lambda: _broadcast_clients),
        WebSocketRoute("/live", broadcaster_ws),
    ],
    lifespan=broadcaster_lifespan,
)


# python-socketio over Redis -------------------------------------------------------------------


def _socketio_app() -> Any:
    import socketio

    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=socketio.AsyncRedisManager(REDIS_URL),
        cors_allowed_origins="*",
        http_compression=False,  # (long polling only; the clients use WebSocket, uncompressed)
    )
    clients = 0

    @sio.event  # type: ignore[untyped-decorator]
    async def connect(sid: str, environ: dict[str, Any]) -> None:
        nonlocal clients
        clients += 1

    @sio.event  # type: ignore[untyped-decorator]
    async def disconnect(sid: str, *args: Any) -> None:
        nonlocal clients
        clients -= 1

    def send_for(kind: str) -> Callable[[int], Awaitable[None]]:
        name = "invalidate" if kind == "flood" else "tick"

        async def send(n: int) -> None:
            await sio.emit(name, message(kind, n))

        return send

    async def send_event(event: dict[str, Any]) -> None:
        await sio.emit(event["type"], event)

    http = Starlette(
        routes=[
            publish_route(send_for),
            api_publish_route(send_event),
            stats_route(lambda: clients),
        ]
    )
    return socketio.ASGIApp(sio, other_asgi_app=http)


def __getattr__(name: str) -> Any:
    """``socketio_app``, built on first use: the other apps need no socketio."""
    if name == "socketio_app":
        app = _socketio_app()
        globals()[name] = app
        return app
    raise AttributeError(name)

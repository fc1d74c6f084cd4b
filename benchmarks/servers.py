"""The servers the delivery benchmark compares, as ASGI apps (run each under uvicorn).

- ``liveupdates_app``: liveupdates with the in-memory backplane (or ``LIVEUPDATES_BACKPLANE``),
  ``Limits.flush_interval`` from ``BENCH_FLUSH_INTERVAL`` (seconds, default 0) and a throttle
  window on invalidations of ``BENCH_WINDOW`` (default 0.1 s).
- ``naive_app``: the tutorial ConnectionManager: a list of sockets and a send loop.

Both expose ``POST /publish?count=K&rate=R&kind=tick|flood`` (rate 0: as fast as possible) and
``GET /stats`` (connections). Events carry their publish time so clients measure latency.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from liveupdates import Event, Everyone, Hub, Invalidate, Limits, ThrottleRule
from liveupdates.asgi import WebSocketEndpoint


class Tick(Event, tag="bench.tick"):
    seq: int
    ts: float
    pad: str


PAD = "x" * 120  # about 200 bytes per event on the wire
FLOOD_KEYS = [["jobs", n] for n in range(5)]


async def paced(count: int, rate: float, send: Any) -> None:
    """Call `send(n)` `count` times, at `rate` per second (0: back to back)."""
    start = time.perf_counter()
    for n in range(count):
        if rate:
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await anyio.sleep(delay)
        await send(n)


# liveupdates ----------------------------------------------------------------------------

hub = Hub(
    os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"),
    limits=Limits(
        rate=1000,
        burst=1000,
        outbox_max_messages=100_000,
        outbox_max_bytes=64 << 20,
        flush_interval=float(os.environ.get("BENCH_FLUSH_INTERVAL", "0")),
    ),
    throttle=[ThrottleRule(float(os.environ.get("BENCH_WINDOW", "0.1")), type="invalidate")],
)


async def lu_publish(request: Request) -> Response:
    count, rate = int(request.query_params["count"]), float(request.query_params["rate"])
    if request.query_params.get("kind") == "flood":

        async def send(n: int) -> None:
            await hub.publish(Invalidate(FLOOD_KEYS[n % len(FLOOD_KEYS)]), to=Everyone)
    else:

        async def send(n: int) -> None:
            await hub.publish(Tick(n, time.time(), PAD), to=Everyone)

    await paced(count, rate, send)
    return JSONResponse({"published": count})


async def lu_stats(request: Request) -> Response:
    return JSONResponse({"connections": hub.stats().connections})


liveupdates_app = Starlette(
    routes=[
        Route("/publish", lu_publish, methods=["POST"]),
        Route("/stats", lu_stats),
        WebSocketRoute("/live", WebSocketEndpoint(hub, allowed_origins="*")),
    ],
    lifespan=hub.lifespan,
)


# the tutorial ConnectionManager ------------------------------------------------------------

sockets: list[WebSocket] = []


async def naive_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    sockets.append(websocket)
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        pass
    finally:
        sockets.remove(websocket)


async def naive_broadcast(text: str) -> None:
    for websocket in list(sockets):
        try:
            await websocket.send_text(text)
        except Exception:  # what the tutorial does: drop the socket, lose the message
            if websocket in sockets:
                sockets.remove(websocket)


async def naive_publish(request: Request) -> Response:
    count, rate = int(request.query_params["count"]), float(request.query_params["rate"])
    flood = request.query_params.get("kind") == "flood"

    async def send(n: int) -> None:
        if flood:
            message: dict[str, Any] = {"type": "invalidate", "keys": [FLOOD_KEYS[n % 5]]}
        else:
            message = {"type": "bench.tick", "seq": n, "ts": time.time(), "pad": PAD}
        await naive_broadcast(json.dumps(message))  # encoded once, sent to every socket

    await paced(count, rate, send)
    return JSONResponse({"published": count})


async def naive_stats(request: Request) -> Response:
    return JSONResponse({"connections": len(sockets)})


naive_app = Starlette(
    routes=[
        Route("/publish", naive_publish, methods=["POST"]),
        Route("/stats", naive_stats),
        WebSocketRoute("/live", naive_ws),
    ]
)

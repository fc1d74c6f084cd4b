"""A liveupdates app for multi-process tests: ``apps.redis_app:app`` under uvicorn.

Configured by the environment: ``LIVEUPDATES_BACKPLANE`` is the backplane URL (default
``memory://``; give every process the same ``redis://...?prefix=...`` to connect them). The
authentication hook takes the token as the user id (tokens starting with ``bad`` are refused).

Routes:

- ``/live``: the WebSocket endpoint (Origin-less clients allowed).
- ``POST /publish?to=<stream>&key=<json>[&key=...][&data=<json>]``: publishes
  ``Invalidate(keys)``, or ``Set(key, data)`` when `data` is given (then exactly one key), to
  every `to` (``all``, ``user:<id>`` or ``topic:<name>``, repeatable). Answers 200
  ``{"streams": n}``, 400 for bad parameters, and 503 ``{"error": ...}`` when the backplane
  cannot take the event (Redis down): the caller should retry, nothing hangs.
- ``GET /stats``: the hub's counters plus ``pid``, ``connected`` (the backplane's link),
  ``reconciling`` and ``reconnects``; also the readiness route of `AppProcess`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from liveupdates import (
    AuthRequest,
    BackplaneError,
    Event,
    Everyone,
    Hub,
    Invalidate,
    Principal,
    Set,
    Target,
    Topic,
    User,
)
from liveupdates.asgi import WebSocketEndpoint

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s: %(message)s")


def token_auth(request: AuthRequest) -> Principal | None:
    if request.token is None or request.token.startswith("bad"):
        return None
    return Principal(user=request.token)


hub = Hub(os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"), authenticate=token_auth)


class BadRequest(Exception):
    pass


def _target(name: str) -> Target:
    if name == "all":
        return Everyone
    kind, _, rest = name.partition(":")
    if kind == "user" and rest:
        return User(rest)
    if kind == "topic" and rest:
        return Topic(rest)
    raise BadRequest(f"unknown target {name!r}")


def _event(request: Request) -> Event:
    keys = [json.loads(key) for key in request.query_params.getlist("key")]
    data = request.query_params.get("data")
    if data is None:
        return Invalidate(keys)
    if len(keys) != 1:
        raise BadRequest("a set event needs exactly one key")
    return Set(keys[0], json.loads(data))


async def publish(request: Request) -> Response:
    try:
        targets = [_target(name) for name in request.query_params.getlist("to")]
        event = _event(request)
    except (BadRequest, ValueError, TypeError) as exc:  # json, Topic, Invalidate, Set
        return JSONResponse({"error": str(exc)}, status_code=400)
    if not targets:
        return JSONResponse({"error": "no target: give to=..."}, status_code=400)
    await hub.publish(event, to=targets)  # BackplaneError: see backplane_unavailable
    return JSONResponse({"streams": len(targets)})


async def backplane_unavailable(request: Request, exc: Exception) -> Response:
    """What an application does with `BackplaneError`: 503, retry later (never a crash)."""
    return JSONResponse(
        {"error": f"backplane unavailable: {exc}"}, status_code=503, headers={"Retry-After": "1"}
    )


_STATS = (
    "connections",
    "users",
    "streams",
    "publishes",
    "deliveries",
    "resyncs",
    "recovered",
    "errors",
)


async def stats(request: Request) -> Response:
    backplane: Any = hub.backplane
    figures = hub.stats()
    return JSONResponse(
        {
            **{name: getattr(figures, name) for name in _STATS},
            "pid": os.getpid(),
            "connected": getattr(backplane, "connected", True),
            "reconnects": getattr(backplane, "reconnects", 0),
            "reconciling": hub.reconciling,
        }
    )


app = Starlette(
    routes=[
        WebSocketRoute("/live", WebSocketEndpoint(hub)),
        Route("/publish", publish, methods=["POST"]),
        Route("/stats", stats),
    ],
    exception_handlers={BackplaneError: backplane_unavailable},
    lifespan=hub.lifespan,
)

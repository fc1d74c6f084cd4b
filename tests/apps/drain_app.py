"""A liveupdates app for the drain test: ``apps.drain_app:app`` under uvicorn.

``GOODBYE_RETRY`` (seconds) is the retry window it advertises when it drains on SIGTERM.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from liveupdates import Hub, Limits
from liveupdates.asgi import WebSocketEndpoint

hub = Hub(limits=Limits(goodbye_retry=float(os.environ.get("GOODBYE_RETRY", "5"))))


async def stats(request: Request) -> Response:
    return JSONResponse({"connections": hub.stats().connections})


app = Starlette(
    routes=[Route("/stats", stats), WebSocketRoute("/live", WebSocketEndpoint(hub))],
    lifespan=hub.lifespan,
)

"""A hub with the HTTP publish API beside its WebSocket endpoint: ``apps.publish_api_app:app``.

``LIVEUPDATES_BACKPLANE`` is the backplane URL (default ``memory://``). Routes: ``/live`` (the
WebSocket endpoint; the token is the user id), ``/api`` (`PublishAPI`, key `API_KEY`) and
``GET /stats``.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute

from liveupdates import AuthRequest, Hub, Principal
from liveupdates.asgi import PublishAPI, WebSocketEndpoint

API_KEY = "test-key-0123456789abcdef"


def token_auth(request: AuthRequest) -> Principal | None:
    return None if request.token is None else Principal(user=request.token)


def make_app(backplane: str = "memory://") -> tuple[Starlette, Hub]:
    hub = Hub(backplane, authenticate=token_auth)

    async def stats(request: Request) -> Response:
        return JSONResponse({"publishes": hub.stats().publishes})

    app = Starlette(
        routes=[
            WebSocketRoute("/live", WebSocketEndpoint(hub)),
            Mount("/api", PublishAPI(hub, api_keys=[API_KEY, "another-key-0123456789"])),
            Route("/stats", stats),
        ],
        lifespan=hub.lifespan,
    )
    return app, hub


app, hub = make_app(os.environ.get("LIVEUPDATES_BACKPLANE", "memory://"))

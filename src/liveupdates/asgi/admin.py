"""An optional admin route: list this process's connections, disconnect a connection or a user.

::

    def is_admin(request: AuthRequest) -> bool:        # your own check: session, role, network
        return session_of(request.cookies).is_admin

    app.mount("/admin/live", AdminEndpoint(hub, check=is_admin))

- ``GET /``: ``{"stats": {...}, "connections": [...]}``, each connection with ``id``, ``user``,
  ``transport``, ``state``, ``since``, ``topics``, ``outbox_messages`` and ``outbox_bytes``;
- ``POST /connections/<id>/disconnect``: closes that connection, in whichever process holds it;
- ``POST /users/<id>/disconnect``: closes every connection of that user, in every process.

Requests the check refuses get 403, and so do requests from a page of another origin (the
same Origin rule as the WebSocket endpoint, `allowed_origins`), so that a cookie-based `check`
cannot be driven cross-site. Disconnections travel through the backplane.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import msgspec

from ..auth import AuthRequest, call_hook
from ..errors import BackplaneError
from ..hub import Hub
from ._asgi import JSON, Receive, Scope, Send, respond, route_path
from ._origin import AllowedOrigins, OriginPolicy
from ._refusals import RefusalLog

Check = Callable[[AuthRequest], "bool | Awaitable[bool]"]

logger = logging.getLogger("liveupdates")
_encode = msgspec.json.Encoder().encode


class AdminEndpoint:
    """A raw ASGI app for operators, guarded by `check` (your own authorisation)."""

    def __init__(self, hub: Hub, *, check: Check, allowed_origins: AllowedOrigins = None) -> None:
        self.hub, self.check = hub, check
        self.origins = OriginPolicy(allowed_origins)
        self.refusals = RefusalLog(hub.clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        origin = self.origins.refused(scope)
        if origin is not None:
            self.refusals.origin(origin, scope, "admin")
            await _respond(send, 403, {"error": "origin not allowed"})
            return
        request = AuthRequest.from_scope(scope, transport="admin")
        try:
            allowed = await call_hook(self.check, request) is True
        except Exception:
            logger.exception("the admin check failed")
            allowed = False
        if not allowed:
            await _respond(send, 403, {"error": "forbidden"})
            return
        method, parts = scope["method"], [unquote(p) for p in route_path(scope).split("/") if p]
        if method == "GET" and not parts:
            stats = dataclasses.asdict(self.hub.stats())
            connections = [dataclasses.asdict(c.info()) for c in self.hub.connections()]
            await _respond(send, 200, {"stats": stats, "connections": connections})
            return
        if len(parts) == 3 and parts[0] in ("connections", "users") and parts[2] == "disconnect":
            if method != "POST":
                await _respond(send, 405, {"error": "use POST"})
                return
            target = {"connection" if parts[0] == "connections" else "user": parts[1]}
            try:
                await self.hub.disconnect(**target, reason="disconnected by an administrator")
            except BackplaneError as exc:
                await _respond(send, 503, {"error": str(exc)})
                return
            logger.info("admin disconnect", extra=target)
            await _respond(send, 202, {"disconnecting": target})
            return
        await _respond(send, 404, {"error": "not found"})


async def _respond(send: Send, status: int, body: Any) -> None:
    await respond(send, status, _encode(body), (JSON,))

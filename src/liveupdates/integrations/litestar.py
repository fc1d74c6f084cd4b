"""Litestar: a plugin that registers the hub's lifespan and routes, with the app's guards.

::

    from liveupdates.integrations.litestar import LiveUpdatesPlugin, ScopeUserAuth

    hub = Hub(authenticate=ScopeUserAuth(principal=lambda user: Principal(user.name)))
    app = Litestar(
        route_handlers=[...],
        middleware=[auth_middleware],  # your AbstractAuthenticationMiddleware
        guards=[requires_active_user],  # they apply to /live and /live/sse too
        plugins=[LiveUpdatesPlugin(hub)],
    )

The endpoints are Litestar ASGI route handlers: the app's middleware runs before them (an
authentication middleware sets ``connection.user``) and its guards, with the plugin's own
`guards`, decide before the WebSocket is accepted or the SSE response starts. A guard that
refuses a WebSocket handshake makes the server answer HTTP 403; an SSE request gets the guard's
status (401, 403). Since these run at the handshake, the credential travels with it (a cookie,
an ``Authorization`` header, or the ``token`` query parameter), not in the ``hello`` frame.
`ScopeUserAuth` turns ``connection.user`` into the connection's `Principal`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from litestar.config.app import AppConfig
from litestar.handlers import asgi
from litestar.plugins import InitPlugin
from litestar.types import Guard, Receive, Scope, Send

from ..asgi import SSEEndpoint, WebSocketEndpoint, client_files
from ..auth import AuthRequest, Principal
from ..hub import Hub

__all__ = ("LiveUpdatesPlugin", "ScopeUserAuth")

_ANONYMOUS: Final = object()


def default_principal(user: Any) -> Principal | None:
    """A `Principal` as it is, a string as the user id, None as a refusal."""
    if user is None or isinstance(user, Principal):
        return user
    if isinstance(user, str):
        return Principal(user=user)
    raise TypeError(
        f"connection.user is a {type(user).__name__}: pass ScopeUserAuth(principal=) a function "
        "that turns it into a liveupdates.Principal"
    )


class ScopeUserAuth:
    """An authentication hook (`Hub(authenticate=...)`) that reads ``connection.user``, as
    Litestar's authentication middleware left it in the scope; `principal` turns it into a
    `Principal` (None, or no user at all: refused)."""

    def __init__(self, *, principal: Callable[[Any], Principal | None] = default_principal) -> None:
        self.principal = principal

    async def __call__(self, request: AuthRequest) -> Principal | None:
        user = request.scope.get("user", _ANONYMOUS)
        return None if user is _ANONYMOUS else self.principal(user)


class LiveUpdatesPlugin(InitPlugin):
    """Registers `hub`'s lifespan (before the app's own, so that its startup code may publish)
    and its endpoints: the WebSocket at `path`, Server-Sent Events at `sse_path`, the browser
    client's files under `client_path` (None leaves one out). `guards` are added to the app's
    for the WebSocket and SSE routes; `allowed_origins` is as for `WebSocketEndpoint`.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        path: str = "/live",
        sse_path: str | None = "/live/sse",
        client_path: str | None = "/static/liveupdates",
        guards: Sequence[Guard] = (),
        allowed_origins: str | list[str] | None = None,
    ) -> None:
        self.hub = hub
        self.path, self.sse_path, self.client_path = path, sse_path, client_path
        self.guards = list(guards)
        self.websocket = WebSocketEndpoint(hub, allowed_origins=allowed_origins)
        self.sse = SSEEndpoint(hub, allowed_origins=allowed_origins)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.lifespan = [self.hub.lifespan, *app_config.lifespan]
        app_config.route_handlers = [*app_config.route_handlers, *self.route_handlers()]
        return app_config

    def route_handlers(self) -> list[Any]:
        """The plugin's Litestar route handlers (also usable in a `Router` of your own)."""
        websocket, sse = self.websocket, self.sse
        guards = self.guards or None

        async def live_websocket(scope: Scope, receive: Receive, send: Send) -> None:
            await websocket(scope, receive, send)  # type: ignore[arg-type]

        async def live_sse(scope: Scope, receive: Receive, send: Send) -> None:
            await sse(scope, receive, send)  # type: ignore[arg-type]

        async def live_client(scope: Scope, receive: Receive, send: Send) -> None:
            await client_files(scope, receive, send)  # type: ignore[arg-type]

        handlers = [asgi(self.path, guards=guards, copy_scope=True)(live_websocket)]
        if self.sse_path is not None:
            handlers.append(asgi(self.sse_path, guards=guards, copy_scope=True)(live_sse))
        if self.client_path is not None:  # public code: no guards of ours
            handlers.append(asgi(self.client_path, is_static=True, copy_scope=True)(live_client))
        return handlers

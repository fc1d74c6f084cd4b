"""FastAPI: authentication through the app's own dependencies, and the routes in one call.

::

    from liveupdates.integrations.fastapi import DependencyAuth, mount

    hub = Hub(authenticate=DependencyAuth(get_current_user, principal=lambda u: Principal(u.name)))
    app = FastAPI(lifespan=app_lifespan)
    mount(app, hub)  # /live, /live/sse, /static/liveupdates; the hub's lifespan before yours

`DependencyAuth` solves a dependency, with everything it depends on (``Depends(oauth2_scheme)``,
a database session, ``yield`` dependencies, the app's ``dependency_overrides``), for each
connection attempt, as FastAPI would for a ``GET`` of the endpoint's path: the dependency sees
a `Request` with the attempt's headers, cookies and query, and the connection's token (from the
``hello`` frame, the ``token`` query parameter or the token subprotocol) as an
``Authorization: Bearer`` header, so ``OAuth2PasswordBearer`` and ``HTTPBearer`` find it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute

from ..asgi import SSEEndpoint, WebSocketEndpoint, client_files
from ..auth import AuthRequest, Principal
from ..hub import Hub
from .lifespans import combine_lifespans

__all__ = ("DependencyAuth", "combine_lifespans", "mount")

_RESULT: Final = "liveupdates.principal"  # (the scope key where the endpoint leaves its result)
_POSITIONAL: Final = inspect.Parameter.POSITIONAL_OR_KEYWORD
_SCHEMES: Final = {"ws": "http", "wss": "https"}


def default_principal(value: Any) -> Principal | None:
    """A `Principal` as it is, a string as the user id, None as a refusal."""
    if value is None or isinstance(value, Principal):
        return value
    if isinstance(value, str):
        return Principal(user=value)
    raise TypeError(
        f"the dependency returned a {type(value).__name__}: pass DependencyAuth(..., "
        "principal=) a function that turns it into a liveupdates.Principal"
    )


class DependencyAuth:
    """An authentication hook (`Hub(authenticate=...)`) that solves a FastAPI dependency.

    `dependency` is what a route would put in ``Depends(...)``; `principal` turns its result
    into a `Principal` (or None: refused). By default a `Principal` is taken as it is and a
    string as the user id. It runs in the endpoint's event loop, before the dependency's own
    cleanup (``yield`` dependencies), so it may still read an ORM object.

    A response the dependency causes instead of a result (an ``HTTPException``, or any
    exception an exception handler of the app turns into a response) refuses the connection
    when its status is 4xx (the client is closed with ``4401``) and fails it otherwise
    (``1011``: the client retries). An exception no handler takes fails it too.

    `mount` binds the hook to the app (its ``dependency_overrides`` and exception handlers); on
    its own, FastAPI's default handlers apply.
    """

    def __init__(
        self,
        dependency: Callable[..., Any],
        *,
        principal: Callable[[Any], Principal | None] = default_principal,
    ) -> None:
        self.dependency = dependency
        self.principal = principal
        self.app: FastAPI | None = None
        convert = principal

        async def endpoint(request: Request, value: Any) -> Response:
            request.scope[_RESULT].append(convert(value))
            return Response(status_code=204)

        # (a signature of objects: this module's annotations are strings, and FastAPI could
        # not resolve `dependency` from one)
        endpoint.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("request", _POSITIONAL, annotation=Request),
                inspect.Parameter(
                    "value", _POSITIONAL, annotation=Annotated[Any, Depends(dependency)]
                ),
            ]
        )
        self._endpoint = endpoint
        self._route = APIRoute("/", endpoint, methods=["GET"])

    def bind(self, app: FastAPI) -> None:
        """Solve the dependency as `app` would: with its overrides and exception handlers."""
        self.app = app
        self._route = APIRoute(
            "/", self._endpoint, methods=["GET"], dependency_overrides_provider=app
        )

    async def __call__(self, request: AuthRequest) -> Principal | None:
        result: list[Principal | None] = []
        status: list[int] = []
        scope = _http_scope(request)
        scope[_RESULT] = result
        scope["starlette.exception_handlers"] = self._exception_handlers()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:  # (nobody reads twice: a GET has no body)
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))

        async with AsyncExitStack() as stack:  # what FastAPI's middleware gives a request
            scope["fastapi_middleware_astack"] = scope["fastapi_astack"] = stack
            await self._route.handle(scope, receive, send)
        if result and status and 200 <= status[0] < 300:
            return result[0]
        if status and 400 <= status[0] < 500:
            return None
        raise RuntimeError(f"the authentication dependency answered HTTP {status or '-'}")

    def _exception_handlers(self) -> tuple[dict[Any, Any], dict[int, Any]]:
        handlers: Mapping[Any, Any] = (
            self.app.exception_handlers
            if self.app is not None
            else {
                HTTPException: http_exception_handler,
                RequestValidationError: request_validation_exception_handler,
            }
        )
        by_type = {key: h for key, h in handlers.items() if not isinstance(key, int)}
        by_status = {key: h for key, h in handlers.items() if isinstance(key, int)}
        return by_type, by_status


def _http_scope(request: AuthRequest) -> dict[str, Any]:
    """The connection attempt as an HTTP ``GET`` of its path, the token as a bearer header."""
    scope = dict(request.scope)
    headers = list(scope.get("headers", ()))
    if request.token is not None and request.token_source != "header":
        headers = [(n, v) for n, v in headers if n.lower() != b"authorization"]
        headers.append((b"authorization", b"Bearer " + request.token.encode("latin-1")))
    scheme = scope.get("scheme", "http")
    scope.update(
        type="http",
        method="GET",
        headers=headers,
        scheme=_SCHEMES.get(scheme, scheme),
        http_version=scope.get("http_version", "1.1"),
    )
    scope.pop("subprotocols", None)
    return scope


def mount(
    app: FastAPI,
    hub: Hub,
    *,
    path: str = "/live",
    sse_path: str | None = "/live/sse",
    client_path: str | None = "/static/liveupdates",
    allowed_origins: str | list[str] | None = None,
    lifespan: bool = True,
) -> None:
    """Add the hub's endpoints to `app`, and run the hub for the app's life.

    - `path`: the WebSocket endpoint; `sse_path`: the Server-Sent Events endpoint (None: none);
      `client_path`: the browser client's files (None: not served);
    - `allowed_origins`: as `WebSocketEndpoint` (None: same-origin pages only);
    - `lifespan`: put the hub's lifespan in front of the app's (`combine_lifespans`), so the hub
      runs before the app's startup code and until its shutdown code is done. Pass False if you
      combine them yourself (a hub entered twice fails at startup: "already running").

    A `DependencyAuth` hook of `hub` is bound to `app` (`DependencyAuth.bind`).
    """
    hook = hub.sessions.authenticate_hook
    if isinstance(hook, DependencyAuth):
        hook.bind(app)
    routes = app.router.routes  # (raw ASGI apps: FastAPI's own route types wrap functions)
    routes.append(WebSocketRoute(path, WebSocketEndpoint(hub, allowed_origins=allowed_origins)))
    if sse_path is not None:
        routes.append(Route(sse_path, SSEEndpoint(hub, allowed_origins=allowed_origins)))
    if client_path is not None:
        routes.append(Mount(client_path, app=client_files))
    if lifespan:
        router = app.router
        router.lifespan_context = combine_lifespans(hub.lifespan, router.lifespan_context)

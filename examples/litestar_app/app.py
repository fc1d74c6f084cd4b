"""liveupdates in a Litestar app: the plugin, the app's authentication middleware and guard.

Run it with
``uvicorn examples.litestar_app.app:app --ws-max-size 131072 --ws-per-message-deflate false``;
a client connects to
``/live`` with ``Authorization: Bearer alice-token`` (or ``?token=alice-token``, or the
``token`` cookie), and
``curl -X POST -H 'Authorization: Bearer alice-token' localhost:8000/jobs`` tells it that
``["jobs"]`` changed. ``mallory-token`` is a suspended account: the guard refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.base import DefineMiddleware

from liveupdates import Hub, Invalidate, Principal, User
from liveupdates.integrations.litestar import LiveUpdatesPlugin, ScopeUserAuth


@dataclass(frozen=True)
class Account:
    name: str
    active: bool = True


TOKENS = {  # your user store
    "alice-token": Account("alice"),
    "bob-token": Account("bob"),
    "mallory-token": Account("mallory", active=False),
}


class TokenAuthentication(AbstractAuthenticationMiddleware):
    """The app's authentication: a bearer header, a ``token`` cookie or query parameter."""

    async def authenticate_request(self, connection: ASGIConnection) -> AuthenticationResult:  # type: ignore[type-arg]
        scheme, _, credentials = connection.headers.get("authorization", "").partition(" ")
        token = (
            (credentials if scheme.lower() == "bearer" else None)
            or connection.cookies.get("token")
            or connection.query_params.get("token")
        )
        account = TOKENS.get(token or "")
        if account is None:
            raise NotAuthorizedException("invalid token")
        return AuthenticationResult(user=account, auth=token)


def requires_active_account(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """The app's guard: suspended accounts get nothing, live updates included."""
    account = connection.scope.get("user")  # (None on the routes excluded from auth)
    if account is not None and not account.active:
        raise PermissionDeniedException("account suspended")


hub = Hub(authenticate=ScopeUserAuth(principal=lambda account: Principal(account.name)))


@post("/jobs")
async def add_job(request: Request) -> dict[str, str]:  # type: ignore[type-arg]
    await hub.publish(Invalidate(["jobs"]), to=User(request.user.name))
    return {"published": request.user.name}


@get("/stats", exclude_from_auth=True, guards=[])
async def stats() -> dict[str, int]:
    return {"connections": hub.stats().connections}


app = Litestar(
    route_handlers=[add_job, stats],
    middleware=[DefineMiddleware(TokenAuthentication, exclude_from_auth_key="exclude_from_auth")],
    guards=[requires_active_account],
    plugins=[LiveUpdatesPlugin(hub)],
)

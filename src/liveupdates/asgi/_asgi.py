"""ASGI plumbing shared by the endpoints: types, plain responses, the route path, and what a
session's errors become on the wire."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, Final

from ..errors import BackplaneError, CloseCode, HookFailed, HubClosed, Unauthorized

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]

logger = logging.getLogger("liveupdates")
TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
JSON: Final = (b"content-type", b"application/json")


async def respond(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers = (TEXT,),
    *,
    head: bool = False,
    prefix: str = "http",
) -> None:
    """A whole response: `headers` (plain text by default) and `body` with its length.

    `prefix` is ``"websocket.http"`` for a WebSocket handshake refused with a response (the
    ASGI denial response extension); `head` leaves the body out (a HEAD request).
    """
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": prefix + ".response.start", "status": status, "headers": headers})
    await send({"type": prefix + ".response.body", "body": b"" if head else body})


def route_path(scope: Scope) -> str:
    """The path below the mount point (as Starlette's ``get_route_path``)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :]
    return path


def header(scope: Scope, wanted: bytes) -> bytes | None:
    """The first value of request header `wanted` (lower case), or None."""
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def refusal(exc: Exception) -> tuple[int, str]:
    """The close code and reason that end a session on an error from the session layer:
    a refused or expired credential (4401, 4440), a hook that raised (1011), a hub that stopped
    accepting (1001) or an unavailable backplane (1013, logged). Anything else is re-raised."""
    if isinstance(exc, Unauthorized | HookFailed):
        return exc.close_code, str(exc)
    if isinstance(exc, HubClosed):
        return CloseCode.GOING_AWAY, "server shutting down"
    if isinstance(exc, BackplaneError):
        logger.warning("backplane unavailable during a session: %s", exc)
        return CloseCode.TRY_AGAIN_LATER, "backplane unavailable"
    raise exc


SESSION_ERRORS: Final = (Unauthorized, HookFailed, HubClosed, BackplaneError)
"""The errors of the session layer that `refusal` turns into a close code."""

"""Who a connection is, and the application's hooks that decide it.

`authenticate(request) -> Principal | None` runs once per connection (and on every in-band
token refresh); returning None or raising `Unauthorized` refuses it, a `Principal` whose
`expires_at` is past is refused as expired, and any other exception is a server error (the
client retries). `authorize(principal, topic) -> bool` runs for every topic subscription.
Both may be sync or async: a sync hook runs in a worker thread, so that a blocking call (a
database query, Django's ORM) neither stalls the event loop nor fails for running in it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, TypeAlias, TypeVar
from urllib.parse import parse_qsl

import anyio.to_thread

from .protocol import TOKEN_SUBPROTOCOL_PREFIX

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated party. `user` is None for an anonymous connection (no personal stream).

    `expires_at` (Unix time) makes the server warn the client before it and close the
    connection at it unless the client refreshes its token. `data` is yours (roles, claims).
    """

    user: str | None = None
    expires_at: float | None = None
    data: Any = None

    def __post_init__(self) -> None:
        if self.user is not None and (not isinstance(self.user, str) or not self.user):
            raise ValueError("Principal.user is a non-empty string or None")


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What the authentication hook sees of a connection attempt (WebSocket or SSE).

    `token` is the first present of: the `hello` frame's token (or `refresh`), an
    ``Authorization: Bearer`` header, a ``liveupdates.token.<token>`` subprotocol, and the
    ``token`` query parameter. `token_source` says which one it was.
    """

    scope: Mapping[str, Any]
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query: Mapping[str, str]
    token: str | None = None
    token_source: str | None = None
    transport: str = "websocket"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scope(
        cls, scope: Mapping[str, Any], *, token: str | None = None, transport: str = "websocket"
    ) -> AuthRequest:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        cookies: dict[str, str] = {}
        if "cookie" in headers:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(headers["cookie"])
            except Exception:  # a malformed cookie header is the client's problem, not a crash
                jar = SimpleCookie()
            cookies = {k: m.value for k, m in jar.items()}
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        source = "message" if token is not None else None
        if token is None:
            token, source = _header_token(headers)
        if token is None and query.get("token"):
            token, source = query["token"], "query"
        return cls(scope, headers, cookies, query, token, source, transport)


def _header_token(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip(), "header"
    for proto in headers.get("sec-websocket-protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX) and len(proto) > len(
            TOKEN_SUBPROTOCOL_PREFIX
        ):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX) :], "subprotocol"
    return None, None


Authenticate: TypeAlias = Callable[[AuthRequest], "Principal | Awaitable[Principal | None] | None"]
Authorize: TypeAlias = Callable[[Principal, str], "bool | Awaitable[bool]"]


async def call_hook(hook: Callable[..., T | Awaitable[T]], *args: Any) -> T:
    """Call an application hook: an async one is awaited, a sync one runs in a worker thread
    (anyio's, at most 40 at once by default) so that it may block. The built-in defaults,
    which never block, are called directly."""
    if hook is anonymous or hook is allow_all or _is_async(hook):
        result = hook(*args)
    else:
        result = await anyio.to_thread.run_sync(functools.partial(hook, *args))
    if inspect.isawaitable(result):
        return await result
    return result


def _is_async(hook: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(hook):  # (sees through functools.partial)
        return True
    call = getattr(hook, "__call__", None)  # noqa: B004  (an instance with `async def __call__`)
    return call is not None and inspect.iscoroutinefunction(call)


def anonymous(request: AuthRequest) -> Principal:
    """The default authentication hook: every connection is anonymous (no personal stream)."""
    return Principal()


def allow_all(principal: Principal, topic: str) -> bool:
    """The default authorisation hook: every topic is public."""
    return True

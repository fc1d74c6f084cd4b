"""The Origin check against cross-site WebSocket hijacking (and cross-site admin requests)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

AllowedOrigins = Iterable[str] | Literal["*"] | None

# Browsers send the Origin of a WebSocket handshake as http(s); ASGI names its scheme ws(s).
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
_DEFAULT_PORT = {"http": "80", "https": "443"}


class OriginPolicy:
    """Allow same-origin requests (default), an explicit list of origins, or any (``"*"``).

    Requests without an ``Origin`` header come from non-browser clients, which can send any
    header they like; the check protects browsers' ambient credentials (cookies), so it lets
    them through.

    Same origin means the same scheme, host and port as the request: the ``Host`` header and the
    ASGI scope's ``scheme`` (``ws``/``wss`` stand for ``http``/``https``). Behind a proxy that
    ends TLS, the scope says ``https``/``wss`` only if the server trusts the proxy's
    ``X-Forwarded-Proto`` (uvicorn's ``--proxy-headers`` and ``--forwarded-allow-ips``), and the
    proxy must pass the browser's ``Host`` on.
    """

    def __init__(self, allowed: AllowedOrigins = None) -> None:
        self.any = allowed == "*"
        self.origins = (
            frozenset()
            if allowed is None or allowed == "*"
            else frozenset(o.rstrip("/").lower() for o in allowed)
        )

    def refused(self, scope: Mapping[str, Any]) -> str | None:
        """The request's ``Origin`` when the policy refuses it, else None."""
        origin: str | None = None
        host: str | None = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1").strip().lower()
            elif name == b"host":
                host = value.decode("latin-1").strip().lower()
        if origin is None or self.any:
            return None
        if self.origins:
            return None if origin.rstrip("/") in self.origins else origin
        if host is None:
            return origin
        return None if _origin_of(origin) == _origin_of(own_origin(scope, host)) else origin

    def allows(self, scope: Mapping[str, Any]) -> bool:
        return self.refused(scope) is None


def own_origin(scope: Mapping[str, Any], host: str | None = None) -> str:
    """The origin a same-origin page of this request has: ``http(s)://host[:port]``."""
    if host is None:
        for name, value in scope.get("headers", ()):
            if name == b"host":
                host = value.decode("latin-1").strip().lower()
    default = "ws" if scope.get("type") == "websocket" else "http"
    scheme = _HTTP_SCHEME.get(str(scope.get("scheme") or default).lower(), "http")
    return f"{scheme}://{host or '?'}"


def _origin_of(url: str) -> tuple[str, str]:
    """(scheme, host[:port]) with the scheme's default port left out, as browsers write it."""
    parts = urlsplit(url)
    scheme, netloc = parts.scheme, parts.netloc
    host, colon, port = netloc.rpartition(":")
    if colon and "]" not in port and port == _DEFAULT_PORT.get(scheme):
        netloc = host
    return scheme, netloc

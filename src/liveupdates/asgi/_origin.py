"""The Origin check against cross-site WebSocket hijacking."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

AllowedOrigins = Iterable[str] | Literal["*"] | None


class OriginPolicy:
    """Allow same-origin requests (default), an explicit list of origins, or any (``"*"``).

    Requests without an ``Origin`` header come from non-browser clients, which can send any
    header they like; the check protects browsers' ambient credentials (cookies), so it lets
    them through.
    """

    def __init__(self, allowed: AllowedOrigins = None) -> None:
        self.any = allowed == "*"
        self.origins = (
            frozenset()
            if allowed is None or allowed == "*"
            else frozenset(o.rstrip("/").lower() for o in allowed)
        )

    def allows(self, scope: Mapping[str, Any]) -> bool:
        origin = host = None
        for name, value in scope.get("headers", ()):
            if name == b"origin":
                origin = value.decode("latin-1").strip().lower()
            elif name == b"host":
                host = value.decode("latin-1").strip().lower()
        if origin is None or self.any:
            return True
        if self.origins:
            return origin.rstrip("/") in self.origins
        return host is not None and urlsplit(origin).netloc == host

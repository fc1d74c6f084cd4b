"""The HTTP publish API: any language publishes with a JSON request and an API key.

Mount it beside the WebSocket endpoint (it publishes through the hub)::

    app.mount("/api/live", PublishAPI(hub, api_keys=[os.environ["LIVEUPDATES_API_KEY"]]))

or run it on its own over a `Producer` (its lifespan starts and stops the producer)::

    uvicorn --factory liveupdates.asgi.publish_api:create_app  # reads LIVEUPDATES_* (below)

Routes (see docs/http-api.md and ``GET /openapi.json``):

- ``POST /publish``: one request (`publish_json`), answered ``{"positions": [...]}``;
- ``POST /publish/batch``: ``{"requests": [...]}``, published in order, answered
  ``{"results": [{"positions": [...]}, ...]}``; nothing is published unless every request is
  valid;
- ``GET /openapi.json``: the OpenAPI 3.1 document (no key needed).

Requests need ``Authorization: Bearer <key>`` with one of `api_keys` (compared in constant
time). Bad input gets a 4xx with ``{"error": {"code": ..., "message": ..., "path": ...}}``; a
backplane that cannot take the event gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any, Protocol

import msgspec

from ..errors import BackplaneError, HubClosed
from ..positions import Publication
from ..producer import Producer
from ..publish_json import (
    BatchIn,
    InvalidRequest,
    Prepared,
    PublishIn,
    RequestLimits,
    decode,
    parse,
)
from ._openapi import openapi_document

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

logger = logging.getLogger("liveupdates")
_encode = msgspec.json.Encoder().encode
MIN_KEY_LENGTH = 16


class Publishes(Protocol):
    """What the API publishes through: a `Hub` or a `Producer`."""

    @property
    def running(self) -> bool: ...

    async def publish_prepared(self, prepared: Prepared, /) -> Sequence[Publication | None]: ...

    async def __aenter__(self) -> Any: ...

    async def __aexit__(self, *exc_info: Any) -> Any: ...


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.path = status, code, message, path
        self.headers: list[tuple[bytes, bytes]] = []
        self.extra: dict[str, Any] = {}


class PublishAPI:
    """A raw ASGI app: JSON publish requests, authenticated with API keys; see the module."""

    def __init__(
        self,
        target: Publishes,
        *,
        api_keys: Iterable[str],
        limits: RequestLimits | None = None,
        max_body_bytes: int = 1 << 20,
        max_batch: int = 100,
    ) -> None:
        self.target = target
        self._keys = [key.encode() for key in api_keys]
        if not self._keys:
            raise ValueError("the publish API needs at least one API key")
        if any(len(key) < MIN_KEY_LENGTH for key in self._keys):
            raise ValueError(f"API keys have at least {MIN_KEY_LENGTH} characters")
        self.limits = limits or RequestLimits()
        self.max_body_bytes, self.max_batch = max_body_bytes, max_batch
        self._openapi = _encode(openapi_document(self.limits, max_batch))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except _Refused as refusal:
            error: dict[str, Any] = {"code": refusal.code, "message": refusal.message}
            if refusal.path is not None:
                error["path"] = refusal.path
            body = {"error": error, **refusal.extra}
            await _respond(send, refusal.status, body, refusal.headers)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: the path still holds the mount point
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        method = scope["method"]
        routes = {"/openapi.json": "GET", "/publish": "POST", "/publish/batch": "POST"}
        if path not in routes:
            raise _Refused(404, "not_found", f"no route {path}")
        if method != routes[path]:
            refusal = _Refused(405, "method_not_allowed", f"use {routes[path]}")
            refusal.headers.append((b"allow", routes[path].encode()))
            raise refusal
        if path == "/openapi.json":
            await _respond(send, 200, self._openapi)
            return
        self._authenticate(scope)
        body = await self._body(scope, receive)
        if path == "/publish":
            prepared = self._parse(self._decode(body, PublishIn) if body else None)
            positions = await self._publish(prepared)
            await _respond(send, 200, {"positions": positions})
            return
        batch = self._decode(body, BatchIn)
        if len(batch.requests) > self.max_batch:
            raise _Refused(413, "too_large", f"at most {self.max_batch} requests", "$.requests")
        preparing = [
            self._parse(request, f"$.requests[{n}]") for n, request in enumerate(batch.requests)
        ]
        results: list[dict[str, Any]] = []
        for prepared in preparing:
            try:
                results.append({"positions": await self._publish(prepared)})
            except _Refused as refusal:
                refusal.extra["results"] = results  # those published before the failure
                raise
        await _respond(send, 200, {"results": results})

    def _authenticate(self, scope: Scope) -> None:
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = token.strip()
        matched = False
        for key in self._keys:  # every key compared, in constant time: no early exit
            matched |= hmac.compare_digest(given, key)
        if not matched:
            refusal = _Refused(401, "unauthorized", "a valid API key is needed (Bearer)")
            refusal.headers.append((b"www-authenticate", b'Bearer realm="liveupdates"'))
            raise refusal

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        headers = dict(scope["headers"])
        media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media != b"application/json":
            raise _Refused(415, "unsupported_media_type", "send Content-Type: application/json")
        too_large = _Refused(413, "too_large", f"the body exceeds {self.max_body_bytes} bytes")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise too_large
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Refused(400, "invalid_request", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _decode(self, body: bytes, shape: type[Any]) -> Any:
        try:
            return decode(body, shape)
        except InvalidRequest as exc:
            raise _Refused(400, "invalid_request", exc.message, exc.path) from None

    def _parse(self, request: PublishIn | None, path: str = "$") -> Prepared:
        if request is None:
            raise _Refused(400, "invalid_request", "the body is empty")
        try:
            return parse(request, self.limits, path)
        except InvalidRequest as exc:
            raise _Refused(400, "invalid_request", exc.message, exc.path) from None

    async def _publish(self, prepared: Prepared) -> list[Any]:
        try:
            publications = await self.target.publish_prepared(prepared)
        except (BackplaneError, HubClosed) as exc:
            logger.warning("publish API: %s", exc)
            refusal = _Refused(503, "unavailable", f"cannot publish now: {exc}")
            refusal.headers.append((b"retry-after", b"1"))
            raise refusal from None
        return [
            {"stream": stream, "epoch": p.epoch, "offset": p.offset}
            if p is not None
            else {"stream": stream, "epoch": None, "offset": None}  # held by the throttle
            for stream, p in zip(prepared.streams, publications, strict=True)
        ]

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Run on its own: start the producer (or hub) at startup, close it at shutdown."""
        owned = False
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if not self.target.running:
                        await self.target.__aenter__()
                        owned = True
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if owned:
                    await self.target.__aexit__(None, None, None)
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> PublishAPI:
    """The API on its own, from the environment: ``LIVEUPDATES_BACKPLANE`` (a URL) and
    ``LIVEUPDATES_API_KEYS`` (comma-separated). For ``uvicorn --factory``."""
    url = os.environ.get("LIVEUPDATES_BACKPLANE")
    keys = [k.strip() for k in os.environ.get("LIVEUPDATES_API_KEYS", "").split(",") if k.strip()]
    if not url or not keys:
        raise RuntimeError("set LIVEUPDATES_BACKPLANE and LIVEUPDATES_API_KEYS")
    return PublishAPI(Producer.from_url(url), api_keys=keys)


async def _respond(
    send: Send, status: int, body: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    payload = body if isinstance(body, bytes) else _encode(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(payload)),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})

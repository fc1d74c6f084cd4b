"""The browser client's files: a raw ASGI app serving the ES modules shipped in the package.

Mount it under any prefix, for example with Starlette::

    Mount("/static/liveupdates", app=client_files)

and import ``/static/liveupdates/client.js`` from a page (the modules import each other
relatively). Only the package's ``.js`` and ``.d.ts`` files are served; every other path is 404.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from importlib.resources import files

from ._asgi import TEXT, Receive, Scope, Send, header, respond, route_path

_TYPES = (
    (".d.ts", b"application/typescript; charset=utf-8"),
    (".js", b"text/javascript; charset=utf-8"),
)


class _File:
    __slots__ = ("body", "content_type", "etag")

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.body = body
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'


class ClientFiles:
    """Serve the files of a package folder (by default ``liveupdates/static``).

    Every file is read once, on the first request. Responses carry an ``ETag`` and
    ``cache-control: no-cache``: browsers revalidate (a cheap 304) and pick up a new version
    of the package at once. ``access-control-allow-origin: *`` lets pages of other origins
    import the modules (public code, no credentials).
    """

    def __init__(self, package: str = "liveupdates", folder: str = "static") -> None:
        self.package, self.folder = package, folder
        self._files: Mapping[str, _File] | None = None

    @property
    def files(self) -> Mapping[str, _File]:
        """File name to its content, type and ETag."""
        if self._files is None:
            found: dict[str, _File] = {}
            for entry in (files(self.package) / self.folder).iterdir():
                for suffix, content_type in _TYPES:
                    if entry.name.endswith(suffix) and entry.is_file():
                        found[entry.name] = _File(entry.read_bytes(), content_type)
                        break
            self._files = found
        return self._files

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD"):
            await respond(send, 405, b"method not allowed\n", (TEXT, (b"allow", b"GET, HEAD")))
            return
        file = self.files.get(route_path(scope).removeprefix("/"))
        if file is None:
            await respond(send, 404, b"not found\n", head=method == "HEAD")
            return
        headers = [
            (b"etag", file.etag),
            (b"cache-control", b"no-cache"),
            (b"access-control-allow-origin", b"*"),
            (b"x-content-type-options", b"nosniff"),
        ]
        if _matches(scope, file.etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-type", file.content_type))
        await respond(send, 200, file.body, headers, head=method == "HEAD")


client_files = ClientFiles()
"""The browser client of this package, ready to mount."""


def _matches(scope: Scope, etag: bytes) -> bool:
    for candidate in (header(scope, b"if-none-match") or b"").split(b","):
        if candidate.strip().removeprefix(b"W/") in (etag, b"*"):
            return True
    return False

"""The browser client's files, served by `client_files` (mounted, and as a raw ASGI app)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, MutableMapping
from importlib.resources import files
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from liveupdates.asgi import client_files
from liveupdates.asgi.static import ClientFiles

pytestmark = pytest.mark.anyio

STATIC = files("liveupdates") / "static"
PREFIX = "/static/liveupdates"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=[Mount(PREFIX, app=client_files)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client


async def call(
    app: Any,
    path: str,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """Call a raw ASGI app with an HTTP request; return status, headers and body."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "root_path": root_path,
             "headers": headers or [], "query_string": b""}  # fmt: skip
    await app(scope, receive, send)
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(b["body"] for b in bodies)


async def test_serves_each_module_with_its_type_and_an_etag(http: httpx.AsyncClient) -> None:
    response = await http.get(PREFIX + "/client.js")
    assert response.status_code == 200
    assert response.content == (STATIC / "client.js").read_bytes()
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r'"[0-9a-f]{32}"', response.headers["etag"])
    types = await http.get(PREFIX + "/client.d.ts")
    assert types.headers["content-type"] == "application/typescript; charset=utf-8"
    assert types.headers["etag"] != response.headers["etag"]


async def test_if_none_match_revalidates_with_304(http: httpx.AsyncClient) -> None:
    etag = (await http.get(PREFIX + "/tabs.js")).headers["etag"]
    for header in (etag, "W/" + etag, f'"other", {etag}', "*"):
        response = await http.get(PREFIX + "/tabs.js", headers={"if-none-match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    changed = await http.get(PREFIX + "/tabs.js", headers={"if-none-match": '"stale"'})
    assert changed.status_code == 200 and changed.content


async def test_head_and_other_methods(http: httpx.AsyncClient) -> None:
    head = await http.head(PREFIX + "/backoff.js")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == len((STATIC / "backoff.js").read_bytes())
    post = await http.post(PREFIX + "/backoff.js")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "path",
    ["/", "", "/nope.js", "/client.js/x", "/CLIENT.JS", "/../__init__.py", "/..%2F__init__.py",
     "/static/client.js", "//client.js", "/./client.js", "/__init__.py", "/py.typed"],
)  # fmt: skip
async def test_everything_else_is_404_without_traversal(path: str) -> None:
    status, headers, body = await call(client_files, path)
    assert (status, body) == (404, b"not found\n")
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"


async def test_the_mount_prefix_is_stripped_from_root_path() -> None:
    root = "/app/static/liveupdates"
    status, headers, body = await call(client_files, root + "/env.js", root_path=root)
    assert status == 200 and body == (STATIC / "env.js").read_bytes()
    assert headers[b"access-control-allow-origin"] == b"*"  # public code, importable anywhere


async def test_every_module_and_every_relative_import_is_served(http: httpx.AsyncClient) -> None:
    names = sorted(e.name for e in STATIC.iterdir() if e.name.endswith((".js", ".d.ts")))
    assert "client.js" in names and "tabs.d.ts" in names
    for name in names:
        response = await http.get(f"{PREFIX}/{name}")
        assert response.status_code == 200, name
        for imported in re.findall(r"""from '\./([\w.]+)'""", response.text):
            assert imported in names, f"{name} imports {imported}, which is not served"


async def test_another_package_folder() -> None:
    app = ClientFiles("liveupdates", "backplanes")  # no .js there: nothing is served
    status, _, _ = await call(app, "/memory.py")
    assert status == 404
    assert app.files == {}

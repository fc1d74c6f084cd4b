"""Litestar, end to end over uvicorn: the example app (examples/litestar_app) with the plugin,
its authentication middleware and its guard applied to the WebSocket and SSE routes."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest
from httpx_ws import WebSocketUpgradeError
from support import UvicornThread, ws_client
from test_sse import sse

from examples.litestar_app.app import app

pytestmark = pytest.mark.anyio
ALICE = {"authorization": "Bearer alice-token"}


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    server = UvicornThread(app).start()
    yield server
    server.stop()


async def test_the_middlewares_user_is_the_connections_principal(server: UvicornThread) -> None:
    async with ws_client(server, headers=ALICE) as client:
        welcome, *_ = await client.handshake()
        assert welcome["user"] == "alice"
        with anyio.fail_after(10):
            await client.until(lambda m: m.get("stream") == "user:alice")
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            reply = await http.post("/jobs", headers=ALICE)
        assert reply.status_code == 201, reply.text
        with anyio.fail_after(10):
            (event,) = await client.events(1)
        assert (event["stream"], event["keys"]) == ("user:alice", [["jobs"]])


@pytest.mark.parametrize(
    "headers", [{"authorization": "Bearer mallory-token"}, {}], ids=["guard", "no login"]
)
async def test_the_apps_guard_and_middleware_refuse_the_handshake(
    server: UvicornThread, headers: dict[str, str]
) -> None:
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with ws_client(server, headers=headers):
            pass
    assert refused.value.response.status_code == 403


async def test_sse_gets_the_guards_status(server: UvicornThread) -> None:
    async with sse(server, path="/live/sse", headers={"cookie": "token=mallory-token"}) as stream:
        assert stream.status_code == 403
    async with sse(server, path="/live/sse", headers={"cookie": "token=bob-token"}) as stream:
        assert stream.status_code == 200
        with anyio.fail_after(10):
            welcome = await stream.receive()
        assert (welcome["type"], welcome["user"]) == ("welcome", "bob")


async def test_the_client_files_and_the_hubs_lifespan(server: UvicornThread) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        client_js = await http.get("/static/liveupdates/client.js", headers=ALICE)
        stats = await http.get("/stats")
    assert client_js.status_code == 200
    assert client_js.headers["content-type"].startswith("text/javascript")
    assert stats.status_code == 200  # the hub is running: its lifespan was registered

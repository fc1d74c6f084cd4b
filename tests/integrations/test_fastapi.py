"""FastAPI, end to end over uvicorn: the example app (examples/fastapi_app) authenticates
connections with its own ``Depends(get_current_user)``, runs the hub before its own lifespan,
and publishes from a route that uses the same dependency."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect
from support import Client, UvicornThread, ws_client
from test_sse import sse

from examples.fastapi_app.app import Account, create_app, get_current_user
from liveupdates import Hub, Principal
from liveupdates.auth import AuthRequest
from liveupdates.integrations.fastapi import DependencyAuth

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    server = UvicornThread(create_app()).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_server() -> Iterator[UvicornThread]:
    """A server of its own, for a test that overrides the app's dependencies."""
    server = UvicornThread(create_app()).start()
    yield server
    server.stop()


async def close_code(client: Client) -> tuple[list[dict[str, Any]], int]:
    messages: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(10):
            while True:
                messages.append(await client.receive())
    except WebSocketDisconnect as exc:
        return messages, exc.code


async def test_the_token_of_hello_goes_through_the_apps_dependency(server: UvicornThread) -> None:
    async with ws_client(server) as client:
        welcome, *subscribed = await client.handshake(token="alice-token")
        assert welcome["user"] == "alice"
        assert {m["stream"] for m in subscribed} == {"all", "user:alice"}
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            reply = await http.post("/jobs", headers={"authorization": "Bearer alice-token"})
        assert reply.status_code == 200
        with anyio.fail_after(10):
            (event,) = await client.events(1)
        assert (event["type"], event["stream"], event["keys"]) == (
            "invalidate",
            "user:alice",
            [["jobs"]],
        )


async def test_a_bearer_header_at_the_handshake_works_too(server: UvicornThread) -> None:
    async with ws_client(server, headers={"authorization": "Bearer bob-token"}) as client:
        welcome, *_ = await client.handshake()
        assert welcome["user"] == "bob"


@pytest.mark.parametrize("token", ["wrong-token", None])
async def test_the_dependencys_401_closes_with_4401(
    server: UvicornThread, token: str | None
) -> None:
    async with ws_client(server) as client:
        await client.send({"type": "hello", **({"token": token} if token else {})})
        assert await close_code(client) == ([], 4401)


async def test_sse_authenticates_through_the_same_dependency(server: UvicornThread) -> None:
    async with sse(server, path="/live/sse", token="alice-token") as stream:
        assert stream.status_code == 200
        with anyio.fail_after(10):
            welcome = await stream.receive()
        assert (welcome["type"], welcome["user"]) == ("welcome", "alice")
    async with sse(server, path="/live/sse", token="wrong-token") as stream:
        with anyio.fail_after(10):
            messages = await stream.rest()
        assert [(m["type"], m["code"]) for m in messages] == [("error", "unauthorized")]


async def test_the_apps_lifespan_runs_with_the_hubs(server: UvicornThread) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        first = await http.post("/jobs", headers={"authorization": "Bearer bob-token"})
        second = await http.post("/jobs", headers={"authorization": "Bearer bob-token"})
        client_js = await http.get("/static/liveupdates/client.js")
    assert first.json()["jobs"] + 1 == second.json()["jobs"]  # the lifespan's state
    assert client_js.status_code == 200


async def test_the_apps_dependency_overrides_apply(fresh_server: UvicornThread) -> None:
    def boom() -> Account:
        raise RuntimeError("the user database is down")

    app = fresh_server.app
    app.dependency_overrides[get_current_user] = lambda: Account("carol")
    async with ws_client(fresh_server) as client:
        welcome, *_ = await client.handshake(token="anything")
        assert welcome["user"] == "carol"
    app.dependency_overrides[get_current_user] = boom
    async with ws_client(fresh_server) as client:
        await client.send({"type": "hello", "token": "alice-token"})
        assert await close_code(client) == ([], 1011)  # a server error: the client retries


async def test_a_result_that_is_no_principal_says_what_to_do() -> None:
    hook = DependencyAuth(lambda: 42)
    request = AuthRequest.from_scope(
        {"type": "websocket", "path": "/live", "headers": [], "query_string": b""}
    )
    with pytest.raises(TypeError, match="principal="):
        await hook(request)
    assert await DependencyAuth(lambda: "dora")(request) == Principal("dora")
    assert await DependencyAuth(lambda: None)(request) is None
    Hub(authenticate=hook)  # (a hook as the hub takes it)

"""Every refusal says why: over uvicorn on 127.0.0.1 with real clients, what a refused client
gets (HTTP statuses, close codes and reasons) and the one WARNING line that names the fix."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from httpx_ws import WebSocketDisconnect, WebSocketUpgradeError
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute
from support import UvicornThread, token_auth, ws_client

from liveupdates import Hub, Invalidate, Limits, User
from liveupdates.asgi import AdminEndpoint, SSEEndpoint, WebSocketEndpoint
from liveupdates.auth import AuthRequest

pytestmark = pytest.mark.anyio

FOREIGN = "https://evil.example"


def is_admin(request: AuthRequest) -> bool:
    return request.headers.get("x-admin") == "yes"  # a stand-in for a session cookie


def routes(hub: Hub) -> list[Any]:
    return [
        WebSocketRoute("/live", WebSocketEndpoint(hub)),
        Route("/sse", SSEEndpoint(hub)),
        Mount("/admin", app=AdminEndpoint(hub, check=is_admin)),
    ]


def serve(app: Starlette, hub: Hub) -> Iterator[UvicornThread]:
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    server.stop()


@pytest.fixture
def server() -> Iterator[UvicornThread]:
    """A server of its own per test: the endpoints' warnings are rate-limited."""
    hub = Hub(authenticate=token_auth)
    yield from serve(Starlette(routes=routes(hub), lifespan=hub.lifespan), hub)


@pytest.fixture(params=["no lifespan", "mounted sub-app"])
def hubless(request: pytest.FixtureRequest) -> Iterator[UvicornThread]:
    """An app whose hub never starts: `lifespan=hub.lifespan` forgotten, or passed to a mounted
    sub-app (Starlette runs only the lifespan of the app the server runs)."""
    hub = Hub(authenticate=token_auth)
    if request.param == "no lifespan":
        app = Starlette(routes=routes(hub))
    else:
        sub = Starlette(routes=routes(hub), lifespan=hub.lifespan)
        app = Starlette(routes=[Mount("/", app=sub)])
    yield from serve(app, hub)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures the `liveupdates` logger's records (from the server's thread too)."""
    caplog.set_level(logging.WARNING, logger="liveupdates")
    return caplog


def warned(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    """The WARNING lines of the `liveupdates` logger so far: (transport, message)."""
    return [
        (getattr(r, "transport", "?"), r.getMessage())
        for r in caplog.records
        if r.name == "liveupdates" and r.levelno == logging.WARNING
    ]


async def refused_handshake(server: UvicornThread, headers: dict[str, str]) -> int:
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with ws_client(server, headers=headers):
            pass
    return refused.value.response.status_code


async def closed_at_once(server: UvicornThread, **kwargs: Any) -> tuple[list[Any], int, str]:
    """Open a WebSocket that the server accepts and closes: (its frames, code, reason)."""
    frames: list[Any] = []
    async with ws_client(server, **kwargs) as client:
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                frames += json.loads(await client.session.receive_text())
    return frames, closed.value.code, closed.value.reason


async def test_a_foreign_origin_gets_403_and_one_warning(
    server: UvicornThread, warnings: pytest.LogCaptureFixture
) -> None:
    came_to = f"http://127.0.0.1:{server.port}"
    for _ in range(3):  # a reconnecting page: one warning, not one per attempt
        assert await refused_handshake(server, {"origin": FOREIGN}) == 403
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for _ in range(3):
            response = await http.get("/sse?token=ann", headers={"origin": FOREIGN})
            assert (response.status_code, response.text) == (403, "origin not allowed\n")
    message = f"Origin {FOREIGN} not allowed: see allowed_origins (the request came to {came_to})"
    assert warned(warnings) == [("websocket", message), ("sse", message)]
    async with ws_client(server, headers={"origin": came_to}) as client:  # same origin: fine
        assert (await client.handshake(token="ann"))[0]["user"] == "ann"


async def test_same_origin_means_the_same_scheme_too(server: UvicornThread) -> None:
    host = f"127.0.0.1:{server.port}"
    # An https page may not open the plain-http endpoint of the same host and port.
    assert await refused_handshake(server, {"origin": f"https://{host}"}) == 403
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/sse?token=bea", headers={"origin": f"https://{host}"})
        assert response.status_code == 403
    # Behind a proxy that ends TLS (uvicorn trusts X-Forwarded-Proto from 127.0.0.1 by
    # default), the request's scheme is https/wss: the https page is the same origin.
    proxied = {"x-forwarded-proto": "https"}
    async with ws_client(server, headers={**proxied, "origin": f"https://{host}"}) as client:
        assert (await client.handshake(token="bea"))[0]["user"] == "bea"
    assert await refused_handshake(server, {**proxied, "origin": f"http://{host}"}) == 403


async def test_a_hub_that_is_not_running_says_so(
    hubless: UvicornThread, warnings: pytest.LogCaptureFixture
) -> None:
    server = hubless
    for _ in range(2):
        frames, code, reason = await closed_at_once(server)
        assert (frames, code, reason) == ([], 1013, "the hub is not running")  # retry later
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        for _ in range(2):
            response = await http.get("/sse?token=cy")
            assert (response.status_code, response.text) == (503, "the hub is not running\n")
            assert response.headers["retry-after"] == "5"  # the hub's retry window
    fix = (
        "the hub is not running: pass lifespan=hub.lifespan to the ASGI app that the server"
        " runs (the lifespan of a mounted sub-app never runs), or run it in `async with hub:`"
    )
    assert warned(warnings) == [("websocket", fix), ("sse", fix)]
    # a foreign page is still refused as such, before anything else
    assert await refused_handshake(server, {"origin": FOREIGN}) == 403


async def test_a_draining_hub_refuses_new_connections_with_503(
    server: UvicornThread, warnings: pytest.LogCaptureFixture
) -> None:
    hub: Hub = server.hub  # type: ignore[attr-defined]
    await server.acall(hub.drain)
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with ws_client(server):
            pass
    assert refused.value.response.status_code == 503  # not the 403 of a foreign Origin
    upgrade = {"connection": "upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
               "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        response = await http.get("/live", headers=upgrade)  # the same handshake, to read why
        assert (response.status_code, response.text) == (503, "server shutting down\n")
        response = await http.get("/sse?token=dot")
    assert (response.status_code, response.text) == (503, "server shutting down\n")
    assert response.headers["retry-after"] == "5"
    assert warned(warnings) == []  # a normal shutdown: nothing to fix


async def test_admin_requests_from_a_foreign_origin_are_refused(
    server: UvicornThread, warnings: pytest.LogCaptureFixture
) -> None:
    hub: Hub = server.hub  # type: ignore[attr-defined]
    url = "/admin/users/eve/disconnect"
    admin = {"x-admin": "yes"}  # the check passes (think: the operator's session cookie)
    async with ws_client(server) as ws, httpx.AsyncClient(base_url=server.http_url) as http:
        await ws.handshake(token="eve")
        for _ in range(2):
            response = await http.post(url, headers={**admin, "origin": FOREIGN})
            assert (response.status_code, response.json()) == (403, {"error": "origin not allowed"})
        response = await http.get("/admin/", headers={**admin, "origin": FOREIGN})
        assert response.status_code == 403
        # eve is still connected: an event published after the refused requests reaches her
        await server.acall(hub.publish, Invalidate(["still", "here"]), User("eve"))
        assert (await ws.events(1))[0]["keys"] == [["still", "here"]]
        same_origin = {**admin, "origin": f"http://127.0.0.1:{server.port}"}
        assert (await http.post(url, headers=same_origin)).status_code == 202
        assert await ws.closed() == 4403
        # no Origin (curl, a script): allowed, as for the WebSocket endpoint
        response = await http.post("/admin/users/nobody/disconnect", headers=admin)
        assert response.status_code == 202
    came_to = f"http://127.0.0.1:{server.port}"
    message = f"Origin {FOREIGN} not allowed: see allowed_origins (the request came to {came_to})"
    assert warned(warnings) == [("admin", message)]


# The example app's commands bound uvicorn's frame size: it reads a WebSocket frame whole before
# the hub can refuse it (16 MiB by default).

ROOT = Path(__file__).parent.parent
WS_MAX_SIZE = 2 * Limits().max_frame_bytes  # 131072


def test_the_example_app_runs_uvicorn_with_a_bounded_frame_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from examples.jobs_dashboard import __main__ as dashboard

    ran: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: ran.update(options))
    monkeypatch.setattr(sys, "argv", ["jobs_dashboard", "--db", str(tmp_path / "jobs.sqlite3")])
    dashboard.main()
    assert ran["ws_max_size"] == WS_MAX_SIZE == 131072


def test_every_documented_uvicorn_command_bounds_the_frame_size() -> None:
    commands = []
    for path in [*ROOT.glob("docs/*.md"), *ROOT.glob("examples/**/*.py")]:
        if path.name not in ("changelog.md", "benchmarks.md"):
            commands += re.findall(r"`+(uvicorn [^`]*)`", path.read_text())
    assert len(commands) >= 4
    for command in commands:
        assert f"--ws-max-size {WS_MAX_SIZE}" in command, command
    for script in ("scripts/demo.sh", "examples/jobs_dashboard/run_two.sh"):
        runs = re.findall(r"python -m examples\.jobs_dashboard .*", (ROOT / script).read_text())
        assert runs and all(f"--ws-max-size {WS_MAX_SIZE}" in run for run in runs), script

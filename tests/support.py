"""Test helpers: a real uvicorn server on loopback (in a thread) and a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import anyio
import httpx
import uvicorn
from httpx_ws import AsyncWebSocketSession, WebSocketDisconnect, aconnect_ws

from liveupdates import Hub, HubStats, Principal
from liveupdates.auth import AuthRequest

T = TypeVar("T")


def token_auth(request: AuthRequest) -> Principal | None:
    """Test authentication: the token is the user id; 'bad' tokens and no token are refused."""
    if request.token is None or request.token.startswith("bad"):
        return None
    return Principal(user=request.token)


class Served(Protocol):
    """A server on loopback: `UvicornThread`, or an `AppProcess` of tests/processes.py."""

    @property
    def http_url(self) -> str: ...


class UvicornThread:
    """uvicorn serving `app` on 127.0.0.1 (a free port) in a thread with its own event loop."""

    def __init__(self, app: Any, port: int = 0) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))  # a fixed port: a restart where clients wait
        self.port: int = self.sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="websockets-sansio")
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        self.loop.close()

    def start(self) -> UvicornThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:  # startup of another thread: a bounded wait
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.sock.close()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `fn(*args)` on the server's event loop (from any thread) and return its result."""
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(fn(*args), self.loop)  # type: ignore[arg-type]
        return future.result(timeout=15)

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await anyio.to_thread.run_sync(self.call, fn, *args)


def serve_hub(hub: Hub) -> UvicornThread:
    """`hub`'s WebSocket endpoint at ``/live`` and SSE endpoint at ``/sse``, started under
    uvicorn in a thread; the hub runs in the app's lifespan (`hub_stats` reads it)."""
    from starlette.applications import Starlette
    from starlette.routing import Route, WebSocketRoute

    from liveupdates.asgi import SSEEndpoint, WebSocketEndpoint

    app = Starlette(
        routes=[WebSocketRoute("/live", WebSocketEndpoint(hub)), Route("/sse", SSEEndpoint(hub))],
        lifespan=hub.lifespan,
    )
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    return server


async def hub_stats(server: UvicornThread) -> HubStats:
    """The stats of the hub `serve_hub` serves, read on its own event loop."""
    hub: Hub = server.hub  # type: ignore[attr-defined]

    async def read() -> HubStats:
        return hub.stats()

    return await server.acall(read)


class Client:
    """A real WebSocket client speaking the liveupdates protocol (httpx-ws, asyncio or trio)."""

    def __init__(self, session: Any) -> None:
        self.session: Any = session
        self._pending: deque[dict[str, Any]] = deque()
        self.close_code: int | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.session.send_text(json.dumps(message))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.session.send_bytes(data)
        else:
            await self.session.send_text(data)

    async def receive(self) -> dict[str, Any]:
        """The next server message; raises WebSocketDisconnect when the server closes."""
        while not self._pending:
            frame = json.loads(await self.session.receive_text())
            assert isinstance(frame, list), frame
            self._pending.extend(frame)
        return self._pending.popleft()

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if predicate(message):
                return message

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next `count` event messages (those with a stream and an offset)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await self.receive()
            if "offset" in message and message.get("type") not in ("subscribed", "resync"):
                found.append(message)
        return found

    async def handshake(self, **hello: Any) -> list[dict[str, Any]]:
        """Send hello; return welcome and every `subscribed` it causes."""
        await self.send({"type": "hello", **hello})
        streams = 1 + (1 if hello.get("token") else 0) + len(hello.get("topics", []))
        replies = [await self.until(lambda m: m["type"] == "welcome")]
        while len(replies) < 1 + streams:
            replies.append(await self.until(lambda m: m["type"] in ("subscribed", "error")))
        return replies

    async def closed(self) -> int:
        """Wait for the server to close; return the close code."""
        try:
            while True:
                await self.session.receive_text()
        except WebSocketDisconnect as exc:
            self.close_code = exc.code
            return exc.code


@asynccontextmanager
async def ws_client(
    server: Served,
    path: str = "/live",
    *,
    headers: dict[str, str] | None = None,
    subprotocols: Iterable[str] = (),
) -> AsyncIterator[Client]:
    async with (
        httpx.AsyncClient() as http,
        aconnect_ws(
            server.http_url + path,
            http,
            headers=dict(headers or {}),  # (httpx-ws adds its handshake headers to it)
            subprotocols=list(subprotocols) or None,
            keepalive_ping_interval_seconds=None,
            session_class=AsyncWebSocketSession,
        ) as session,
    ):
        yield Client(session)

"""Drive an ASGI WebSocket app in-process, without a server: fast tests on asyncio and trio.

::

    async with connect_asgi(app, "/live") as ws:
        await ws.send_json({"type": "hello", "token": "alice"})
        welcome = await ws.receive_message()

`receive_message` returns server messages one by one (it unpacks the frames, which are JSON
arrays); `receive_frame` returns one whole frame. A close from the server raises `Closed`.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class Closed(Exception):
    """The server closed the WebSocket (or refused the handshake: `code` 403)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"closed with code {code} {reason!r}")
        self.code, self.reason = code, reason


class AsgiWebSocket:
    """The client end of an in-process WebSocket."""

    def __init__(
        self,
        to_app: MemoryObjectSendStream[MutableMapping[str, Any]],
        from_app: MemoryObjectReceiveStream[MutableMapping[str, Any]],
    ) -> None:
        self._to_app, self._from_app = to_app, from_app
        self._messages: deque[dict[str, Any]] = deque()
        self.subprotocol: str | None = None
        self.close_code: int | None = None
        self.finished = anyio.Event()  # set when the app's handler has returned
        self.frames_received = 0  # frames read so far, and their characters
        self.chars_received = 0

    async def send_text(self, text: str) -> None:
        await self._to_app.send({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._to_app.send({"type": "websocket.receive", "bytes": data})

    async def send_json(self, value: Any) -> None:
        await self.send_text(json.dumps(value))

    async def receive_frame(self) -> list[dict[str, Any]]:
        """The next whole server frame (a list of messages)."""
        try:
            message = await self._from_app.receive()
        except anyio.EndOfStream:
            raise Closed(1006, "the app ended without a close frame") from None
        if message["type"] == "websocket.close":
            self.close_code = message.get("code", 1000)
            raise Closed(self.close_code or 1000, message.get("reason") or "")
        return self._parse(message)

    def _parse(self, message: MutableMapping[str, Any]) -> list[dict[str, Any]]:
        raw = message.get("text") or message.get("bytes") or b""
        self.frames_received += 1
        self.chars_received += len(raw)
        frame = json.loads(raw)
        if not isinstance(frame, list):
            raise AssertionError(f"a server frame is a JSON array, got {frame!r}")
        return frame

    async def receive_available(self) -> list[dict[str, Any]]:
        """Every message the server has sent so far, without waiting for more.

        Lets every other task run first (`anyio.wait_all_tasks_blocked`), so that what the
        server has queued has reached this end. Raises `Closed` if the server closed.
        """
        messages = list(self._messages)
        self._messages.clear()
        while True:
            await anyio.wait_all_tasks_blocked()
            try:
                message = self._from_app.receive_nowait()
            except anyio.WouldBlock:
                return messages
            except anyio.EndOfStream:
                raise Closed(self.close_code or 1006, "the app ended") from None
            if message["type"] == "websocket.close":
                self.close_code = message.get("code", 1000)
                raise Closed(self.close_code or 1000, message.get("reason") or "")
            messages.extend(self._parse(message))

    async def receive_message(self) -> dict[str, Any]:
        """The next server message."""
        while not self._messages:
            self._messages.extend(await self.receive_frame())
        return self._messages.popleft()

    async def receive_until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Skip messages until one matches `predicate`, and return it."""
        while True:
            message = await self.receive_message()
            if predicate(message):
                return message

    async def wait_closed(self) -> int:
        """Read (and drop) messages until the server closes; return the close code."""
        try:
            while True:
                await self.receive_frame()
        except Closed as closed:
            return closed.code

    async def disconnect(self, code: int = 1000) -> None:
        await self._to_app.send({"type": "websocket.disconnect", "code": code})


@asynccontextmanager
async def connect_asgi(
    app: ASGIApp,
    path: str = "/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    subprotocols: Iterable[str] = (),
    query_string: str = "",
    send_buffer: float = math.inf,
) -> AsyncIterator[AsgiWebSocket]:
    """Open an in-process WebSocket to `app`. `send_buffer` bounds unread server frames."""
    to_app_send, to_app_receive = anyio.create_memory_object_stream[MutableMapping[str, Any]](
        math.inf
    )
    from_app_send, from_app_receive = anyio.create_memory_object_stream[MutableMapping[str, Any]](
        send_buffer
    )
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string.encode(),
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "subprotocols": list(subprotocols),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    app_done = anyio.Event()

    async def run_app() -> None:
        try:
            async with from_app_send:
                await app(scope, to_app_receive.receive, from_app_send.send)
        finally:
            app_done.set()
            if ws is not None:
                ws.finished.set()

    ws: AsgiWebSocket | None = None
    async with (
        to_app_send, to_app_receive, from_app_send, from_app_receive,
        anyio.create_task_group() as tg,
    ):  # fmt: skip
        tg.start_soon(run_app)
        await to_app_send.send({"type": "websocket.connect"})
        first = await from_app_receive.receive()
        if first["type"] == "websocket.close":
            raise Closed(403, "handshake refused")
        ws = AsgiWebSocket(to_app_send, from_app_receive)
        ws.subprotocol = first.get("subprotocol")
        try:
            yield ws
        finally:
            with anyio.move_on_after(5):
                if not app_done.is_set():
                    await to_app_send.send({"type": "websocket.disconnect", "code": 1000})
                await app_done.wait()
            tg.cancel_scope.cancel()

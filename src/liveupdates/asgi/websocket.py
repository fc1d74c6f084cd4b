"""The WebSocket endpoint: a raw ASGI app speaking the liveupdates protocol.

Mount it as a Starlette ``WebSocketRoute("/live", WebSocketEndpoint(hub))`` or with FastAPI's
``app.router.add_websocket_route("/live", WebSocketEndpoint(hub))`` (or all the endpoints at
once with `liveupdates.integrations.fastapi.mount`); any ASGI server runs it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Coroutine
from typing import Any

import anyio

from ..auth import AuthRequest
from ..errors import BackplaneError, CloseCode, ProtocolError
from ..hub import Hub
from ..protocol import (
    SUBPROTOCOL,
    Hello,
    Ping,
    Pong,
    Refresh,
    ServerPong,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)
from ..session import Connection, PeerGone, SendFrame, control_message
from ._asgi import SESSION_ERRORS, TEXT, ASGIMessage, Receive, Scope, Send, refusal, respond
from ._origin import AllowedOrigins, OriginPolicy
from ._refusals import NOT_RUNNING, SHUTTING_DOWN, RefusalLog, hub_refusal

logger = logging.getLogger("liveupdates")
_PONG = control_message(ServerPong())


def _payload(message: ASGIMessage) -> str | bytes:
    text = message.get("text")
    return text if text is not None else message.get("bytes") or b""


class WebSocketEndpoint:
    """Accept liveupdates WebSocket connections for `hub`.

    `allowed_origins`: None (default) accepts only same-origin browser pages, ``"*"`` any page,
    or a list such as ``["https://app.example.com"]``.

    Before a session starts: a refused Origin gets HTTP 403, a draining hub HTTP 503, and a hub
    that is not running (its lifespan never ran) an accepted socket closed with 1013 and a
    reason; the first and the last log a WARNING (see `_refusals`).
    """

    def __init__(self, hub: Hub, *, allowed_origins: AllowedOrigins = None) -> None:
        self.hub = hub
        self.origins = OriginPolicy(allowed_origins)
        self.refusals = RefusalLog(hub.clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await _http_upgrade_required(scope, send)
            return
        if (await receive())["type"] != "websocket.connect":
            return
        origin = self.origins.refused(scope)
        if origin is not None:
            self.refusals.origin(origin, scope, "websocket")
            await send({"type": "websocket.close", "code": 1008})  # the server answers HTTP 403
            return
        refusal = hub_refusal(self.hub)
        if refusal == SHUTTING_DOWN:
            await _shutting_down(scope, send)
            return
        chosen = SUBPROTOCOL if SUBPROTOCOL in scope.get("subprotocols", ()) else None
        await send({"type": "websocket.accept", "subprotocol": chosen})
        if refusal == NOT_RUNNING:  # accepted first, so that a browser can learn why
            self.refusals.not_running("websocket")
            await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER,
                        "reason": NOT_RUNNING})  # fmt: skip
            return
        try:
            code, reason = await self._session(scope, receive, send)
        except PeerGone:
            return
        except Exception:
            self.hub.metrics.errors += 1
            logger.exception("WebSocket connection failed")
            code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        if code is not None:
            # the peer may have gone meanwhile: then there is nothing left to tell it
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(1.0),
                contextlib.suppress(Exception),
            ):
                await send({"type": "websocket.close", "code": code, "reason": reason[:120]})

    async def _session(self, scope: Scope, receive: Receive, send: Send) -> tuple[int | None, str]:
        sessions, limits = self.hub.sessions, self.hub.limits
        message: ASGIMessage | None = None
        with anyio.move_on_after(limits.hello_timeout):
            message = await receive()
        if message is None:
            return CloseCode.HANDSHAKE_TIMEOUT, "no hello in time"
        if message["type"] == "websocket.disconnect":
            raise PeerGone
        try:
            hello = decode_client_frame(_payload(message), limits.max_frame_bytes)
        except ProtocolError as exc:
            return exc.close_code, str(exc)
        if not isinstance(hello, Hello):
            return CloseCode.BAD_REQUEST, "the first frame must be hello"
        try:
            conn = await sessions.admit(AuthRequest.from_scope(scope, token=hello.token))
        except SESSION_ERRORS as exc:  # 4401, 4440; 1011 when the hook raised; 1001
            return refusal(exc)
        peer_gone = False

        def gone(exc: Exception) -> None:  # ASGI servers raise various errors once it is gone
            nonlocal peer_gone
            peer_gone = True
            conn.scope.cancel()

        try:
            with conn.scope:
                await sessions.open(conn, hello)
                conn.attach(_frame_sender(send), gone)
                peer_gone = await self._read_loop(conn, receive, scope)
        except BackplaneError as exc:  # 1013
            return refusal(exc)
        finally:
            sessions.unregister(conn)
        if peer_gone:
            raise PeerGone
        return conn.close_code, conn.close_reason

    async def _read_loop(self, conn: Connection, receive: Receive, scope: Scope) -> bool:
        """Handle client frames until the peer leaves (True) or the connection is closed."""
        sessions, limits, clock = self.hub.sessions, self.hub.limits, self.hub.clock
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return True
            now = clock()
            conn.heard(now)
            if not conn.rate.allow(now):
                logger.info("rate limit hit", extra={"conn": conn.id, "user": conn.user})
                conn.close(CloseCode.RATE_LIMITED, "too many messages")
                return False
            try:
                frame = decode_client_frame(_payload(message), limits.max_frame_bytes)
            except ProtocolError as exc:
                logger.info(
                    "bad frame: %s", exc.close_code.name, extra={"conn": conn.id, "user": conn.user}
                )
                conn.close(exc.close_code, str(exc))
                return False
            match frame:
                case Subscribe(topic=topic, since=since, id=request_id):
                    position = since.position() if since is not None else None
                    try:
                        await sessions.subscribe(conn, topic, position, request_id)
                    except BackplaneError:
                        conn.close(CloseCode.TRY_AGAIN_LATER, "backplane unavailable")
                        return False
                case Unsubscribe(topic=topic, id=request_id):
                    sessions.unsubscribe(conn, topic, request_id)
                case Ping():
                    conn.push(_PONG)
                case Pong():
                    pass
                case Refresh(token=token):
                    await sessions.refresh(conn, AuthRequest.from_scope(scope, token=token))
                case Hello():
                    conn.close(CloseCode.BAD_REQUEST, "hello was already received")
                    return False


def _frame_sender(send: Send) -> SendFrame:
    """The connection's frame sender. It returns the ASGI server's own send coroutine, so that a
    fan-out adds no coroutine of ours to each send (the ``send`` of each of uvicorn's WebSocket
    implementations and of Starlette's middleware is a coroutine function); another `send`
    (one that returns some other awaitable) gets a coroutine around it."""
    if inspect.iscoroutinefunction(send):
        send_coroutine = send  # (narrowed)

        def send_frame(frame: str) -> Coroutine[Any, Any, None]:
            return send_coroutine({"type": "websocket.send", "text": frame})

        return send_frame

    async def send_awaitable(frame: str) -> None:
        await send({"type": "websocket.send", "text": frame})

    return send_awaitable


async def _shutting_down(scope: Scope, send: Send) -> None:
    """Refuse a handshake while the hub drains: HTTP 503 where the server lets us answer one
    (the WebSocket denial response extension), else the server's 403."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    await respond(send, 503, SHUTTING_DOWN.encode() + b"\n", prefix="websocket.http")


async def _http_upgrade_required(scope: Scope, send: Send) -> None:
    if scope["type"] == "http":
        body = b"this is a WebSocket endpoint\n"
        await respond(send, 426, body, (TEXT, (b"upgrade", b"websocket")))

"""The Server-Sent Events endpoint: the WebSocket endpoint's messages, one way, over HTTP.

Mount it as a Starlette ``Route("/live/sse", SSEEndpoint(hub))`` or with FastAPI's
``app.add_route("/live/sse", SSEEndpoint(hub))``; any ASGI server runs it. See the "Server-Sent
Events" section of docs/protocol.md for the contract and docs/server-sent-events.md for usage.

A request ``GET ?topics=a,b&since=<json>`` is the `hello`: each SSE event carries one frame
(``data:``, a JSON array of messages, exactly as over a WebSocket) and the connection's cursors
after it (``id:``, compact JSON ``{"stream": ["epoch", offset]}``) that a browser sends back as
``Last-Event-ID``. Fatal errors end the response after an ``error`` message named after the
WebSocket close code; the status is 200 even then, since ``EventSource`` hides it from the page.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Annotated, Any, Final, NamedTuple
from urllib.parse import parse_qsl

import anyio
import msgspec

from ..auth import AuthRequest
from ..errors import CloseCode, HookFailed, close_code_name
from ..hub import Hub
from ..protocol import Cursor, Error, Goodbye, Hello, Offset
from ..session import Connection, PeerGone, control_message
from ._asgi import (
    SESSION_ERRORS,
    TEXT,
    Headers,
    Receive,
    Scope,
    Send,
    header,
    refusal,
    respond,
)
from ._origin import AllowedOrigins, OriginPolicy
from ._refusals import NOT_RUNNING, RefusalLog, hub_refusal

logger = logging.getLogger("liveupdates")

_Epoch = Annotated[str, msgspec.Meta(max_length=100)]
_since_decoder: Final = msgspec.json.Decoder(dict[str, Cursor])
_event_id_decoder: Final = msgspec.json.Decoder(dict[str, tuple[_Epoch, Offset]])
_encoder: Final = msgspec.json.Encoder()
# Close codes that end a stream without an `error` message: a client-side close, and a
# shutdown (its `goodbye` says when to come back).
_QUIET: Final = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY})


class _Head(msgspec.Struct):
    """The fields of a server message that move a cursor (anything else is skipped)."""

    type: Any = None
    stream: Any = None
    epoch: Any = None
    offset: Any = None
    outcome: Any = None


_frame_decoder: Final = msgspec.json.Decoder(list[_Head])


class _Admitted(NamedTuple):
    conn: Connection
    topics: list[str]
    since: dict[str, Cursor]


class _BadRequest(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Cursors:
    """The cursors a client holds after each frame, applied as the browser client does."""

    __slots__ = ("_changed", "positions")

    def __init__(self, positions: dict[str, tuple[str, int]]) -> None:
        self.positions = positions
        self._changed = True

    def apply(self, frame: str) -> None:
        positions = self.positions
        for m in _frame_decoder.decode(frame):
            stream, epoch, offset = m.stream, m.epoch, m.offset
            if not isinstance(stream, str) or not isinstance(epoch, str):
                continue
            if not isinstance(offset, int) or isinstance(offset, bool):
                continue
            current = positions.get(stream)
            if current is not None and current[0] == epoch:
                if m.type == "subscribed":
                    if m.outcome == "recovered":
                        continue  # the replay that follows moves the client's cursor
                elif m.type != "resync" and offset <= current[1]:
                    continue  # a duplicate
            positions[stream] = (epoch, offset)
            self._changed = True

    def event_id(self) -> str | None:
        """The cursors as an SSE id when they changed since the last call, else None."""
        if not self._changed:
            return None
        self._changed = False
        text = _encoder.encode(self.positions).decode()
        if not text.isascii():  # it travels back in a header: keep it ASCII
            text = json.dumps(self.positions, separators=(",", ":"))
        return text


def sse_event(frame: str, event_id: str | None = None) -> bytes:
    """One SSE event: ``id:`` (when given) and the frame as ``data:`` lines."""
    head = "" if event_id is None else "id: " + event_id + "\n"
    if "\n" in frame or "\r" in frame:  # never in our JSON, but a raw newline would split it
        lines = frame.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        return (head + "".join("data: " + line + "\n" for line in lines) + "\n").encode()
    return (head + "data: " + frame + "\n\n").encode()


def _error_frame(code: int, message: str) -> str:
    return "[" + control_message(Error(close_code_name(code), message[:120])).text + "]"


class SSEEndpoint:
    """Serve liveupdates over Server-Sent Events for `hub` (the WebSocket fallback).

    `allowed_origins`: None (default) accepts only same-origin browser pages, ``"*"`` any page,
    or a list such as ``["https://app.example.com"]``; an allowed cross-origin request gets the
    CORS headers (with credentials) that let the page read the stream.
    """

    def __init__(self, hub: Hub, *, allowed_origins: AllowedOrigins = None) -> None:
        self.hub = hub
        self.origins = OriginPolicy(allowed_origins)
        self.refusals = RefusalLog(hub.clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1008})
            return
        if scope.get("method", "GET") != "GET":
            await respond(send, 405, b"use GET\n", (TEXT, (b"allow", b"GET")))
            return
        refused = self.origins.refused(scope)
        if refused is not None:
            self.refusals.origin(refused, scope, "sse")
            await respond(send, 403, b"origin not allowed\n")
            return
        refused_by = hub_refusal(self.hub)
        if refused_by is not None:
            if refused_by == NOT_RUNNING:
                self.refusals.not_running("sse")
            await respond(send, 503, refused_by.encode() + b"\n", self._retry_after())
            return
        try:
            admission = await self._admit(scope)
        except HookFailed:  # logged by the hub: a server error, which the client retries
            body = b"authentication failed: try again later\n"
            await respond(send, 503, body, self._retry_after())
            return
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        origin = header(scope, b"origin")
        if origin is not None:
            headers += [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"origin"),
            ]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        except BaseException:
            if isinstance(admission, _Admitted):
                self.hub.sessions.unregister(admission.conn)
            raise
        try:
            code, reason = await self._session(admission, receive, send)
        except PeerGone:
            return
        except Exception:
            self.hub.metrics.errors += 1
            logger.exception("SSE connection failed")
            code, reason = CloseCode.INTERNAL_ERROR, "internal error"
        # the peer may have gone meanwhile: then there is nothing left to tell it
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(1.0),
            contextlib.suppress(Exception),
        ):
            if code is not None and code not in _QUIET:
                await _body(send, sse_event(_error_frame(code, reason)))
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _retry_after(self) -> Headers:
        """The headers of a 503: come back within the hub's retry window."""
        return (TEXT, (b"retry-after", str(max(1, round(self.hub.limits.goodbye_retry))).encode()))

    async def _admit(self, scope: Scope) -> _Admitted | _BadRequest:
        """Read the request and authenticate it, before the response starts (so that a hook
        that raises is answered with 503). A refusal is returned, to be told in the stream."""
        hub = self.hub
        try:
            topics, since = _parse_request(scope, hub.limits.max_frame_bytes)
        except _BadRequest as exc:
            return exc
        try:
            conn = await hub.sessions.admit(AuthRequest.from_scope(scope, transport="sse"))
        except HookFailed:
            raise  # answered with 503 before the stream starts
        except SESSION_ERRORS as exc:  # 4401, or 4440 for an expired credential; 1001
            return _BadRequest(*refusal(exc))
        return _Admitted(conn, topics, since)

    async def _session(
        self, admission: _Admitted | _BadRequest, receive: Receive, send: Send
    ) -> tuple[int | None, str]:
        hub = self.hub
        if isinstance(admission, _BadRequest):
            if admission.code == CloseCode.GOING_AWAY:
                goodbye = control_message(Goodbye(int(hub.limits.goodbye_retry * 1000))).frame
                await _body(send, sse_event(goodbye))
            return admission.code, str(admission)
        conn, topics, since = admission
        principal = conn.principal
        own = {"all", *("topic:" + t for t in topics)}
        if principal.user is not None:
            own.add("user:" + principal.user)
        cursors = _Cursors({s: (c.epoch, c.offset) for s, c in since.items() if s in own})
        peer_gone = False

        async def send_frame(frame: str) -> None:
            nonlocal peer_gone
            cursors.apply(frame)
            try:
                await _body(send, sse_event(frame, cursors.event_id()))
            except Exception:  # ASGI servers raise various errors once the peer is gone
                peer_gone = True
                conn.scope.cancel()
                raise PeerGone from None
            # There is no way up, so a write that went through is the sign of life the hub's
            # dead-peer check wants (a dead peer shows as a failed write or `http.disconnect`).
            conn.heard(hub.clock())

        try:
            with conn.scope:
                await hub.sessions.open(conn, Hello(topics=topics, since=since))
                conn.attach(send_frame)
                await _until_disconnect(receive)
                peer_gone = True
        except SESSION_ERRORS as exc:  # 1013: the backplane is unavailable
            return refusal(exc)
        finally:
            hub.sessions.unregister(conn)
        if peer_gone:
            raise PeerGone
        return conn.close_code, conn.close_reason


def _parse_request(scope: Scope, max_bytes: int) -> tuple[list[str], dict[str, Cursor]]:
    """The hello of an SSE request: its topics and cursors (the query's `since` wins)."""
    raw_query: bytes = scope.get("query_string", b"")
    last_id = header(scope, b"last-event-id") or b""
    if len(raw_query) + len(last_id) > max_bytes:
        raise _BadRequest(CloseCode.FRAME_TOO_LARGE, f"request exceeds {max_bytes} bytes")
    topics: list[str] = []
    since_text = None
    for name, value in parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True):
        if name == "topics":
            topics += [t for t in value.split(",") if t]
        elif name == "since":
            since_text = value
    try:
        if since_text is not None:
            return topics, _since_decoder.decode(since_text)
        if last_id.strip():
            positions = _event_id_decoder.decode(last_id)
            return topics, {s: Cursor(epoch, offset) for s, (epoch, offset) in positions.items()}
    except (msgspec.DecodeError, RecursionError) as exc:  # (RecursionError: nested too deeply)
        source = "since" if since_text is not None else "Last-Event-ID"
        detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise _BadRequest(CloseCode.BAD_REQUEST, f"invalid {source}: {detail}") from None
    return topics, {}


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})

"""The app of the browser tests: the liveupdates endpoints, the client's files and a test page.

The page (``/?topics=jobs&token=alice&shared=1``) runs the shipped client as ES modules, with a
short backoff, and records what it receives in ``window.log``; the tests read it with
``page.wait_for_function``. ``POST /publish`` publishes invalidations, ``GET /stats`` reads the
hub's counters (the hub lives in the server's thread), ``POST /kick`` closes every connection.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.websockets import WebSocket

from liveupdates import Hub, Invalidate, Principal, Topic
from liveupdates.asgi import SSEEndpoint, WebSocketEndpoint, client_files
from liveupdates.auth import AuthRequest
from liveupdates.errors import CloseCode

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>liveupdates browser test</title>
<link rel="icon" href="data:,">
<script type="module">
import { createClient } from '/static/liveupdates/client.js'
import { createSharedClient } from '/static/liveupdates/tabs.js'

const q = new URLSearchParams(location.search)
const token = q.get('token')
const create = q.has('shared') ? createSharedClient : createClient
const live = create({
  url: '/live',
  sseUrl: '/live/sse',
  topics: (q.get('topics') || '').split(',').filter(Boolean),
  getToken: token ? () => token : undefined,
  base: 50, // ms: reconnect fast
  cap: 400,
})
// keys: the JSON of each invalidated key -> how many times it was received
const log = { keys: {}, events: [], subscribed: [], resyncs: [], errors: [], statuses: [] }
live.on('event', (e) => {
  log.events.push(e)
  for (const key of e.keys || []) {
    const k = JSON.stringify(key)
    log.keys[k] = (log.keys[k] || 0) + 1
  }
})
live.on('subscribed', (m) => log.subscribed.push(m))
live.on('resync', (m) => log.resyncs.push(m))
live.on('error', (m) => log.errors.push(m))
live.onStatus((status) => log.statuses.push(status))
window.live = live
window.log = log
</script>
"""


def auth(request: AuthRequest) -> Principal | None:
    return Principal(user=request.token) if request.token else None


async def _refuse_websocket(websocket: WebSocket) -> None:
    """A WebSocket route that a proxy blocks: every handshake is refused (HTTP 403)."""
    await websocket.close(code=1008)


def create_app(hub: Hub, *, websocket: bool = True) -> Starlette:
    """The test app for `hub`; `websocket=False` blocks the WebSocket route (SSE fallback)."""

    async def page(request: Request) -> Response:
        return HTMLResponse(PAGE)

    async def publish(request: Request) -> Response:
        body = await request.json()
        for key in body["keys"]:
            await hub.publish(Invalidate(key), to=Topic(body.get("topic", "jobs")))
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        current = hub.stats()
        return JSONResponse(
            {"connections": current.connections, "transports": current.connections_by_transport}
        )

    async def kick(request: Request) -> Response:
        for conn in hub.connections():
            conn.close(CloseCode.TRY_AGAIN_LATER, "kicked by the test")
        return Response(status_code=204)

    routes = [
        Route("/", page),
        Route("/publish", publish, methods=["POST"]),
        Route("/stats", stats),
        Route("/kick", kick, methods=["POST"]),
        WebSocketRoute("/live", WebSocketEndpoint(hub) if websocket else _refuse_websocket),
        Route("/live/sse", SSEEndpoint(hub)),
        Mount("/static/liveupdates", app=client_files),
    ]
    return Starlette(routes=routes, lifespan=hub.lifespan)

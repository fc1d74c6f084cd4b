"""A minimal live page: every tab shows the invalidations the server publishes.

Run: ``uvicorn examples.minimal.app:app`` and open http://127.0.0.1:8000 in two tabs.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute

from liveupdates import Everyone, Hub, Invalidate
from liveupdates.asgi import WebSocketEndpoint

hub = Hub()

PAGE = """<!doctype html>
<meta charset="utf-8"><title>liveupdates: minimal</title>
<h1>liveupdates</h1>
<p>Status: <b id="status">connecting</b>. Open this page in two tabs and press the button.</p>
<button id="touch">Publish Invalidate(["jobs"]) to everyone</button>
<ul id="log"></ul>
<script type="module">
const status = document.getElementById("status"), log = document.getElementById("log");
const ws = new WebSocket(`ws://${location.host}/live`);
ws.onopen = () => ws.send(JSON.stringify({type: "hello"}));
ws.onclose = () => { status.textContent = "closed (reload to reconnect)"; };
ws.onmessage = (msg) => {
  for (const m of JSON.parse(msg.data)) {
    if (m.type === "ping") ws.send(JSON.stringify({type: "pong"}));
    else if (m.type === "welcome") status.textContent = "live";
    else if (m.type === "invalidate") {
      const li = document.createElement("li");
      li.textContent = `offset ${m.offset}: invalidate ${JSON.stringify(m.keys)}`;
      log.prepend(li);
    }
  }
};
document.getElementById("touch").onclick = () => fetch("/touch", {method: "POST"});
</script>
"""


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


async def touch(request: Request) -> Response:
    await hub.publish(Invalidate(["jobs"]), to=Everyone)
    return Response(status_code=204)


app = Starlette(
    routes=[
        Route("/", page),
        Route("/touch", touch, methods=["POST"]),
        WebSocketRoute("/live", WebSocketEndpoint(hub)),
    ],
    lifespan=hub.lifespan,
)

"""What liveupdates' fan-out adds to each send: `python -m benchmarks.fanout_overhead`.

In one process, with an ASGI transport whose `send` costs nothing (or `--send-us` of busy work,
about what uvicorn's costs), it times one event to N WebSocket connections two ways, event
after event:

- liveupdates: `Hub.publish(..., to=Everyone)` to N sessions of `WebSocketEndpoint` (the hub's
  flusher, the quiet path: straight to each connection, in 2 ms slices);
- bare: the tutorial loop, ``for ws in sockets: await ws.send_text(text)``, over Starlette
  `WebSocket` objects on the same transport.

and prints the median time per delivery of each, and their difference: the Python that
liveupdates adds per delivery. The delivery benchmark (`benchmarks.delivery`) measures the
whole, over the network; this one isolates the fan-out, without the noise of a network and of a
machine shared with the clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.websockets import WebSocket

from liveupdates import Event, Everyone, Hub, Limits
from liveupdates.asgi import WebSocketEndpoint

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Tick(Event, tag="bench.tick"):
    seq: int
    ts: float
    pad: str


class Transport:
    """ASGI `receive` and `send` for N sessions; counts the sends of events."""

    def __init__(self, n: int, send_us: float) -> None:
        self.n, self.cost = n, send_us / 1e6
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        self.sent = 0
        self.done = asyncio.Event()
        self.closed = asyncio.Event()

    def arm(self) -> None:
        self.sent, self.done = 0, asyncio.Event()

    def session(self) -> tuple[Receive, Send]:
        incoming: list[Message] = [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": '{"type":"hello"}'},
        ]

        async def receive() -> Message:
            if incoming:
                return incoming.pop(0)
            await self.closed.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: Message) -> None:
            if message["type"] != "websocket.send":
                return
            if '"subscribed"' in message["text"]:
                self.subscribed += 1
                if self.subscribed == self.n:
                    self.all_subscribed.set()
                return
            if self.cost:
                end = time.perf_counter() + self.cost
                while time.perf_counter() < end:
                    pass
            self.sent += 1
            if self.sent == self.n:
                self.done.set()

        return receive, send


async def measure(n: int, events: int, send_us: float) -> tuple[float, float]:
    """Median seconds per delivery: liveupdates, bare."""
    transport = Transport(n, send_us)
    limits = Limits(rate=1000, burst=1000, outbox_max_messages=100_000)
    async with Hub(limits=limits, drain_signals=()) as hub:
        endpoint = WebSocketEndpoint(hub, allowed_origins="*")
        scope = {"type": "websocket", "path": "/live", "headers": [], "subprotocols": [],
                 "query_string": b""}  # fmt: skip
        sessions = [asyncio.create_task(endpoint(scope, *transport.session())) for _ in range(n)]
        sockets = []
        for _ in range(n):
            socket = WebSocket(scope, *transport.session())
            await socket.accept()
            sockets.append(socket)
        await transport.all_subscribed.wait()
        pad = "x" * 120
        text = json.dumps({"type": "bench.tick", "seq": 0, "ts": time.time(), "pad": pad})
        ours, bare = [], []
        for seq in range(events):
            await asyncio.sleep(0.03)  # quiet: the event takes the direct path
            transport.arm()
            start = time.perf_counter()
            await hub.publish(Tick(seq, time.time(), pad), to=Everyone)
            await transport.done.wait()
            ours.append((time.perf_counter() - start) / n)
            await asyncio.sleep(0.03)
            transport.arm()
            start = time.perf_counter()
            for socket in sockets:
                await socket.send_text(text)
            await transport.done.wait()
            bare.append((time.perf_counter() - start) / n)
        transport.closed.set()
        await asyncio.gather(*sessions)
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="connections")
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--send-us", type=float, default=0.0, help="busy work per send (us)")
    args = parser.parse_args()
    logging.getLogger("liveupdates").setLevel(logging.WARNING)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    ours, bare = runner(measure(args.n, args.events, args.send_us))
    print(f"N = {args.n}, {args.events} events, {args.send_us:g} us of work per send")
    print(f"liveupdates per delivery   {ours * 1e6:8.2f} us")
    print(f"bare loop per delivery     {bare * 1e6:8.2f} us")
    print(f"added by liveupdates       {(ours - bare) * 1e6:8.2f} us")


if __name__ == "__main__":
    main()

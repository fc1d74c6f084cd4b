"""The cost of merging a burst of invalidations: `python -m benchmarks.merge_overhead`.

In one process, N WebSocket connections of one stream (`topic:jobs`) get a burst of invalidations
whose keys differ from event to event (``[["jobs", n], ["dashboard-stats"]]``, the traffic of a
dashboard), published back to back with the library's defaults; the burst piles up in the
outboxes and merges there. The same burst goes, round after round, through the bare loop of a
tutorial: each event one frame per client (``for ws in sockets: await ws.send_text(text)``),
over Starlette `WebSocket` objects on the same ASGI transport (whose `send` costs nothing, or
`--send-us` of busy work, about what uvicorn's costs).

It prints, for each, the process's CPU time per delivery (a delivery: one event reaching one
client, merged or not) and the frames per client, medians over the rounds. Every client's
frames are checked after each round: it got every key of the burst, and its last frame is at the
burst's last offset. The delivery benchmark (`benchmarks.delivery`) measures the whole, over the
network; this one isolates the work that merging costs per connection.
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

from liveupdates import Hub, Invalidate, Limits, Topic
from liveupdates.asgi import WebSocketEndpoint

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Transport:
    """ASGI `receive` and `send` for N sessions; keeps each client's frames."""

    def __init__(self, n: int, send_us: float) -> None:
        self.n, self.cost = n, send_us / 1e6
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        self.frames: list[list[str]] = []
        self.marker = ""  # the last event's key, as it appears in a frame
        self.resynced = ""  # ...or a resync at the last event's offset (it absorbed the key)
        self.complete = 0
        self.done = asyncio.Event()
        self.closed = asyncio.Event()

    def arm(self, marker: str, last_offset: int = 0) -> None:
        self.marker, self.complete, self.done = marker, 0, asyncio.Event()
        self.resynced = f'"offset":{last_offset},"reason"'  # (a resync's fields, in order)
        for frames in self.frames:
            frames.clear()

    def session(self) -> tuple[Receive, Send]:
        incoming: list[Message] = [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": '{"type":"hello","topics":["jobs"]}'},
        ]
        frames: list[str] = []
        self.frames.append(frames)

        async def receive() -> Message:
            if incoming:
                return incoming.pop(0)
            await self.closed.wait()
            return {"type": "websocket.disconnect", "code": 1000}

        async def send(message: Message) -> None:
            if message["type"] != "websocket.send":
                return
            text = message["text"]
            if '"subscribed"' in text:
                self.subscribed += 1
                if self.subscribed == self.n:
                    self.all_subscribed.set()
                return
            if self.cost:
                end = time.perf_counter() + self.cost
                while time.perf_counter() < end:
                    pass
            frames.append(text)
            if self.marker in text or (self.resynced in text and '"resync"' in text):
                self.complete += 1
                if self.complete == self.n:
                    self.done.set()

        return receive, send


def keys_of(event: int) -> list[list[Any]]:
    return [["jobs", event], ["dashboard-stats"]]


def check(transport: Transport, events: int) -> int:
    """Every client got every key of the burst (merged or not), or a `resync` of the stream;
    how many clients got a resync."""
    wanted = {json.dumps(key) for n in range(events) for key in keys_of(n)}
    resyncs = 0
    for frames in transport.frames:
        got: set[str] = set()
        for frame in frames:
            for message in json.loads(frame):
                if message["type"] == "resync":
                    got, resyncs = wanted, resyncs + 1
                elif message["type"] == "invalidate":
                    got.update(json.dumps(key) for key in message["keys"])
        assert got == wanted, f"a client missed {sorted(wanted - got)[:5]}"
    return resyncs


async def measure(
    n: int, events: int, rounds: int, send_us: float, flush_interval: float
) -> dict[str, list[tuple[float, float]]]:
    """Per round and stack: (CPU seconds per delivery, frames per client)."""
    transport = Transport(n, send_us)
    limits = Limits(flush_interval=flush_interval)
    results: dict[str, list[tuple[float, float]]] = {"liveupdates": [], "bare": []}
    async with Hub(limits=limits, drain_signals=()) as hub:
        endpoint = WebSocketEndpoint(hub, allowed_origins="*")
        scope = {"type": "websocket", "path": "/live", "headers": [], "subprotocols": [],
                 "query_string": b""}  # fmt: skip
        sessions = [asyncio.create_task(endpoint(scope, *transport.session())) for _ in range(n)]
        await transport.all_subscribed.wait()
        bare_transport = Transport(n, send_us)
        sockets = []
        for _ in range(n):
            socket = WebSocket(scope, *bare_transport.session())
            await socket.accept()
            sockets.append(socket)
        marker = json.dumps(["jobs", events - 1], separators=(",", ":"))
        for round in range(rounds):
            await asyncio.sleep(0.05)
            transport.arm(marker, (round + 1) * events)  # (the memory backplane counts from 1)
            start = time.process_time()
            for event in range(events):
                await hub.publish(Invalidate(keys_of(event)), to=Topic("jobs"))
            await transport.done.wait()
            cpu = time.process_time() - start
            if resyncs := check(transport, events):
                print(f"{resyncs} clients got a resync (their outbox overflowed)")
            frames = sum(map(len, transport.frames)) / n
            results["liveupdates"].append((cpu / (n * events), frames))
            await asyncio.sleep(0.05)
            bare_transport.arm(marker)
            start = time.process_time()
            for event in range(events):
                text = json.dumps({"type": "invalidate", "keys": keys_of(event)},
                                  separators=(",", ":"))  # fmt: skip
                for socket in sockets:
                    await socket.send_text(text)
            await bare_transport.done.wait()
            cpu = time.process_time() - start
            results["bare"].append((cpu / (n * events), float(events)))
        transport.closed.set()
        await asyncio.gather(*sessions)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="connections")
    parser.add_argument("--events", type=int, default=100, help="invalidations per burst")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--send-us", type=float, default=0.0, help="busy work per send (us)")
    parser.add_argument("--flush-interval", type=float, default=0.0, help="Limits.flush_interval")
    args = parser.parse_args()
    logging.getLogger("liveupdates").setLevel(logging.WARNING)
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    results = runner(measure(args.n, args.events, args.rounds, args.send_us, args.flush_interval))
    print(
        f"N = {args.n}, bursts of {args.events} invalidations, {args.rounds} rounds, "
        f"{args.send_us:g} us of work per send, flush_interval {args.flush_interval:g}"
    )
    for name, rows in results.items():
        cpu = statistics.median(row[0] for row in rows) * 1e6
        frames = statistics.median(row[1] for row in rows)
        per_round = " ".join(f"{row[0] * 1e6:.2f}" for row in rows)
        print(f"{name:12} CPU per delivery {cpu:6.2f} us ({per_round}), "
              f"{frames:5.1f} frames per client")  # fmt: skip


if __name__ == "__main__":
    main()

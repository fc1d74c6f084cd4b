"""What counting costs the hot path: `python -m benchmarks.metrics_overhead`.

Times the counting a hub does per frame written (frames, characters, the lag histogram) and per
fan-out (deliveries), and compares it with the measured cost of a delivery through a hub to
in-process connections (fan-out, outbox, writer, frame; no network).
"""

from __future__ import annotations

import time
import timeit
from contextlib import AsyncExitStack

import anyio
import anyio.lowlevel

from liveupdates import Event, Everyone, Hub, Limits
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.metrics import Metrics
from liveupdates.testing.websocket import connect_asgi

CONNECTIONS, EVENTS = 200, 200


class Tick(Event, tag="bench.tick"):
    n: int


def counting_cost() -> tuple[float, float]:
    """Seconds of counting per frame written, and per fan-out."""
    metrics, frame, ts = Metrics(), "[" + "x" * 200 + "]", time.time()

    def per_frame() -> None:
        metrics.frames += 1
        metrics.bytes_sent += len(frame)
        metrics.lag.observe(max(0.0, time.time() - ts))

    def per_fan_out() -> None:
        metrics.deliveries += CONNECTIONS

    runs = 200_000
    return timeit.timeit(per_frame, number=runs) / runs, timeit.timeit(
        per_fan_out, number=runs
    ) / runs


async def delivery_cost() -> tuple[float, int]:
    """Seconds per delivery through a hub to in-process connections, and frames written."""
    limits = Limits(outbox_max_messages=100_000, outbox_max_bytes=1 << 30)
    async with Hub(limits=limits, drain_signals=()) as hub, AsyncExitStack() as stack:
        app = WebSocketEndpoint(hub)
        sockets = [await stack.enter_async_context(connect_asgi(app)) for _ in range(CONNECTIONS)]
        for ws in sockets:
            await ws.send_json({"type": "hello"})
            await ws.receive_until(lambda m: m.get("type") == "subscribed")
        frames_before = hub.stats().frames
        start = time.perf_counter()
        for n in range(EVENTS):
            await hub.publish(Tick(n), to=Everyone)
            await anyio.lowlevel.checkpoint()  # one event at a time: no batching flatters it
        for ws in sockets:
            await ws.receive_until(lambda m: m.get("n") == EVENTS - 1)
        elapsed = time.perf_counter() - start
        return elapsed / (CONNECTIONS * EVENTS), hub.stats().frames - frames_before


def main() -> None:
    per_frame, per_fan_out = counting_cost()
    per_delivery, frames = anyio.run(delivery_cost)
    deliveries = CONNECTIONS * EVENTS
    counting = (frames * per_frame + EVENTS * per_fan_out) / deliveries
    print(f"counting per frame written   {per_frame * 1e9:8.0f} ns")
    print(f"counting per fan-out         {per_fan_out * 1e9:8.0f} ns")
    print(f"delivery through the hub     {per_delivery * 1e9:8.0f} ns ({frames} frames)")
    print(f"counting / delivery          {counting / per_delivery:8.2%}")


if __name__ == "__main__":
    main()

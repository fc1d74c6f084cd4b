"""The load generator: N WebSocket clients in a process of its own, on loopback.

Driven by `benchmarks/delivery.py`: it connects N clients, spread round-robin over the servers
given with ``--base`` (one or more processes), prints ``ready``, waits for ``go`` on stdin,
runs the scenarios (burst, fixed rate, flood) by asking the first server to publish, and prints
one JSON line of results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
from websockets.asyncio.client import ClientConnection, connect

decode = msgspec.json.Decoder().decode


@dataclass
class Client:
    ws: ClientConnection
    ticks: int = 0
    frames: int = 0
    messages: int = 0
    latencies: list[float] = field(default_factory=list)
    last_receive: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    target: int = 0


async def open_client(url: str, protocol: str) -> Client:
    ws = await connect(url, compression=None, max_size=None, ping_interval=None, open_timeout=60)
    if protocol == "liveupdates":
        await ws.send('{"type":"hello"}')
        while True:  # welcome, then the outcome of the `all` stream
            if any(m.get("type") == "subscribed" for m in decode(await ws.recv())):
                break
    return Client(ws)


async def read(client: Client, protocol: str) -> None:
    async for raw in client.ws:
        now = time.time()
        client.frames += 1
        client.last_receive = now
        parsed = decode(raw)
        for message in parsed if isinstance(parsed, list) else [parsed]:
            kind = message.get("type")
            client.messages += 1
            if kind == "bench.tick":
                client.ticks += 1
                client.latencies.append(now - message["ts"])
                if client.ticks >= client.target:
                    client.done.set()
            elif kind == "ping":
                await client.ws.send('{"type":"pong"}')


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def scenario(
    clients: list[Client], http: httpx.AsyncClient, count: int, rate: float, kind: str
) -> dict[str, Any]:
    for c in clients:
        c.ticks, c.frames, c.messages, c.latencies, c.done = 0, 0, 0, [], asyncio.Event()
        c.target = count if kind == "tick" else 10**12
    start = time.time()
    await http.post("/publish", params={"count": count, "rate": rate, "kind": kind}, timeout=600)
    published = time.time()
    if kind == "tick":
        pending = [c.done.wait() for c in clients if not c.done.is_set()]
        if pending:
            await asyncio.wait([asyncio.ensure_future(p) for p in pending], timeout=60)
    else:
        await asyncio.sleep(0.5)  # let the trailing edges of the last windows arrive
    end = max((c.last_receive for c in clients), default=published)
    received = sum(c.ticks for c in clients)
    latencies = [x for c in clients for x in c.latencies]
    elapsed = max(end - start, 1e-9)
    return {
        "deliveries": received,
        "expected": count * len(clients) if kind == "tick" else None,
        "lost": count * len(clients) - received if kind == "tick" else None,
        "elapsed": elapsed,
        "per_second": received / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
        "frames_per_client_per_s": sum(c.frames for c in clients) / len(clients) / elapsed,
        "messages_per_client": sum(c.messages for c in clients) / len(clients),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", action="append", required=True, help="repeat: one per process")
    parser.add_argument("--protocol", choices=["liveupdates", "naive"], required=True)
    parser.add_argument("-n", type=int, required=True)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--rate-seconds", type=float, default=3)
    parser.add_argument("--flood-seconds", type=float, default=0)
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    urls = [base.replace("http://", "ws://") + "/live" for base in args.base]
    clients: list[Client] = []
    for start in range(0, args.n, 200):  # connect in waves: the listen backlog is finite
        wave = await asyncio.gather(
            *(
                open_client(urls[i % len(urls)], args.protocol)
                for i in range(start, min(start + 200, args.n))
            )
        )
        clients.extend(wave)
    readers = [asyncio.create_task(read(c, args.protocol)) for c in clients]
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=args.base[0]) as http:
        results["burst"] = await scenario(clients, http, args.burst, 0, "tick")
        results["rate"] = await scenario(
            clients, http, int(args.rate * args.rate_seconds), args.rate, "tick"
        )
        if args.flood_seconds:
            results["flood"] = await scenario(
                clients, http, int(1000 * args.flood_seconds), 1000, "flood"
            )
    print(json.dumps(results), flush=True)
    for task in readers:
        task.cancel()
    for client in clients:
        await client.ws.close()


if __name__ == "__main__":
    asyncio.run(main())

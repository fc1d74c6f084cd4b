"""Scaling over processes on one machine: several hubs on one port, sharing one Redis.

    python -m benchmarks.scale_out -n 60000 --processes 4
    python -m benchmarks.scale_out -n 2000 --processes 2 --json /tmp/scale.json

Starts a redis-server of its own (free port, no persistence) and ``--processes`` uvicorn
processes of the benchmark's liveupdates app (`benchmarks/servers.py`, the library's defaults,
the Redis backplane, permessage-deflate off as in a deployment: docs/operating.md), each with a
listening socket of its own on one shared port (``SO_REUSEPORT``: the kernel spreads the
connections over the processes), and a private port for its ``/stats``. Then:

1. connects ``-n`` idle clients (the load generator, `benchmarks/loadgen.py`, processes of at
   most ``--per-loadgen`` clients, one process after the other: ``--no-ramp`` starts them all
   at once) to the shared port, and reads each process' connections and resident memory:
   memory per connection;
2. one broadcast to all: one event published by a `liveupdates.Producer` (a publish-only client
   of the same Redis, in this process) to ``Everyone``; the time from the publish until the last
   client has it, and the publish-to-receive latency p50, p99 and max; nothing may be lost;
3. a burst of the dashboard workload over the processes: ``--burst`` invalidations
   ``[["jobs", n], ["dashboard-stats"]]`` published back to back by the `Producer`, one key of
   each reaching every client (merging on the way): deliveries per second until the last;
4. publish throughput of the publish-only client, with every hub listening: ``--publishes``
   invalidations to a topic no client subscribes to, ``--window`` in flight on one `Producer`
   (publishes/s), and `SyncProducer.publish` one after another (median and p99 ms).

Nothing is pinned: on a small machine every process shares every CPU. The exit status is 1 if
a delivery was lost, 2 (with a message) if a process failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from liveupdates import Event, Everyone, Invalidate, Producer, SyncProducer, Topic

from .delivery import (
    ROOT,
    BenchError,
    LoadGens,
    free_port,
    percentile,
    rss_kib,
    start_redis,
    stop,
)


class Tick(Event, tag="bench.tick"):  # (the event of benchmarks/servers.py)
    seq: int
    ts: float
    pad: str


def serve(port: int, stats_port: int) -> None:
    """One hub process: uvicorn on a socket of the shared port (SO_REUSEPORT) and a private one."""
    import uvicorn

    shared = socket.socket()
    shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    shared.bind(("127.0.0.1", port))
    private = socket.socket()
    private.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    private.bind(("127.0.0.1", stats_port))
    config = uvicorn.Config(
        "benchmarks.servers:liveupdates_app",
        log_level="warning",
        access_log=False,
        backlog=4096,
        ws_ping_interval=None,  # liveupdates' own heartbeat
        ws_per_message_deflate=False,  # the deployment setting (docs/operating.md)
    )
    uvicorn.Server(config).run(sockets=[shared, private])


class HubProcess:
    def __init__(self, port: int, redis_url: str) -> None:
        self.stats_port = free_port()
        self.base = f"http://127.0.0.1:{self.stats_port}"
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            BENCH_WORKLOAD="dashboard",
            LIVEUPDATES_BACKPLANE=redis_url,
        )
        command = [sys.executable, "-m", "benchmarks.scale_out", "--serve", str(port),
                   str(self.stats_port)]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    stop(self.process)
                    raise BenchError("a hub process did not start") from None
                time.sleep(0.1)

    def connections(self) -> int:
        count: int = httpx.get(f"{self.base}/stats", timeout=30).json()["connections"]
        return count

    def rss(self) -> int:
        return rss_kib(self.process.pid)


def wait_connections(hubs: list[HubProcess], n: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while sum(counts := [hub.connections() for hub in hubs]) != n:
        if time.monotonic() > deadline:
            raise BenchError(f"the hubs count {counts} connections, not {n} in all")
        time.sleep(0.2)
    return counts


def delivered(gens: LoadGens, n: int, count: int, publish: Any, keys: bool) -> dict[str, Any]:
    """Arm the clients for `count` ticks (or keys), call `publish()` (which returns the wall
    time its first publish started), wait for them all."""
    gens.command(
        {"cmd": "arm", "target": count, "latencies": not keys, "count": "keys" if keys else ""},
        30,
    )
    budget = 60 + count * n / 5_000
    start = publish()
    reports = gens.command({"cmd": "wait", "timeout": budget, "quiet": 2.0}, budget + 30)
    if dropped := sum(r["dropped"] for r in reports):
        raise BenchError(f"the hubs closed {dropped} connections")
    got = sum(r["ticks"] for r in reports)
    covered = sum(r["covered"] for r in reports)
    end = max(r["done_at"] if r["complete"] else r["last"] for r in reports) or time.time()
    samples = [x for r in reports for x in r["latencies_ms"]]
    return {
        "expected": count * n,
        "deliveries": got,
        "resyncs": sum(r["resyncs"] for r in reports),
        "lost": max(0, count * n - got - covered),
        "elapsed_s": end - start,
        "per_second": got / max(end - start, 1e-9),
        "frames_per_client": sum(r["frames"] for r in reports) / n,
        "p50_ms": percentile(samples, 0.5),
        "p99_ms": percentile(samples, 0.99),
        "max_ms": max(samples, default=float("nan")),
    }


async def publish_throughput(url: str, count: int, window: int) -> dict[str, Any]:
    async with Producer.from_url(url) as producer:
        for _ in range(200):  # warm up
            await producer.publish(Invalidate([["jobs", 0]]), to=Topic("bench.quiet"))
        semaphore = asyncio.Semaphore(window)

        async def one(i: int) -> None:
            async with semaphore:
                await producer.publish(Invalidate([["jobs", i]]), to=Topic("bench.quiet"))

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
    return {"count": count, "window": window, "per_second": count / elapsed}


def sync_latency(url: str, count: int) -> dict[str, Any]:
    with SyncProducer(url) as producer:
        samples = []
        for i in range(count + 200):
            start = time.perf_counter()
            producer.publish(Invalidate([["jobs", i]]), to=Topic("bench.quiet"))
            samples.append(time.perf_counter() - start)
        samples = samples[200:]
    return {
        "count": count,
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_url = start_redis("server")  # (nothing pinned: AFFINITY is empty)
    backplane = f"{redis_url}?prefix=scale{secrets.token_hex(4)}"
    port = free_port()
    hubs: list[HubProcess] = []
    gens: LoadGens | None = None
    try:
        hubs = [HubProcess(port, backplane) for _ in range(args.processes)]
        time.sleep(args.settle)
        before = [hub.rss() for hub in hubs]
        started = time.monotonic()
        gens = LoadGens(
            port, "liveupdates", args.n, args.per_loadgen, timeout=900, one_by_one=args.ramp
        )
        connect_s = time.monotonic() - started
        counts = wait_connections(hubs, args.n, 120)
        time.sleep(args.settle)
        after = [hub.rss() for hub in hubs]
        n = args.n

        sync_producer = SyncProducer(backplane)
        sync_producer.publish(Invalidate([["warm-up"]]), to=Topic("bench.quiet"))

        def broadcast() -> float:
            start = time.time()
            sync_producer.publish(Tick(0, start, "x" * 120), to=Everyone)
            return start

        def burst() -> float:
            async def main() -> float:
                async with Producer.from_url(backplane) as producer:
                    await producer.publish(Invalidate([["warm-up"]]), to=Topic("bench.quiet"))
                    start = time.time()
                    for i in range(args.burst):
                        keys = [["jobs", i], ["dashboard-stats"]]
                        await producer.publish(Invalidate(keys), to=Everyone)
                    return start

            return asyncio.run(main())

        one = delivered(gens, n, 1, broadcast, keys=False)
        many = delivered(gens, n, args.burst, burst, keys=True) if args.burst else None
        sync_producer.close()
        throughput = asyncio.run(publish_throughput(backplane, args.publishes, args.window))
        sync = sync_latency(backplane, min(args.publishes, 2000))
        return {
            "n": n,
            "processes": args.processes,
            "connections": counts,
            "connect_s": connect_s,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": (sum(after) - sum(before)) / n,
            "broadcast": one,
            "burst": many,
            "publish_async": throughput,
            "publish_sync": sync,
        }
    finally:
        if gens is not None:
            gens.stop()
        for hub in hubs:
            stop(hub.process)


def report(r: dict[str, Any]) -> str:
    b, m = r["broadcast"], r["burst"]
    lines = [
        f"{r['n']:,} idle connections over {r['processes']} hub processes on one port"
        f" (SO_REUSEPORT), one Redis: {' + '.join(f'{c:,}' for c in r['connections'])},"
        f" connected in {r['connect_s']:.1f} s",
        f"memory: {sum(r['rss_before_kib']) / 1024:.0f} MiB -> {sum(r['rss_after_kib']) / 1024:.0f}"
        f" MiB over the processes, {r['kib_per_connection']:.1f} KiB per connection",
        f"one broadcast to all: {b['deliveries']:,} of {b['expected']:,} delivered, the last"
        f" {b['elapsed_s'] * 1000:.0f} ms after the publish (p50 {b['p50_ms']:.0f} ms, p99"
        f" {b['p99_ms']:.0f} ms, max {b['max_ms']:.0f} ms), lost {b['lost']}",
    ]
    if m is not None:
        lines.append(
            f"burst of {m['expected'] // r['n']} merging invalidations: {m['deliveries']:,} of"
            f" {m['expected']:,} keys delivered in {m['elapsed_s'] * 1000:.0f} ms"
            f" ({m['per_second']:,.0f}/s, {m['frames_per_client']:.1f} frames per client),"
            f" resyncs {m['resyncs']}, lost {m['lost']}"
        )
    pa, ps = r["publish_async"], r["publish_sync"]
    lines.append(
        f"publish-only client, every hub listening: {pa['per_second']:,.0f} publishes/s"
        f" ({pa['window']} in flight on one Producer); SyncProducer.publish median"
        f" {ps['median_ms']:.3f} ms, p99 {ps['p99_ms']:.3f} ms"
    )
    return "\n".join(lines)


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=60_000, help="idle connections in all")
    parser.add_argument("--processes", type=int, default=4, help="hub processes")
    parser.add_argument("--per-loadgen", type=int, default=9000, help="clients per process")
    parser.add_argument("--burst", type=int, default=20, help="merging invalidations (0: none)")
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=64, help="publishes in flight")
    parser.add_argument("--settle", type=float, default=1.0, help="s before reading memory")
    parser.add_argument(
        "--ramp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the load generators connect one after the other (default), or all at once",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        result = run(args)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    print(report(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    lost = result["broadcast"]["lost"] + (result["burst"] or {}).get("lost", 0)
    if lost:
        print(f"benchmark failed: {lost} deliveries lost", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

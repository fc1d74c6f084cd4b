"""The Redis backplane on its own: `python -m benchmarks.redis_backplane`.

Starts its own redis-server processes (tests/redis_topology.py: free ports, temporary
directories, no persistence) and measures, in one process:

- ``replay``: a replay of ``--entries`` publications of ``--size`` bytes each, its duration and
  the longest time the event loop went without running a 1 ms ticker meanwhile (the stall);
- ``publish``: publishes per second of ``--tasks`` concurrent tasks for ``--seconds``, and the
  p50 of one publish at a time;
- ``cluster`` (with ``--cluster``): publishes per second on a Redis Cluster of three masters
  (a replica each), with every stream on one shard against streams spread over the three, from
  ``--processes`` processes of ``--tasks`` tasks each.

It prints one line per figure. Run it against an older release with ``PYTHONPATH`` pointing at
that release's ``src`` (the figures in docs/scaling-out.md were taken so).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from redis_server import RedisServer
from redis_topology import ClusterTopology

from liveupdates.backplanes.redis import RedisBackplane
from liveupdates.positions import Position
from liveupdates.testing import RecordingReceiver


async def _started(url: str) -> RedisBackplane:
    backplane = RedisBackplane.from_url(url)
    await backplane.start(RecordingReceiver())
    return backplane


async def replay(url: str, entries: int, size: int) -> None:
    backplane = await _started(f"{url}?prefix=bench&history_size={entries}&timeout=60")
    body = b'{"pad":"' + b"x" * max(0, size - 10) + b'"}'
    first = await backplane.publish("topic:r", body)
    for _ in range(entries - 1):
        await backplane.publish("topic:r", body)
    worst = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    started = time.perf_counter()
    result = await backplane.replay("topic:r", Position(first.epoch, 0))
    took = time.perf_counter() - started
    stop.set()
    await task
    assert result.complete and len(result.publications) == entries
    print(
        f"replay of {entries} x {len(body)} B: {took * 1000:.0f} ms, "
        f"longest event loop stall {worst * 1000:.1f} ms"
    )
    await backplane.aclose()


async def publish(url: str, tasks: int, seconds: float) -> None:
    backplane = await _started(f"{url}?prefix=bench")
    latencies = []
    for _ in range(2000):
        started = time.perf_counter()
        await backplane.publish("topic:p", b"{}")
        latencies.append(time.perf_counter() - started)
    print(f"publish, one at a time: p50 {statistics.median(latencies) * 1e6:.0f} us")
    print(f"publish, {tasks} tasks: {await _rate(backplane, ['topic:p'], tasks, seconds):,.0f}/s")
    await backplane.aclose()


async def _rate(backplane: RedisBackplane, streams: list[str], tasks: int, seconds: float) -> float:
    count = 0
    deadline = time.perf_counter() + seconds

    async def run(i: int) -> None:
        nonlocal count
        stream = streams[i % len(streams)]
        while time.perf_counter() < deadline:
            await backplane.publish(stream, b"{}")
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(tasks)))
    return count / (time.perf_counter() - started)


def _cluster_worker(url: str, streams: list[str], tasks: int, seconds: float) -> float:
    async def main() -> float:
        backplane = await _started(url)
        try:
            return await _rate(backplane, streams, tasks, seconds)
        finally:
            await backplane.aclose()

    return asyncio.run(main())


def cluster(processes: int, tasks: int, seconds: float) -> None:
    with (
        tempfile.TemporaryDirectory() as directory,
        ClusterTopology(Path(directory)) as topology,
    ):
        url = topology.backplane_url(prefix="bench", timeout=10)
        names = RedisBackplane.from_url(url).names
        by_master: dict[int, list[str]] = {}
        for i in range(10_000):
            stream = f"topic:c{i}"
            port = topology.master_of(names(stream).meta).port
            by_master.setdefault(port, [])
            if len(by_master[port]) < 30:
                by_master[port].append(stream)
            if len(by_master) == 3 and all(len(s) == 30 for s in by_master.values()):
                break
        one = next(iter(by_master.values()))
        three = [s for group in zip(*by_master.values(), strict=True) for s in group][:30]
        for label, streams in (("one shard", one), ("three shards", three)):
            with multiprocessing.get_context("spawn").Pool(processes) as pool:
                rates = pool.starmap(_cluster_worker, [(url, streams, tasks, seconds)] * processes)
            print(
                f"cluster, {label}, {processes} processes x {tasks} tasks: "
                f"{sum(rates):,.0f} publishes/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--size", type=int, default=16_384)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--cluster", action="store_true", help="also the cluster figures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, RedisServer(Path(directory)) as server:
        asyncio.run(replay(server.url, args.entries, args.size))
        asyncio.run(publish(server.url, args.tasks, args.seconds))
    if args.cluster:
        cluster(args.processes, args.tasks, args.seconds)


if __name__ == "__main__":
    main()

"""What a publish costs a worker: `python -m benchmarks.publish_client`.

Starts a redis-server of its own (loopback, free port, no persistence) and a hub-side listener
in another process (a Redis backplane listening to the benchmark's stream, which counts what
arrives: nothing may be lost). This process is the worker. It measures:

- ``sync``: `SyncProducer.publish`, one after another (a Celery task's call): median and p99;
- ``async``: `Producer.publish`, one after another: median and p99;
- ``async pipelined``: publishes/s with `--window` publishes in flight on one `Producer`;
- ``sync threads``: publishes/s from `--threads` threads sharing one `SyncProducer`;
- ``hub per publish``: what a worker did before, a whole `Hub` opened, used and closed per
  publish (`--hub-rounds` times): median.

``--json FILE`` writes the figures; the exit status is 1 if the listener missed a publication.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from liveupdates import Hub, Invalidate, Producer, Set, SyncProducer, Topic
from liveupdates.backplanes import backplane_from_url
from liveupdates.positions import Publication

from .delivery import BenchError, start_redis

STREAM = "bench"
WARM_UP = 200  # publishes before each latency run


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(samples: list[float]) -> dict[str, float]:
    """Milliseconds: median and p99 of `samples` (seconds)."""
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "count": len(samples),
    }


def timed(call: Callable[[], object], rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


async def async_latency(url: str, rounds: int) -> list[float]:
    samples = []
    async with Producer.from_url(url) as producer:
        for n in range(rounds):
            start = time.perf_counter()
            await producer.publish(Set(["bench", n % 100], n), to=Topic(STREAM))
            samples.append(time.perf_counter() - start)
    return samples


async def async_pipelined(url: str, count: int, window: int) -> float:
    """Publishes per second with `window` publishes in flight."""
    async with Producer.from_url(url) as producer:
        semaphore = asyncio.Semaphore(window)

        async def one(n: int) -> None:
            async with semaphore:
                await producer.publish(Set(["bench", n % 100], n), to=Topic(STREAM))

        start = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(count)))
        return count / (time.perf_counter() - start)


def threads_throughput(producer: SyncProducer, count: int, threads: int) -> float:
    each = count // threads

    def work() -> None:
        for n in range(each):
            producer.publish(Set(["bench", n % 100], n), to=Topic(STREAM))

    workers = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return each * threads / (time.perf_counter() - start)


async def hub_per_publish(url: str, rounds: int) -> list[float]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        async with Hub(url, drain_signals=()) as hub:
            await hub.publish(Invalidate(["bench"]), to=Topic(STREAM))
        samples.append(time.perf_counter() - start)
    return samples


# the listener (another process) -------------------------------------------------------------


class _Counter:
    def __init__(self, expected: int, done: asyncio.Event) -> None:
        self.count, self.expected, self.done = 0, expected, done

    def deliver(self, publication: Publication) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    def reset(self) -> None:
        print("reset", flush=True)


async def listen(url: str, expected: int) -> None:
    """Print ``ready`` once listening; once stdin closes (everything is published), print the
    number received when `expected` arrived, or 5 s later."""
    done = asyncio.Event()
    counter = _Counter(expected, done)
    backplane = backplane_from_url(url)
    await backplane.start(counter)
    await backplane.listen("topic:" + STREAM)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 5)
    print(counter.count, flush=True)
    await backplane.aclose()


# main ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"{start_redis('server')}?prefix=pc"
    rounds, count, threads = args.rounds, args.count, args.threads
    expected = 2 * (rounds + WARM_UP) + count // threads * threads + count + args.hub_rounds
    listener = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.publish_client", "--listen", url, str(expected)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert listener.stdout is not None and listener.stdin is not None
    if listener.stdout.readline().strip() != "ready":
        raise BenchError("the listener did not start")
    figures: dict[str, Any] = {}
    with SyncProducer(url) as producer:
        timed(lambda: producer.publish(Invalidate(["warm"]), to=Topic(STREAM)), WARM_UP)
        figures["sync"] = summary(
            timed(lambda: producer.publish(Set(["bench", 1], 1), to=Topic(STREAM)), rounds)
        )
        figures["sync_threads_per_s"] = threads_throughput(producer, count, threads)
    asyncio.run(async_latency(url, WARM_UP))
    figures["async"] = summary(asyncio.run(async_latency(url, rounds)))
    figures["async_pipelined_per_s"] = asyncio.run(async_pipelined(url, count, args.window))
    figures["hub_per_publish"] = summary(asyncio.run(hub_per_publish(url, args.hub_rounds)))
    listener.stdin.close()
    received = int(listener.stdout.readline().strip() or 0)
    listener.wait(10)
    figures["delivered"], figures["published"] = received, expected
    figures["parameters"] = vars(args)
    return figures


def report(f: dict[str, Any]) -> str:
    def latency(name: str) -> str:
        return f"{f[name]['median_ms']:.3f} | {f[name]['p99_ms']:.3f} |"

    window, threads = f["parameters"]["window"], f["parameters"]["threads"]
    lines = [
        "| publish | median ms | p99 ms | publishes/s |",
        "| --- | ---: | ---: | ---: |",
        f"| sync publish (SyncProducer) | {latency('sync')} |",
        f"| async publish (Producer) | {latency('async')} |",
        f"| async pipelined ({window} in flight) | | | {f['async_pipelined_per_s']:,.0f} |",
        f"| sync from {threads} threads | | | {f['sync_threads_per_s']:,.0f} |",
        f"| a Hub per publish (before) | {latency('hub_per_publish')} |",
        f"\ndelivered to the listener: {f['delivered']} of {f['published']}",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5000, help="latency samples per API")
    parser.add_argument("--count", type=int, default=20000, help="publishes per throughput run")
    parser.add_argument("--window", type=int, default=64, help="async publishes in flight")
    parser.add_argument("--threads", type=int, default=4, help="threads of the sync run")
    parser.add_argument("--hub-rounds", type=int, default=50, help="hubs opened per publish")
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--listen", nargs=2, metavar=("URL", "EXPECTED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listen:
        asyncio.run(listen(args.listen[0], int(args.listen[1])))
        return 0
    try:
        figures = run(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report(figures))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2)
    return 0 if figures["delivered"] == figures["published"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Durable publishing: from the commit to the subscriber, through a relay woken by NOTIFY.

    python -m benchmarks.outbox_latency [--events 300] [--poll-interval 1.0]

Starts its own redis-server (a free port of 127.0.0.1, no persistence) and creates its own
PostgreSQL database on 127.0.0.1:5432 (user postgres, dropped at the end). A relay runs as a
process of its own (`run_relay`, as the ``liveupdates relay`` command does). This process
commits one outbox row at a time (a change and its event in one transaction, the writer of
`liveupdates.durable`) and a Redis subscriber in the same process timestamps its arrival: the
figure is commit returned -> publication received, which is what a browser connected to a hub
on the same Redis waits for, less the hub's own fan-out (see docs/benchmarks.md for that).
The next commit waits for the previous arrival, so each measure is of an idle system.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import anyio
import psycopg

from liveupdates import Invalidate, User
from liveupdates.backplanes import Publication, backplane_from_url
from liveupdates.durable import create_outbox_table, write_event

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


class Arrivals:
    def __init__(self) -> None:
        self.times: dict[bytes, float] = {}
        self.event = anyio.Event()

    def deliver(self, publication: Publication) -> None:
        self.times[publication.body] = time.perf_counter()
        self.event.set()

    def reset(self) -> None:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(events: int, db_url: str, redis_url: str, poll_interval: float) -> list[float]:
    conn = psycopg.connect(db_url)
    create_outbox_table(conn)
    conn.execute("CREATE TABLE jobs (id INT, status TEXT)")
    conn.commit()
    backplane, arrivals = backplane_from_url(redis_url), Arrivals()
    await backplane.start(arrivals)
    await backplane.listen("user:bench")
    relay = await anyio.open_process(
        [sys.executable, "-c", "import anyio, sys; from liveupdates.durable import run_relay; "
         "anyio.run(lambda: run_relay(sys.argv[1], sys.argv[2], "
         "poll_interval=float(sys.argv[3])))", db_url, redis_url, str(poll_interval)],
    )  # fmt: skip
    latencies: list[float] = []
    try:
        for n in range(-20, events):  # 20 to warm up
            arrivals.event = anyio.Event()
            conn.execute("UPDATE jobs SET status = 'done' WHERE id = %s", (n,))
            write_event(conn, Invalidate([["jobs", n]]), User("bench"))
            conn.commit()
            committed = time.perf_counter()
            key = f'{{"type":"invalidate","keys":[["jobs",{n}]]}}'.encode()
            with anyio.fail_after(10):
                while key not in arrivals.times:
                    await arrivals.event.wait()
                    arrivals.event = anyio.Event()
            if n >= 0:
                latencies.append(arrivals.times[key] - committed)
    finally:
        relay.terminate()
        await relay.wait()
        await backplane.aclose()
        conn.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--poll-interval", type=float, default=1.0)
    args = parser.parse_args()
    name = "lu_bench_" + secrets.token_hex(4)
    port = free_port()
    directory = tempfile.mkdtemp(prefix="lu-bench-redis-")
    redis = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
         "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        time.sleep(0.3)  # redis-server startup
        latencies = anyio.run(
            measure, args.events, f"postgresql://postgres@127.0.0.1:5432/{name}",
            f"redis://127.0.0.1:{port}/0?prefix=bench", args.poll_interval,
        )  # fmt: skip
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        redis.terminate()
        redis.wait()
        shutil.rmtree(directory, ignore_errors=True)
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(f"commit -> subscriber over loopback, {len(ms)} events, relay woken by NOTIFY "
          f"(poll fallback {args.poll_interval} s), cpus {os.cpu_count()}:")  # fmt: skip
    print(f"  p50 {statistics.median(ms):.2f} ms  p99 {p99:.2f} ms  max {ms[-1]:.2f} ms")


if __name__ == "__main__":
    main()

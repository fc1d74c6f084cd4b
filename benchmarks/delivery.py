"""Delivery benchmark: liveupdates against the tutorial ConnectionManager, on loopback.

    python -m benchmarks.delivery                      # N = 100, 1,000 and 5,000
    python -m benchmarks.delivery -n 1000 --backplane redis://127.0.0.1:6390/0

Each row starts the server under uvicorn (one worker per process) and a load generator in a
process of its own, then prints: deliveries per second in a burst, lost deliveries,
publish-to-receive latency (p50, p99, max) at a fixed rate, server memory per idle connection
(all server processes together), and frames per second per client under a flood of 1,000
invalidations per second on 5 keys.

Rows: the naive ConnectionManager and liveupdates with the in-memory backplane (one process
each); with ``--backplane redis://...`` also liveupdates over Redis in one process and in two
(``--processes``): the load generator spreads its clients over the processes and asks the
first one to publish, so that half the deliveries cross Redis. Each row uses a fresh key
prefix. Use a Redis of your own (``redis-server --port 6390 --save ''``), not a production
one.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Row:
    """One configuration of the table."""

    stack: str  # naive or liveupdates
    backplane: str  # memory:// or a redis:// URL
    processes: int = 1

    @property
    def label(self) -> str:
        return "memory" if self.backplane.startswith("memory") else "redis"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def with_prefix(url: str, prefix: str) -> str:
    """`url` with the backplane option ``prefix`` (a fresh one per row)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "prefix"] + [("prefix", prefix)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def start_servers(
    app: str, count: int, env: dict[str, str]
) -> list[tuple[subprocess.Popen[bytes], int]]:
    """`count` uvicorn processes of `app`, started together; returns once each answers."""
    servers = []
    for _ in range(count):
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", f"benchmarks.servers:{app}", "--port", str(port),
            "--log-level", "warning", "--no-access-log", "--backlog", "4096",
        ]  # fmt: skip
        servers.append((subprocess.Popen(command, cwd=ROOT, env=env), port))
    deadline = time.monotonic() + 30
    for server, port in servers:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    stop(servers)
                    raise RuntimeError(f"{app} did not start") from None
                time.sleep(0.1)
    return servers


def stop(servers: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    for server, _ in servers:
        server.terminate()
    for server, _ in servers:
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def run(row: Row, n: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_FLUSH_INTERVAL=str(args.flush_interval))
    if row.stack == "liveupdates":
        backplane = row.backplane
        if row.label == "redis":
            backplane = with_prefix(backplane, "bench" + secrets.token_hex(4))
        env["LIVEUPDATES_BACKPLANE"] = backplane
    servers = start_servers(f"{row.stack}_app", row.processes, env)
    try:
        time.sleep(0.5)
        before = sum(rss_kib(server.pid) for server, _ in servers)
        burst = max(20, min(500, 100_000 // n))
        bases = [arg for _, port in servers for arg in ("--base", f"http://127.0.0.1:{port}")]
        command = [
            sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), *bases,
            "--protocol", row.stack, "-n", str(n), "--burst", str(burst),
            "--flood-seconds", str(args.flood_seconds if n <= 1000 else 0),
        ]  # fmt: skip
        loadgen = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert loadgen.stdin is not None and loadgen.stdout is not None
        if loadgen.stdout.readline().strip() != "ready":
            raise RuntimeError("the load generator failed to connect")
        time.sleep(1.0)  # idle connections settle
        after = sum(rss_kib(server.pid) for server, _ in servers)
        loadgen.stdin.write("go\n")
        loadgen.stdin.flush()
        results: dict[str, Any] = json.loads(loadgen.stdout.readline())
        loadgen.wait(60)
        results["kib_per_connection"] = (after - before) / n
        return results
    finally:
        stop(servers)


def rows(args: argparse.Namespace) -> list[Row]:
    table = [Row("naive", "-"), Row("liveupdates", "memory://")]
    table = [row for row in table if row.stack in args.stacks]
    if args.backplane and "liveupdates" in args.stacks:
        table += [Row("liveupdates", args.backplane, count) for count in args.processes]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--stacks", nargs="+", default=["naive", "liveupdates"])
    parser.add_argument("--backplane", help="also run liveupdates over this redis:// backplane")
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="server processes over Redis"
    )
    parser.add_argument("--flood-seconds", type=float, default=2.0)
    parser.add_argument(
        "--flush-interval", type=float, default=0.0, help="liveupdates Limits.flush_interval (s)"
    )
    args = parser.parse_args()

    header = (
        f"{'stack':<12} {'backplane':<9} {'procs':>5} {'N':>6} {'burst deliv/s':>14}"
        f" {'lost':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'KiB/conn':>9}"
        f" {'flood frames/s/client':>22}"
    )
    print(header)
    print("-" * len(header))
    for n in args.n:
        for row in rows(args):
            r = run(row, n, args)
            flood = r.get("flood", {}).get("frames_per_client_per_s")
            backplane = "-" if row.stack == "naive" else row.label
            print(
                f"{row.stack:<12} {backplane:<9} {row.processes:>5} {n:>6}"
                f" {r['burst']['per_second']:>14,.0f} {r['burst']['lost']:>6}"
                f" {r['rate']['p50_ms']:>8.1f} {r['rate']['p99_ms']:>8.1f}"
                f" {r['rate']['max_ms']:>8.1f} {r['kib_per_connection']:>9.1f}"
                f" {'' if flood is None else f'{flood:.1f}':>22}",
                flush=True,
            )


if __name__ == "__main__":
    main()

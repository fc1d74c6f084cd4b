"""Delivery benchmark: liveupdates against the tutorial ConnectionManager, on loopback.

    python -m benchmarks.delivery                      # N = 100, 1,000 and 5,000
    python -m benchmarks.delivery -n 1000 --backplane redis://127.0.0.1:6379/0

Each run starts the server under uvicorn (one worker) and a load generator in a separate
process, then prints: deliveries per second in a burst, lost deliveries, publish-to-receive
latency (p50, p99, max) at a fixed rate, server memory per idle connection, and frames per
second per client under a flood of 1,000 invalidations per second on 5 keys.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


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


def start_server(app: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "uvicorn", f"benchmarks.servers:{app}", "--port", str(port),
        "--log-level", "warning", "--no-access-log", "--backlog", "4096",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"{app} did not start")


def run(stack: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if args.backplane:
        env["LIVEUPDATES_BACKPLANE"] = args.backplane
    server = start_server(f"{stack}_app", port, env)
    try:
        time.sleep(0.5)
        before = rss_kib(server.pid)
        burst = max(20, min(500, 100_000 // n))
        command = [
            sys.executable, str(ROOT / "benchmarks" / "loadgen.py"),
            "--base", f"http://127.0.0.1:{port}", "--protocol", stack, "-n", str(n),
            "--burst", str(burst), "--flood-seconds", str(args.flood_seconds if n <= 1000 else 0),
        ]  # fmt: skip
        loadgen = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        assert loadgen.stdin is not None and loadgen.stdout is not None
        if loadgen.stdout.readline().strip() != "ready":
            raise RuntimeError("the load generator failed to connect")
        time.sleep(1.0)  # idle connections settle
        after = rss_kib(server.pid)
        loadgen.stdin.write("go\n")
        loadgen.stdin.flush()
        results: dict[str, Any] = json.loads(loadgen.stdout.readline())
        loadgen.wait(60)
        results["kib_per_connection"] = (after - before) / n
        return results
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--stacks", nargs="+", default=["naive", "liveupdates"])
    parser.add_argument("--backplane", help="liveupdates backplane URL (default memory://)")
    parser.add_argument("--flood-seconds", type=float, default=2.0)
    args = parser.parse_args()

    header = (
        f"{'stack':<12} {'N':>6} {'burst deliv/s':>14} {'lost':>6} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'max ms':>8} {'KiB/conn':>9} {'flood frames/s/client':>22}"
    )
    print(header)
    print("-" * len(header))
    for n in args.n:
        for stack in args.stacks:
            r = run(stack, n, args)
            flood = r.get("flood", {}).get("frames_per_client_per_s")
            print(
                f"{stack:<12} {n:>6} {r['burst']['per_second']:>14,.0f} {r['burst']['lost']:>6}"
                f" {r['rate']['p50_ms']:>8.1f} {r['rate']['p99_ms']:>8.1f}"
                f" {r['rate']['max_ms']:>8.1f} {r['kib_per_connection']:>9.1f}"
                f" {'' if flood is None else f'{flood:.1f}':>22}",
                flush=True,
            )


if __name__ == "__main__":
    main()

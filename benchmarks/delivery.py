"""Delivery benchmark: the bare loop, liveupdates, broadcaster and python-socketio, on loopback.

    python -m benchmarks.delivery                          # every stack, N = 100, 1,000, 5,000
    python -m benchmarks.delivery -n 1000 --stacks bare liveupdates-memory
    python -m benchmarks.delivery -n 1000 --stacks bare bare-control --repeat 5   # the noise
    python -m benchmarks.delivery --plots docs/img --json /tmp/bench.json
    python -m benchmarks.delivery --idle 20000             # idle connections, one broadcast
    python -m benchmarks.delivery --no-pin                 # the OS places every process

For each N, a round starts every stack's server under uvicorn (one worker, its WebSocket
keepalive pings off) and connects N clients to each, one server after the other, measuring
each server's resident memory before and after its clients connect; the clients are the load
generator's (`benchmarks/loadgen.py`, separate processes of at most ``--per-loadgen`` clients).
Then, with every server up side by side:

- burst, one stack after the other: K = max(20, min(500, 100,000 // N)) events back to back;
  deliveries per second until the last client has the last event, and lost deliveries;
- rate, interleaved: R = max(1, min(20, 10,000 / N)) events per second, ``--warmup`` seconds
  of each stack (not measured), then blocks of ``--block`` seconds, one stack's after the
  other's, until each had ``--rate-seconds``; publish to receive latency p50, p99 and max over
  all of a stack's blocks, and the CPU steal of the machine meanwhile;
- flood (N <= ``--flood-max-n``), one stack after the other: 1,000 invalidations per second on
  5 keys for ``--flood-seconds``: frames per client per second, and deliveries per client per
  key per 0.1 s window of the flood.

Every N runs ``--repeat`` rounds (default 3), with fresh servers each time. It prints each
round's rows as it ends, then one table of the medians over the rounds, with the ratios of each
row to the bare loop at the same N, then each round's latency ratios (how much they move), and
exits with status 1 if any delivery was lost. A redis-server of its own (free port, no
persistence) serves the Redis stacks; it is stopped at exit. Pinned (the default), the servers
run on one CPU and the load generators on the others; redis-server runs beside the servers
(``--redis-cpu server``, as Redis on the application's host) or beside the load generators
(``--redis-cpu clients``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import queue
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FLOOD_RATE = 1000  # invalidations per second
FLOOD_KEYS = 5
WINDOW = 0.1  # liveupdates' throttle window on invalidations (BENCH_WINDOW)


@dataclass(frozen=True)
class Stack:
    """One kind of server in the table."""

    name: str
    app: str  # attribute of benchmarks.servers
    protocol: str  # of benchmarks.loadgen
    redis: bool = False
    env: dict[str, str] = field(default_factory=dict)
    deflate: bool = False  # the clients offer permessage-deflate as Chromium does
    server_args: tuple[str, ...] = ()  # more options for uvicorn
    default: bool = True  # run unless --stacks names the stacks


STACKS = {
    s.name: s
    for s in [
        Stack("bare", "bare_app", "bare"),
        # the bare loop again, frames as long as liveupdates' (54 more bytes of padding): an A/A
        # control, its ratios to "bare" are the noise of the measurement (not run by default)
        Stack("bare-control", "bare_app", "bare", env={"BENCH_PAD": "174"}, default=False),
        Stack(
            "liveupdates-memory",
            "liveupdates_app",
            "liveupdates",
            env={"BENCH_FLUSH_INTERVAL": "0"},
        ),
        Stack(
            "liveupdates-memory-batching",
            "liveupdates_app",
            "liveupdates",
            env={"BENCH_FLUSH_INTERVAL": "0.01"},
        ),
        Stack(
            "liveupdates-redis",
            "liveupdates_app",
            "liveupdates",
            redis=True,
            env={"BENCH_FLUSH_INTERVAL": "0"},
        ),
        Stack(
            "liveupdates-redis-batching",
            "liveupdates_app",
            "liveupdates",
            redis=True,
            env={"BENCH_FLUSH_INTERVAL": "0.01"},
        ),
        Stack("broadcaster-redis", "broadcaster_app", "broadcaster", redis=True),
        Stack("socketio-redis", "socketio_app", "socketio", redis=True),
        # connections as browsers open them: the clients offer permessage-deflate as Chromium
        # does; uvicorn accepts it by default (2^12-byte windows, memLevel 5), or not at all
        # (--ws-per-message-deflate false), or with the smallest windows zlib allows
        Stack("bare-browser", "bare_app", "bare", deflate=True, default=False),
        Stack(
            "liveupdates-memory-browser",
            "liveupdates_app",
            "liveupdates",
            deflate=True,
            default=False,
        ),
        Stack(
            "liveupdates-memory-browser-window9",
            "liveupdates_app",
            "liveupdates",
            env={"BENCH_WS_WINDOW": "9"},
            deflate=True,
            default=False,
        ),
        Stack(
            "liveupdates-memory-browser-off",
            "liveupdates_app",
            "liveupdates",
            deflate=True,
            server_args=("--ws-per-message-deflate", "false"),
            default=False,
        ),
    ]
}


class BenchError(RuntimeError):
    """A server or load generator failed: the run stops with a message."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> tuple[int, int]:
    """The machine's CPU time so far, in ticks: (all of it, stolen by the hypervisor)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[7] if len(fields) > 7 else 0


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --pin: the server on one CPU, the load generators on the others; redis-server with either
AFFINITY: dict[str, set[int]] = {}


def pinned(role: str) -> Callable[[], None] | None:
    """For `Popen(preexec_fn=...)`: keep the process of `role` ("server", "clients") on its CPUs."""
    cpus = AFFINITY.get(role)
    return None if cpus is None else lambda: os.sched_setaffinity(0, cpus)


# redis-server -------------------------------------------------------------------------------


def start_redis(role: str) -> str:
    """A redis-server of our own on a free port (no persistence), on the CPUs of `role`,
    stopped at exit; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not installed (the Redis stacks need it)")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", directory, "--maxclients", "10000"],
        stdout=subprocess.DEVNULL,
        preexec_fn=pinned(role),
    )  # fmt: skip
    atexit.register(shutil.rmtree, directory, True)
    atexit.register(stop, process)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"redis-server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise BenchError("redis-server did not answer within 10 s")


# the server ---------------------------------------------------------------------------------


class Server:
    """One uvicorn process of a stack's app."""

    def __init__(self, stack: Stack, redis_url: str | None, workload: str = "tick") -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), BENCH_WORKLOAD=workload, **stack.env)
        if stack.redis:
            assert redis_url is not None
            env["BENCH_REDIS_URL"] = redis_url
            if stack.protocol == "liveupdates":  # a fresh key prefix per server
                env["LIVEUPDATES_BACKPLANE"] = f"{redis_url}?prefix=bench{secrets.token_hex(4)}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.name = stack.name
        command = [
            sys.executable, "-m", "uvicorn", f"benchmarks.servers:{stack.app}",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
            "--no-access-log", "--backlog", "4096",
            "--ws-ping-interval", "0",  # (see docs/benchmarks.md: the stacks)
            "--timeout-keep-alive", "3600",  # the publisher's connection stays open
            *stack.server_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, preexec_fn=pinned("server"))
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/stats", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise BenchError(f"the {stack.name} server did not start") from None
                time.sleep(0.1)

    def rss(self) -> int:
        return rss_kib(self.process.pid)

    def connections(self) -> int:
        count: int = httpx.get(f"{self.base}/stats", timeout=10).json()["connections"]
        return count

    def wait_connections(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (count := self.connections()) != n:
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: the server counts {count} connections, not {n}")
            time.sleep(0.1)

    def publish(self, count: int, rate: float, kind: str, timeout: float) -> None:
        params: dict[str, Any] = {"count": count, "rate": rate, "kind": kind}
        try:
            httpx.post(f"{self.base}/publish", params=params, timeout=timeout).raise_for_status()
        except httpx.HTTPError as exc:
            raise BenchError(f"{self.name}: publish failed: {exc!r}") from exc

    def stop(self) -> None:
        stop(self.process)


# the load generators ------------------------------------------------------------------------


class Child:
    """A process of the harness (load generator, publisher), driven one JSON line at a time,
    on the CPUs of the clients."""

    what = "the load generator"

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            preexec_fn=pinned("clients"),
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put("")

    def send(self, command: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.what} did not answer within {timeout:.0f} s") from None
        if not line:
            raise BenchError(f"{self.what} exited (status {self.process.wait(5)})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise BenchError(f"{self.what} failed: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.send({"cmd": "close"})
                self.process.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.process)


class LoadGen(Child):
    """One load generator process."""

    def __init__(
        self,
        port: int,
        protocol: str,
        n: int,
        first_address: int,
        timeout: float,
        deflate: bool = False,
    ) -> None:
        super().__init__([
            sys.executable, str(ROOT / "benchmarks" / "loadgen.py"), "--port", str(port),
            "--protocol", protocol, "-n", str(n), "--first-address", str(first_address),
            "--timeout", str(timeout), *(["--deflate"] if deflate else []),
        ])  # fmt: skip


class Publisher(Child):
    """The application's publisher (`benchmarks/publisher.py`): HTTP POSTs from outside."""

    what = "the publisher"

    def __init__(self, port: int) -> None:
        super().__init__(
            [sys.executable, str(ROOT / "benchmarks" / "publisher.py"), "--port", str(port)]
        )
        self.receive(30)  # {"ready": true}

    def post(self, first: int, count: int, rate: float, timeout: float) -> list[float]:
        """Events `first`... one request each; the wall time each request started."""
        self.send({"cmd": "post", "first": first, "count": count, "rate": rate})
        times: list[float] = self.receive(timeout)["times"]
        return times


class LoadGens:
    """N clients over as many load generator processes as `per_process` requires."""

    def __init__(
        self,
        port: int,
        protocol: str,
        n: int,
        per_process: int,
        timeout: float = 180,
        deflate: bool = False,
        one_by_one: bool = False,
    ) -> None:
        """`one_by_one`: each process connects its clients after the previous one is done
        (a ramp), instead of all of them at once."""
        count = max(1, math.ceil(n / per_process))
        sizes = [n // count + (i < n % count) for i in range(count)]
        self.gens: list[LoadGen] = []
        self.deflated = 0  # clients whose connection negotiated permessage-deflate
        try:
            for i, size in enumerate(sizes):
                self.gens.append(LoadGen(port, protocol, size, 3 * i, timeout, deflate))
                if one_by_one:
                    self.deflated += self.gens[-1].receive(timeout + 30).get("deflate", 0)
            for gen in self.gens if not one_by_one else []:
                self.deflated += gen.receive(timeout + 30).get("deflate", 0)  # {"ready": size}
        except BaseException:
            self.stop()
            raise

    def command(self, command: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        for gen in self.gens:
            gen.send(command)
        return [gen.receive(timeout) for gen in self.gens]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(gen.process.pid) for gen in self.gens)

    def stop(self) -> None:
        for gen in self.gens:
            gen.stop()


# scenarios ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scenario(
    server: Server, gens: LoadGens, n: int, count: int, rate: float, kind: str, latencies: bool
) -> dict[str, Any]:
    """Publish `count` events of `kind` at `rate` (0: back to back) and collect what arrived."""
    tick = kind == "tick"
    gens.command({"cmd": "arm", "target": count if tick else 0, "latencies": latencies}, 30)
    budget = 30 + count * n / 2_000 + (count / rate if rate else 0)  # generous, but bounded
    start = time.time()
    server.publish(count, rate, kind, timeout=budget)
    published = time.time()
    reports = gens.command({"cmd": "wait", "timeout": budget, "quiet": 0.5}, budget + 30)
    dropped = sum(r["dropped"] for r in reports)
    if dropped:
        raise BenchError(f"{server.name}: the server closed {dropped} connections")
    received = sum(r["ticks"] for r in reports)
    if tick:
        end = max(r["done_at"] if r["complete"] else r["last"] for r in reports) or published
    else:
        end = max(r["last"] for r in reports) or published
    elapsed = max(end - start, 1e-9)
    samples = [x for r in reports for x in r["latencies_ms"]]
    result: dict[str, Any] = {
        "samples": samples,
        "count": count,
        "rate": rate,
        "elapsed_s": elapsed,
        "publish_s": published - start,
        "frames_per_client": sum(r["frames"] for r in reports) / n,
    }
    if tick:
        result |= {
            "deliveries": received,
            "expected": count * n,
            "lost": max(0, count * n - received),
            "per_second": received / elapsed,
            "p50_ms": percentile(samples, 0.50),
            "p99_ms": percentile(samples, 0.99),
            "max_ms": max(samples, default=math.nan),
        }
    else:
        keys_per_client = sum(r["keys"] for r in reports) / n
        windows = count / FLOOD_RATE / WINDOW  # in the flood's nominal duration
        result |= {
            "keys_per_client": keys_per_client,
            "frames_per_client_per_s": result["frames_per_client"] / elapsed,
            "per_key_per_window": keys_per_client / FLOOD_KEYS / windows,
        }
    return result


@dataclass
class Row:
    """One stack's server and clients in a round, and its figures."""

    stack: Stack
    server: Server
    gens: LoadGens
    result: dict[str, Any]
    cpu: tuple[float, float] = (0.0, 0.0)  # server's and load generators' CPU seconds so far
    publisher: Publisher | None = None  # the dashboard workload's

    def stop(self) -> None:
        self.gens.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self.server.stop()


def start_rows(
    stacks: list[Stack], n: int, args: argparse.Namespace, redis_url: str | None, workload: str
) -> list[Row]:
    """Every stack's server with its N clients, started one after the other; the growth of
    each server's memory while its own clients connect."""
    rows: list[Row] = []
    try:
        for stack in stacks:
            server = Server(stack, redis_url, workload)
            try:
                time.sleep(args.settle)
                before = server.rss()
                gens = LoadGens(
                    server.port, stack.protocol, n, args.per_loadgen, deflate=stack.deflate
                )
            except BaseException:
                server.stop()
                raise
            rows.append(Row(stack, server, gens, {"stack": stack.name, "n": n}))
            if workload == "dashboard":
                rows[-1].publisher = Publisher(server.port)
            server.wait_connections(n, 60)
            time.sleep(args.settle)  # idle connections settle
            after = server.rss()
            rows[-1].result |= {
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_connection": (after - before) / n,
                "deflate": gens.deflated,
            }
    except BaseException:
        for row in rows:
            row.stop()
        raise
    return rows


def run_round(
    stacks: list[Stack], n: int, args: argparse.Namespace, redis_url: str | None
) -> list[dict[str, Any]]:
    """One round at N: every stack's server up with its N clients, side by side. The bursts and
    floods run one stack after the other; the fixed rate is interleaved, `--block` seconds of
    one stack, then of the next, so that what the machine does meanwhile hits every stack
    alike."""
    rows = start_rows(stacks, n, args, redis_url, "tick")
    try:
        for row in rows:
            row.cpu = cpu_seconds(row.server.process.pid), row.gens.cpu_seconds()
        burst = max(20, min(500, 100_000 // n))
        for row in rows:
            row.result["burst"] = scenario(row.server, row.gens, n, burst, 0, "tick", False)
        interleaved_rate(rows, n, args)
        if n <= args.flood_max_n and args.flood_seconds > 0:
            count = round(FLOOD_RATE * args.flood_seconds)
            for row in rows:
                row.result["flood"] = scenario(
                    row.server, row.gens, n, count, FLOOD_RATE, "flood", False
                )
        for row in rows:  # CPU in the scenarios: the load generator should cost far less
            row.result["server_cpu_s"] = cpu_seconds(row.server.process.pid) - row.cpu[0]
            row.result["loadgen_cpu_s"] = row.gens.cpu_seconds() - row.cpu[1]
        return [row.result for row in rows]
    finally:
        for row in rows:
            row.stop()


def interleaved_rate(rows: list[Row], n: int, args: argparse.Namespace) -> None:
    """The fixed rate: `--warmup` seconds of each stack, not measured, then blocks of
    `--block` seconds, stack after stack (each block starting with the next stack), until
    each stack had `--rate-seconds`; latency percentiles over all of a stack's blocks."""
    rate = max(1.0, min(20.0, 10_000 / n))
    if args.warmup > 0:
        for row in rows:
            scenario(
                row.server, row.gens, n, max(1, round(rate * args.warmup)), rate, "tick", False
            )
    per_block = max(1, round(rate * args.block))
    blocks = max(1, math.ceil(max(2, round(rate * args.rate_seconds)) / per_block))
    samples: dict[str, list[float]] = {row.stack.name: [] for row in rows}
    totals: dict[str, list[float]] = {row.stack.name: [0, 0, 0.0] for row in rows}
    ticks = cpu_times()
    for block in range(blocks):
        shift = block % len(rows)
        for row in rows[shift:] + rows[:shift]:
            out = scenario(row.server, row.gens, n, per_block, rate, "tick", latencies=True)
            samples[row.stack.name] += out["samples"]
            total = totals[row.stack.name]
            total[0] += out["deliveries"]
            total[1] += out["expected"]
            total[2] += out["elapsed_s"]
    stolen = [after - before for after, before in zip(cpu_times(), ticks, strict=True)]
    for row in rows:
        got, expected, elapsed = totals[row.stack.name]
        values = samples[row.stack.name]
        row.result["rate"] = {
            "count": per_block * blocks,
            "rate": rate,
            "blocks": blocks,
            "elapsed_s": elapsed,
            "deliveries": got,
            "expected": expected,
            "lost": max(0, expected - got),
            "per_second": got / max(elapsed, 1e-9),
            "p50_ms": percentile(values, 0.50),
            "p99_ms": percentile(values, 0.99),
            "max_ms": max(values, default=math.nan),
            "steal": stolen[1] / stolen[0] if stolen[0] else 0.0,
        }


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the rounds of a stack at one N: the median of each figure; deliveries and
    losses summed; each round's main figures kept under "rounds"."""

    def merge(values: list[Any]) -> Any:
        first = values[0]
        if isinstance(first, dict):
            return {key: merge([value[key] for value in values]) for key in first}
        if all(value == first for value in values) or not isinstance(first, int | float):
            return first
        return statistics.median(values)

    if len(runs) == 1:
        return runs[0]
    row: dict[str, Any] = merge(runs)
    for scenario in ("burst", "rate"):
        for key in ("deliveries", "expected", "lost", "resyncs"):
            if key in row[scenario]:
                row[scenario][key] = sum(r[scenario][key] for r in runs)
    row["rounds"] = [
        {"burst_per_s": r["burst"]["per_second"], "p50_ms": r["rate"]["p50_ms"],
         "p99_ms": r["rate"]["p99_ms"], "kib_per_connection": r["kib_per_connection"],
         "steal": r["rate"]["steal"]}
        | ({"cpu_us_per_delivery": r["cpu_us_per_delivery"]} if "cpu_us_per_delivery" in r else {})
        for r in runs
    ]  # fmt: skip
    return row


# the table ----------------------------------------------------------------------------------

COLUMNS = [
    ("stack", 27, "<"), ("N", 6, ">"), ("burst/s", 9, ">"), ("x bare", 6, ">"),
    ("lost", 5, ">"), ("p50 ms", 7, ">"), ("x bare", 6, ">"), ("p99 ms", 7, ">"),
    ("x bare", 6, ">"), ("max ms", 7, ">"), ("KiB/conn", 8, ">"), ("x bare", 6, ">"),
    ("flood fr/s", 10, ">"), ("/key/0.1s", 9, ">"),
]  # fmt: skip


def ratio(value: float, reference: float | None) -> str:
    if reference is None or not reference or math.isnan(value) or math.isnan(reference):
        return "-"
    return f"{value / reference:.2f}"


def row_cells(r: dict[str, Any], bare: dict[str, Any] | None) -> list[str]:
    burst, rate, flood = r["burst"], r["rate"], r.get("flood")
    b = bare or {}
    return [
        r["stack"],
        f"{r['n']:,}",
        f"{burst['per_second']:,.0f}",
        ratio(burst["per_second"], b.get("burst", {}).get("per_second")),
        str(burst["lost"] + rate["lost"]),
        f"{rate['p50_ms']:.1f}",
        ratio(rate["p50_ms"], b.get("rate", {}).get("p50_ms")),
        f"{rate['p99_ms']:.1f}",
        ratio(rate["p99_ms"], b.get("rate", {}).get("p99_ms")),
        f"{rate['max_ms']:.1f}",
        f"{r['kib_per_connection']:.1f}",
        ratio(r["kib_per_connection"], b.get("kib_per_connection")),
        f"{flood['frames_per_client_per_s']:.1f}" if flood else "",
        f"{flood['per_key_per_window']:.2f}" if flood else "",
    ]


def format_line(cells: list[str]) -> str:
    pairs = zip(cells, COLUMNS, strict=True)
    return " ".join(f"{cell:{align}{width}}" for cell, (_, width, align) in pairs)


def header() -> str:
    line = format_line([name for name, _, _ in COLUMNS])
    return line + "\n" + "-" * len(line)


def table(results: list[dict[str, Any]]) -> str:
    """The whole table, ratios to the bare loop at the same N (when the bare loop ran)."""
    bare = {r["n"]: r for r in results if r["stack"] == "bare"}
    lines = [header()] + [format_line(row_cells(r, bare.get(r["n"]))) for r in results]
    return "\n".join(lines)


def spread(rounds: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    """Each round's latency ratios to the bare loop of the same round: how much they move."""
    lines = ["latency ratios to the bare loop, round by round (p50 / p99):"]
    for (name, n), runs in rounds.items():
        bares = rounds.get(("bare", n))
        if name == "bare" or bares is None:
            continue
        pairs = [
            f"{ratio(r['rate']['p50_ms'], b['rate']['p50_ms'])}"
            f" / {ratio(r['rate']['p99_ms'], b['rate']['p99_ms'])}"
            for r, b in zip(runs, bares, strict=False)
        ]
        lines.append(f"  {name:<27} N={n:<6,} " + ",  ".join(pairs))
    return "\n".join(lines)


# the idle scenario ----------------------------------------------------------------------------


def idle(args: argparse.Namespace) -> dict[str, Any]:
    """As many idle liveupdates connections as the fd limits allow (up to `args.idle`), then one
    broadcast to all."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(args.idle, hard - 100)  # the server process shares the limit with its own files
    stack = STACKS["liveupdates-memory"]
    server = Server(stack, None)
    gens: LoadGens | None = None
    try:
        time.sleep(args.settle)
        before = server.rss()
        started = time.monotonic()
        gens = LoadGens(server.port, stack.protocol, n, args.per_loadgen, timeout=600)
        connect_s = time.monotonic() - started
        server.wait_connections(n, 120)
        time.sleep(args.settle)
        after = server.rss()
        broadcast = scenario(server, gens, n, 1, 0, "tick", latencies=True)
        return {
            "stack": stack.name,
            "asked": args.idle,
            "n": n,
            "connect_s": connect_s,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_connection": (after - before) / n,
            "broadcast": broadcast,
        }
    finally:
        if gens is not None:
            gens.stop()
        server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument(
        "--workload",
        choices=["dashboard", "tick"],
        default="dashboard",
        help="dashboard (default): merging invalidations posted over HTTP from another process,"
        " library defaults; tick: events published inside the server (see docs/benchmarks.md)",
    )
    parser.add_argument(
        "--stacks",
        nargs="+",
        default=[name for name, stack in STACKS.items() if stack.default],
        choices=list(STACKS),
    )
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=16.0,
        help="s of the fixed rate per stack, measured (the p99 is decided by its slowest events)",
    )
    parser.add_argument(
        "--block",
        type=float,
        default=1.0,
        help="s of the fixed rate on one stack before the next one's turn (interleaved)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="s of the fixed rate before the measured ones, so that every stack is measured on "
        "a machine equally warm (the bursts before it last from 0.1 to 10 s)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds over the stacks; the table has medians"
    )
    parser.add_argument("--flood-seconds", type=float, default=1.0)
    parser.add_argument("--flood-max-n", type=int, default=1000)
    parser.add_argument("--settle", type=float, default=1.0, help="s before reading memory")
    parser.add_argument("--per-loadgen", type=int, default=9000, help="clients per process")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--plots", type=Path, help="write the SVG plots to this directory")
    parser.add_argument(
        "--idle", type=int, metavar="N", help="instead: N idle connections, one broadcast"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the server on one CPU, the clients on the others (default)",
    )
    parser.add_argument(
        "--redis-cpu",
        choices=["server", "clients"],
        default="server",
        help="pinned, redis-server shares the CPU of the servers (default: as Redis on the "
        "application's host) or of the load generators",
    )
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin and len(cpus) > 1:
        AFFINITY.update(server={cpus[0]}, clients=set(cpus[1:]))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # for the servers too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started

    try:
        if args.idle:
            return report_idle(idle(args), args)
        redis_url = (
            start_redis(args.redis_cpu) if any(STACKS[s].redis for s in args.stacks) else None
        )
        results: list[dict[str, Any]] = []
        rounds: dict[tuple[str, int], list[dict[str, Any]]] = {}
        dashboard = args.workload == "dashboard"
        from benchmarks import dashboard as workload  # (which imports this module)

        print(workload.header() if dashboard else header(), flush=True)
        for n in args.n:
            for round_ in range(args.repeat):  # fresh servers: drifts of the machine hit all
                round_results = (workload.run_round if dashboard else run_round)(
                    [STACKS[name] for name in args.stacks], n, args, redis_url
                )
                bare = next((r for r in round_results if r["stack"] == "bare"), None)
                for result in round_results:
                    for scenario_ in ("burst", "rate", "flood"):
                        result.get(scenario_, {}).pop("samples", None)
                    rounds.setdefault((result["stack"], n), []).append(result)
                    note = f"  round {round_ + 1}/{args.repeat}" if args.repeat > 1 else ""
                    note += f"  steal {result['rate']['steal']:.0%}"
                    cells = (workload.row_cells if dashboard else row_cells)(result, bare)
                    line = (workload.format_line if dashboard else format_line)(cells)
                    print(line + note, flush=True)
            results += [combine(rounds[name, n]) for name in args.stacks]
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    print()
    print(workload.table(results) if dashboard else table(results))
    if args.repeat > 1:
        print(workload.spread(rounds) if dashboard else spread(rounds))
    if dashboard:
        print(workload.goals(results))
    shares = [(r["loadgen_cpu_s"] / max(r["server_cpu_s"], 1e-9), r) for r in results]
    if shares:
        high, worst = max(shares, key=lambda pair: pair[0])
        print(
            "load generator CPU over the scenarios, as a share of the server's: "
            f"{min(s for s, _ in shares):.0%} to {high:.0%} ({worst['stack']} N={worst['n']})"
        )
    if args.json:
        figures = {"machine": machine(), "workload": args.workload, "results": results}
        args.json.write_text(json.dumps(figures, indent=1))
    if args.plots:
        from benchmarks.plot import write_plots

        for path in write_plots(results, args.plots, args.workload):
            print(f"wrote {path}")
    lossy = [f"{r['stack']} N={r['n']}" for r in results if r["burst"]["lost"] + r["rate"]["lost"]]
    if lossy:
        print(f"benchmark failed: deliveries lost in {', '.join(lossy)}", file=sys.stderr)
        return 1
    return 0


def report_idle(r: dict[str, Any], args: argparse.Namespace) -> int:
    b = r["broadcast"]
    print(
        f"{r['stack']}: {r['n']:,} idle connections (asked {r['asked']:,}) in one process,"
        f" connected in {r['connect_s']:.1f} s; server RSS {r['rss_before_kib'] / 1024:.0f} MiB"
        f" -> {r['rss_after_kib'] / 1024:.0f} MiB, {r['kib_per_connection']:.1f} KiB per"
        f" connection\none broadcast to all: {b['deliveries']:,} of {b['expected']:,} delivered"
        f" in {b['elapsed_s'] * 1000:.0f} ms (p50 {b['p50_ms']:.0f} ms, max {b['max_ms']:.0f}"
        f" ms), lost {b['lost']}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "idle": r}, indent=1))
    if b["lost"]:
        print("benchmark failed: deliveries lost", file=sys.stderr)
        return 1
    return 0


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cpus": os.cpu_count(), "model": model, "python": sys.version.split()[0]}


if __name__ == "__main__":
    sys.exit(main())

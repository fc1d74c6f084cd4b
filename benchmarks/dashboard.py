"""The dashboard workload of `benchmarks/delivery.py` (its default): what a dashboard's traffic is.

Invalidations whose keys differ from event to event and merge, ``[["jobs", n],
["dashboard-stats"]]``, posted by the application from outside the hub's process (one HTTP
request per event, `benchmarks/publisher.py`, on the clients' CPU), to every client; the
liveupdates stacks run with the library's defaults (``Limits()``, no throttle rule), or with
``flush_interval=0.01`` (the ``-batching`` stacks). A delivery is one event's ``["jobs", n]``
reaching one client (``["dashboard-stats"]`` merges, in liveupdates as in a browser's cache, so
it is not counted). For each N, a round starts every stack's server with its N clients (side by
side, as the tick workload does), then:

- burst, one stack after the other: K = max(20, min(500, 100,000 // N)) events posted back to
  back (each request after the previous answer); deliveries per second from the first request
  until the last client has the last key;
- rate, interleaved: R = max(1, min(20, 10,000 / N)) events per second, ``--warmup`` s of each
  stack first, then blocks of ``--block`` s until each had ``--rate-seconds``: the latency from
  the start of an event's request to each client's receipt of its key, p50, p99 and max;
- server CPU per delivery: the server process' user and system time (``/proc/<pid>/stat``)
  during its burst and its measured blocks, divided by their deliveries (for the Redis stacks,
  redis-server's own time is not in it);
- heartbeat: the wall times of the pings each liveupdates client got from the server, over the
  whole round (its clients connected together, in one wave): ``pings`` in all, and ``peak/s``,
  the most pings within one second as a share of the N clients: 1.0 when the cohort is pinged
  in step, about 0.16 when each interval's pings spread over the 6.25 s of the heartbeat's
  jitter (a quarter of the 25 s interval), 0.04 over the whole interval.

A ``resync`` counts for the keys its client still missed (``resync`` column): liveupdates sends
one when a connection's outbox overflows, and the client refetches everything.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from .delivery import (
    BenchError,
    Row,
    Stack,
    cpu_seconds,
    cpu_times,
    percentile,
    ratio,
    start_rows,
)

GOALS = "burst >= 1.0x, CPU per delivery <= 1.0x, p50 and p99 <= 1.2x the bare loop"


def burst_size(n: int) -> int:
    return max(20, min(500, 100_000 // n))


def rate_of(n: int) -> float:
    return max(1.0, min(20.0, 10_000 / n))


def scenario(row: Row, n: int, count: int, rate: float, latencies: bool) -> dict[str, Any]:
    """Post `count` events at `rate` (0: back to back) and collect what arrived."""
    assert row.publisher is not None
    first = row.result.setdefault("next_event", 0)
    row.result["next_event"] = first + count  # every event of a round has a key of its own
    gens, pid = row.gens, row.server.process.pid
    gens.command({"cmd": "arm", "target": count, "latencies": latencies, "count": "keys"}, 30)
    budget = 30 + count * n / 2_000 + (count / rate if rate else 0)  # generous, but bounded
    cpu = cpu_seconds(pid)
    start = time.time()
    times = row.publisher.post(first, count, rate, budget)
    reports = gens.command({"cmd": "wait", "timeout": budget, "quiet": 0.5}, budget + 30)
    cpu = cpu_seconds(pid) - cpu
    dropped = sum(r["dropped"] for r in reports)
    if dropped:
        raise BenchError(f"{row.stack.name}: the server closed {dropped} connections")
    deliveries = sum(r["ticks"] for r in reports)
    covered = sum(r["covered"] for r in reports)
    end = max(r["done_at"] if r["complete"] else r["last"] for r in reports) or time.time()
    samples = []
    for r in reports:
        arrivals = r["arrivals"]
        for i in range(0, len(arrivals), 2):
            if 0 <= arrivals[i] - first < count:  # (a key of this scenario's)
                samples.append((arrivals[i + 1] - times[arrivals[i] - first]) * 1000)
    elapsed = max(end - start, 1e-9)
    return {
        "samples": samples,
        "count": count,
        "rate": rate,
        "elapsed_s": elapsed,
        "deliveries": deliveries,
        "expected": count * n,
        "lost": max(0, count * n - deliveries - covered),
        "resyncs": sum(r["resyncs"] for r in reports),
        "covered": covered,
        "per_second": deliveries / elapsed,
        "server_cpu_s": cpu,
        "frames_per_client": sum(r["frames"] for r in reports) / n,
    }


def run_round(
    stacks: list[Stack], n: int, args: argparse.Namespace, redis_url: str | None
) -> list[dict[str, Any]]:
    """One round of the dashboard workload at N (see the module)."""
    rows = start_rows(stacks, n, args, redis_url, "dashboard")
    try:
        connected = time.time()
        for row in rows:
            row.cpu = cpu_seconds(row.server.process.pid), row.gens.cpu_seconds()
        for row in rows:
            burst = scenario(row, n, burst_size(n), 0, False)
            burst["cpu_us_per_delivery"] = 1e6 * burst["server_cpu_s"] / max(burst["deliveries"], 1)
            burst.pop("samples")
            row.result["burst"] = burst
        interleaved_rate(rows, n, args)
        for row in rows:
            burst, rate = row.result["burst"], row.result["rate"]
            cpu = burst["server_cpu_s"] + rate["server_cpu_s"]
            row.result["cpu_us_per_delivery"] = (
                1e6 * cpu / max(burst["deliveries"] + rate["deliveries"], 1)
            )
            row.result["pings"] = ping_spread(
                [t for r in row.gens.command({"cmd": "pings"}, 30) for t in r["pings"]],
                connected,
                n,
            )
            row.result.pop("next_event", None)
            row.result["server_cpu_s"] = cpu_seconds(row.server.process.pid) - row.cpu[0]
            row.result["loadgen_cpu_s"] = row.gens.cpu_seconds() - row.cpu[1]
        return [row.result for row in rows]
    finally:
        for row in rows:
            row.stop()


def ping_spread(times: list[float], since: float, clients: int) -> dict[str, Any]:
    """How the heartbeat pings of a cohort of `clients` spread: the most pings within one
    second, as a share of the cohort (1.0: every client pinged in the same second)."""
    times = sorted(times)
    peak, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        peak = max(peak, i - j + 1)
    return {
        "count": len(times),
        "peak_share": peak / clients if clients else 0.0,
        "first_s": times[0] - since if times else math.nan,
        "last_s": times[-1] - since if times else math.nan,
    }


def interleaved_rate(rows: list[Row], n: int, args: argparse.Namespace) -> None:
    """The fixed rate, interleaved as in the tick workload (`delivery.interleaved_rate`)."""
    rate = rate_of(n)
    if args.warmup > 0:
        for row in rows:
            scenario(row, n, max(1, round(rate * args.warmup)), rate, False)
    per_block = max(1, round(rate * args.block))
    blocks = max(1, math.ceil(max(2, round(rate * args.rate_seconds)) / per_block))
    samples: dict[str, list[float]] = {row.stack.name: [] for row in rows}
    keys = ("deliveries", "expected", "lost", "resyncs", "elapsed_s", "server_cpu_s")
    totals: dict[str, dict[str, float]] = {row.stack.name: dict.fromkeys(keys, 0) for row in rows}
    ticks = cpu_times()
    for block in range(blocks):
        shift = block % len(rows)
        for row in rows[shift:] + rows[:shift]:
            out = scenario(row, n, per_block, rate, latencies=True)
            samples[row.stack.name] += out["samples"]
            for key in keys:
                totals[row.stack.name][key] += out[key]
    stolen = [after - before for after, before in zip(cpu_times(), ticks, strict=True)]
    for row in rows:
        total, values = totals[row.stack.name], samples[row.stack.name]
        row.result["rate"] = total | {
            "count": per_block * blocks,
            "rate": rate,
            "blocks": blocks,
            "per_second": total["deliveries"] / max(total["elapsed_s"], 1e-9),
            "cpu_us_per_delivery": 1e6 * total["server_cpu_s"] / max(total["deliveries"], 1),
            "p50_ms": percentile(values, 0.50),
            "p99_ms": percentile(values, 0.99),
            "max_ms": max(values, default=math.nan),
            "steal": stolen[1] / stolen[0] if stolen[0] else 0.0,
        }


# the table ----------------------------------------------------------------------------------

COLUMNS = [
    ("stack", 34, "<"), ("N", 6, ">"), ("burst/s", 9, ">"), ("x bare", 6, ">"),
    ("lost", 5, ">"), ("resync", 6, ">"), ("cpu us/del", 10, ">"), ("x bare", 6, ">"),
    ("p50 ms", 7, ">"), ("x bare", 6, ">"), ("p99 ms", 7, ">"), ("x bare", 6, ">"),
    ("max ms", 7, ">"), ("KiB/conn", 8, ">"), ("x bare", 6, ">"), ("pings", 6, ">"),
    ("peak/s", 6, ">"),
]  # fmt: skip


def row_cells(r: dict[str, Any], bare: dict[str, Any] | None) -> list[str]:
    burst, rate, pings = r["burst"], r["rate"], r["pings"]
    b = bare or {}
    return [
        r["stack"],
        f"{r['n']:,}",
        f"{burst['per_second']:,.0f}",
        ratio(burst["per_second"], b.get("burst", {}).get("per_second")),
        str(burst["lost"] + rate["lost"]),
        str(burst["resyncs"] + rate["resyncs"]),
        f"{r['cpu_us_per_delivery']:.1f}",
        ratio(r["cpu_us_per_delivery"], b.get("cpu_us_per_delivery")),
        f"{rate['p50_ms']:.1f}",
        ratio(rate["p50_ms"], b.get("rate", {}).get("p50_ms")),
        f"{rate['p99_ms']:.1f}",
        ratio(rate["p99_ms"], b.get("rate", {}).get("p99_ms")),
        f"{rate['max_ms']:.1f}",
        f"{r['kib_per_connection']:.1f}",
        ratio(r["kib_per_connection"], b.get("kib_per_connection")),
        str(round(pings["count"])),
        f"{pings['peak_share']:.2f}" if pings["count"] else "-",
    ]


def format_line(cells: list[str]) -> str:
    pairs = zip(cells, COLUMNS, strict=True)
    return " ".join(f"{cell:{align}{width}}" for cell, (_, width, align) in pairs)


def header() -> str:
    line = format_line([name for name, _, _ in COLUMNS])
    return line + "\n" + "-" * len(line)


def table(results: list[dict[str, Any]]) -> str:
    bare = {r["n"]: r for r in results if r["stack"] == "bare"}
    lines = [header()] + [format_line(row_cells(r, bare.get(r["n"]))) for r in results]
    return "\n".join(lines)


def round_ratios(r: dict[str, Any], b: dict[str, Any]) -> str:
    return (
        f"{ratio(r['burst']['per_second'], b['burst']['per_second'])}"
        f" / {ratio(r['cpu_us_per_delivery'], b['cpu_us_per_delivery'])}"
        f" / {ratio(r['rate']['p50_ms'], b['rate']['p50_ms'])}"
        f" / {ratio(r['rate']['p99_ms'], b['rate']['p99_ms'])}"
    )


def spread(rounds: dict[tuple[str, int], list[dict[str, Any]]]) -> str:
    """Each round's ratios to the bare loop of the same round."""
    lines = ["ratios to the bare loop, round by round (burst / CPU per delivery / p50 / p99):"]
    for (name, n), runs in rounds.items():
        bares = rounds.get(("bare", n))
        if name == "bare" or bares is None:
            continue
        pairs = [round_ratios(r, b) for r, b in zip(runs, bares, strict=False)]
        lines.append(f"  {name:<34} N={n:<6,} " + ",  ".join(pairs))
    return "\n".join(lines)


def goals(results: list[dict[str, Any]]) -> str:
    """The issue's goals in the medians: each liveupdates row against the bare loop of its N,
    and each -batching row against the same stack without batching."""
    lines = [f"goals ({GOALS}; batching never worse than the default):"]
    by_name = {(r["stack"], r["n"]): r for r in results}
    for r in results:
        name, n = r["stack"], r["n"]
        b = by_name.get(("bare", n))
        if not name.startswith("liveupdates") or b is None:
            continue
        checks = [
            ("burst", r["burst"]["per_second"] / b["burst"]["per_second"], ">=", 1.0),
            ("cpu", r["cpu_us_per_delivery"] / b["cpu_us_per_delivery"], "<=", 1.0),
            ("p50", r["rate"]["p50_ms"] / b["rate"]["p50_ms"], "<=", 1.2),
            ("p99", r["rate"]["p99_ms"] / b["rate"]["p99_ms"], "<=", 1.2),
        ]
        plain = by_name.get((name.removesuffix("-batching"), n))
        if name.endswith("-batching") and plain is not None:
            checks += [
                ("burst vs default", r["burst"]["per_second"] / plain["burst"]["per_second"],
                 ">=", 1.0),
                ("cpu vs default", r["cpu_us_per_delivery"] / plain["cpu_us_per_delivery"],
                 "<=", 1.0),
            ]  # fmt: skip
        cells = [
            f"{label} {value:.2f} " + ("ok" if (value >= goal) == (op == ">=") else "MISSED")
            for label, value, op, goal in checks
        ]
        lines.append(f"  {name:<34} N={n:<6,} " + ", ".join(cells))
    return "\n".join(lines)

"""Smoke test of the delivery benchmark: every stack for real at N = 20, short scenarios.

Runs ``python -m benchmarks.delivery`` as a user would (its own servers, load generator and, for
the Redis stacks, its own redis-server) and checks the exit status, that nothing was lost, and
that the table has every stack with its ratios to the bare loop.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from redis_server import redis_server_available

from benchmarks import delivery
from benchmarks.delivery import STACKS, combine
from benchmarks.plot import write_plots

ROOT = Path(__file__).resolve().parent.parent
N = 20


def run_delivery(stacks: list[str], tmp_path: Path) -> tuple[str, list[dict[str, object]]]:
    output = tmp_path / "bench.json"
    command = [
        sys.executable, "-m", "benchmarks.delivery", "--workload", "tick", "-n", str(N),
        "--stacks", *stacks,
        "--rate-seconds", "0.4", "--warmup", "0.2", "--block", "0.2", "--flood-seconds", "0.3",
        "--settle", "0.2",
        "--json", str(output), "--plots", str(tmp_path / "img"), "--pin", "--repeat", "2",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    results: list[dict[str, object]] = json.loads(output.read_text())["results"]
    return done.stdout, results


def check(stacks: list[str], stdout: str, results: list[dict[str, object]], tmp_path: Path) -> None:
    assert [r["stack"] for r in results] == stacks
    assert all(len(r["rounds"]) == 2 for r in results)  # type: ignore[arg-type]
    for r in results:  # the share of the machine the hypervisor took during each round
        assert all(0 <= round_["steal"] < 1 for round_ in r["rounds"])  # type: ignore[attr-defined]
    assert "steal " in stdout
    assert "round by round" in stdout
    for r in results:
        for scenario in ("burst", "rate"):
            figures = r[scenario]
            assert isinstance(figures, dict)
            assert figures["lost"] == 0, (r["stack"], scenario, figures)
            assert figures["deliveries"] == figures["expected"] > 0
        rate = r["rate"]
        assert isinstance(rate, dict) and rate["blocks"] == 2  # interleaved with the others
        flood = r["flood"]
        assert isinstance(flood, dict) and flood["keys_per_client"] > 0
    table = stdout[stdout.rindex("stack ") : stdout.index("round by round")]  # the medians
    head, _, *rest = table.splitlines()
    lines = [line for line in rest if line.split()[:1] and line.split()[0] in STACKS]
    assert "load generator CPU" in stdout
    assert head.split() == [
        "stack", "N", "burst/s", "x", "bare", "lost", "p50", "ms", "x", "bare", "p99", "ms", "x",
        "bare", "max", "ms", "KiB/conn", "x", "bare", "flood", "fr/s", "/key/0.1s",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines] == stacks
    for line in lines:
        cells = line.split()
        assert cells[1] == str(N)
        assert cells[4] == "0"  # lost
        ratios = [cells[3], cells[6], cells[8], cells[11]]
        assert all(float(x) > 0 for x in ratios), line
    for plot in ("bench-deliveries.svg", "bench-p99.svg"):
        svg = (tmp_path / "img" / plot).read_text()
        assert svg.startswith("<svg") and all(stack in svg for stack in stacks)


@pytest.mark.timeout(120)
def test_memory_stacks(tmp_path: Path) -> None:
    stacks = [name for name, stack in STACKS.items() if not stack.redis and not stack.deflate]
    check(stacks, *run_delivery(stacks, tmp_path), tmp_path)


@pytest.mark.redis
@pytest.mark.timeout(150)
def test_redis_stacks(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("no redis-server binary")
    stacks = ["bare"] + [name for name, stack in STACKS.items() if stack.redis]
    check(stacks, *run_delivery(stacks, tmp_path), tmp_path)


@pytest.mark.redis
@pytest.mark.parametrize("role", ["server", "clients"])
def test_redis_server_runs_on_the_cpus_asked_for(
    role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--redis-cpu`: pinned, the harness' redis-server shares the servers' CPU or the clients'."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or not redis_server_available():
        pytest.skip("needs two CPUs and a redis-server binary")
    monkeypatch.setattr(delivery, "AFFINITY", {"server": {cpus[0]}, "clients": set(cpus[1:])})
    port = int(delivery.start_redis(role).rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"INFO server\r\n")
        info = b""
        while b"process_id:" not in info or not info.endswith(b"\r\n"):
            info += sock.recv(65536)
        pid = int(info.split(b"process_id:")[1].split(b"\r\n")[0])
        assert os.sched_getaffinity(pid) == delivery.AFFINITY[role]
        sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        sock.recv(64)  # the connection closes once it has stopped


def test_plot_of_nothing_and_of_one_point(tmp_path: Path) -> None:
    write_plots([], tmp_path)
    one = {"stack": "bare", "n": 100, "burst": {"per_second": 5.0}, "rate": {"p99_ms": 2.0}}
    paths = write_plots([one], tmp_path)
    assert all(path.read_text().rstrip().endswith("</svg>") for path in paths)


def test_rounds_combine_into_medians_with_every_loss_counted() -> None:
    def run(p50: float, lost: int) -> dict[str, object]:
        scenario = {"deliveries": 10 - lost, "expected": 10, "lost": lost, "per_second": p50}
        rate = scenario | {"p50_ms": p50, "p99_ms": 2 * p50, "steal": 0.0}
        return {"stack": "bare", "n": 100, "kib_per_connection": p50, "burst": scenario,
                "rate": rate}  # fmt: skip

    row = combine([run(1.0, 0), run(9.0, 1), run(2.0, 0)])
    assert row["n"] == 100 and row["kib_per_connection"] == 2.0
    assert row["rate"] == {"deliveries": 29, "expected": 30, "lost": 1, "per_second": 2.0,
                           "p50_ms": 2.0, "p99_ms": 4.0, "steal": 0.0}  # fmt: skip
    assert [r["p50_ms"] for r in row["rounds"]] == [1.0, 9.0, 2.0]


@pytest.mark.timeout(60)
def test_the_fan_out_overhead_script_prints_its_figures() -> None:
    command = [sys.executable, "-m", "benchmarks.fanout_overhead", "-n", "50", "--events", "3",
               "--send-us", "5"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = {
        line.rsplit(None, 2)[0].strip(): float(line.split()[-2])
        for line in done.stdout.splitlines()
        if line.endswith(" us")
    }
    assert set(figures) == {"liveupdates per delivery", "bare loop per delivery",
                            "added by liveupdates"}  # fmt: skip
    # every send did its 5 us of work, in both loops
    assert figures["liveupdates per delivery"] >= 5 and figures["bare loop per delivery"] >= 5
    assert done.stderr == ""  # no session failed


# the dashboard workload (the default): merging invalidations POSTed from another process ------


def run_dashboard(stacks: list[str], tmp_path: Path) -> tuple[str, list[dict[str, Any]]]:
    output = tmp_path / "dashboard.json"
    command = [
        sys.executable, "-m", "benchmarks.delivery", "-n", str(N), "--stacks", *stacks,
        "--rate-seconds", "0.4", "--warmup", "0.2", "--block", "0.2", "--settle", "0.2",
        "--json", str(output), "--repeat", "2", "--plots", str(tmp_path / "img"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(output.read_text())
    assert figures["workload"] == "dashboard"
    results: list[dict[str, Any]] = figures["results"]
    assert [r["stack"] for r in results] == stacks
    # its plots beside the tick workload's, which they must not overwrite
    assert sorted(path.name for path in (tmp_path / "img").iterdir()) == [
        "bench-dashboard-deliveries.svg", "bench-dashboard-p99.svg"
    ]  # fmt: skip
    assert "the dashboard workload" in (tmp_path / "img" / "bench-dashboard-p99.svg").read_text()
    for r in results:
        for scenario in ("burst", "rate"):
            figures = r[scenario]
            assert figures["lost"] == 0 and figures["resyncs"] == 0, (r["stack"], figures)
            # one ["jobs", n] per event and client, counted once each
            assert figures["deliveries"] == figures["expected"] > 0, (r["stack"], figures)
        assert r["rate"]["p50_ms"] > 0 and r["rate"]["p99_ms"] >= r["rate"]["p50_ms"]
        assert r["cpu_us_per_delivery"] > 0
        assert len(r["rounds"]) == 2 and all(x["cpu_us_per_delivery"] > 0 for x in r["rounds"])
    table = done.stdout[done.stdout.rindex("stack ") : done.stdout.index("round by round")]
    head = table.splitlines()[0].split()
    assert head[:6] == ["stack", "N", "burst/s", "x", "bare", "lost"]
    assert "cpu" in head and "us/del" in head and "peak/s" in head
    assert "burst / CPU per delivery / p50 / p99" in done.stdout
    assert "goals (burst >= 1.0x, CPU per delivery <= 1.0x" in done.stdout
    return done.stdout, results


@pytest.mark.timeout(150)
def test_dashboard_workload_and_browser_connections(tmp_path: Path) -> None:
    """The default workload, with clients that offer permessage-deflate as Chromium does: the
    servers that accept it compress (and the clients inflate), the one configured off does not."""
    stacks = ["bare", "liveupdates-memory", "liveupdates-memory-batching", "bare-browser",
              "liveupdates-memory-browser", "liveupdates-memory-browser-off"]  # fmt: skip
    stdout, results = run_dashboard(stacks, tmp_path)
    negotiated = {r["stack"]: r["deflate"] for r in results}
    assert negotiated == {"bare": 0, "liveupdates-memory": 0, "liveupdates-memory-batching": 0,
                          "bare-browser": N, "liveupdates-memory-browser": N,
                          "liveupdates-memory-browser-off": 0}  # fmt: skip
    batching = next(r for r in results if r["stack"] == "liveupdates-memory-batching")
    assert batching["burst"]["frames_per_client"] < batching["burst"]["count"]  # merged
    assert "liveupdates-memory-batching" in stdout.split("goals")[1]


@pytest.mark.redis
@pytest.mark.timeout(150)
def test_dashboard_workload_redis(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("no redis-server binary")
    run_dashboard(["bare", "liveupdates-redis", "liveupdates-redis-batching"], tmp_path)


def test_heartbeat_spread_of_a_cohort() -> None:
    """`peak/s`: the largest share of a cohort's pings within one second."""
    from benchmarks.dashboard import ping_spread

    assert ping_spread([10.0] * 50, 0, 50)["peak_share"] == 1.0  # in step
    spread = ping_spread([10.0 + i * 0.125 for i in range(50)], 0, 50)  # over 6.25 s
    assert spread["count"] == 50 and spread["peak_share"] == 9 / 50
    twice = ping_spread(
        [t + d for t in (10.0, 35.0) for d in [i * 0.125 for i in range(50)]], 0, 50
    )
    assert twice["count"] == 100 and twice["peak_share"] == 9 / 50  # two intervals, 25 s apart
    assert ping_spread([], 0, 50)["count"] == 0


@pytest.mark.redis
@pytest.mark.timeout(120)
def test_scale_out_over_processes_on_one_port(tmp_path: Path) -> None:
    """Hub processes on one port (SO_REUSEPORT) sharing one Redis: every client connected
    somewhere, one broadcast reaches all, a merging burst loses no key."""
    if not redis_server_available():
        pytest.skip("no redis-server binary")
    output = tmp_path / "scale.json"
    command = [
        sys.executable, "-m", "benchmarks.scale_out", "-n", "200", "--processes", "2",
        "--burst", "5", "--publishes", "300", "--settle", "0.2", "--json", str(output),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(output.read_text())
    assert sum(r["connections"]) == 200 and len(r["connections"]) == 2
    assert all(count > 0 for count in r["connections"])  # the kernel spread them
    assert r["broadcast"]["deliveries"] == r["broadcast"]["expected"] == 200
    assert r["burst"]["deliveries"] == r["burst"]["expected"] == 1000
    assert r["broadcast"]["lost"] == r["burst"]["lost"] == 0
    assert r["kib_per_connection"] > 0 and r["publish_async"]["per_second"] > 0
    assert "one broadcast to all: 200 of 200 delivered" in done.stdout

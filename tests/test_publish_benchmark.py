"""Smoke test of the publish benchmark: ``python -m benchmarks.publish_client`` for real (its
own redis-server and listener process), small counts: it exits 0 (nothing lost) and reports
every row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import redis_server_available

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.skipif(not redis_server_available(), reason="needs redis-server")
def test_the_publish_benchmark_runs_and_loses_nothing(tmp_path: Path) -> None:
    output = tmp_path / "publish.json"
    command = [
        sys.executable, "-m", "benchmarks.publish_client", "--rounds", "200", "--count", "400",
        "--hub-rounds", "3", "--json", str(output),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for row in ("sync publish (SyncProducer)", "async publish (Producer)", "async pipelined",
                "sync from 4 threads", "a Hub per publish (before)"):  # fmt: skip
        assert f"| {row}" in done.stdout
    figures = json.loads(output.read_text())
    assert figures["delivered"] == figures["published"] == 2 * (200 + 200) + 400 + 400 + 3
    assert figures["sync"]["count"] == figures["async"]["count"] == 200

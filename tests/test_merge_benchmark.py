"""Smoke test of ``python -m benchmarks.merge_overhead``: small counts, it checks every client
got every key and prints both rows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(60)
def test_the_merge_overhead_script_prints_its_figures() -> None:
    command = [sys.executable, "-m", "benchmarks.merge_overhead", "-n", "50", "--events", "20",
               "--rounds", "2", "--send-us", "5"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr  # (every client got every key)
    rows = dict(re.findall(r"^(\w+) +CPU per delivery +([\d.]+) us", done.stdout, re.MULTILINE))
    assert set(rows) == {"liveupdates", "bare"}
    assert float(rows["bare"]) >= 5  # every send of the bare loop did its 5 us of work
    assert done.stderr == ""  # no session failed

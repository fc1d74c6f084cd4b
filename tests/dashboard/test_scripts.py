"""scripts/demo.sh installs once: a second start with pyproject.toml and package-lock.json
unchanged installs nothing, and a change to either installs again.

The script runs in a copy of the files it reads, with stand-ins for the two installers (a
``.venv/bin/python`` and an ``npm`` that record their arguments): the test checks the script's
decisions, not pip's or npm's work. node and the front end's build are real.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .helpers import ROOT

RECORDER = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
if [ "$1" = ci ]; then ln -sfn "{node_modules}" node_modules; fi
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    copy = tmp_path / "checkout"
    for name in ("scripts", "examples/jobs_dashboard"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("build"))
    for name in ("pyproject.toml", "package-lock.json", "package.json"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "node_modules").symlink_to(ROOT / "node_modules")
    return copy


def prepare(checkout: Path, log: Path) -> str:
    """``bash scripts/demo.sh --prepare`` with recording installers; what they were asked."""
    bin_dir = checkout.parent / "bin"
    for path in (checkout / ".venv" / "bin" / "python", bin_dir / "npm"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORDER.format(log=log, node_modules=ROOT / "node_modules"))
        path.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    log.write_text("")
    done = subprocess.run(
        ["bash", "scripts/demo.sh", "--prepare"], cwd=checkout, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (checkout / "examples/jobs_dashboard/static/build/app.js").exists()
    return log.read_text()


def test_a_second_start_installs_nothing_until_the_dependencies_change(
    checkout: Path, tmp_path: Path
) -> None:
    log = tmp_path / "installers.log"
    (checkout / "node_modules").unlink()  # a fresh clone: no npm packages yet
    first = prepare(checkout, log)
    assert "python -m pip install -q -e .[examples,redis]" in first
    assert "npm ci --no-audit --no-fund --loglevel=error" in first

    assert prepare(checkout, log) == ""  # nothing changed: no installer runs

    with (checkout / "pyproject.toml").open("a") as file:
        file.write("\n# a new dependency\n")
    again = prepare(checkout, log)
    assert "pip install" in again and "npm ci" in again
    assert prepare(checkout, log) == ""

"""The dashboard as it runs in production: uvicorn processes sharing one SQLite file. A server
restarts under an open page; two processes share a Redis backplane."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import processes
import pytest
from playwright.sync_api import BrowserContext, expect
from processes import AppProcess, AppProcesses
from redis_server import RedisServer

from examples.jobs_dashboard.db import STATUSES

from .helpers import SECRET, not_reloaded, open_dashboard, row, screenshot, start_job, stat

pytestmark = pytest.mark.browser

APP = "examples.jobs_dashboard.app:create_app"
SignIn = Callable[[str, str], BrowserContext]


def start(app_processes: AppProcesses, db: Path, env: dict[str, str] | None = None) -> AppProcess:
    """A dashboard process on the database `db`, with fast jobs."""
    settings = {
        "JOBS_DB": str(db),
        "JOBS_SECRET": SECRET.decode(),  # sessions stay valid across processes and restarts
        "JOBS_STEP_SECONDS": "0.05",
        "JOBS_POLL_SECONDS": "0.2",
        "JOBS_PROGRESS_WINDOW": "0.1",
    }
    (process,) = app_processes.start(
        APP,
        env=settings | (env or {}),
        ready_path="/healthz",
        args=["--factory", "--timeout-graceful-shutdown", "3"],
    )
    return process


def test_a_restart_mid_job_reconnects_and_ends_with_the_databases_counts(
    frontend: None,
    sign_in: SignIn,
    app_processes: AppProcesses,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    server = start(app_processes, db)
    page = open_dashboard(sign_in(server.http_url, "alice"))
    start_job(page, "Survives restarts", items=80)
    job = row(page, "Survives restarts")
    expect(job.locator(".count")).to_have_text(re.compile(r"^[1-9]\d?/80$"))

    server.stop()  # SIGTERM: the worker hands its job over; the page loses its connection
    expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator(".banner")).to_contain_text("Connection lost")
    screenshot(page, "reconnecting")

    monkeypatch.setattr(processes, "_free_port", lambda: server.port)  # the same address
    server.start()
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live", timeout=30_000)
    expect(job).to_have_attribute("data-status", "completed")
    expect(job.locator(".count")).to_have_text("80/80")

    with sqlite3.connect(db) as c:
        counts = dict(c.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
        (items,) = c.execute("SELECT sum(done) FROM jobs").fetchone()
    assert counts == {"completed": 1}
    for status in STATUSES:
        expect(stat(page, status)).to_have_text(str(counts.get(status, 0)))
    expect(stat(page, "total")).to_have_text(str(sum(counts.values())))
    expect(stat(page, "items")).to_have_text(str(items))
    assert not_reloaded(page)


@pytest.mark.redis
def test_a_job_started_through_one_process_updates_a_tab_on_another(
    frontend: None,
    sign_in: SignIn,
    app_processes: AppProcesses,
    redis_server: RedisServer,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    backplane = {"LIVEUPDATES_BACKPLANE": redis_server.backplane_url(prefix=redis_prefix)}
    first = start(app_processes, db, backplane)  # runs the jobs
    second = start(app_processes, db, backplane | {"JOBS_WORKER": "0"})  # only serves pages
    page = open_dashboard(sign_in(second.http_url, "alice"))
    admin = open_dashboard(sign_in(second.http_url, "admin"))

    with httpx.Client(base_url=first.http_url) as alice:
        alice.post("/api/login", json={"user": "alice", "password": "alice"}).raise_for_status()
        alice.post("/api/jobs", json={"name": "Across processes", "items": 40}).raise_for_status()

    job = row(page, "Across processes")
    expect(job.locator(".count")).to_have_text(re.compile(r"^([1-9]|[1-3][0-9])/40$"))
    expect(job).to_have_attribute("data-status", "completed")
    expect(stat(page, "items")).to_have_text("40")
    expect(page.locator(".toast.completed")).to_contain_text("Across processes completed")
    expect(row(admin, "Across processes")).to_have_attribute("data-status", "completed")
    expect(stat(admin, "connections")).to_have_text("2")  # reported by both processes

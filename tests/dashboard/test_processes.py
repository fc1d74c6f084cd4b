"""The dashboard as it runs in production: uvicorn web processes and worker processes sharing
one SQLite file, the events of every change committed into its outbox and published by the web
processes' relays. A web process restarts under an open page (nobody is signed out); a worker
is killed mid-job (another resumes it once its lease runs out); a web process is killed right
after a commit (the page still updates); two web processes share a Redis backplane."""

from __future__ import annotations

import re
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import processes
import pytest
from playwright.sync_api import BrowserContext, expect
from processes import AppProcess, AppProcesses
from redis_server import RedisServer

from examples.jobs_dashboard.db import STATUSES

from .helpers import (
    WorkerProcess,
    fast_settings,
    not_reloaded,
    open_dashboard,
    row,
    screenshot,
    start_job,
    stat,
)

pytestmark = pytest.mark.browser

APP = "examples.jobs_dashboard.app:create_app"
SignIn = Callable[[str, str], BrowserContext]


def start(
    app_processes: AppProcesses, db: Path, env: dict[str, str] | None = None, app: str = APP
) -> AppProcess:
    """A dashboard web process on the database `db`. No JOBS_SECRET: the processes of one
    database share the secret kept beside it, across restarts too."""
    settings = {
        "JOBS_DB": str(db),
        "JOBS_RELAY_POLL": "0.02",
        "JOBS_RELAY_LEASE": "2",  # rows a killed process's relay held wait this long
        "JOBS_HEARTBEAT_SECONDS": "0.5",
    }
    (process,) = app_processes.start(
        app,
        env=settings | (env or {}),
        ready_path="/healthz",
        args=["--factory", "--timeout-graceful-shutdown", "3"],
    )
    return process


def worker(db: Path, **settings: float) -> WorkerProcess:
    """A worker process on `db`, with fast jobs (stopped by `workers` at the end)."""
    process = WorkerProcess(fast_settings(db.parent, db_path=str(db), **settings), db.parent)
    return process.start()


@pytest.fixture
def workers() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(db: Path, **settings: float) -> WorkerProcess:
        started.append(worker(db, **settings))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def test_a_restart_mid_job_reconnects_and_ends_with_the_databases_counts(
    frontend: None,
    sign_in: SignIn,
    app_processes: AppProcesses,
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    server = start(app_processes, db)
    workers(db)
    page = open_dashboard(sign_in(server.http_url, "alice"))
    start_job(page, "Survives restarts", items=80)
    job = row(page, "Survives restarts")
    expect(job.locator(".count")).to_have_text(re.compile(r"^[1-9]\d?/80$"))

    server.stop()  # SIGTERM: the page loses its connection; the worker goes on
    expect(page.locator("#live-status")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator(".banner")).to_contain_text("Connection lost")
    screenshot(page, "reconnecting")

    monkeypatch.setattr(processes, "_free_port", lambda: server.port)  # the same address
    server.start()  # the session secret is the one kept beside the database: still signed in
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
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    backplane = {"LIVEUPDATES_BACKPLANE": redis_server.backplane_url(prefix=redis_prefix)}
    first = start(app_processes, db, backplane)
    second = start(app_processes, db, backplane)
    workers(db)
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


def test_a_worker_killed_mid_job_is_resumed_by_the_next_once_its_lease_runs_out(
    frontend: None,
    sign_in: SignIn,
    app_processes: AppProcesses,
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.sqlite3"
    server = start(app_processes, db)
    first = workers(db, lease_seconds=1.5)
    page = open_dashboard(sign_in(server.http_url, "alice"))
    admin = open_dashboard(sign_in(server.http_url, "admin"))
    start_job(page, "Outlives its worker", items=60)
    job = row(page, "Outlives its worker")
    expect(job.locator(".count")).to_have_text(re.compile(r"^([5-9]|[1-3][0-9])/60$"))
    health = admin.locator(f'.workers [data-worker="{worker_id(db, first.pid)}"]')
    expect(health).to_have_attribute("data-health", "alive")
    expect(health.locator(".held")).to_have_text("1 of 3")

    first.kill()  # kill -9 mid-job: no goodbye, the job stays leased to it
    expect(health).to_have_attribute("data-health", "silent")  # the admins see it
    expect(health.locator(".held")).to_contain_text("1 lease expired")
    expect(job).to_have_attribute("data-status", "running")
    stopped_at = int(job.locator(".count").inner_text().split("/")[0])

    second = workers(db, lease_seconds=1.5)  # the next worker (a supervisor's restart)
    expect(job).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(job.locator(".count")).to_have_text("60/60")
    expect(page.locator(".toast.completed")).to_contain_text("Outlives its worker completed")
    replacement = admin.locator(f'.workers [data-worker="{worker_id(db, second.pid)}"]')
    expect(replacement).to_have_attribute("data-health", "alive")
    expect(health.locator(".held")).to_have_text("0 of 3")

    job.locator(".name").click()  # its history: resumed where the dead worker stopped
    history = page.locator(".history tbody tr")
    expect(history.first).to_contain_text("completed")
    expect(page.locator(".history")).to_contain_text("resumed")
    with sqlite3.connect(db) as c:
        messages = [m for (m,) in c.execute("SELECT message FROM progress ORDER BY rowid")]
        (attempt,) = c.execute("SELECT attempt FROM jobs").fetchone()
    resumed = messages.index("resumed")
    last = int(messages[resumed - 1].split()[2])  # "processing item N of 60", the last before
    assert last >= stopped_at
    assert messages[resumed + 1 :] == [
        *(f"processing item {n} of 60" for n in range(last + 1, 61)), "completed",
    ]  # fmt: skip
    assert attempt == 1  # the same attempt, taken over: no item was done twice
    assert not_reloaded(page)


def worker_id(db: Path, pid: int) -> str:
    """The id of the worker process `pid`, as the admin page shows it."""
    with sqlite3.connect(db) as c:
        (worker_id,) = c.execute("SELECT id FROM workers WHERE pid = ?", (pid,)).fetchone()
    return str(worker_id)


@pytest.mark.redis
def test_a_web_process_killed_right_after_a_commit_still_updates_the_page(
    frontend: None,
    sign_in: SignIn,
    app_processes: AppProcesses,
    redis_server: RedisServer,
    redis_prefix: str,
    workers: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    """A cancel committed by a process that dies before it answers (or publishes anything)
    reaches a page served by another process: its event was committed with the change, and
    that process's relay publishes it."""
    db = tmp_path / "jobs.sqlite3"
    backplane = {"LIVEUPDATES_BACKPLANE": redis_server.backplane_url(prefix=redis_prefix)}
    doomed = start(app_processes, db, backplane, app="apps.dashboard_dies_after_commit:create_app")
    survivor = start(app_processes, db, backplane)
    workers(db)
    page = open_dashboard(sign_in(survivor.http_url, "alice"))
    start_job(page, "Cancelled by the dead", items=1000)
    job = row(page, "Cancelled by the dead")
    expect(job).to_have_attribute("data-status", "running")
    job_id = job.get_attribute("data-job-id")

    with httpx.Client(base_url=doomed.http_url) as alice:
        alice.post("/api/login", json={"user": "alice", "password": "alice"}).raise_for_status()
        with pytest.raises(httpx.TransportError):  # it died before it could answer
            alice.post(f"/api/jobs/{job_id}/cancel")
    assert doomed.stop() == -signal.SIGKILL  # it killed itself right after the commit

    expect(job).to_have_attribute("data-status", "cancelled")
    expect(stat(page, "cancelled")).to_have_text("1")
    expect(stat(page, "running")).to_have_text("0")
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT status FROM jobs").fetchall() == [("cancelled",)]
    assert not_reloaded(page)

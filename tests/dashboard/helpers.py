"""Helpers of the dashboard tests: fast settings, clients, pages, screenshots."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Locator, Page, expect
from starlette.applications import Starlette
from support import UvicornThread

from examples.jobs_dashboard.app import Services, create_app
from examples.jobs_dashboard.settings import Settings

ROOT = Path(__file__).parents[2]
# The pictures of docs/jobs-dashboard.md: refreshed with LIVEUPDATES_SCREENSHOTS=docs/img;
# otherwise they go to a temporary directory, so that a test run leaves the tree as it was.
if os.environ.get("LIVEUPDATES_SCREENSHOTS"):
    SCREENSHOTS = Path(os.environ["LIVEUPDATES_SCREENSHOTS"]).resolve()
else:
    SCREENSHOTS = Path(tempfile.mkdtemp(prefix="dashboard-shots-"))
    atexit.register(shutil.rmtree, SCREENSHOTS, True)
SECRET = b"dashboard tests"

expect.set_options(timeout=10_000)


def fast_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Jobs of 20 items take about a second; the worker looks for work often."""
    settings = Settings(
        db_path=str(tmp_path / "jobs.sqlite3"),
        secret=SECRET,
        step_seconds=0.05,
        poll_seconds=0.1,
        lease_seconds=3.0,
        heartbeat_seconds=0.5,
        relay_poll=0.02,
    )
    return replace(settings, **overrides)


def worker_env(settings: Settings) -> dict[str, str]:
    """The ``JOBS_*`` variables a worker process reads, for `settings`."""
    return {
        "JOBS_DB": settings.db_path,
        "JOBS_CONCURRENCY": str(settings.concurrency),
        "JOBS_STEP_SECONDS": str(settings.step_seconds),
        "JOBS_FAILURE_RATE": str(settings.failure_rate),
        "JOBS_LEASE_SECONDS": str(settings.lease_seconds),
        "JOBS_POLL_SECONDS": str(settings.poll_seconds),
        "JOBS_HEARTBEAT_SECONDS": str(settings.heartbeat_seconds),
    }


class WorkerProcess:
    """``python -m examples.jobs_dashboard.worker``, as scripts/demo.sh starts it, on the
    database of `settings`. `start` returns once its first heartbeat is in the database."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_path = log_dir / f"worker-{id(self):x}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> WorkerProcess:
        path = os.pathsep.join([str(ROOT / "tests"), str(ROOT), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, **worker_env(self.settings)}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "examples.jobs_dashboard.worker"],
                cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self._registered():  # another process: nothing to wait on but the database
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the worker did not start:\n{self.logs()}")
            time.sleep(0.05)
        return self

    def _registered(self) -> bool:
        assert self.process is not None
        try:
            with sqlite3.connect(self.settings.db_path) as c:
                sql = "SELECT 1 FROM workers WHERE pid = ? AND stopped_at IS NULL"
                return c.execute(sql, (self.process.pid,)).fetchone() is not None
        except sqlite3.OperationalError:  # no table yet
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: it hands its jobs over and says it stopped."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """``kill -9``: no goodbye, its jobs stay leased until the lease runs out."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def services(app: Starlette) -> Services:
    found: Services = app.state.services
    return found


def http_client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


@asynccontextmanager
async def signed_in(app: Starlette, user: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of `app` with `user`'s session cookie."""
    async with http_client(app) as client:
        response = await client.post("/api/login", json={"user": user, "password": user})
        assert response.status_code == 204, response.text
        yield client


class Dashboard:
    """A dashboard served by uvicorn on 127.0.0.1, in a thread of this process, and its
    worker process."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.server = UvicornThread(self.app).start()
        self.url = self.server.http_url
        self.worker = WorkerProcess(settings, log_dir).start()

    def stop(self) -> None:
        self.worker.stop()
        self.server.stop()


def open_dashboard(context: BrowserContext, path: str = "/") -> Page:
    """A new tab on `path`, once its live connection is up. Marks the page to detect reloads."""
    page = context.new_page()
    page.goto(path)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")
    return page


def not_reloaded(page: Page) -> bool:
    return page.evaluate("window.notReloaded === true") is True


def row(page: Page, name: str) -> Locator:
    return page.locator(".job", has_text=name)


def stat(page: Page, key: str) -> Locator:
    return page.locator(f'[data-stat="{key}"] .value')


def start_job(page: Page, name: str, items: int = 20, *, fail: bool = False) -> None:
    form = page.get_by_role("form", name="New job")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Items").fill(str(items))
    form.get_by_label("Fail half-way").set_checked(fail)
    form.get_by_role("button", name="Start").click()


def screenshot(page: Page, name: str) -> None:
    """Save dashboard-<name>.png in `SCREENSHOTS` (docs/img for docs/jobs-dashboard.md)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"dashboard-{name}.png", animations="disabled")

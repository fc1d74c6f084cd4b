"""Helpers of the dashboard tests: fast settings, clients, pages, screenshots."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
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
        poll_seconds=0.2,
        lease_seconds=3.0,
        progress_window=0.1,
    )
    return replace(settings, **overrides)


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
    """A dashboard served by uvicorn on 127.0.0.1, in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        self.server = UvicornThread(self.app).start()
        self.url = self.server.http_url


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

"""Fixtures of the dashboard tests: the app in-process or over uvicorn, and headless Chromium
signed in as a demo user."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from playwright.sync_api import Browser, BrowserContext
from starlette.applications import Starlette

from examples.jobs_dashboard.app import create_app
from examples.jobs_dashboard.db import Database
from examples.jobs_dashboard.settings import Settings
from examples.jobs_dashboard.worker import Worker

from .helpers import ROOT, Dashboard, fast_settings

# -- the app in-process (API tests) ---------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fast_settings(tmp_path, step_seconds=0.002, relay_poll=0.01)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    """The app with its lifespan running (hub and relay), and a worker, on the test's event
    loop (the worker talks to the database only, as its own process does)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), anyio.create_task_group() as tasks:
        tasks.start_soon(Worker(Database(settings.db_path), settings).run)
        yield app
        tasks.cancel_scope.cancel()


# -- the app over uvicorn, and Chromium (browser tests) -------------------------------------


@pytest.fixture(scope="session")
def frontend() -> None:
    """Build the front end (esbuild: well under a second)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    subprocess.run([node, str(ROOT / "examples" / "jobs_dashboard" / "build.mjs")], check=True)


@pytest.fixture
def start_dashboard(frontend: None, tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    """`start(**settings)`: a dashboard over uvicorn, stopped after the test."""
    started: list[Dashboard] = []

    def start(**overrides: Any) -> Dashboard:
        dashboard = Dashboard(fast_settings(tmp_path, **overrides), tmp_path)
        started.append(dashboard)
        return dashboard

    yield start
    for dashboard in started:
        dashboard.stop()


@pytest.fixture
def dashboard(start_dashboard: Callable[..., Dashboard]) -> Dashboard:
    return start_dashboard()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[[str], BrowserContext]]:
    """`new_context(url)`: a fresh browser profile for the site at `url`, closed after the test."""
    opened: list[BrowserContext] = []

    def new_context(url: str) -> BrowserContext:
        context = browser.new_context(base_url=url, viewport={"width": 1200, "height": 760})
        opened.append(context)
        return context

    yield new_context
    for context in opened:
        context.close()


@pytest.fixture
def sign_in(
    new_context: Callable[[str], BrowserContext],
) -> Callable[[str, str], BrowserContext]:
    """`sign_in(url, user)`: a browser profile with that user's session cookie."""

    def sign_in(url: str, user: str) -> BrowserContext:
        context = new_context(url)
        response = context.request.post("/api/login", data={"user": user, "password": user})
        assert response.status == 204, response.text()
        return context

    return sign_in

"""Shared fixtures: every async test runs on asyncio and trio; headless Chromium.

Also the suite's own redis-server (tests/redis_server.py) and ASGI apps in uvicorn
subprocesses (tests/processes.py); a failed test's report shows the logs of the app processes
that were running and of the redis-server it used.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from durable_db import OutboxDatabase, PostgresDatabase, postgres_available
from playwright.sync_api import Browser, Playwright, sync_playwright
from processes import AppProcess, AppProcesses, running, stop_all
from redis_server import REDIS_SERVER, RedisServer, redis_server_available


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# redis-server -------------------------------------------------------------------------------

_redis_servers: dict[int, RedisServer] = {}  # id -> server, for failure reports


def _redis_server(directory: Path) -> Iterator[RedisServer]:
    if not redis_server_available():
        pytest.skip(f"{REDIS_SERVER} not found")
    server = RedisServer(directory)
    server.start()
    _redis_servers[id(server)] = server
    try:
        yield server
    finally:
        _redis_servers.pop(id(server), None)
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server shared by the session. Do not kill or pause it: see `own_redis_server`.

    Tests sharing it keep apart by key prefix (`redis_prefix`).
    """
    yield from _redis_server(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test only, which it may kill, restart or pause."""
    yield from _redis_server(tmp_path)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so that tests sharing `redis_server` do not meet."""
    return "t" + secrets.token_hex(4)


# ASGI apps in subprocesses ----------------------------------------------------------------


@pytest.fixture
def app_processes(tmp_path: Path) -> Iterator[AppProcesses]:
    """Start apps in uvicorn subprocesses: ``app_processes.start("apps.redis_app:app", ...)``.

    Every process is stopped when the test ends. For processes shared by a module, use
    `AppProcesses` in a module-scoped fixture the same way.
    """
    processes = AppProcesses(tmp_path)
    try:
        yield processes
    finally:
        processes.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when == "call":
        for process in running():
            report.sections.append((f"log of {process!r}", process.logs()))
        if {"redis_server", "own_redis_server"} & set(getattr(item, "fixturenames", ())):
            for server in _redis_servers.values():
                report.sections.append((f"log of redis-server :{server.port}", server.log[-5000:]))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_all()  # processes a crashed fixture left behind


# Headless Chromium ------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"  # Debian's: test tools cannot download browsers here
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope, not session scope: while sync Playwright is alive, its asyncio loop counts as
# running in the main thread, so asyncio tests that come after would fail ("Cannot run the event
# loop while another loop is running"), and a second sync Playwright could not start.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless, for the tests of one module."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


# Databases for durable publishing (tests/durable_db.py) ------------------------------------


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[PostgresDatabase]:
    """A database of this session's own on the local PostgreSQL, dropped at the end."""
    if not postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    database = PostgresDatabase()
    database.create()
    try:
        yield database
    finally:
        database.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox_db(request: pytest.FixtureRequest, tmp_path: Path) -> OutboxDatabase:
    """An outbox table of this test's own, in an SQLite file or in `postgres_database`."""
    postgres = None
    if request.param == "postgresql":
        postgres = request.getfixturevalue("postgres_database")
    return OutboxDatabase(request.param, postgres=postgres, directory=tmp_path)


@pytest.fixture(scope="module")
def backplane_url(redis_server: RedisServer) -> str:
    """A backplane URL of the session's redis-server, with a key prefix of the module's own."""
    return redis_server.backplane_url(prefix="m" + secrets.token_hex(4))


@pytest.fixture(scope="module")
def hub_process(backplane_url: str) -> Iterator[AppProcess]:
    """One tests/apps/redis_app.py process on `backplane_url`, for the module's tests."""
    group = AppProcesses()
    try:
        (server,) = group.start("apps.redis_app:app", env={"LIVEUPDATES_BACKPLANE": backplane_url})
        yield server
    finally:
        group.close()

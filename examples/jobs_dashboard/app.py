"""The live jobs dashboard's web process: a Starlette app, its hub, its outbox relay, its pages.

Run it with ``bash scripts/demo.sh`` (which starts the worker process too),
``python -m examples.jobs_dashboard``, or
``uvicorn --factory --ws-max-size 131072 --ws-per-message-deflate false
examples.jobs_dashboard.app:create_app`` (settings from ``JOBS_*`` variables, see
`settings.py`), and the worker with ``python -m examples.jobs_dashboard.worker``.
docs/jobs-dashboard.md walks through it.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from liveupdates import Hub
from liveupdates.asgi import SSEEndpoint, WebSocketEndpoint, client_files
from liveupdates.backplanes import Backplane
from liveupdates.durable import OutboxRelay

from . import db
from .api import Api, json
from .auth import Sessions, authorize
from .db import Conflict, Database, NotFound
from .settings import Settings

logger = logging.getLogger("jobs_dashboard")
STATIC = Path(__file__).parent / "static"
BUNDLE = STATIC / "build" / "app.js"


@dataclass(frozen=True)
class Services:
    """What the app is made of (tests reach it as ``app.state.services``)."""

    settings: Settings
    db: Database
    hub: Hub
    relay: OutboxRelay
    process: str  # this process's name among those sharing the database


def create_app(
    settings: Settings | None = None, *, backplane: Backplane | None = None
) -> Starlette:
    """The app; `settings` default to the environment's, `backplane` to `settings.backplane`."""
    settings = settings or Settings.from_env()
    database = Database(settings.db_path)
    database.setup()
    sessions = Sessions(settings.session_secret(), settings.session_seconds)
    hub = Hub(
        backplane or settings.backplane, authenticate=sessions.authenticate, authorize=authorize
    )
    # Publishes the events that every process (this one, the workers) committed into the
    # outbox table. With Redis, each web process runs one: a row is claimed by one of them.
    relay = OutboxRelay(
        f"sqlite:///{Path(settings.db_path).resolve()}", hub.backplane,
        poll_interval=settings.relay_poll, lease=settings.relay_lease,
    )  # fmt: skip
    process = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
    live_urls, live_endpoints = live_routes(hub)
    api = Api(hub, database, sessions, settings, process, live_urls)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub, relay, anyio.create_task_group() as tasks:  # the relay stops first
            tasks.start_soon(report_connections, database, hub, process)
            yield
            tasks.cancel_scope.cancel()

    app = Starlette(
        routes=[*api.routes(), *live_endpoints, *page_routes()],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: error,
            NotFound: error,
            Conflict: error,
            ValueError: error,
        },
    )
    app.state.services = Services(settings, database, hub, relay, process)
    return app


def live_routes(hub: Hub) -> tuple[dict[str, str], list[BaseRoute]]:
    """The WebSocket endpoint, its Server-Sent Events fallback and the browser client's files,
    and the URLs the page connects to."""
    routes: list[BaseRoute] = [
        WebSocketRoute("/live", WebSocketEndpoint(hub)),
        Route("/live/sse", SSEEndpoint(hub)),
        Mount("/static/liveupdates", client_files),
    ]
    return {"url": "/live", "sse_url": "/live/sse"}, routes


def page_routes() -> list[BaseRoute]:
    async def page(request: Request) -> Response:
        if not BUNDLE.exists():
            hint = "The front end is not built: run `node examples/jobs_dashboard/build.mjs`.\n"
            return PlainTextResponse(hint, 503)
        return FileResponse(STATIC / "index.html")

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return [
        Route("/", page),
        Route("/login", page),
        Route("/jobs/{id:int}", page),
        Route("/healthz", health),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]


async def error(request: Request, exc: Exception) -> Response:
    """Errors as JSON: ``{"error": "..."}``."""
    match exc:
        case HTTPException():
            return json({"error": exc.detail}, exc.status_code)
        case NotFound():  # not yours, or not there: the same answer
            return json({"error": "no such job"}, 404)
        case ValueError():  # a bad query parameter
            return json({"error": str(exc)}, 400)
        case _:
            return json({"error": str(exc)}, 409)


async def report_connections(database: Database, hub: Hub, process: str) -> None:
    """Write this process's connection count every 2 s, for the admin page of every process."""
    try:
        while True:
            connections = hub.stats().connections
            try:
                await database.write(
                    partial(db.report_process, process=process, connections=connections)
                )
            except Exception:
                logger.exception("cannot report the connection count")
            await anyio.sleep(2)
    finally:
        with anyio.CancelScope(shield=True):
            await database.write(lambda c: db.forget_process(c, process))

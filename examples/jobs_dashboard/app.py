"""The live jobs dashboard: a Starlette app, its hub, its worker and its pages.

Run it with ``bash scripts/demo.sh``, ``python -m examples.jobs_dashboard``, or
``uvicorn --factory --ws-max-size 131072 --ws-per-message-deflate false
examples.jobs_dashboard.app:create_app`` (settings from ``JOBS_*`` variables, see
`settings.py`). docs/jobs-dashboard.md walks through it.
"""

from __future__ import annotations

import logging
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

from liveupdates import BackplaneError, Hub
from liveupdates.asgi import SSEEndpoint, WebSocketEndpoint, client_files
from liveupdates.backplanes import Backplane

from . import db, live
from .api import Api, json
from .auth import Sessions, authorize
from .db import Conflict, Database, NotFound
from .settings import Settings
from .worker import Worker

logger = logging.getLogger("jobs_dashboard")
STATIC = Path(__file__).parent / "static"
BUNDLE = STATIC / "build" / "app.js"


@dataclass(frozen=True)
class Services:
    """What the app is made of (tests reach it as ``app.state.services``)."""

    settings: Settings
    db: Database
    hub: Hub
    worker: Worker


def create_app(
    settings: Settings | None = None, *, backplane: Backplane | None = None
) -> Starlette:
    """The app; `settings` default to the environment's, `backplane` to `settings.backplane`."""
    settings = settings or Settings.from_env()
    database = Database(settings.db_path)
    database.setup()
    sessions = Sessions(settings.secret, settings.session_seconds)
    hub = Hub(
        backplane or settings.backplane,
        authenticate=sessions.authenticate,
        authorize=authorize,
        throttle=live.throttle_rules(settings.progress_window),
    )
    worker = Worker(database, hub, settings)
    live_urls, live_endpoints = live_routes(hub)
    api = Api(hub, database, sessions, worker, settings, live_urls)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with hub, anyio.create_task_group() as tasks:
            if settings.worker:
                tasks.start_soon(worker.run)
            tasks.start_soon(report_connections, database, hub, worker.id)
            yield
            tasks.cancel_scope.cancel()

    app = Starlette(
        routes=[*api.routes(), *live_endpoints, *page_routes()],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: error,
            NotFound: error,
            Conflict: error,
            BackplaneError: backplane_unavailable,
        },
    )
    app.state.services = Services(settings, database, hub, worker)
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
        case _:
            return json({"error": str(exc)}, 409)


UNAVAILABLE = (
    "Saved, but live updates are unavailable for a moment (the backplane, Redis, did not "
    "answer). The update may still have gone out; if not, every page catches up by itself "
    "once it is back. There is no need to do this again."
)


async def backplane_unavailable(request: Request, exc: Exception) -> Response:
    """503 when a change was committed but publishing its events failed (Redis is down).

    Every write publishes after its commit (`hub.transaction()`): the change is saved. The
    publish may still have happened (it timed out after Redis got it), and resending an
    invalidation is harmless; but nobody needs to, nor to repeat the request (which would
    repeat the change): once the backplane is back, the hub tells the clients of every stream
    it could not reach to refetch (a resync).
    """
    logger.warning("%s %s: saved, but not published: %s", request.method, request.url.path, exc)
    return json({"error": UNAVAILABLE}, 503)  # (no Retry-After: nothing to retry)


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

"""The REST API. Users see and act on their own jobs only; admins on every job.

Reads go straight to the database. Writes run in a transaction that also writes the events
describing the change into the outbox (`live`): the relay publishes them once committed, so a
browser that refetches sees the change, and a process that dies right after its commit loses
no event.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from liveupdates import Hub

from . import db, live
from .auth import COOKIE, Session, Sessions, check_password
from .db import Database
from .settings import Settings

T = TypeVar("T")


class NewJobs(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "job"
    items: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 20
    fail: bool = False  # fail half-way, on purpose
    count: Annotated[int, msgspec.Meta(ge=1, le=500)] = 1


class Login(msgspec.Struct):
    user: str
    password: str


def json(value: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status, media_type="application/json")


async def body(request: Request, type: type[T]) -> T:
    try:
        return msgspec.json.decode(await request.body(), type=type)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise HTTPException(422, str(exc)) from None


class Api:
    def __init__(
        self,
        hub: Hub,
        database: Database,
        sessions: Sessions,
        settings: Settings,
        process: str,
        live_urls: dict[str, str],
    ) -> None:
        self.live_urls = live_urls
        self.hub = hub
        self.db = database
        self.sessions = sessions
        self.settings = settings
        self.process = process

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/login", self.login, methods=["POST"]),
            Route("/api/logout", self.logout, methods=["POST"]),
            Route("/api/me", self.me),
            Route("/api/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/jobs", self.create_jobs, methods=["POST"]),
            Route("/api/jobs/{id:int}", self.get_job),
            Route("/api/jobs/{id:int}/history", self.history),
            Route("/api/jobs/{id:int}/cancel", self.cancel, methods=["POST"]),
            Route("/api/jobs/{id:int}/retry", self.retry, methods=["POST"]),
            Route("/api/stats", self.stats),
            Route("/api/admin/connections", self.connections),
            Route("/api/admin/workers", self.workers),
        ]

    def session(self, request: Request) -> Session:
        session = self.sessions.of(request)
        if session is None:
            raise HTTPException(401, "sign in first")
        return session

    def scope(self, request: Request) -> str | None:
        """Whose jobs this request may see and touch: the user's, or everyone's (None)."""
        session = self.session(request)
        return None if session.admin else session.user

    def admin(self, request: Request) -> None:
        if not self.session(request).admin:
            raise HTTPException(403, "admins only")

    # -- sessions -----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        credentials = await body(request, Login)
        account = check_password(credentials.user, credentials.password)
        if account is None:
            raise HTTPException(401, "wrong user name or password")
        response = Response(status_code=204)
        self.sessions.set_cookie(response, account.user)
        return response

    async def logout(self, request: Request) -> Response:
        # The cookie is stateless: live connections opened with it last until it expires.
        response = Response(status_code=204)
        response.delete_cookie(COOKIE)
        return response

    async def me(self, request: Request) -> Response:
        session = self.session(request)
        return json(
            {
                "user": session.user,
                "admin": session.admin,
                "live": self.live_urls,
                "finished_ttl_ms": int(self.settings.finished_ttl * 1000),
                "page_size": self.settings.page_size,
                "heartbeat_ms": int(self.settings.heartbeat_seconds * 1000),
                "lease_ms": int(self.settings.lease_seconds * 1000),
                "polling_after_ms": int(self.settings.polling_after * 1000),
                "polling_ms": int(self.settings.polling_fallback * 1000),
            }
        )

    # -- jobs ---------------------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> Response:
        """A page of jobs, newest first: ``?filter=active|failed|completed|all`` (all),
        ``?before=<id>`` (the next page: older than that job), ``?limit=`` (up to
        `page_size`). ``X-Total-Count`` says how many jobs the filter has, over every page."""
        owner, query = self.scope(request), request.query_params
        filter, ttl = query.get("filter", "all"), self.settings.finished_ttl
        try:
            before = int(query["before"]) if "before" in query else None
            limit = min(int(query.get("limit", self.settings.page_size)), self.settings.page_size)
        except ValueError:
            raise HTTPException(400, "before and limit are whole numbers") from None
        if limit < 1:
            raise HTTPException(400, "limit is at least 1")

        def read(c: sqlite3.Connection) -> tuple[list[db.Job], int]:
            jobs = db.list_jobs(
                c, owner, filter=filter, before=before, limit=limit, finished_ttl=ttl
            )
            return jobs, db.count_jobs(c, owner, filter=filter, finished_ttl=ttl)

        jobs, total = await self.db.read(read)
        response = json(jobs)
        response.headers["X-Total-Count"] = str(total)
        return response

    async def get_job(self, request: Request) -> Response:
        owner, job_id = self.scope(request), request.path_params["id"]
        return json(await self.db.read(lambda c: db.get_job(c, job_id, owner)))

    async def history(self, request: Request) -> Response:
        owner, job_id = self.scope(request), request.path_params["id"]

        def read(c: sqlite3.Connection) -> list[db.Point]:
            db.get_job(c, job_id, owner)  # yours, or NotFound
            return db.history(c, job_id)

        return json(await self.db.read(read))

    async def create_jobs(self, request: Request) -> Response:
        user = self.session(request).user
        new = await body(request, NewJobs)
        fail_at = max(1, new.items // 2) if new.fail else None

        def create(c: sqlite3.Connection) -> list[db.Job]:
            jobs = db.create_jobs(c, user, new.name, new.items, fail_at, new.count)
            live.jobs_changed(c, jobs)  # committed with the jobs; the relay publishes it
            return jobs

        return json(await self.db.write(create), 201)

    async def cancel(self, request: Request) -> Response:
        owner, job_id = self.scope(request), request.path_params["id"]

        def cancel(c: sqlite3.Connection) -> db.Job:
            job = db.cancel(c, job_id, owner)
            live.jobs_changed(c, [job])
            return job

        return json(await self.db.write(cancel))

    async def retry(self, request: Request) -> Response:
        owner, job_id = self.scope(request), request.path_params["id"]

        def retry(c: sqlite3.Connection) -> db.Job:
            job = db.retry(c, job_id, owner)
            live.jobs_changed(c, [job])
            return job

        return json(await self.db.write(retry))

    async def stats(self, request: Request) -> Response:
        owner = self.scope(request)
        return json(await self.db.read(lambda c: db.stats(c, owner)))

    async def connections(self, request: Request) -> Response:
        """Live connections per process: this one's hub now, the others' last reports."""
        self.admin(request)
        processes = await self.db.read(lambda c: db.live_connections(c, fresh=10))
        processes[self.process] = self.hub.stats().connections
        return json({"connections": sum(processes.values()), "processes": processes})

    async def workers(self, request: Request) -> Response:
        """The worker processes' health: last heartbeat, jobs held, stopped or not."""
        self.admin(request)
        workers = await self.db.read(db.workers)
        return json({"now": time.time(), "workers": workers})

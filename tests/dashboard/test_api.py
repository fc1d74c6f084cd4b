"""The dashboard's backend over its REST API and live connection, in-process, on asyncio and
trio: isolation between users, publish after commit, and the worker."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from redis_server import RedisServer
from starlette.applications import Starlette

from examples.jobs_dashboard import db
from examples.jobs_dashboard.app import create_app
from examples.jobs_dashboard.auth import COOKIE, Sessions
from examples.jobs_dashboard.settings import Settings
from examples.jobs_dashboard.worker import Worker
from liveupdates.backplanes import MemoryBackplane, Publication
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

from .helpers import SECRET, http_client, services, signed_in

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def live(app: Starlette, user: str) -> AsyncIterator[AsgiWebSocket]:
    """A live connection of `user` (their session cookie, as a browser sends it)."""
    cookie = Sessions(SECRET, 3600).issue(user)
    async with connect_asgi(app, "/live", headers=[("cookie", f"{COOKIE}={cookie}")]) as ws:
        await ws.send_json({"type": "hello", "v": 1})
        stream = "user:" + user
        await ws.receive_until(lambda m: m["type"] == "subscribed" and m["stream"] == stream)
        yield ws


async def until(ws: AsgiWebSocket, predicate: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Every message up to and including the first that matches `predicate`."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(10):
        while not seen or not predicate(seen[-1]):
            seen.append(await ws.receive_message())
    return seen


def finished(job_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["type"] == "job.finished" and m["id"] == job_id


# -- isolation ------------------------------------------------------------------------------


async def test_users_see_and_touch_only_their_own_jobs_and_admins_every_job(app: Starlette) -> None:
    async with (
        signed_in(app, "alice") as alice,
        signed_in(app, "bob") as bob,
        signed_in(app, "admin") as admin,
    ):
        await isolation(app, alice, bob, admin)


async def isolation(
    app: Starlette, alice: httpx.AsyncClient, bob: httpx.AsyncClient, admin: httpx.AsyncClient
) -> None:
    job = (await alice.post("/api/jobs", json={"name": "alice's", "items": 1000})).json()[0]
    mine = f"/api/jobs/{job['id']}"

    assert [j["id"] for j in (await alice.get("/api/jobs")).json()] == [job["id"]]
    assert (await bob.get("/api/jobs")).json() == []
    assert (await bob.get("/api/stats")).json()["total"] == 0
    for method, path in [
        ("GET", mine), ("GET", mine + "/history"), ("POST", mine + "/cancel"),
        ("POST", mine + "/retry"),
    ]:  # fmt: skip
        response = await bob.request(method, path)
        assert response.status_code == 404, (method, path)  # not even its existence
    assert (await bob.get("/api/admin/connections")).status_code == 403

    assert [j["owner"] for j in (await admin.get("/api/jobs")).json()] == ["alice"]
    assert (await admin.get("/api/stats")).json()["total"] == 1
    assert (await admin.post(mine + "/cancel")).json()["status"] == "cancelled"
    assert (await admin.get("/api/admin/connections")).json()["connections"] == 0

    async with http_client(app) as anonymous:
        assert (await anonymous.get("/api/jobs")).status_code == 401
        assert (await anonymous.post("/api/jobs", json={})).status_code == 401
        forged = Sessions(b"another secret", 3600).issue("admin")
        anonymous.cookies.set(COOKIE, forged)
        assert (await anonymous.get("/api/jobs")).status_code == 401
        wrong = await anonymous.post("/api/login", json={"user": "alice", "password": "bob"})
        assert wrong.status_code == 401


def test_session_cookies_are_signed_and_expire() -> None:
    sessions = Sessions(SECRET, 3600)
    cookie = sessions.issue("alice")
    session = sessions.verify(cookie)
    assert session is not None and (session.user, session.admin) == ("alice", False)
    user, expires, signature = cookie.split(".")
    assert sessions.verify(f"admin.{expires}.{signature}") is None  # another user
    assert sessions.verify(f"{user}.{int(expires) + 1}.{signature}") is None  # longer life
    assert Sessions(SECRET, -1).verify(Sessions(SECRET, -1).issue("alice")) is None  # expired
    assert sessions.verify(Sessions(SECRET, 3600).issue("mallory")) is None  # no such user
    assert sessions.verify("garbage") is None


async def test_the_session_secret_is_made_once_and_kept_beside_the_database(
    settings: Settings,
) -> None:
    """No JOBS_SECRET: a restart (another app on the same database) keeps everyone signed in."""
    settings = replace(settings, secret=b"")
    first = create_app(settings)
    async with signed_in(first, "alice") as alice:
        cookie = alice.cookies[COOKIE]
    secret = Path(settings.db_path).parent / "secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_bytes()) == 64
    restarted = create_app(Settings.from_env({"JOBS_DB": settings.db_path}))
    async with http_client(restarted) as client:
        client.cookies.set(COOKIE, cookie)
        assert (await client.get("/api/me")).json()["user"] == "alice"
    elsewhere = create_app(
        replace(settings, db_path=str(Path(settings.db_path).parent / "x" / "db"))
    )
    async with http_client(elsewhere) as client:  # another app's data: another secret
        client.cookies.set(COOKIE, cookie)
        assert (await client.get("/api/me")).status_code == 401


async def test_only_admins_may_join_the_admin_topic(app: Starlette) -> None:
    for user, allowed in (("bob", False), ("admin", True)):
        async with live(app, user) as ws:
            await ws.send_json({"type": "subscribe", "topic": "admin", "id": 1})
            reply = await ws.receive_until(lambda m: m.get("id") == 1)
            assert reply["type"] == ("subscribed" if allowed else "error")


async def test_a_users_live_connection_gets_their_job_events_only(app: Starlette) -> None:
    async with live(app, "alice") as alice, live(app, "bob") as bob:
        async with signed_in(app, "bob") as client:
            job = (await client.post("/api/jobs", json={"items": 3})).json()[0]
        await until(bob, finished(job["id"]))
        await bob.send_json({"type": "ping"})
        await bob.receive_until(lambda m: m["type"] == "pong")
        await alice.send_json({"type": "ping"})  # everything published so far is before the pong
        assert [m["type"] for m in await until(alice, lambda m: m["type"] == "pong")] == ["pong"]


# -- publish after commit -------------------------------------------------------------------


class Spy(MemoryBackplane):
    """Records, for every publication, the jobs as another connection sees them at that time."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.seen: list[tuple[str, Any, dict[int, tuple[str, int]]]] = []
        self.changed = anyio.Event()

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        with sqlite3.connect(self.path) as c:
            rows = c.execute("SELECT id, status, attempt FROM jobs").fetchall()
        event = msgspec.json.decode(body)
        self.seen.append((stream, event, {id: (status, attempt) for id, status, attempt in rows}))
        self.changed.set()
        self.changed = anyio.Event()
        return await super().publish(stream, body, slot)

    async def wait(self, count: int) -> None:
        with anyio.fail_after(5):
            while len(self.seen) < count:
                await self.changed.wait()


async def test_every_change_is_published_after_its_transaction_commits(settings: Settings) -> None:
    db.Database(settings.db_path).setup()
    spy = Spy(settings.db_path)
    app = create_app(settings, backplane=spy)
    async with app.router.lifespan_context(app), signed_in(app, "alice") as alice:
        job = (await alice.post("/api/jobs", json={"items": 5})).json()[0]
        await spy.wait(2)  # user:alice and topic:admin
        await alice.post(f"/api/jobs/{job['id']}/cancel")
        await spy.wait(4)
        await alice.post(f"/api/jobs/{job['id']}/retry")
        await spy.wait(6)
        assert (await alice.post(f"/api/jobs/{job['id']}/cancel")).status_code == 200
        await spy.wait(8)
        refused = await alice.post(f"/api/jobs/{job['id']}/cancel")  # rolled back: nothing sent
        assert refused.status_code == 409

        streams = ("user:alice", "topic:admin")
        assert [(stream, event["keys"]) for stream, event, _ in spy.seen] == [
            (stream, [["jobs"], ["stats"]]) for _ in range(4) for stream in streams
        ]
        states = [jobs[job["id"]] for _, _, jobs in spy.seen[::2]]
        assert states == [("queued", 1), ("cancelled", 1), ("queued", 2), ("cancelled", 2)]


@pytest.mark.redis
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # redis.asyncio
async def test_a_change_saved_while_redis_is_down_is_published_once_it_is_back(
    settings: Settings, own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The change and its event are committed together: the request succeeds while Redis is
    down, the relay logs and retries, and once Redis is back the event reaches the page."""
    url = own_redis_server.backplane_url(prefix="dash", health_check_interval=0.1, timeout=0.5)
    app = create_app(replace(settings, backplane=url))
    hub = services(app).hub
    async with (
        app.router.lifespan_context(app),
        signed_in(app, "alice") as alice,
        live(app, "alice") as ws,
    ):
        own_redis_server.kill9()
        with anyio.fail_after(10):
            while hub.backplane.connected:  # type: ignore[attr-defined]  # noqa: ASYNC110
                await anyio.sleep(0.01)
        saved = await alice.post("/api/jobs", json={"name": "while down", "items": 5})
        assert saved.status_code == 201
        jobs = (await alice.get("/api/jobs")).json()
        assert [job["name"] for job in jobs] == ["while down"]
        relay = services(app).relay
        with anyio.fail_after(10):
            await relay.wait_for(lambda stats: stats.errors > 0)
        assert "outbox relay (liveupdates_outbox): " in caplog.text
        with sqlite3.connect(settings.db_path) as c:  # user:alice and topic:admin, kept
            assert c.execute("SELECT count(*) FROM liveupdates_outbox").fetchone() == (2,)

        own_redis_server.start()
        with anyio.fail_after(15):  # the relay publishes the rows, then deletes them
            await relay.wait_for(lambda stats: stats.published >= 2 and stats.pending == 0)
        with sqlite3.connect(settings.db_path) as c:
            assert c.execute("SELECT count(*) FROM liveupdates_outbox").fetchone() == (0,)
        # alice's page hears of it: the event itself, or (when it reached Redis before this
        # process listened again to the restarted server) a resync of her stream
        with anyio.fail_after(15):
            await ws.receive_until(
                lambda m: (
                    (m["type"], m.get("keys")) == ("invalidate", [["jobs"], ["stats"]])
                    or (m["type"], m["stream"]) == ("resync", "user:alice")
                )
            )


# -- the worker -----------------------------------------------------------------------------


async def test_the_worker_publishes_progress_then_completion(app: Starlette) -> None:
    async with live(app, "alice") as ws, signed_in(app, "alice") as alice:
        job = (await alice.post("/api/jobs", json={"name": "report", "items": 8})).json()[0]
        key = ["jobs", job["id"], "progress"]
        messages = await until(ws, finished(job["id"]))
        done = [m["data"]["done"] for m in messages if m["type"] == "set" and m["key"] == key]
        if not done or done[-1] < 8:  # throttled: the last word comes at the window's end
            messages = await until(ws, lambda m: m["type"] == "set" and m["data"]["done"] == 8)
            done += [m["data"]["done"] for m in messages if m["type"] == "set"]
        assert done == sorted(done) and done[-1] == 8
        assert messages[-1]["type"] in ("job.finished", "set")
        state = (await alice.get(f"/api/jobs/{job['id']}")).json()
        assert (state["status"], state["done"], state["error"]) == ("completed", 8, None)
        assert (await alice.get("/api/stats")).json() | {"total": 1} == {
            "total": 1, "queued": 0, "running": 0, "completed": 1, "failed": 0, "cancelled": 0,
            "items": 8,
        }  # fmt: skip
        history = [p["message"] for p in (await alice.get(f"/api/jobs/{job['id']}/history")).json()]
        assert history == [
            "queued", "started", *(f"processing item {n} of 8" for n in range(1, 9)), "completed",
        ]  # fmt: skip


async def test_a_job_flagged_to_fail_fails_half_way_with_its_error(app: Starlette) -> None:
    async with live(app, "alice") as ws, signed_in(app, "alice") as alice:
        job = (await alice.post("/api/jobs", json={"items": 10, "fail": True})).json()[0]
        event = (await until(ws, finished(job["id"])))[-1]
        assert (event["status"], event["error"]) == ("failed", "item 5: failed on purpose")
        state = (await alice.get(f"/api/jobs/{job['id']}")).json()
        assert (state["status"], state["done"], state["error"]) == ("failed", 4, event["error"])
        history = (await alice.get(f"/api/jobs/{job['id']}/history")).json()
        assert history[-1]["message"] == "failed: item 5: failed on purpose"


@pytest.mark.parametrize("settings_overrides", [{"failure_rate": 1.0}])
async def test_random_failures_follow_the_failure_rate(
    settings: Settings, settings_overrides: dict[str, Any]
) -> None:
    settings = replace(settings, **settings_overrides)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        live(app, "bob") as ws,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(Worker(db.Database(settings.db_path), settings).run)
        async with signed_in(app, "bob") as bob:
            job = (await bob.post("/api/jobs", json={"items": 10})).json()[0]
        event = (await until(ws, finished(job["id"])))[-1]
        assert event["status"] == "failed" and event["error"].startswith("item 1: ")
        tg.cancel_scope.cancel()


async def test_random_failures_are_off_by_default(app: Starlette) -> None:
    assert Settings().failure_rate == Settings.from_env({}).failure_rate == 0.0
    async with live(app, "bob") as ws, signed_in(app, "bob") as bob:
        jobs = (await bob.post("/api/jobs", json={"items": 50, "count": 20})).json()
        statuses: dict[int, str] = {}
        with anyio.fail_after(20):
            while len(statuses) < len(jobs):
                message = await ws.receive_message()
                if message["type"] == "job.finished":
                    statuses[message["id"]] = message["status"]
        assert statuses == {job["id"]: "completed" for job in jobs}  # 1,000 items, no failure


async def test_a_job_whose_process_died_is_resumed_where_it_stopped(settings: Settings) -> None:
    database = db.Database(settings.db_path)
    database.setup()
    (job,) = database.run(lambda c: db.create_jobs(c, "alice", "orphan", 6, None))
    claimed = database.run(lambda c: db.claim(c, "dead-process", lease=-1))
    assert claimed is not None
    database.run(lambda c: db.advance(c, claimed[0], 3, "processing item 3 of 6", lease=-1))

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        live(app, "alice") as ws,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(Worker(database, settings).run)  # its lease ran out: the job is taken over
        await until(ws, finished(job.id))
        tg.cancel_scope.cancel()
    messages = [p.message for p in database.run(lambda c: db.history(c, job.id))]
    assert messages[-5:] == [
        "resumed", "processing item 4 of 6", "processing item 5 of 6", "processing item 6 of 6",
        "completed",
    ]  # fmt: skip


async def test_a_stopping_worker_hands_its_jobs_over_at_once(settings: Settings) -> None:
    settings = replace(settings, step_seconds=0.05)
    database = db.Database(settings.db_path)
    app = create_app(settings)
    async with app.router.lifespan_context(app), live(app, "alice") as ws:
        async with signed_in(app, "alice") as alice:
            job = (await alice.post("/api/jobs", json={"items": 1000})).json()[0]
        async with anyio.create_task_group() as tg:
            tg.start_soon(Worker(database, settings).run)
            await ws.receive_until(lambda m: m["type"] == "set")  # it is running
            tg.cancel_scope.cancel()
        # the page is told: its list shows the job waiting for a worker
        await ws.receive_until(lambda m: m["type"] == "invalidate" and ["jobs"] in m["keys"])
    row = database.run(
        lambda c: c.execute("SELECT status, lease_until, message FROM jobs").fetchone()
    )
    assert tuple(row) == ("running", 0, "waiting for a worker")  # another may resume it now
    claimed = database.run(lambda c: db.claim(c, "next-process", lease=10))
    assert claimed is not None and claimed[0].id == job["id"]

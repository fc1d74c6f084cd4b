"""Django, end to end: the example project (examples/django_app) under uvicorn in a process of
its own, through `liveupdates.integrations.django.get_asgi_application` (lifespan, routing),
connections authenticated by Django's session cookie, events published after the commit and
through the outbox."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect
from processes import ROOT, AppProcess, AppProcesses
from support import Client, ws_client

pytestmark = pytest.mark.anyio
PASSWORD = "correct horse battery"


def django(database: Path, *args: str, env: dict[str, str] | None = None) -> None:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    subprocess.run(
        [sys.executable, "-m", "django", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {}), "PYTHONPATH": path, "DJANGO_DB": str(database),
             "DJANGO_SETTINGS_MODULE": "examples.django_app.settings"},
        check=True,
        capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppProcess]:
    directory = tmp_path_factory.mktemp("django")
    database = directory / "db.sqlite3"
    django(database, "migrate", "--noinput")
    for name in ("alice", "bob"):
        django(
            database, "createsuperuser", "--noinput", "--username", name,
            "--email", f"{name}@example.com",
            env={"DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )  # fmt: skip
    processes = AppProcesses(directory)
    (server,) = processes.start(
        "examples.django_app.asgi:application",
        env={"DJANGO_DB": str(database), "DJANGO_SETTINGS_MODULE": "examples.django_app.settings"},
    )
    yield server
    processes.close()


@asynccontextmanager
async def logged_in(
    server: AppProcess, name: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Client, str]]:
    """An HTTP session of `name` and a WebSocket with its session cookie, after `welcome`."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        reply = await http.post("/login", data={"username": name, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        cookie = "sessionid=" + http.cookies["sessionid"]
        async with ws_client(server, headers={"cookie": cookie}) as client:
            await client.send({"type": "hello"})
            with anyio.fail_after(10):
                welcome = await client.until(lambda m: m["type"] == "welcome")
            yield http, client, welcome["user"]


async def closed_with(client: Client) -> tuple[list[dict[str, Any]], int]:
    messages: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(10):
            while True:
                messages.append(await client.receive())
    except WebSocketDisconnect as exc:
        return messages, exc.code


async def test_the_session_cookie_authenticates_the_connection(server: AppProcess) -> None:
    async with logged_in(server, "alice") as (http, client, user):
        login = await http.post("/login", data={"username": "alice", "password": PASSWORD})
        assert user == login.json()["user"]
        with anyio.fail_after(10):
            joined = await client.until(lambda m: m.get("stream") == f"user:{user}")
        assert joined["type"] == "subscribed"


@pytest.mark.parametrize("cookie", [None, "sessionid=not-a-session"])
async def test_no_login_closes_with_4401(server: AppProcess, cookie: str | None) -> None:
    async with ws_client(server, headers={"cookie": cookie} if cookie else {}) as client:
        await client.send({"type": "hello"})
        assert await closed_with(client) == ([], 4401)


async def test_published_after_the_commit_and_never_for_a_rollback(server: AppProcess) -> None:
    async with logged_in(server, "alice") as (http, client, user):
        failed = await http.post("/jobs", params={"via": "fail"}, data={"title": "lost"})
        assert failed.status_code == 409
        created = await http.post("/jobs", data={"title": "kept"})
        assert created.status_code == 201
        with anyio.fail_after(10):
            (event,) = await client.events(1)
        job = created.json()["id"]
        assert (event["stream"], event["keys"]) == (f"user:{user}", [["jobs"], ["job", job]])
        listed = await http.get("/jobs")  # what the client refetches is committed
        assert [j["title"] for j in listed.json()["jobs"]][-1] == "kept"


async def test_the_outbox_relay_runs_in_the_lifespan(server: AppProcess) -> None:
    async with logged_in(server, "bob") as (http, client, user):
        created = await http.post("/jobs", params={"via": "outbox"}, data={"title": "durable"})
        assert created.status_code == 201
        with anyio.fail_after(10):
            (event,) = await client.events(1)
        assert (event["stream"], event["keys"]) == (
            f"user:{user}",
            [["jobs"], ["job", created.json()["id"]]],
        )


async def test_other_requests_reach_django_and_the_client_files_are_served(
    server: AppProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/jobs")).status_code == 401  # Django's view
        assert (await http.get("/nowhere")).status_code == 404  # Django's 404
        client_js = await http.get("/static/liveupdates/client.js")
        assert client_js.status_code == 200
        assert client_js.headers["content-type"].startswith("text/javascript")

"""The application over Redis faults: Redis is killed (``kill -9``) and restarted, or paused and
resumed, while clients listen on two uvicorn processes and events are published through both.

- Every publish request is answered promptly: 200, or 503 with a clear error while Redis is
  unusable; never a hang, never a 500. The processes keep serving.
- Every client ends with every changed key refetched, as in test_recovery_property.py: for each
  key, the invalidation of its last successful publish arrived, or the whole stream was
  refetched (``resync``) after that publish started.
- The epoch changes when Redis lost the history (kill), and not when it kept it (pause).

The clients reconnect as the browser client does (tests/live_client.py), also after ``1013``
(the backplane was unavailable during their handshake). The apps are tests/apps/redis_app.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from live_client import LiveClient, publish
from processes import AppProcess, AppProcesses
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TIMINGS = {"health_check_interval": 0.1, "timeout": 0.5, "max_reconnect_delay": 0.2}
PROMPT = 3.0  # seconds within which a publish is answered (Redis commands give up after 0.5 s)
STREAMS = ("all", "topic:jobs", "user:u0", "user:u1", "user:u2")
KEYS = ("k0", "k1", "k2")
TRY_AGAIN_LATER = 1013


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def servers(
    own_redis_server: RedisServer, app_processes: AppProcesses
) -> Iterator[tuple[AppProcess, AppProcess]]:
    env = {"LIVEUPDATES_BACKPLANE": own_redis_server.backplane_url(prefix="e2e", **TIMINGS)}
    first, second = app_processes.start("apps.redis_app:app", env=env, count=2)
    yield first, second
    for server in (first, second):
        assert server.running, f"{server!r} died"
        assert "Traceback" not in server.logs(), f"{server!r} logged an exception"


class Publisher:
    """Publishes through both processes in turn, as fast as they answer, and keeps score.

    Event `n` goes to stream ``STREAMS[n % 5]`` through process ``n % 2`` and invalidates
    ``["data", key]`` and the marker ``["seq", key, n]``, which tells which publish arrived.
    """

    def __init__(self, http: httpx.AsyncClient, servers: tuple[AppProcess, AppProcess]) -> None:
        self.http, self.servers = http, servers
        self.sent = 0
        self.ok = [0, 0]  # per process
        self.unavailable = [0, 0]  # 503 answers, per process
        self.last_ok: dict[tuple[str, str], tuple[float, int]] = {}  # -> (started, n)
        self.failures: list[str] = []
        self._changed = anyio.Event()
        self._stopped = False

    async def run(self) -> None:
        while not self._stopped:
            n, self.sent = self.sent, self.sent + 1
            stream, key, index = STREAMS[n % 5], KEYS[n // 5 % 3], n % 2
            started = time.monotonic()
            with anyio.move_on_after(PROMPT):
                response = await publish(
                    self.http, self.servers[index].http_url, stream, ["data", key], ["seq", key, n]
                )
                if response.status_code == 200:
                    self.ok[index] += 1
                    self.last_ok[(stream, key)] = (started, n)
                elif response.status_code == 503 and "backplane unavailable" in response.text:
                    self.unavailable[index] += 1
                else:
                    self.failures.append(f"publish {n}: {response.status_code} {response.text}")
            if time.monotonic() - started >= PROMPT:
                self.failures.append(f"publish {n} through process {index} took {PROMPT} s")
            self._changed.set()
            self._changed = anyio.Event()
            await anyio.sleep(0.01)  # pace: about 50 publishes per second and process

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not (predicate() or self.failures):
            await self._changed.wait()
        assert self.failures == []

    def stop(self) -> None:
        self._stopped = True


def streams_of(client: LiveClient) -> tuple[str, ...]:
    return ("all", "topic:jobs", "user:" + str(client.token))


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=PROMPT * 2) as client:
        yield client


@asynccontextmanager
async def scenario(
    http: httpx.AsyncClient, servers: tuple[AppProcess, AppProcess]
) -> AsyncIterator[tuple[Publisher, list[LiveClient]]]:
    """Four clients (user u0 on both processes, u1, and u2 whose connection the test drops),
    all on topic ``jobs``, joined; and a publisher that has published 30 events."""
    one, two = servers
    clients = [
        LiveClient(one.http_url, token="u0", topics=["jobs"], name="u0@1"),
        LiveClient(two.http_url, token="u0", topics=["jobs"], name="u0@2"),
        LiveClient(two.http_url, token="u1", topics=["jobs"], name="u1@2"),
        LiveClient(one.http_url, token="u2", topics=["jobs"], name="u2@1"),
    ]
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.run)
        with anyio.fail_after(10):
            for client in clients:
                await client.wait_for(joined(client))
        publisher = Publisher(http, servers)
        tg.start_soon(publisher.run)
        with anyio.fail_after(10):
            await publisher.wait_for(lambda: min(publisher.ok) >= 15)
        yield publisher, clients
        publisher.stop()
        await settle(http, servers, clients)
        for client in clients:
            client.stop()
    for server in servers:
        figures = await stats(http, server)
        assert (figures["connected"], figures["errors"]) == (True, 0), server
    for client in clients:
        assert client.violations == []
        delivered = 0  # last publishes that arrived as such (not covered by a resync)
        for stream in streams_of(client):
            for key in KEYS:
                started, n = publisher.last_ok[(stream, key)]
                arrived = ("seq", key, n) in client.invalidated[stream]
                delivered += arrived
                assert arrived or client.refetched_since(stream, started), (
                    f"{client.name} missed publish {n} of {key} on {stream}"
                )
        assert delivered, f"{client.name}: only resyncs, no live invalidation after the fault"


def joined(client: LiveClient) -> Callable[[], bool]:
    return lambda: len(client.streams) == 3  # all, user:<id>, topic:jobs


def has_barrier(client: LiveClient, stream: str, published: float) -> Callable[[], bool]:
    return lambda: (
        ("barrier",) in client.invalidated.get(stream, {})
        or client.refetched_since(stream, published)
    )


async def settle(
    http: httpx.AsyncClient, servers: tuple[AppProcess, AppProcess], clients: list[LiveClient]
) -> None:
    """Publish a barrier on every stream and wait until every client has it (or resynced)."""
    published: dict[str, float] = {}
    with anyio.fail_after(10):
        for n, stream in enumerate(STREAMS):
            while stream not in published:
                started = time.monotonic()
                response = await publish(http, servers[n % 2].http_url, stream, ["barrier"])
                if response.status_code == 200:
                    published[stream] = started
                else:
                    await anyio.sleep(0.05)  # Redis is still coming back: retry
        for client in clients:
            for stream in streams_of(client):
                await client.wait_for(has_barrier(client, stream, published[stream]))


async def stats(http: httpx.AsyncClient, server: AppProcess) -> dict[str, Any]:
    response = await http.get(server.http_url + "/stats")
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


def epochs(clients: list[LiveClient]) -> dict[str, dict[str, str]]:
    return {c.name: {s: c.cursors[s][0] for s in streams_of(c)} for c in clients}


async def outage_seen(publisher: Publisher, dropped: LiveClient, http: httpx.AsyncClient) -> None:
    """Both processes answered 503, and a client that reconnected meanwhile got 1013."""
    with anyio.fail_after(10):
        await publisher.wait_for(lambda: min(publisher.unavailable) >= 2)
        dropped.drop()
        await dropped.wait_for(lambda: TRY_AGAIN_LATER in dropped.closes)
        for server in publisher.servers:
            assert (await stats(http, server))["connected"] is False  # and still serving


async def back_to_normal(publisher: Publisher) -> None:
    """Publishes succeed again through both processes."""
    ok = list(publisher.ok)
    with anyio.fail_after(15):
        await publisher.wait_for(
            lambda: min(b - a for a, b in zip(ok, publisher.ok, strict=True)) >= 15
        )


async def test_kill9_redis_during_publishes_then_restart(
    own_redis_server: RedisServer, servers: tuple[AppProcess, AppProcess], http: httpx.AsyncClient
) -> None:
    async with scenario(http, servers) as (publisher, clients):
        before = epochs(clients)
        own_redis_server.kill9()
        await outage_seen(publisher, clients[-1], http)
        own_redis_server.start()  # empty: the history is gone
        restarted = time.monotonic()
        await back_to_normal(publisher)
    after = epochs(clients)
    for client in clients:
        for stream in streams_of(client):
            assert after[client.name][stream] != before[client.name][stream], (client, stream)
            assert client.refetched_since(stream, restarted), (client, stream)  # resynced


async def test_pause_redis_during_publishes_then_resume(
    own_redis_server: RedisServer, servers: tuple[AppProcess, AppProcess], http: httpx.AsyncClient
) -> None:
    async with scenario(http, servers) as (publisher, clients):
        own_redis_server.pause()
        try:
            await outage_seen(publisher, clients[-1], http)
        finally:
            own_redis_server.resume()
        await back_to_normal(publisher)
    for client in clients:
        for stream in streams_of(client):
            assert len(client.epochs[stream]) == 1, (client, stream)  # Redis kept its data

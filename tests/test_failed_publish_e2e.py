"""A publish that fails while Redis is down reaches every client as a resync, also a client
that was away when the failure was announced and resumes across it (issue 19).

Timeline: clients A and B on topic ``jobs`` (A on process 1, B on process 2) get one event;
A's socket drops; Redis is paused and a publish through process 1 fails (503); Redis resumes,
process 1 announces the failed publish and B gets ``resync``; A comes back with its cursor
from before the failure and must not be told ``recovered`` with nothing after it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anyio
import httpx
import pytest
from live_client import LiveClient, publish
from processes import AppProcess, AppProcesses
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

TIMINGS = {"health_check_interval": 0.1, "timeout": 0.5, "max_reconnect_delay": 0.2}
STREAM = "topic:jobs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def servers(
    own_redis_server: RedisServer, app_processes: AppProcesses
) -> Iterator[tuple[AppProcess, AppProcess]]:
    env = {"LIVEUPDATES_BACKPLANE": own_redis_server.backplane_url(prefix="fp", **TIMINGS)}
    first, second = app_processes.start("apps.redis_app:app", env=env, count=2)
    yield first, second
    for server in (first, second):
        assert "Traceback" not in server.logs(), f"{server!r} logged an exception"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def resynced(client: LiveClient) -> bool:
    return bool(client.refetched.get(STREAM)) and client.cursors[STREAM][1] >= 2


async def test_client_resuming_across_a_failed_publish_is_resynced(
    own_redis_server: RedisServer, servers: tuple[AppProcess, AppProcess], http: httpx.AsyncClient
) -> None:
    one, two = servers
    a = LiveClient(one.http_url, token="u0", topics=["jobs"], name="A")
    b = LiveClient(two.http_url, token="u1", topics=["jobs"], name="B")
    async with anyio.create_task_group() as tg:
        tg.start_soon(a.run)
        tg.start_soon(b.run)
        with anyio.fail_after(10):
            for client in (a, b):
                await client.wait_for(lambda c=client: STREAM in c.streams)  # type: ignore[misc]
            assert (await publish(http, one.http_url, STREAM, ["jobs"])).status_code == 200
            for client in (a, b):
                await client.wait_for(lambda c=client: ("jobs",) in c.invalidated[STREAM])  # type: ignore[misc]
        a.stop()  # A's socket drops, its cursor at offset 1
        assert a.cursors[STREAM][1] == 1
        b.refetched.clear()

        own_redis_server.pause()
        try:
            response = await publish(http, one.http_url, STREAM, ["job", 7])
            assert response.status_code == 503, response.text
        finally:
            own_redis_server.resume()
        with anyio.fail_after(10):
            await b.wait_for(lambda: resynced(b))  # the failure announced: B refetches

        back = LiveClient(one.http_url, token="u0", topics=["jobs"], name="A again")
        back.cursors = dict(a.cursors)  # A resumes from offset 1, across the announcement
        tg.start_soon(back.run)
        with anyio.fail_after(10):
            await back.wait_for(lambda: STREAM in back.streams)
        subscribed = next(o for o in back.outcomes if o["stream"] == STREAM)
        assert (subscribed["outcome"], subscribed["reason"]) == ("resync", "backplane")
        assert back.refetched[STREAM], "A never refetched the change to ['job', 7]"
        for client in (back, b):
            assert client.violations == []
            client.stop()
        b.stop()

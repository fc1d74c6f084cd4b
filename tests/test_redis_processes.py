"""Two uvicorn processes sharing one Redis: events cross processes, never users, and a client
that moves to the other process resumes where it left off.

The processes run tests/apps/redis_app.py (`AppProcess`, tests/processes.py); events are
published through their ``POST /publish`` route, so each one goes through Redis.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest
from live_client import LiveClient, publish
from processes import AppProcess, AppProcesses
from redis_server import RedisServer
from support import Client, ws_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def servers(redis_server: RedisServer) -> Iterator[tuple[AppProcess, AppProcess]]:
    """Two processes of apps.redis_app, on the session's Redis with a prefix of their own."""
    url = redis_server.backplane_url(prefix="p" + secrets.token_hex(4), history_size=50)
    group = AppProcesses()
    try:
        first, second = group.start(
            "apps.redis_app:app", env={"LIVEUPDATES_BACKPLANE": url}, count=2
        )
        yield first, second
    finally:
        group.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def published(
    http: httpx.AsyncClient, server: AppProcess, to: str, *keys: Any, **kw: Any
) -> None:
    response = await publish(http, server.http_url, to, *keys, **kw)
    assert response.status_code == 200, response.text


def joined(client: LiveClient) -> Callable[[], bool]:
    return lambda: len(client.streams) == 3  # all, user:<id>, topic:<name>


def got(client: LiveClient, stream: str, *keys: tuple[Any, ...]) -> Callable[[], bool]:
    return lambda: set(keys) <= client.invalidated.get(stream, {}).keys()


async def test_user_and_topic_events_cross_processes_but_never_users(
    servers: tuple[AppProcess, AppProcess], http: httpx.AsyncClient
) -> None:
    one, two = servers
    topic = "topic:jobs-" + secrets.token_hex(3)
    alice = LiveClient(one.http_url, token="alice", topics=[topic[6:]], name="alice@1")
    alice_tab = LiveClient(two.http_url, token="alice", topics=[topic[6:]], name="alice@2")
    bob = LiveClient(two.http_url, token="bob", topics=[topic[6:]], name="bob@2")
    clients = (alice, alice_tab, bob)
    async with anyio.create_task_group() as tg:
        for client in clients:
            tg.start_soon(client.run)
        with anyio.fail_after(10):
            for client in clients:
                await client.wait_for(joined(client))

        await published(http, two, "user:alice", ["a", 1])  # alice's tab on 2 is next to bob
        await published(http, one, "user:alice", ["a", 2])
        await published(http, one, "user:bob", ["b", 1])
        await published(http, one, topic, ["t", 1])
        await published(http, two, topic, ["t", 2])
        await published(http, two, "user:bob", ["b", "last"])  # bob's last: after alice's
        with anyio.fail_after(10):
            for client in clients:
                await client.wait_for(got(client, topic, ("t", 1), ("t", 2)))
            for client in (alice, alice_tab):
                await client.wait_for(got(client, "user:alice", ("a", 1), ("a", 2)))
            await bob.wait_for(got(bob, "user:bob", ("b", 1), ("b", "last")))
        for client in clients:
            client.stop()

    assert set(bob.invalidated) == {"user:bob", topic}
    assert set(bob.invalidated["user:bob"]) == {("b", 1), ("b", "last")}
    for client in (alice, alice_tab):
        assert set(client.invalidated) == {"user:alice", topic}
        assert set(client.invalidated["user:alice"]) == {("a", 1), ("a", 2)}
    for client in clients:
        assert client.violations == []  # no event of a stream it did not join (user:<other>)
        assert {o["outcome"] for o in client.outcomes} == {"fresh"}


def cursors_of(messages: list[dict[str, Any]], cursors: dict[str, Any]) -> dict[str, Any]:
    for m in messages:
        if "offset" in m and "epoch" in m:
            cursors[m["stream"]] = {"epoch": m["epoch"], "offset": m["offset"]}
    return cursors


async def test_a_client_moving_to_the_other_process_recovers_exactly_what_it_missed(
    servers: tuple[AppProcess, AppProcess], http: httpx.AsyncClient
) -> None:
    one, two = servers
    user, topic = "carol-" + secrets.token_hex(3), "moves-" + secrets.token_hex(3)
    stream = "topic:" + topic
    cursors: dict[str, Any] = {}
    with anyio.fail_after(15):
        async with ws_client(one) as client:
            cursors_of(await client.handshake(token=user, topics=[topic]), cursors)
            for n in range(3):
                await published(http, two, stream, [topic, n])
            while cursors[stream]["offset"] < 3:  # the three may arrive merged into one
                cursors_of(await client.events(1), cursors)
        assert cursors[stream]["offset"] == 3

        # away: changes published through both processes
        await published(http, one, stream, [topic, 10])
        await published(http, two, stream, [topic, 11, "progress"], data=40)
        await published(http, one, stream, [topic, 11, "progress"], data=90)
        await published(http, two, stream, [topic, 12], ["stats"])
        await published(http, one, "user:" + user, ["mine"])

        async with ws_client(two) as client:
            messages = await resume(client, user, topic, cursors)
            outcomes = {m["stream"]: m for m in messages if m["type"] == "subscribed"}
            assert {s: o["outcome"] for s, o in outcomes.items()} == {
                "all": "recovered", "user:" + user: "recovered", stream: "recovered"
            }  # fmt: skip
            assert outcomes[stream]["offset"] == 7
            replayed = [m for m in messages if m["type"] not in ("welcome", "subscribed")]
            mine = [m for m in replayed if m["stream"] == "user:" + user]
            jobs = [m for m in replayed if m["stream"] == stream]
            assert [(m["type"], m["keys"], m["offset"]) for m in mine] == [
                ("invalidate", [["mine"]], 1)
            ]
            assert [(m["type"], m.get("keys"), m.get("data"), m["offset"]) for m in jobs] == [
                ("set", None, 90, 6),  # latest value wins: 40 is never shown
                ("invalidate", [[topic, 10], [topic, 12], ["stats"]], None, 7),  # the union
            ]
            cursors_of(replayed, cursors)

        # and back to the first process, which has not seen the stream since
        await published(http, two, stream, [topic, 20])
        async with ws_client(one) as client:
            messages = await resume(client, user, topic, cursors)
            outcomes = {m["stream"]: m for m in messages if m["type"] == "subscribed"}
            assert [o["outcome"] for o in outcomes.values()] == ["recovered"] * 3
            (event,) = [m for m in messages if m["type"] not in ("welcome", "subscribed")]
            assert (event["stream"], event["offset"], event["keys"]) == (stream, 8, [[topic, 20]])


async def resume(
    client: Client, user: str, topic: str, cursors: dict[str, Any]
) -> list[dict[str, Any]]:
    """Hello with `cursors`: every message of the handshake, replays included.

    The `pong` of a `ping` sent right after `hello` follows everything the handshake queued.
    """
    await client.send({"type": "hello", "token": user, "topics": [topic], "since": cursors})
    await client.send({"type": "ping"})
    messages: list[dict[str, Any]] = []
    while (message := await client.receive())["type"] != "pong":
        messages.append(message)
    return messages

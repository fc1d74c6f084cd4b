"""End to end over uvicorn: a client cut off mid-stream resumes with its positions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from support import Client, UvicornThread, token_auth, ws_client

from liveupdates import Hub, Invalidate, Set, Topic
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes import MemoryBackplane

pytestmark = pytest.mark.anyio


@pytest.fixture
def server() -> Iterator[UvicornThread]:
    hub = Hub(MemoryBackplane(history_size=5), authenticate=token_auth)
    app = Starlette(routes=[WebSocketRoute("/live", WebSocketEndpoint(hub))], lifespan=hub.lifespan)
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    server.stop()


async def publish(server: UvicornThread, event: Any) -> None:
    await server.acall(server.hub.publish, event, Topic("jobs"))  # type: ignore[attr-defined]


def cursors_of(messages: list[dict[str, Any]], cursors: dict[str, Any]) -> dict[str, Any]:
    for m in messages:
        if "offset" in m and "epoch" in m:
            cursors[m["stream"]] = {"epoch": m["epoch"], "offset": m["offset"]}
    return cursors


async def resume(client: Client, cursors: dict[str, Any]) -> dict[str, dict[str, Any]]:
    replies = await client.handshake(token="alice", topics=["jobs"], since=cursors)
    return {m["stream"]: m for m in replies if m["type"] == "subscribed"}


async def test_reconnect_recovers_exactly_the_missed_keys_then_resyncs_after_expiry(
    server: UvicornThread,
) -> None:
    cursors: dict[str, Any] = {}
    async with ws_client(server) as client:
        cursors_of(await client.handshake(token="alice", topics=["jobs"]), cursors)
        for n in range(3):
            await publish(server, Invalidate(["jobs", n]))
        cursors_of(await client.events(3), cursors)
        assert cursors["topic:jobs"]["offset"] == 3
    # cut off: four changes happen while it is away (within the history of five)
    await publish(server, Invalidate(["jobs", 10]))
    await publish(server, Set(["jobs", 11, "progress"], 40))
    await publish(server, Set(["jobs", 11, "progress"], 90))
    await publish(server, Invalidate([["jobs", 12], ["stats"]]))

    async with ws_client(server) as client:
        outcomes = await resume(client, cursors)
        assert outcomes["topic:jobs"]["outcome"] == "recovered"
        assert outcomes["topic:jobs"]["offset"] == 7
        assert outcomes["all"]["outcome"] == "recovered"
        replayed = await client.events(2)
        assert [(m["type"], m.get("keys"), m.get("data")) for m in replayed] == [
            ("set", None, 90),  # latest value wins: 40 is never shown
            ("invalidate", [["jobs", 10], ["jobs", 12], ["stats"]], None),  # the union
        ]
        assert [m["offset"] for m in replayed] == [6, 7]
        cursors_of(replayed, cursors)
        await client.send({"type": "ping"})
        assert (await client.receive())["type"] == "pong"  # nothing else was replayed

    for n in range(8):  # more than the history holds
        await publish(server, Invalidate(["jobs", 100 + n]))
    async with ws_client(server) as client:
        outcomes = await resume(client, cursors)
        jobs = outcomes["topic:jobs"]
        assert (jobs["outcome"], jobs["reason"], jobs["offset"]) == ("resync", "expired", 15)
        await publish(server, Invalidate(["after"]))
        (event,) = await client.events(1)
        assert (event["offset"], event["keys"]) == (16, [["after"]])


async def test_a_cursor_from_another_epoch_resyncs(server: UvicornThread) -> None:
    async with ws_client(server) as client:
        stale = {"topic:jobs": {"epoch": "from-a-previous-server", "offset": 3}}
        outcomes = await resume(client, stale)
        jobs = outcomes["topic:jobs"]
        assert (jobs["outcome"], jobs["reason"]) == ("resync", "epoch")
        assert outcomes["user:alice"]["outcome"] == "fresh"

"""Batching: several events for one client leave in one frame."""

from __future__ import annotations

import pytest

from liveupdates import Hub, Limits, Set, User
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.auth import AuthRequest, Principal
from liveupdates.testing.websocket import connect_asgi

pytestmark = pytest.mark.anyio


def as_user(request: AuthRequest) -> Principal:
    return Principal(user="u")


@pytest.mark.parametrize("flush_interval", [0.0, 0.05])
async def test_a_burst_leaves_in_few_frames(flush_interval: float) -> None:
    limits = Limits(flush_interval=flush_interval)
    hub = Hub(authenticate=as_user, limits=limits)
    async with hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello"})
        await ws.receive_until(lambda m: m.get("stream") == "user:u")
        async with hub.transaction() as tx:  # 50 events released back to back
            for n in range(50):
                tx.publish(Set(["item", n], n), to=User("u"))
        frames, received = 0, 0
        while received < 50:
            received += len(await ws.receive_frame())
            frames += 1
    assert received == 50
    # a burst leaves in one frame per publisher yield (every 20 ms); with an interval, in one
    assert frames == 1 if flush_interval else frames <= 5

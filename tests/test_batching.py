"""Batching: several events for one client leave in one frame."""

from __future__ import annotations

import anyio
import pytest

from liveupdates import Hub, Limits, Set, User
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.auth import AuthRequest, Principal
from liveupdates.testing.websocket import connect_asgi

pytestmark = pytest.mark.anyio


def as_user(request: AuthRequest) -> Principal:
    return Principal(user="u")


class Frozen:
    """The hub's clock, standing still unless a test moves it: what counts as quiet is the
    test's decision, not the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("flush_interval", [0.0, 0.05])
async def test_a_burst_leaves_in_few_frames(anyio_backend: str, flush_interval: float) -> None:
    limits = Limits(flush_interval=flush_interval)
    hub = Hub(authenticate=as_user, limits=limits, clock=Frozen())
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
    # frame, but on asyncio its first event leaves at once, as it is fanned out (the leading
    # edge: replies to the handshake are not traffic) and the 49 others in one frame
    if flush_interval:
        assert frames == (2 if anyio_backend == "asyncio" else 1)
    else:
        assert frames <= 5


async def test_with_an_interval_an_isolated_event_leaves_at_once_and_followers_gather() -> None:
    """Batching's leading edge: the first event after a quiet spell is not held for the
    interval (isolated events keep the default's latency); those right behind it gather into
    one frame, at most one frame per interval."""
    clock = Frozen()
    hub = Hub(authenticate=as_user, limits=Limits(flush_interval=2.0), clock=clock)
    async with hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello"})
        await ws.receive_until(lambda m: m.get("stream") == "user:u")
        clock.now += 5.0  # quiet for longer than the interval
        await hub.publish(Set(["item", 0], 0), to=User("u"))  # the leading edge
        with anyio.fail_after(1.0):  # well before the 2 s interval would end
            first = await ws.receive_frame()
        for n in range(1, 4):  # right behind it (the hub's clock has not moved)
            await hub.publish(Set(["item", n], n), to=User("u"))
        second = await ws.receive_frame()
    assert [m["key"] for m in first] == [["item", 0]]
    assert [m["key"] for m in second] == [["item", 1], ["item", 2], ["item", 3]]

"""The hub recovers publications a backplane lost, even when reading history fails at first."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from liveupdates import BackplaneUnavailable, Event, Hub, Topic
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes import MemoryBackplane, Position
from liveupdates.positions import Publication, Replay
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

pytestmark = pytest.mark.anyio


class LossyBackplane(MemoryBackplane):
    """Loses chosen live deliveries, and can fail history reads, like a flapping network."""

    def __init__(self) -> None:
        super().__init__()
        self.drop_next = 0
        self.fail_replays = 0

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if self.drop_next:
            self.drop_next -= 1
            receivers, self._receivers = self._receivers, [_Nobody()]
            try:
                return await super().publish(stream, body, slot)
            finally:
                self._receivers = receivers
        return await super().publish(stream, body, slot)

    async def replay(self, stream: str, since: Position | None) -> Replay:
        if self.fail_replays:
            self.fail_replays -= 1
            raise BackplaneUnavailable("history is unreachable")
        return await super().replay(stream, since)


class _Nobody:
    def deliver(self, publication: Publication) -> None:
        pass

    def reset(self) -> None:
        pass


class _FromCallback:
    """Hands each delivery on from a plain asyncio callback, outside any task and its context:
    where the Redis backplane's links deliver (in the callback that read the bytes)."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver

    def deliver(self, publication: Publication) -> None:
        asyncio.get_running_loop().call_soon(
            self.receiver.deliver, publication, context=contextvars.Context()
        )

    def reset(self) -> None:
        asyncio.get_running_loop().call_soon(self.receiver.reset, context=contextvars.Context())


class CallbackBackplane(LossyBackplane):
    async def start(self, receiver: Any) -> None:
        await super().start(_FromCallback(receiver))


class Step(Event, tag="step"):
    """An ordered application event: never merged, so order and loss are visible."""

    name: str


async def steps_until(ws: AsgiWebSocket, last: str) -> list[Any]:
    seen = []
    while True:
        message = await ws.receive_until(lambda m: m.get("type") in ("step", "resync"))
        seen.append(message.get("name", "resync"))
        if message.get("name") == last:
            return seen


@pytest.mark.parametrize("lossy", [LossyBackplane, CallbackBackplane])
async def test_a_lost_publication_is_replayed_in_order(
    lossy: type[LossyBackplane], anyio_backend: str
) -> None:
    """Also when the gap is seen in a callback outside any task (`CallbackBackplane`)."""
    if lossy is CallbackBackplane and anyio_backend != "asyncio":
        pytest.skip("asyncio callbacks: a backplane delivering from an asyncio protocol")
    backplane = lossy()
    async with Hub(backplane) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello", "topics": ["t"]})
        await ws.receive_until(lambda m: m.get("stream") == "topic:t")
        await hub.publish(Step("a"), to=Topic("t"))
        backplane.drop_next = 1
        await hub.publish(Step("lost"), to=Topic("t"))
        await hub.publish(Step("c"), to=Topic("t"))
        with anyio.fail_after(5):
            assert await steps_until(ws, "c") == ["a", "lost", "c"]


async def test_a_failed_history_read_is_retried_after_the_backplane_resets() -> None:
    backplane = LossyBackplane()
    async with Hub(backplane) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello", "topics": ["t"]})
        await ws.receive_until(lambda m: m.get("stream") == "topic:t")
        backplane.drop_next, backplane.fail_replays = 1, 1
        await hub.publish(Step("lost"), to=Topic("t"))
        await hub.publish(Step("held"), to=Topic("t"))
        with anyio.fail_after(5):
            while backplane.fail_replays:  # the first attempt has failed
                await anyio.lowlevel.checkpoint()
        assert hub.reconciling == 1  # holding: nothing out of order reached the client
        hub._routes.reset()  # what a backplane does once it is reachable again
        assert await steps_until(ws, "held") == ["lost", "held"]
        assert hub.reconciling == 0


class FlakyPublishBackplane(MemoryBackplane):
    """Refuses publishes while `down` (Redis unreachable)."""

    down = False

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if self.down:
            raise BackplaneUnavailable("the backplane is down")
        return await super().publish(stream, body, slot)


async def test_a_change_whose_publish_failed_is_resynced_once_the_backplane_is_back() -> None:
    backplane = FlakyPublishBackplane()
    async with Hub(backplane) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello", "topics": ["t"]})
        await ws.receive_until(lambda m: m.get("stream") == "topic:t")
        backplane.down = True
        with pytest.raises(BackplaneUnavailable):  # the caller hears of it...
            async with hub.transaction() as tx:
                tx.publish(Step("committed while down"), to=Topic("t"))
        backplane.down = False
        hub._routes.reset()  # ...and once the backplane is back, the stream's clients resync
        resync = await ws.receive_until(lambda m: m.get("type") in ("resync", "step"))
        assert (resync["type"], resync["stream"], resync["reason"]) == (
            "resync", "topic:t", "backplane",
        )  # fmt: skip
        await hub.publish(Step("after"), to=Topic("t"))
        assert (await ws.receive_until(lambda m: m.get("type") == "step"))["name"] == "after"


async def test_every_stream_a_failed_commit_did_not_reach_is_resynced_too() -> None:
    """A commit stops at its first failed publish: the targets and events after it were never
    tried, and their streams' clients resync once the backplane is back, like the first one's."""
    backplane = FlakyPublishBackplane()
    async with Hub(backplane) as hub, connect_asgi(WebSocketEndpoint(hub)) as ws:
        await ws.send_json({"type": "hello", "topics": ["t", "u"]})
        await ws.receive_until(lambda m: m.get("stream") == "topic:u")
        backplane.down = True
        with pytest.raises(BackplaneUnavailable):
            async with hub.transaction() as tx:
                tx.publish(Step("one"), to=[Topic("first"), Topic("t")])  # fails at "first"
                tx.publish(Step("two"), to=Topic("u"))  # a later event
        backplane.down = False
        hub._routes.reset()
        with anyio.fail_after(5):  # (before, only topic:t came)
            resyncs = [
                await ws.receive_until(lambda m: m.get("type") in ("resync", "step"))
                for _ in range(2)
            ]
        assert sorted((m["type"], m["stream"], m.get("reason")) for m in resyncs) == [
            ("resync", "topic:t", "backplane"),
            ("resync", "topic:u", "backplane"),
        ]

"""Joining a stream while another connection of the process is still starting its live delivery.

A backplane's `listen` takes time (Redis: a SUBSCRIBE round trip). A connection that joins the
same stream meanwhile must not read the stream's history before live delivery is active (an
event published in between would reach neither its replay nor the live path), and must not end
up on a stream the hub has already dropped because the other join failed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from liveupdates import BackplaneUnavailable, Event, Hub, Topic
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes import MemoryBackplane, Position
from liveupdates.positions import Publication, Replay
from liveupdates.testing.websocket import AsgiWebSocket, Closed, connect_asgi

pytestmark = pytest.mark.anyio

STREAM = "topic:t"


class SlowListenBackplane(MemoryBackplane):
    """Like Redis: the n-th `listen(STREAM)` returns once `release(n)` is called, and the
    stream's publications are delivered live only after one has returned (before, they only go
    to the history). `fail_replays` history reads of STREAM fail."""

    def __init__(self) -> None:
        super().__init__()
        self.listens = 0
        self.live = False
        self.fail_replays = 0
        self._gates: dict[int, anyio.Event] = {}

    def release(self, n: int) -> None:
        self._gates.setdefault(n, anyio.Event()).set()

    async def listen(self, stream: str) -> None:
        if stream == STREAM:
            self.listens += 1
            await self._gates.setdefault(self.listens, anyio.Event()).wait()
            self.live = True

    async def replay(self, stream: str, since: Position | None) -> Replay:
        if stream == STREAM and self.fail_replays:
            self.fail_replays -= 1
            raise BackplaneUnavailable("history is unreachable")
        return await super().replay(stream, since)

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if stream != STREAM or self.live:
            return await super().publish(stream, body, slot)
        receivers, self._receivers = self._receivers, [_Nobody()]
        try:
            return await super().publish(stream, body, slot)
        finally:
            self._receivers = receivers


class _Nobody:
    def deliver(self, publication: Publication) -> None:
        pass

    def reset(self) -> None:
        pass


class Step(Event, tag="step"):
    name: str


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a state of the hub's own tasks (no event to wait on), for at most 5 s."""
    with anyio.fail_after(5):
        while not condition():
            await anyio.lowlevel.checkpoint()


def registered(hub: Hub) -> set[str]:
    """The streams that have a connection registered on them."""
    return {stream for stream, state in hub._routes._streams.items() if state.conns}


async def queued(ws: AsgiWebSocket) -> list[dict[str, Any]]:
    """Everything queued for `ws` so far: the `pong` of a `ping` sent now comes after it."""
    await ws.send_json({"type": "ping"})
    messages = []
    while (message := await ws.receive_message())["type"] != "pong":
        messages.append(message)
    return messages


async def test_a_join_during_another_joins_listen_misses_nothing() -> None:
    backplane = SlowListenBackplane()
    async with Hub(backplane) as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as first, connect_asgi(app) as second:
            await first.send_json({"type": "hello", "topics": ["t"]})
            await until(lambda: backplane.listens == 1)  # the first join is listening
            await second.send_json({"type": "hello", "topics": ["t"]})
            # the second join went as far as it goes before the release (the first one
            # registers on the stream once it listens)
            await until(lambda: backplane.listens == 2 or STREAM in registered(hub))
            await hub.publish(Step("between"), to=Topic("t"))  # not live yet: history only
            backplane.release(1)
            backplane.release(2)
            for ws in (first, second):
                messages = await queued(ws)
                (joined,) = [m for m in messages if m.get("stream") == STREAM][:1]
                steps = [m["name"] for m in messages if m["type"] == "step"]
                # "between" is offset 1: covered by a fresh position at 1, or delivered after it
                assert (joined["type"], joined["outcome"]) == ("subscribed", "fresh")
                assert (joined["offset"], steps) in ((1, []), (0, ["between"]))


async def test_a_join_waiting_for_a_join_that_fails_still_gets_live_events() -> None:
    backplane = SlowListenBackplane()
    backplane.fail_replays = 1  # the first join's history read
    async with Hub(backplane) as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as first, connect_asgi(app) as second:
            await first.send_json({"type": "hello", "topics": ["t"]})
            await until(lambda: backplane.listens == 1)
            await second.send_json({"type": "hello", "topics": ["t"]})
            await until(lambda: backplane.listens == 2 or STREAM in registered(hub))
            backplane.release(1)  # the first join fails: the hub drops its stream
            with anyio.fail_after(5), pytest.raises(Closed) as closed:
                while True:
                    await first.receive_message()
            assert closed.value.code == 1013
            backplane.release(2)
            backplane.release(3)
            await queued(second)  # its handshake is complete
            await hub.publish(Step("live"), to=Topic("t"))
            assert [m["name"] for m in await queued(second) if m["type"] == "step"] == ["live"]


async def test_a_join_outliving_the_other_joins_of_a_new_stream_still_gets_live_events() -> None:
    backplane = SlowListenBackplane()
    async with Hub(backplane) as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as first:
            await first.send_json({"type": "hello", "topics": ["t"]})
            await until(lambda: backplane.listens == 1)  # the first join is listening
            async with connect_asgi(app) as second:
                await second.send_json({"type": "hello", "topics": ["t"]})
                await until(lambda: backplane.listens == 2 or STREAM in registered(hub))
                backplane.release(2)
                await queued(second)  # joined
            # it left: the stream was dropped
            await until(lambda: STREAM not in hub._routes._streams)
            backplane.release(1)
            backplane.release(3)
            await queued(first)  # its handshake is complete
            await hub.publish(Step("live"), to=Topic("t"))
            assert [m["name"] for m in await queued(first) if m["type"] == "step"] == ["live"]


class LaggingLiveBackplane(MemoryBackplane):
    """Like Redis under load: a publication is in the history at once, but reaches the hub's
    live path only at `catch_up()`."""

    def __init__(self) -> None:
        super().__init__()
        self.lagging: list[Publication] = []

    async def start(self, receiver: Any) -> None:
        await super().start(_Nobody())
        self.receiver = receiver

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        publication = await super().publish(stream, body, slot)
        self.lagging.append(publication)
        return publication

    def catch_up(self) -> None:
        lagging, self.lagging = self.lagging, []
        for publication in lagging:
            self.receiver.deliver(publication)


async def test_a_join_whose_replay_is_ahead_of_the_live_path_gets_each_event_once() -> None:
    """The second client's replay includes an event that the process has not yet received
    live; when the live copy arrives, the first client gets it and the second must not get it
    again."""
    backplane = LaggingLiveBackplane()
    async with Hub(backplane) as hub:
        app = WebSocketEndpoint(hub)
        async with connect_asgi(app) as first, connect_asgi(app) as second:
            await first.send_json({"type": "hello", "topics": ["t"]})
            (joined,) = [m for m in await queued(first) if m.get("stream") == STREAM]
            await hub.publish(Step("one"), to=Topic("t"))  # in the history, not live yet
            since = {STREAM: {"epoch": joined["epoch"], "offset": joined["offset"]}}
            await second.send_json({"type": "hello", "topics": ["t"], "since": since})
            replayed = await queued(second)
            assert [m["name"] for m in replayed if m["type"] == "step"] == ["one"]
            backplane.catch_up()  # the live copy of "one"
            await hub.publish(Step("two"), to=Topic("t"))
            backplane.catch_up()
            first_steps = [m["name"] for m in await queued(first) if m["type"] == "step"]
            second_steps = [m["name"] for m in await queued(second) if m["type"] == "step"]
            assert first_steps == ["one", "two"]
            assert second_steps == ["two"]  # "one" once, from the replay

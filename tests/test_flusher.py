"""Sending over uvicorn: no task waits to write, and a client that stops reading delays nobody."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from support import UvicornThread, ws_client
from websockets.client import ClientProtocol
from websockets.frames import Frame
from websockets.protocol import State
from websockets.uri import parse_uri

from liveupdates import Event, Everyone, Hub, Limits, Principal, Topic
from liveupdates._pipeline.outbox import Outbox, control_message
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes.memory import MemoryBackplane
from liveupdates.errors import PeerGone
from liveupdates.flusher import QUIET_SLICE
from liveupdates.positions import Publication
from liveupdates.protocol import Hello, ServerPong

pytestmark = pytest.mark.anyio


class Chunk(Event, tag="chunk"):
    n: int
    pad: str


@pytest.fixture
def server() -> Iterator[UvicornThread]:
    limits = Limits(outbox_max_messages=10_000, outbox_max_bytes=256 << 20, send_timeout=60)
    hub = Hub(limits=limits)
    app = Starlette(routes=[WebSocketRoute("/live", WebSocketEndpoint(hub))], lifespan=hub.lifespan)
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    server.stop()


async def _tasks() -> int:
    return len(asyncio.all_tasks())


async def _publish(hub: Hub, count: int, size: int) -> None:
    for n in range(count):
        await hub.publish(Chunk(n, "x" * size), to=Everyone)
        await asyncio.sleep(0)  # as from separate requests: each event is flushed on its own


async def test_a_connection_costs_one_task_idle_or_busy(server: UvicornThread) -> None:
    hub: Hub = server.hub  # type: ignore[attr-defined]
    before = await server.acall(_tasks)
    async with ws_client(server) as first, ws_client(server) as second, ws_client(server) as third:
        clients = (first, second, third)
        for client in clients:
            await client.handshake()
        assert await server.acall(_tasks) == before + 3  # uvicorn's task per connection, no writer
        await server.acall(_publish, hub, 200, 10)
        for client in clients:
            assert [event["n"] for event in await client.events(200)] == list(range(200))
        assert await server.acall(_tasks) == before + 3  # and nothing left behind by the burst


class StuckClient:
    """A WebSocket client that reads nothing until asked to: the server's socket fills up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = ClientProtocol(parse_uri("ws://127.0.0.1/live"), max_size=None)

    @classmethod
    async def open(cls, port: int) -> StuckClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # no autotuning to 32 MB
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        client = cls(*await asyncio.open_connection(sock=sock))
        client.protocol.send_request(client.protocol.connect())
        client._flush()
        while client.protocol.state is not State.OPEN:
            client.protocol.receive_data(await client.reader.read(1 << 16))
        client.protocol.send_text(b'{"type":"hello"}')
        client._flush()
        return client

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.writer.write(data)

    async def messages(self) -> list[dict[str, Any]]:
        """The messages of the next frames that arrive (reading the socket again)."""
        while True:
            frames = [e for e in self.protocol.events_received() if isinstance(e, Frame)]
            if frames:
                return [m for frame in frames for m in json.loads(bytes(frame.data))]
            self.protocol.receive_data(await self.reader.read(1 << 16))
            self._flush()

    def close(self) -> None:
        self.writer.close()


async def test_a_client_that_stops_reading_delays_nobody_and_loses_nothing(
    server: UvicornThread, anyio_backend: str
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("the stuck client is an asyncio stream")
    hub: Hub = server.hub  # type: ignore[attr-defined]
    count, size = 400, 50_000  # 20 MB: far more than the socket buffers hold
    stuck = await StuckClient.open(server.port)
    try:
        while not any(m["type"] == "subscribed" for m in await stuck.messages()):
            pass
        async with ws_client(server) as reader:
            await reader.handshake()
            received: list[int] = []

            async def read_all() -> None:
                received.extend(event["n"] for event in await reader.events(count))

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_all)
                    await server.acall(_publish, hub, count, size)  # never waits for `stuck`
            assert received == list(range(count))  # while `stuck` read nothing since `subscribed`

        got: list[int] = []
        with anyio.fail_after(30):
            while len(got) < count:
                got += [m["n"] for m in await stuck.messages() if m["type"] == "chunk"]
        assert got == list(range(count))  # in order, once, when it reads again
    finally:
        stuck.close()


async def test_a_long_pass_lets_the_rest_of_the_process_run(anyio_backend: str) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("on trio every send runs in a task of its own")
    async with Hub() as hub:
        sent: list[str] = []
        all_sent = anyio.Event()

        async def costly_send(frame: str) -> None:
            busy_until = time.perf_counter() + 0.0002  # the CPU a real send costs
            while time.perf_counter() < busy_until:
                pass
            sent.append(frame)
            if len(sent) == 100:
                all_sent.set()

        for _ in range(100):
            conn = hub.sessions.connect(Principal(user=None), "websocket")
            await hub.sessions.open(conn, Hello())
            conn.attach(costly_send)
        with anyio.fail_after(5):
            await all_sent.wait()  # the welcomes
        sent.clear()
        seen: set[int] = set()
        await hub.publish(Chunk(1, ""), to=Everyone)  # a pass of 20 ms
        with anyio.fail_after(5):
            while len(sent) < 100:
                seen.add(len(sent))
                await anyio.lowlevel.checkpoint()
        assert seen - {0, 100}, "nothing else ran while the flusher sent to 100 connections"
        for conn in hub.connections():
            hub.sessions.unregister(conn)  # as their transport would once they end


async def test_an_isolated_event_leaves_at_once_and_a_burst_in_few_frames(
    anyio_backend: str,
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("on trio every send runs in a task of its own")
    frames: list[list[dict[str, Any]]] = []

    async def record(frame: str) -> None:
        frames.append(json.loads(frame))

    async with Hub() as hub:
        conns = [hub.sessions.connect(Principal(user=None), "websocket") for _ in range(10)]
        for conn in conns:
            await hub.sessions.open(conn, Hello())
            conn.attach(record)
        with anyio.fail_after(5):
            while len(frames) < 10:  # their welcomes
                await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.05)  # the process has been quiet for a while
        frames.clear()
        seen: list[int] = []

        async def look() -> None:
            seen.append(len(frames))

        async with anyio.create_task_group() as tg:
            tg.start_soon(look)  # the next task to run, after the publisher
            await hub.publish(Chunk(0, ""), to=Everyone)
        assert seen == [10]  # sent to every client as it was fanned out, not by a later pass
        for n in range(1, 21):  # a burst right after: queued, then batched
            await hub.publish(Chunk(n, ""), to=Everyone)
        assert len(frames) == 10
        with anyio.fail_after(5):
            while sum(len(frame) for frame in frames) < 10 * 21:
                await anyio.lowlevel.checkpoint()
        assert len(frames) == 20  # the burst: one more frame per client
        for conn in conns:
            hub.sessions.unregister(conn)  # as their transport would once they end


async def _costly_clients(
    hub: Hub, count: int, on_send: Callable[[], None] = lambda: None
) -> dict[str, list[Any]]:
    """`count` connections whose sends each cost 0.2 ms of CPU, as real sends do; what each got.

    `on_send` is called at each send."""
    received: dict[str, list[Any]] = {}
    for _ in range(count):
        conn = hub.sessions.connect(Principal(user=None), "websocket")
        await hub.sessions.open(conn, Hello())
        got = received[conn.id] = []

        async def costly_send(frame: str, got: list[Any] = got) -> None:
            busy_until = time.perf_counter() + 0.0002
            while time.perf_counter() < busy_until:
                pass
            got.extend(json.loads(frame))
            on_send()

        conn.attach(costly_send)
    with anyio.fail_after(5):
        while sum(map(len, received.values())) < 2 * count:  # welcome, subscribed
            await anyio.lowlevel.checkpoint()
    await anyio.sleep(0.05)  # the process has been quiet for a while
    return received


def _kinds(messages: list[dict[str, Any]]) -> list[str]:
    """What came after `welcome` and `subscribed`: chunk1, pong..."""
    assert [m["type"] for m in messages[:2]] == ["welcome", "subscribed"]
    return [f"{m['type']}{m.get('n', '')}" for m in messages[2:]]


async def test_what_is_queued_during_a_broadcast_comes_after_it(anyio_backend: str) -> None:
    """A broadcast to many clients is sent over several turns of the event loop; an event
    published meanwhile, and a control message such as a pong, must not overtake it."""
    async with Hub() as hub:
        received = await _costly_clients(hub, 300)  # a broadcast of about 60 ms
        conns = list(hub.connections())
        await hub.publish(Chunk(1, ""), to=Everyone)  # returns with part of it sent
        conns[-1].push(control_message(ServerPong()))  # the last one has not had it yet
        await hub.publish(Chunk(2, ""), to=Everyone)
        with anyio.fail_after(5):
            while sum(map(len, received.values())) < 300 * 4 + 1:
                await anyio.lowlevel.checkpoint()
        assert _kinds(received[conns[-1].id]) == ["chunk1", "pong", "chunk2"]
        assert all(_kinds(received[conn.id]) == ["chunk1", "chunk2"] for conn in conns[:-1])
        for conn in conns:
            hub.sessions.unregister(conn)


async def test_a_connection_closed_once_flushed_during_a_broadcast_gets_it_first(
    anyio_backend: str,
) -> None:
    async with Hub() as hub:
        received = await _costly_clients(hub, 300)
        conns = list(hub.connections())
        await hub.publish(Chunk(1, ""), to=Everyone)  # returns with part of it sent
        conns[-1].close_when_flushed(4000, "bye")  # the broadcast has not reached it yet
        with anyio.fail_after(5):
            while conns[-1].close_code is None:
                await anyio.lowlevel.checkpoint()
        assert _kinds(received[conns[-1].id]) == ["chunk1"]
        for conn in conns:
            hub.sessions.unregister(conn)


class _WaitingBackplane(MemoryBackplane):
    """Publishes to `topic:slow` wait for `go`, as a publish to Redis waits for its reply."""

    def __init__(self) -> None:
        super().__init__()
        self.go = anyio.Event()

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if stream == "topic:slow":
            await self.go.wait()
        return await super().publish(stream, body, slot)


@pytest.mark.parametrize("publisher_waits", [True, False], ids=["publisher-waits", "quiet"])
async def test_what_arrives_during_a_broadcast_is_read_before_its_next_slice(
    anyio_backend: str, publisher_waits: bool
) -> None:
    """A broadcast to many clients takes turns with the rest of the process. Bytes that arrive
    meanwhile (Redis' reply to a publisher, a client's frame) wake their task, which must run
    before the broadcast's next slice, not after it: a publisher waiting for Redis would
    otherwise lose a slice or two per event, and a burst leave in many more frames. While a
    publisher waits for its backplane, slices are short (SLICE); otherwise QUIET_SLICE."""
    if anyio_backend == "trio":
        pytest.skip("on trio every send runs in a task of its own")
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)  # as redis-py reads Redis
    sends, trigger, written_at = 0, -1, 0

    def on_send() -> None:
        nonlocal sends, written_at
        sends += 1
        if sends == trigger:
            theirs.send(b"x")  # what Redis' reply would do
            written_at = sends

    backplane = _WaitingBackplane()
    try:
        async with Hub(backplane) as hub, anyio.create_task_group() as tg:
            received = await _costly_clients(hub, 300, on_send)
            if publisher_waits:
                tg.start_soon(hub.publish, Chunk(0, ""), Topic("slow"))
                await anyio.lowlevel.checkpoint()  # it is waiting for its backplane now
            # 300 sends of 0.2 ms, the deadline checked every 16: slices of 16 sends (SLICE),
            # or 64 (QUIET_SLICE) after the publisher's own first one
            per_slice = 16 if publisher_waits else 16 * math.ceil(QUIET_SLICE / 0.0002 / 16)
            trigger = sends + 41  # in the second or third slice of the broadcast
            await hub.publish(Chunk(1, ""), to=Everyone)
            with anyio.fail_after(5):
                await reader.readexactly(1)
            read_at = sends
            assert written_at
            assert read_at - written_at < per_slice  # the rest of its slice at most, not more
            with anyio.fail_after(5):
                while sum(map(len, received.values())) < 300 * 3:
                    await anyio.lowlevel.checkpoint()
            backplane.go.set()
            for conn in hub.connections():
                hub.sessions.unregister(conn)
    finally:
        writer.close()
        theirs.close()


async def test_sends_that_wait_or_fail_disturb_no_other_connection(anyio_backend: str) -> None:
    """In one broadcast: a send that has to wait finishes later and in order, a send whose peer
    is gone or that fails (also after waiting) ends only its own connection, and every other
    connection, before and after them, gets each event at once. A failure goes to the
    transport's `on_send_error` when it gave one, instead of closing with 1011."""
    resume = anyio.Event()
    received: dict[str, list[int]] = {}
    told: dict[str, list[Exception]] = {}

    def sender(name: str) -> Callable[[str], Any]:
        got = received[name] = []

        async def send(frame: str) -> None:
            chunks = [m["n"] for m in json.loads(frame) if m["type"] == "chunk"]
            if chunks and name.startswith("waits"):
                await resume.wait()
            if chunks and name.endswith("gone"):
                raise PeerGone
            if chunks and name.endswith("fails"):
                raise RuntimeError("a bug in the transport")
            got.extend(chunks)

        return send

    names = ["first", "waits", "gone", "fails", "waits, then fails", "told: fails",
             "told: waits, then fails", "last"]  # fmt: skip
    async with Hub() as hub:
        conns = {}
        for name in names:
            conn = conns[name] = hub.sessions.connect(Principal(user=None), "websocket")
            await hub.sessions.open(conn, Hello())
            errors = told.setdefault(name, [])
            conn.attach(sender(name), errors.append if name.startswith("told") else None)
        await anyio.sleep(0.05)  # welcome and subscribed sent; the process is quiet

        async def until(condition: Callable[[], bool]) -> None:
            with anyio.fail_after(5):
                while not condition():
                    await anyio.lowlevel.checkpoint()

        await hub.publish(Chunk(1, ""), to=Everyone)
        await until(lambda: received["first"] == received["last"] == [1])
        await hub.publish(Chunk(2, ""), to=Everyone)
        await until(lambda: received["first"] == received["last"] == [1, 2])
        assert received["waits"] == []
        resume.set()
        await until(lambda: received["waits"] == [1, 2])
        await until(lambda: conns["waits, then fails"].close_code is not None)
        await until(lambda: bool(told["told: waits, then fails"]))
        assert conns["fails"].close_code == conns["waits, then fails"].close_code == 1011
        assert received["gone"] == received["fails"] == received["waits, then fails"] == []
        assert hub.metrics.errors == 2
        for name in ("told: fails", "told: waits, then fails"):
            assert told[name]
            assert all(isinstance(exc, RuntimeError) for exc in told[name])
            assert conns[name].close_code is None  # the transport's call (here: none)
        assert not any(told[name] for name in names if not name.startswith("told"))
        for conn in conns.values():
            hub.sessions.unregister(conn)


async def test_a_broadcast_to_signed_in_users_skips_their_outboxes(
    anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backplane whose live path lags behind its history leaves a joined stream a gate (its
    replay floor) until the stream's next event, which may never come on a personal stream:
    broadcasts must still go straight to the socket, not through the outbox and a second
    pass."""
    if anyio_backend != "asyncio":
        pytest.skip("on trio every send runs in a task of its own")
    frames: dict[str, list[int]] = {}
    pushed: list[str] = []
    push = Outbox.push

    def spy(outbox: Outbox, message: Any) -> bool:
        if getattr(message, "stream", None) == "all":
            pushed.append(message.text)
        return push(outbox, message)

    monkeypatch.setattr(Outbox, "push", spy)
    async with Hub() as hub:
        conns = [hub.sessions.connect(Principal(user=f"u{i}"), "websocket") for i in range(10)]
        for conn in conns:
            got = frames[conn.id] = []

            async def record(frame: str, got: list[int] = got) -> None:
                got.extend(m["n"] for m in json.loads(frame) if m["type"] == "chunk")

            await hub.sessions.open(conn, Hello())
            conn.attach(record)
            personal = f"user:{conn.user}"
            conn.hold(personal)
            conn.release(personal, "e1", 7)  # the floor: the live path is still behind it
        await anyio.sleep(0.05)  # welcomes sent; the process has been quiet for a while
        await hub.publish(Chunk(1, ""), to=Everyone)  # each "all" gate goes with this one
        await anyio.sleep(0.05)
        pushed.clear()
        await hub.publish(Chunk(2, ""), to=Everyone)
        assert all(got == [1, 2] for got in frames.values())  # sent as it was fanned out
        assert pushed == []  # and not through the outboxes
        for conn in conns:
            hub.sessions.unregister(conn)


async def test_a_failing_error_handler_closes_only_its_connection(anyio_backend: str) -> None:
    received: list[int] = []

    async def fails(frame: str) -> None:
        if '"chunk"' in frame:
            raise RuntimeError("a bug in the transport")

    async def record(frame: str) -> None:
        received.extend(m["n"] for m in json.loads(frame) if m["type"] == "chunk")

    def handler(exc: Exception) -> None:
        raise ValueError("a bug in its handler") from exc

    async with Hub() as hub:
        broken, fine = (hub.sessions.connect(Principal(user=None), "websocket") for _ in range(2))
        for conn, send in ((broken, fails), (fine, record)):
            await hub.sessions.open(conn, Hello())
            conn.attach(send, handler)
        await anyio.sleep(0.05)  # the process is quiet: straight to the sockets
        for n in (1, 2):
            await hub.publish(Chunk(n, ""), to=Everyone)
            with anyio.fail_after(5):
                while received[-1:] != [n]:
                    await anyio.lowlevel.checkpoint()
        assert broken.close_code == 1011 and fine.close_code is None
        assert hub.metrics.errors == 1
        for conn in (broken, fine):
            hub.sessions.unregister(conn)

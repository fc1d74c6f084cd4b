"""Sending over uvicorn: no task waits to write, and a client that stops reading delays nobody."""

from __future__ import annotations

import asyncio
import errno
import json
import math
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.abc
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
from liveupdates._pipeline.flusher import QUIET, QUIET_SLICE
from liveupdates._pipeline.outbox import Outbox, control_message
from liveupdates._pipeline.sweeper import sweep_once
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes.memory import MemoryBackplane
from liveupdates.errors import PeerGone
from liveupdates.positions import Publication
from liveupdates.protocol import Hello, ServerPong
from liveupdates.session import Connection

pytestmark = pytest.mark.anyio
SEND = 0.0002  # what a real send costs (on the hub's clock, which the tests advance)


class Clock:
    """The hub's clock (`Hub(clock=...)`): `now`, in seconds, which the test advances."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


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
        await anyio.lowlevel.checkpoint()  # as from separate requests: each flushed on its own


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

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.protocol = ClientProtocol(parse_uri("ws://127.0.0.1/live"), max_size=None)

    @classmethod
    async def open(cls, port: int) -> StuckClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16_384)  # no autotuning to 32 MB
        sock.setblocking(False)
        if sock.connect_ex(("127.0.0.1", port)) not in (0, errno.EINPROGRESS):
            raise ConnectionError("cannot connect")
        await anyio.wait_writable(sock)
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            raise ConnectionError("cannot connect")
        client = cls(await anyio.abc.SocketStream.from_socket(sock))
        client.protocol.send_request(client.protocol.connect())
        await client._flush()
        while client.protocol.state is not State.OPEN:
            client.protocol.receive_data(await client.stream.receive(1 << 16))
        client.protocol.send_text(b'{"type":"hello"}')
        await client._flush()
        return client

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            await self.stream.send(data)

    async def messages(self) -> list[dict[str, Any]]:
        """The messages of the next frames that arrive (reading the socket again)."""
        while True:
            frames = [e for e in self.protocol.events_received() if isinstance(e, Frame)]
            if frames:
                return [m for frame in frames for m in json.loads(bytes(frame.data))]
            self.protocol.receive_data(await self.stream.receive(1 << 16))
            await self._flush()

    async def close(self) -> None:
        await self.stream.aclose()


async def test_a_client_that_stops_reading_delays_nobody_and_loses_nothing(
    server: UvicornThread,
) -> None:
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
        await stuck.close()


async def test_a_long_pass_lets_the_rest_of_the_process_run(anyio_backend: str) -> None:
    clock = Clock()
    async with Hub(clock=clock) as hub:
        sent: list[str] = []
        tasks: set[int] = set()
        all_sent = anyio.Event()

        async def costly_send(frame: str) -> None:
            clock.now += SEND
            sent.append(frame)
            tasks.add(anyio.get_current_task().id)
            if len(sent) == 100:
                all_sent.set()

        for _ in range(100):
            conn = hub.sessions.connect(Principal(user=None), "websocket")
            await hub.sessions.open(conn, Hello())
            conn.attach(costly_send)
        with anyio.fail_after(5):
            await all_sent.wait()  # the welcomes
        clock.now += QUIET  # the process has been quiet for a while
        sent.clear()
        tasks.clear()
        seen: set[int] = set()
        await hub.publish(Chunk(1, ""), to=Everyone)  # a pass of 20 ms
        with anyio.fail_after(5):
            while len(sent) < 100:
                seen.add(len(sent))
                await anyio.lowlevel.checkpoint()
        if anyio_backend == "asyncio":  # the sends run in the flusher, 2 ms at a time
            assert seen - {0, 100}, "nothing else ran while the flusher sent to 100 connections"
            assert len(tasks) == 2  # the publisher's (its first slice), then the flusher's
        else:  # trio: every send runs in a task of its own, which the scheduler interleaves
            assert len(tasks) == 100  # with the rest of the process (none is the flusher's)
        for conn in hub.connections():
            hub.sessions.unregister(conn)  # as their transport would once they end


class _Frames(list[list[dict[str, Any]]]):
    """What every client of a test received, frame by frame (`record` is their sender)."""

    async def record(self, frame: str) -> None:
        self.append(json.loads(frame))

    async def until(self, messages: int) -> None:
        with anyio.fail_after(5):
            while sum(len(frame) for frame in self) < messages:
                await anyio.lowlevel.checkpoint()

    async def clients(self, hub: Hub, count: int) -> list[Connection]:
        """`count` open connections sending into this record, their welcome received."""
        conns = [hub.sessions.connect(Principal(user=None), "websocket") for _ in range(count)]
        for conn in conns:
            await hub.sessions.open(conn, Hello())
            conn.attach(self.record)
        await self.until(count * 2)  # their welcome and subscribed
        return conns


async def test_an_isolated_event_leaves_at_once_and_a_burst_in_few_frames(
    anyio_backend: str,
) -> None:
    frames = _Frames()
    until_delivered = frames.until
    clock = Clock()
    async with Hub(clock=clock) as hub:
        conns = await frames.clients(hub, 10)
        clock.now += QUIET  # the process has been quiet for a while
        frames.clear()
        seen: list[int] = []

        async def look() -> None:
            seen.append(len(frames))

        async with anyio.create_task_group() as tg:
            tg.start_soon(look)  # the next task to run, after the publisher
            await hub.publish(Chunk(0, ""), to=Everyone)
        if anyio_backend == "asyncio":
            assert seen == [10]  # sent to every client as it was fanned out, not by a later pass
        else:  # trio: every send runs in a task of its own, started once the publisher yields
            assert seen == [0]
        await until_delivered(10)
        assert len(frames) == 10  # one frame per client, at once
        for n in range(1, 21):  # a burst right after: queued, then batched
            await hub.publish(Chunk(n, ""), to=Everyone)
        assert len(frames) == 10
        await until_delivered(10 * 21)
        assert len(frames) == 20  # the burst: one more frame per client
        for conn in conns:
            hub.sessions.unregister(conn)  # as their transport would once they end


async def test_a_publishing_loop_lets_the_flusher_run_every_budget_of_the_hubs_clock(
    anyio_backend: str,
) -> None:
    """A publisher in a tight loop lets the flusher run once `YIELD_BUDGET` (20 ms) of the
    hub's clock has passed since the flusher's last turn: its events leave in a few frames, as
    they come, neither one frame per event nor all at the end."""
    frames: list[list[int]] = []
    subscribed = anyio.Event()

    async def record(frame: str) -> None:
        messages = json.loads(frame)
        if any(m["type"] == "subscribed" for m in messages):
            subscribed.set()
        if chunks := [m["n"] for m in messages if m["type"] == "chunk"]:
            frames.append(chunks)

    clock = Clock()
    async with Hub(clock=clock) as hub:
        conn = hub.sessions.connect(Principal(user=None), "websocket")
        await hub.sessions.open(conn, Hello())
        conn.attach(record)
        with anyio.fail_after(5):
            await subscribed.wait()
        clock.now += QUIET  # the process has been quiet for a while
        for n in range(20):
            await hub.publish(Chunk(n, ""), to=Everyone)
            clock.now += 0.007  # the publisher's own work
        with anyio.fail_after(5):
            while sum(map(len, frames)) < 20:
                await anyio.lowlevel.checkpoint()
        assert [n for frame in frames for n in frame] == list(range(20))
        if anyio_backend == "asyncio":  # the first one straight to the socket, then a turn
            # of the flusher every third event (21 ms of the hub's clock since the last)
            assert list(map(len, frames)) == [1, 3, 3, 3, 3, 3, 3, 1]
        else:  # trio: a task sends each frame, and what is queued before it ends
            assert 3 <= len(frames) <= 8
        hub.sessions.unregister(conn)


async def _costly_clients(
    hub: Hub, clock: Clock, count: int, on_send: Callable[[], None] = lambda: None
) -> dict[str, list[Any]]:
    """`count` connections whose sends each cost `SEND` (0.2 ms) of the hub's clock, as real
    sends do; what each got. The process is quiet once they are open.

    `on_send` is called at each send."""
    received: dict[str, list[Any]] = {}
    for _ in range(count):
        conn = hub.sessions.connect(Principal(user=None), "websocket")
        await hub.sessions.open(conn, Hello())
        got = received[conn.id] = []

        async def costly_send(frame: str, got: list[Any] = got) -> None:
            clock.now += SEND
            got.extend(json.loads(frame))
            on_send()

        conn.attach(costly_send)
    with anyio.fail_after(5):
        while sum(map(len, received.values())) < 2 * count:  # welcome, subscribed
            await anyio.lowlevel.checkpoint()
    clock.now += QUIET  # the process has been quiet for a while
    return received


def _kinds(messages: list[dict[str, Any]]) -> list[str]:
    """What came after `welcome` and `subscribed`: chunk1, pong..."""
    assert [m["type"] for m in messages[:2]] == ["welcome", "subscribed"]
    return [f"{m['type']}{m.get('n', '')}" for m in messages[2:]]


async def test_what_is_queued_during_a_broadcast_comes_after_it(anyio_backend: str) -> None:
    """A broadcast to many clients is sent over several turns of the event loop; an event
    published meanwhile, and a control message such as a pong, must not overtake it."""
    clock = Clock()
    async with Hub(clock=clock) as hub:
        received = await _costly_clients(hub, clock, 300)  # a broadcast of about 60 ms
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
    clock = Clock()
    async with Hub(clock=clock) as hub:
        received = await _costly_clients(hub, clock, 300)
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
    ours, theirs = socket.socketpair()  # (ours: as the Redis backplane reads Redis)
    ours.setblocking(False)
    sends, trigger, written_at = 0, -1, 0

    def on_send() -> None:
        nonlocal sends, written_at
        sends += 1
        if sends == trigger:
            theirs.send(b"x")  # what Redis' reply would do
            written_at = sends

    backplane = _WaitingBackplane()
    clock = Clock()
    try:
        async with Hub(backplane, clock=clock) as hub, anyio.create_task_group() as tg:
            received = await _costly_clients(hub, clock, 300, on_send)
            if publisher_waits:
                tg.start_soon(hub.publish, Chunk(0, ""), Topic("slow"))
                await anyio.lowlevel.checkpoint()  # it is waiting for its backplane now
            # 300 sends of 0.2 ms, the deadline checked every 16: slices of 16 sends (SLICE),
            # or 64 (QUIET_SLICE) after the publisher's own first one
            per_slice = 16 if publisher_waits else 16 * math.ceil(QUIET_SLICE / 0.0002 / 16)
            before = sends
            trigger = before + 41  # in the second or third slice of the broadcast
            await hub.publish(Chunk(1, ""), to=Everyone)
            with anyio.fail_after(5):
                await anyio.wait_readable(ours)
            assert ours.recv(1) == b"x"
            read_at = sends
            assert written_at
            if anyio_backend == "asyncio":
                assert read_at - written_at < per_slice  # the rest of its slice at most
            else:  # trio: the flusher's pass starts a task per send, which trio runs in one
                # batch before it polls the sockets: the broadcast's sends, then the read
                assert read_at == before + 300
            with anyio.fail_after(5):
                while sum(map(len, received.values())) < 300 * 3:
                    await anyio.lowlevel.checkpoint()
            backplane.go.set()
            for conn in hub.connections():
                hub.sessions.unregister(conn)
    finally:
        ours.close()
        theirs.close()


async def test_sends_that_wait_or_fail_disturb_no_other_connection(anyio_backend: str) -> None:
    """In one broadcast: a send that has to wait finishes later and in order, a send whose peer
    is gone or that fails (also after waiting) ends only its own connection, and every other
    connection, before and after them, gets each event at once. A failure goes to the
    transport's `on_send_error` when it gave one, instead of closing with 1011."""
    resume = anyio.Event()
    received: dict[str, list[int]] = {}
    told: dict[str, list[Exception]] = {}
    subscribed: set[str] = set()

    def sender(name: str) -> Callable[[str], Any]:
        got = received[name] = []

        async def send(frame: str) -> None:
            messages = json.loads(frame)
            if any(m["type"] == "subscribed" for m in messages):
                subscribed.add(name)
            chunks = [m["n"] for m in messages if m["type"] == "chunk"]
            if chunks and name.startswith("waits"):
                await resume.wait()
            if chunks and name.endswith("gone"):
                raise PeerGone
            if chunks and name.endswith("fails"):
                raise RuntimeError("a bug in the transport")
            got.extend(chunks)

        return send

    async def until(condition: Callable[[], bool]) -> None:
        with anyio.fail_after(5):
            while not condition():
                await anyio.lowlevel.checkpoint()

    names = ["first", "waits", "gone", "fails", "waits, then fails", "told: fails",
             "told: waits, then fails", "last"]  # fmt: skip
    clock = Clock()
    async with Hub(clock=clock) as hub:
        conns = {}
        for name in names:
            conn = conns[name] = hub.sessions.connect(Principal(user=None), "websocket")
            await hub.sessions.open(conn, Hello())
            errors = told.setdefault(name, [])
            conn.attach(sender(name), errors.append if name.startswith("told") else None)
        await until(lambda: len(subscribed) == len(names))  # welcome and subscribed sent
        clock.now += QUIET  # the process is quiet

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
    pass. (On trio, where every send runs in a task of its own, each goes through the outbox
    once, and no gate holds it back.)"""
    frames: dict[str, list[int]] = {}
    subscribed: set[str] = set()
    pushed: list[str] = []
    push = Outbox.push

    def spy(outbox: Outbox, message: Any) -> bool:
        if getattr(message, "stream", None) == "all":
            pushed.append(message.text)
        return push(outbox, message)

    async def until(condition: Callable[[], bool]) -> None:
        with anyio.fail_after(5):
            while not condition():
                await anyio.lowlevel.checkpoint()

    monkeypatch.setattr(Outbox, "push", spy)
    clock = Clock()
    async with Hub(clock=clock) as hub:
        conns = [hub.sessions.connect(Principal(user=f"u{i}"), "websocket") for i in range(10)]
        for conn in conns:
            got = frames[conn.id] = []

            async def record(frame: str, got: list[int] = got, conn_id: str = conn.id) -> None:
                messages = json.loads(frame)
                if any(m["type"] == "subscribed" for m in messages):
                    subscribed.add(conn_id)
                got.extend(m["n"] for m in messages if m["type"] == "chunk")

            await hub.sessions.open(conn, Hello())
            conn.attach(record)
            personal = f"user:{conn.user}"
            conn.hold(personal)
            conn.release(personal, "e1", 7)  # the floor: the live path is still behind it
        await until(lambda: len(subscribed) == len(conns))  # welcomes sent
        clock.now += QUIET  # the process has been quiet for a while
        await hub.publish(Chunk(1, ""), to=Everyone)  # each "all" gate goes with this one
        await until(lambda: all(got == [1] for got in frames.values()))
        clock.now += QUIET
        pushed.clear()
        await hub.publish(Chunk(2, ""), to=Everyone)
        if anyio_backend == "asyncio":
            assert all(got == [1, 2] for got in frames.values())  # sent as it was fanned out
            assert pushed == []  # and not through the outboxes
        else:
            await until(lambda: all(got == [1, 2] for got in frames.values()))
            assert len(pushed) == len(conns)  # once through each outbox, no second pass
        for conn in conns:
            hub.sessions.unregister(conn)


async def test_a_failing_error_handler_closes_only_its_connection(anyio_backend: str) -> None:
    received: list[int] = []

    subscribed: list[str] = []

    async def fails(frame: str) -> None:
        if '"subscribed"' in frame:
            subscribed.append("broken")
        if '"chunk"' in frame:
            raise RuntimeError("a bug in the transport")

    async def record(frame: str) -> None:
        if '"subscribed"' in frame:
            subscribed.append("fine")
        received.extend(m["n"] for m in json.loads(frame) if m["type"] == "chunk")

    def handler(exc: Exception) -> None:
        raise ValueError("a bug in its handler") from exc

    clock = Clock()
    async with Hub(clock=clock) as hub:
        broken, fine = (hub.sessions.connect(Principal(user=None), "websocket") for _ in range(2))
        for conn, send in ((broken, fails), (fine, record)):
            await hub.sessions.open(conn, Hello())
            conn.attach(send, handler)
        with anyio.fail_after(5):
            while len(subscribed) < 2:  # welcome and subscribed sent
                await anyio.lowlevel.checkpoint()
        clock.now += QUIET  # the process is quiet: straight to the sockets
        for n in (1, 2):
            await hub.publish(Chunk(n, ""), to=Everyone)
            with anyio.fail_after(5):
                while received[-1:] != [n]:
                    await anyio.lowlevel.checkpoint()
        assert broken.close_code == 1011 and fine.close_code is None
        assert hub.metrics.errors == 1
        for conn in (broken, fine):
            hub.sessions.unregister(conn)


def _heartbeat_pass(hub: Hub, clock: Clock) -> None:
    """A pass of the hub's sweeper that finds every connection due for a ping."""
    limits = hub.limits
    later = clock.now + 2 * limits.heartbeat_interval  # (nothing heard since: all due)
    sweep_once(list(hub.connections()), limits, later, time.time(), lambda stream: 0.0)


async def test_a_heartbeat_pass_during_a_broadcast_leaves_it_on_its_way(
    anyio_backend: str,
) -> None:
    """With thousands of clients, a sweeper pass lands in the middle of a broadcast every few
    events. Its pings go out with the broadcast; they must not divert what remains of it into
    every outbox (per-connection work, slices of 2 ms: the slowest fan-outs of the dashboard
    benchmark at N = 5,000)."""
    clock = Clock()
    async with Hub(clock=clock) as hub:
        received = await _costly_clients(hub, clock, 300)  # a broadcast of about 60 ms
        await hub.publish(Chunk(1, ""), to=Everyone)  # returns with part of it sent
        flusher = hub._flusher
        in_progress = flusher._broadcast is not None
        _heartbeat_pass(hub, clock)
        if anyio_backend == "asyncio":
            assert in_progress
            assert flusher._broadcast is not None, "the pings settled the broadcast"
        with anyio.fail_after(5):
            while sum(map(len, received.values())) < 300 * 4:
                await anyio.lowlevel.checkpoint()
        assert all(sorted(_kinds(got)) == ["chunk1", "ping"] for got in received.values())
        for conn in list(hub.connections()):
            hub.sessions.unregister(conn)


@pytest.mark.parametrize("flush_interval", [0.0, 0.01], ids=["default", "batching"])
async def test_an_event_right_after_a_heartbeat_pass_leaves_at_once(
    anyio_backend: str, flush_interval: float
) -> None:
    """Pings are not traffic: pending or just sent, they neither hold the next event for a
    flush interval nor send it through the outboxes in a later pass."""
    frames = _Frames()
    until_delivered = frames.until
    clock = Clock()
    async with Hub(clock=clock, limits=Limits(flush_interval=flush_interval)) as hub:
        conns = await frames.clients(hub, 10)
        clock.now += max(QUIET, flush_interval)  # the process has been quiet for a while
        frames.clear()
        _heartbeat_pass(hub, clock)
        await until_delivered(10)  # the pings are sent
        _heartbeat_pass(hub, clock)  # more pings, pending when the event comes
        await hub.publish(Chunk(0, ""), to=Everyone)
        if anyio_backend == "asyncio":  # sent as it was fanned out (with the pings pending)
            chunks = [m for frame in frames for m in frame if m["type"] == "chunk"]
            assert len(chunks) == 10
        await until_delivered(10 * 3)
        for conn in conns:
            hub.sessions.unregister(conn)

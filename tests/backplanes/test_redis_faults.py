"""The Redis backplane when redis-server dies, restarts, pauses or drops the connection.

Each test runs its own redis-server (`own_redis_server`, see tests/redis_server.py), and a
backplane with short timings: PING every 0.1 s, commands bounded by 0.5 s, reconnection
attempts at most 0.2 s apart.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from redis_server import RedisServer

from liveupdates.backplanes._redis_subscriber import Subscriber
from liveupdates.backplanes.redis import RedisBackplane
from liveupdates.errors import BackplaneUnavailable, HubClosed
from liveupdates.positions import Position, Publication
from liveupdates.testing import RecordingReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

STREAM = "topic:jobs"
TIMINGS = "health_check_interval=0.1&timeout=0.5&max_reconnect_delay=0.2"
DEFAULT_BACKOFF = "health_check_interval=0.1&timeout=0.5"  # max_reconnect_delay: 5 s
PROMPT = 2.0  # seconds within which a failing publish must raise (timeout is 0.5 s)
RESUMED = 0.5  # seconds after Redis is back within which publishing works again


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


@asynccontextmanager
async def started(
    server: RedisServer, timings: str = TIMINGS
) -> AsyncIterator[tuple[RedisBackplane, RecordingReceiver]]:
    backplane = RedisBackplane.from_url(f"{server.url}?{timings}")
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        await backplane.listen(STREAM)
        yield backplane, receiver
    finally:
        await backplane.aclose()


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (state changed by an external process), for at most 10 s."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but time
            await anyio.sleep(0.01)


async def reconnected(receiver: RecordingReceiver, resets: int) -> None:
    with anyio.fail_after(10):
        await receiver.wait_for(lambda: receiver.resets >= resets)


async def publish_fails_promptly(backplane: RedisBackplane) -> None:
    with anyio.fail_after(PROMPT), pytest.raises(BackplaneUnavailable):
        await backplane.publish(STREAM, b"{}")


async def test_kill_during_publishes_then_restart(own_redis_server: RedisServer) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        outcomes: list[Publication | BackplaneUnavailable] = []
        killed = anyio.Event()

        async def publisher() -> None:
            for _ in range(1_000_000):
                try:
                    with anyio.fail_after(PROMPT):
                        outcomes.append(await backplane.publish(STREAM, b'{"type":"x"}'))
                except BackplaneUnavailable as exc:
                    outcomes.append(exc)
                    if killed.is_set():
                        return
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(publisher)
            with anyio.fail_after(10):
                await receiver.wait_for(lambda: len(receiver.of(STREAM)) >= 20)
            own_redis_server.kill9()
            killed.set()

        published = [item for item in outcomes if isinstance(item, Publication)]
        assert isinstance(outcomes[-1], BackplaneUnavailable)
        assert [pub.offset for pub in published] == list(range(1, len(published) + 1))
        old = published[-1].position

        await until(lambda: not backplane.connected)
        await publish_fails_promptly(backplane)
        with pytest.raises(BackplaneUnavailable):
            await backplane.replay(STREAM, old)
        assert receiver.resets == 0

        own_redis_server.start()
        await reconnected(receiver, 1)
        new = await backplane.publish(STREAM, b"{}")
        assert new.epoch != old.epoch  # the history was lost with the process
        assert new.offset == 1
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM)[-1] == new)
        replay = await backplane.replay(STREAM, old)
        assert not replay.complete
        assert replay.head == new.position
        assert receiver.resets == 1
        assert backplane.reconnects == 1


async def test_publishing_resumes_as_soon_as_redis_accepts_connections_again(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A publish that finds the link down cuts the reconnection backoff short: publishing works
    again within RESUMED of Redis' restart, not after the rest of a backoff that has grown to
    `max_reconnect_delay` (5 s by default, so without the hurry each round would pass with a
    chance of about 1 in 10)."""
    caplog.set_level(logging.DEBUG, logger="liveupdates.backplanes.redis")
    failed = re.compile(r"reconnecting to Redis failed \(attempt (\d+)\)")

    def attempts() -> int:
        found = (failed.match(record.getMessage()) for record in caplog.records)
        return max((int(match[1]) for match in found if match), default=0)

    async with started(own_redis_server, DEFAULT_BACKOFF) as (backplane, receiver):
        for round in (1, 2):
            own_redis_server.kill9()
            await until(lambda: not backplane.connected)
            caplog.clear()
            await publish_fails_promptly(backplane)
            await until(lambda: attempts() >= 7)  # the next wait is up to 5 s (0.05 * 2**7)
            own_redis_server.start()  # returns once it answers PING
            back = anyio.current_time()
            with anyio.fail_after(10):
                while True:
                    try:
                        publication = await backplane.publish(STREAM, b"{}")
                        break
                    except BackplaneUnavailable:
                        await anyio.sleep(0.005)  # a caller retrying, as after a 503
            resumed = anyio.current_time() - back
            assert resumed < RESUMED, f"round {round}: publishing resumed after {resumed:.3f} s"
            assert publication.offset == 1  # (a new epoch: the history died with the process)
            await reconnected(receiver, round)
            with anyio.fail_after(10):
                await receiver.wait_for(lambda: receiver.of(STREAM)[-1:] == [publication])  # noqa: B023
        assert backplane.reconnects == 2


async def test_publishes_failing_while_redis_is_down_do_not_storm_it(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of publishes failing while Redis is down cost one reconnection attempt at a
    time, each at least 50 ms after the previous one ended: at most 20 a second, however many
    publishes fail. (The plain backoff would take some 35 s for those 20 attempts.)"""
    caplog.set_level(logging.DEBUG, logger="liveupdates.backplanes.redis")
    async with started(own_redis_server, DEFAULT_BACKOFF) as (backplane, _):
        own_redis_server.kill9()
        await until(lambda: not backplane.connected)
        caplog.clear()

        def attempts() -> list[float]:
            return [r.created for r in caplog.records if "reconnecting to Redis failed" in r.msg]

        publishes = 0
        with anyio.fail_after(10):
            while len(attempts()) < 20:
                with pytest.raises(BackplaneUnavailable):
                    await backplane.publish(STREAM, b"{}")
                publishes += 1
                await anyio.lowlevel.checkpoint()
        times = attempts()
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) > 0.045, gaps  # 50 ms apart (log times: wall clock, to the ms)
        assert publishes > 10 * len(times), (publishes, len(times))


async def test_pause_is_noticed_and_resume_recovers(own_redis_server: RedisServer) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        before = await backplane.publish(STREAM, b"{}")
        own_redis_server.pause()
        try:
            await publish_fails_promptly(backplane)
            await until(lambda: not backplane.connected)  # the PING watchdog noticed
            await publish_fails_promptly(backplane)
        finally:
            own_redis_server.resume()
        await reconnected(receiver, 1)
        after = await backplane.publish(STREAM, b"{}")
        # The server kept its data: same epoch. The publish sent while it was paused may
        # have run once it resumed (its caller was told it failed), so offsets may skip one.
        assert after.epoch == before.epoch
        assert after.offset in (before.offset + 1, before.offset + 2)
        replay = await backplane.replay(STREAM, before.position)
        assert replay.complete
        assert replay.publications[-1] == after
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM)[-1] == after)
        assert receiver.resets == 1


async def test_restart_from_an_older_snapshot_changes_the_epoch(
    own_redis_server: RedisServer,
) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        published = [await backplane.publish(STREAM, b"{}") for _ in range(3)]
        own_redis_server.command("SAVE")  # the snapshot holds offset 3
        published += [await backplane.publish(STREAM, b"{}") for _ in range(2)]
        own_redis_server.restart()
        meta = backplane.names(STREAM).meta
        assert own_redis_server.command("HGET", meta, "offset") == b"3"  # restored, older
        await reconnected(receiver, 1)
        new = await backplane.publish(STREAM, b"{}")
        # Offset 4 of the old epoch was already seen by clients: reusing it would hide this.
        assert new.epoch != published[0].epoch
        for cursor in (published[2].position, published[4].position):
            assert not (await backplane.replay(STREAM, cursor)).complete


async def test_killed_pubsub_connection_reconnects_and_resets(
    own_redis_server: RedisServer,
) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        first = await backplane.publish(STREAM, b"{}")
        for resets in (1, 2):
            own_redis_server.command("CLIENT", "KILL", "TYPE", "pubsub")
            await reconnected(receiver, resets)
            pub = await backplane.publish(STREAM, b"{}")
            with anyio.fail_after(10):
                await receiver.wait_for(lambda: receiver.of(STREAM)[-1] == pub)  # noqa: B023
            assert pub.epoch == first.epoch
        assert receiver.resets == 2
        assert backplane.reconnects == 2


async def test_a_failed_command_is_followed_by_a_reset(own_redis_server: RedisServer) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        first = await backplane.publish(STREAM, b"{}")
        own_redis_server.command("CLIENT", "KILL", "TYPE", "normal")  # not the pub/sub link
        with pytest.raises(BackplaneUnavailable):
            await backplane.publish(STREAM, b"{}")  # on a pooled connection that was killed
        await reconnected(receiver, 1)  # so the hub retries whatever failed meanwhile
        second = await backplane.publish(STREAM, b"{}")
        assert second.position == Position(first.epoch, first.offset + 1)
        assert receiver.resets == 1


async def test_streams_listened_while_down_are_subscribed_on_reconnect(
    own_redis_server: RedisServer,
) -> None:
    async with started(own_redis_server) as (backplane, receiver):
        own_redis_server.kill9()
        await until(lambda: not backplane.connected)
        with anyio.fail_after(PROMPT):
            await backplane.listen("topic:later")  # does not fail: subscribed on reconnect
            await backplane.unlisten(STREAM)
        own_redis_server.start()
        await reconnected(receiver, 1)
        later = await backplane.publish("topic:later", b"{}")
        await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: bool(receiver.of("topic:later")))
        assert receiver.publications == [later]  # the unlistened stream is not delivered


async def test_start_fails_promptly_when_redis_is_down(own_redis_server: RedisServer) -> None:
    own_redis_server.kill9()
    backplane = RedisBackplane.from_url(f"{own_redis_server.url}?{TIMINGS}")
    with anyio.fail_after(PROMPT), pytest.raises(BackplaneUnavailable):
        await backplane.start(RecordingReceiver())
    await backplane.aclose()  # idempotent: start closed it already
    with pytest.raises(HubClosed):
        await backplane.replay(STREAM, Position("e", 0))


class Proxy:
    """A TCP proxy in front of Redis that can make 'Redis' send bytes of its own."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._to_clients: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._to_clients:
            writer.close()

    def inject(self, data: bytes) -> None:
        """Send `data` to every client, as if Redis had sent it."""
        for writer in self._to_clients:
            writer.write(data)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._to_clients.append(client_w)

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with suppress(OSError):
                while data := await reader.read(65536):
                    writer.write(data)
            writer.close()

        await asyncio.gather(pump(client_r, redis_w), pump(redis_r, client_w))


async def test_what_is_not_resp2_from_redis_ends_the_links_and_they_reconnect(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer that sends garbage (not Redis, or a broken proxy) costs a reconnection and a
    reset, at once and logged as such, never a crash or a hang; publications flow again."""
    async with Proxy(own_redis_server.port) as proxy:
        backplane = RedisBackplane.from_url(f"redis://127.0.0.1:{proxy.port}/0?{TIMINGS}")
        receiver = RecordingReceiver()
        await backplane.start(receiver)
        try:
            await backplane.listen(STREAM)
            first = await backplane.publish(STREAM, b"1")
            proxy.inject(b"?this is not RESP\r\n")
            await reconnected(receiver, 1)
            second = await backplane.publish(STREAM, b"2")
            assert second.position == Position(first.epoch, first.offset + 1)
            with anyio.fail_after(10):
                await receiver.wait_for(lambda: receiver.of(STREAM)[-1:] == [second])
            assert backplane.reconnects == 1
            lost = [r.getMessage() for r in caplog.records if "lost the Redis" in r.getMessage()]
            assert lost and "not RESP2" in lost[0]
        finally:
            await backplane.aclose()


BUSY_LOOPS = pytest.mark.parametrize(
    "anyio_backend",
    ["asyncio", ("asyncio", {"use_uvloop": True})],
    ids=["asyncio", "uvloop"],  # (uvloop, as under uvicorn, runs due timers before it polls)
)


@BUSY_LOOPS
async def test_a_process_busy_for_longer_than_the_timeout_keeps_its_link(
    own_redis_server: RedisServer,
) -> None:
    """A hub busy for seconds (a storm of handshakes on a loaded machine) reads Redis' replies
    late: they are waiting in its socket when its timer comes due. That is not Redis' silence:
    the command gets its reply and the link stays up (it used to fail every command in flight,
    take Redis for lost and reconnect)."""
    async with started(own_redis_server, "health_check_interval=0&timeout=0.3") as (
        backplane,
        receiver,
    ):
        await backplane.publish(STREAM, b"{}")
        pipeline = backplane._pipeline
        assert pipeline is not None
        publish = asyncio.ensure_future(backplane.publish(STREAM, b"{}"))
        while not pipeline._waiting:  # noqa: ASYNC110 (written in the step that queues it)
            await asyncio.sleep(0)
        # the process busy: the reply waits in the socket while the timer comes due
        time.sleep(0.6)  # noqa: ASYNC251 (blocking the event loop is the point)
        assert own_redis_server.command("XLEN", f"{{lu:{STREAM}}}:log") == 2  # Redis answered
        publication = await publish
        assert publication.offset == 2
        assert backplane.connected
        await backplane.publish(STREAM, b"{}")
        assert receiver.resets == 0


@BUSY_LOOPS
async def test_commands_answered_slowly_but_steadily_keep_the_link(
    own_redis_server: RedisServer,
) -> None:
    """A deep queue of commands, each answered in turn: the last one's reply comes later than
    `timeout` after it was sent, but Redis was never silent for that long."""
    async with started(own_redis_server, "health_check_interval=0&timeout=0.3") as (
        backplane,
        receiver,
    ):
        pipeline = backplane._pipeline
        assert pipeline is not None
        # each BLPOP blocks this connection 0.05 s, so the 12th reply comes 0.6 s after it was
        # sent, with a reply every 0.05 s meanwhile
        replies = await asyncio.gather(
            *(pipeline.call("BLPOP", "nothing", 0.05) for _ in range(12))
        )
        assert replies == [None] * 12
        assert backplane.connected and receiver.resets == 0
        await backplane.publish(STREAM, b"{}")


@BUSY_LOOPS
async def test_a_process_busy_for_longer_than_the_timeout_keeps_its_pubsub_link(
    own_redis_server: RedisServer,
) -> None:
    """The same for the pub/sub connection's watchdog: its PONG waits in the socket."""
    async with started(own_redis_server, "health_check_interval=0.02&timeout=0.3") as (
        backplane,
        receiver,
    ):
        subscriber = backplane._subscriber
        assert isinstance(subscriber, Subscriber)
        pubsub: Any = subscriber._pubsub
        send, pinged = pubsub.execute_command, list[tuple[Any, ...]]()

        async def send_then_block(*args: Any) -> None:
            await send(*args)
            if args == ("PING",):
                pinged.append(args)
                if len(pinged) == 1:  # a PING in flight: the process busy now
                    time.sleep(0.6)  # noqa: ASYNC251 (blocking the event loop is the point)

        pubsub.execute_command = send_then_block
        # the watchdog's next PING (so it took the last one as answered), or the link lost
        await until(lambda: len(pinged) > 1 or backplane._subscriber is not subscriber)
        assert backplane.connected and receiver.resets == 0
        await backplane.publish(STREAM, b"{}")

"""The Redis backplane as it is deployed: ACL users, TLS, long replays, a missing extra.

Each failure must say what to do, at start where possible, and keep Redis' own message. Every
test runs real redis-server processes (tests/redis_server.py).
"""

from __future__ import annotations

import random
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import redis
from redis_server import REDIS_SERVER, RedisServer, free_port, redis_server_available

from liveupdates import Invalidate, Producer, Topic
from liveupdates.backplanes._redis_errors import acl_rule
from liveupdates.backplanes.redis import REPLAY_CHUNK, RedisBackplane
from liveupdates.errors import BackplaneError, BackplaneUnavailable
from liveupdates.positions import Position
from liveupdates.testing import RecordingReceiver

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

STREAM = "topic:jobs"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio


@asynccontextmanager
async def started(url: str) -> AsyncIterator[tuple[RedisBackplane, RecordingReceiver]]:
    backplane = RedisBackplane.from_url(url)
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        yield backplane, receiver
    finally:
        await backplane.aclose()


async def until(condition: Callable[[], bool]) -> None:
    """Poll `condition` (what redis-server, another process, sees), for at most 10 s."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110 - nothing to wait on but time
            await anyio.sleep(0.01)


async def start_fails(url: str) -> BackplaneError:
    backplane = RedisBackplane.from_url(url)
    with anyio.fail_after(10), pytest.raises(BackplaneError) as caught:
        await backplane.start(RecordingReceiver())
    return caught.value


# Long replays --------------------------------------------------------------------------------


class LoopLag:
    """The longest time the event loop ran other code between two 1 ms ticks of this monitor.

    Measured in CPU time of the thread, so that the machine's other processes (which may take
    the CPU away for tens of milliseconds on a loaded machine) do not count as blocking.
    """

    def __init__(self) -> None:
        self.worst = 0.0

    async def run(self) -> None:
        last = time.thread_time()
        while True:
            await anyio.sleep(0.001)
            now = time.thread_time()
            self.worst = max(self.worst, now - last)
            last = now


async def test_a_replay_of_1000_entries_of_16_kb_never_blocks_the_loop_for_20_ms(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    body = b'{"type":"big","pad":"' + b"x" * 16_000 + b'"}'
    url = redis_server.backplane_url(prefix=redis_prefix, history_size=1000, timeout=10)
    async with started(url) as (backplane, _):
        first = await backplane.publish(STREAM, body)
        published = [first] + [await backplane.publish(STREAM, body) for _ in range(999)]
        since = Position(first.epoch, 0)
        lag = LoopLag()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lag.run)
            await anyio.sleep(0.01)  # the monitor ticks
            replay = await backplane.replay(STREAM, since)
            tg.cancel_scope.cancel()
    assert replay.complete and replay.publications == published  # exact, in order
    assert len(published) > 10 * REPLAY_CHUNK  # (read in many chunks)
    assert lag.worst < 0.020, f"the event loop was blocked for {lag.worst * 1000:.1f} ms"


async def test_a_replay_whose_history_is_trimmed_between_chunks_is_incomplete(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    url = redis_server.backplane_url(prefix=redis_prefix, history_size=1000)
    async with started(url) as (backplane, _):
        published = [await backplane.publish(STREAM, b"{}") for _ in range(3 * REPLAY_CHUNK)]
        names = backplane.names(STREAM)
        # Entries in the middle vanish (an eviction, a manual XDEL): never silence, a gap.
        entries = redis_server.command("XRANGE", names.log, "-", "+")
        redis_server.command("XDEL", names.log, entries[REPLAY_CHUNK][0])
        replay = await backplane.replay(STREAM, published[0].position)
        assert not replay.complete
        assert replay.head == published[-1].position
        recent = await backplane.replay(STREAM, published[-REPLAY_CHUNK - 5].position)
        assert recent.complete and recent.publications == published[-REPLAY_CHUNK - 4 :]


# Publishing comes back as soon as Redis does -------------------------------------------------


async def test_publishing_resumes_promptly_after_redis_comes_back(
    own_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reconnection backoff has grown to seconds; a publish that finds the connection
    down makes the backplane try at once, so publishing resumes well within the backoff."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)  # no jitter: the ceiling
    url = own_redis_server.backplane_url(timeout=0.5, max_reconnect_delay=5)
    async with started(url) as (backplane, receiver):
        await backplane.listen(STREAM)
        own_redis_server.kill9()
        with anyio.fail_after(10):
            while backplane.connected:  # noqa: ASYNC110 - an external process died
                await anyio.sleep(0.01)
        # The backoff grows: attempts 0.05, 0.15, 0.35, 0.75, 1.55, 3.15 and 6.35 s after.
        await anyio.sleep(3.5)
        own_redis_server.start()
        back = time.perf_counter()
        with anyio.fail_after(10):
            while True:
                try:
                    published = await backplane.publish(STREAM, b"{}")
                    break
                except BackplaneUnavailable:
                    await anyio.sleep(0.005)
        resumed = time.perf_counter() - back
        assert resumed < 0.5, f"publishing resumed {resumed:.3f} s after Redis came back"
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM)[-1:] == [published])
        assert receiver.resets == 1


# Standalone forms ----------------------------------------------------------------------------


async def test_a_unix_socket_and_a_database_number(tmp_path: Path) -> None:
    if not redis_server_available():
        pytest.skip("redis-server not found")
    sock = tmp_path / "redis.sock"
    args = ["--unixsocket", str(sock), "--unixsocketperm", "700"]
    with RedisServer(tmp_path, args=args) as server:
        async with started(f"unix://{sock}?db=3&prefix=u") as (backplane, receiver):
            await backplane.listen(STREAM)
            pub = await backplane.publish(STREAM, b"{}")
            with anyio.fail_after(10):
                await receiver.wait_for(lambda: receiver.of(STREAM) == [pub])
        with redis.Redis(unix_socket_path=str(sock), db=3) as client:
            assert client.exists(backplane.names(STREAM).meta) == 1
        with redis.Redis(port=server.port, db=0) as client:
            assert client.dbsize() == 0  # nothing in the default database


# ACL users -----------------------------------------------------------------------------------


def acl_setuser(server: RedisServer, rule: str) -> None:
    args = shlex.split(rule)
    assert args[:2] == ["ACL", "SETUSER"]
    server.command(*args)


async def test_the_documented_minimal_acl_rule_is_enough(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    user = "lu" + redis_prefix
    rule = acl_rule(redis_prefix, user=user).replace(">password", ">s3cret")
    acl_setuser(redis_server, rule)
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    async with started(url) as (backplane, receiver):
        await backplane.listen(STREAM)
        published = [await backplane.publish(STREAM, b"{}") for _ in range(3)]
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: len(receiver.of(STREAM)) == 3)
        replay = await backplane.replay(STREAM, Position(published[0].epoch, 0))
        assert replay.complete and replay.publications == published
        await backplane.unlisten(STREAM)


@pytest.mark.parametrize(
    ("drop", "named"),
    [
        ("-info", "info server"),
        ("resetchannels &{%s:topic:*}", "subscribe {%s:liveupdates-acl-check}:ch"),
        ("-xadd", "xadd {%s:liveupdates-acl-check}:log"),
    ],
)
async def test_a_missing_acl_permission_fails_at_start_naming_it_and_the_rule(
    redis_server: RedisServer, redis_prefix: str, drop: str, named: str
) -> None:
    user = "lu" + redis_prefix
    rule = acl_rule(redis_prefix, user=user).replace(">password", ">s3cret")
    acl_setuser(redis_server, rule + " " + (drop % redis_prefix if "%s" in drop else drop))
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    error = await start_fails(url)
    message = str(error)
    assert (named % redis_prefix if "%s" in named else named) in message
    assert f"ACL SETUSER <user> on >password resetkeys ~{{{redis_prefix}:*" in message
    assert not isinstance(error, BackplaneUnavailable)  # not "Redis is down"


async def test_a_channel_refused_at_listen_names_the_channel_and_the_rule(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """NOPERM on SUBSCRIBE used to be swallowed (a timeout, then reconnections forever)."""
    user = "lu" + redis_prefix
    rule = acl_rule(redis_prefix, user=user).replace(">password", ">s3cret")
    acl_setuser(
        redis_server,
        rule + f" resetchannels &{{{redis_prefix}:liveupdates-acl-check}}:ch"
        f" &{{{redis_prefix}:topic:*",
    )
    url = f"redis://{user}:s3cret@127.0.0.1:{redis_server.port}/0?prefix={redis_prefix}"
    async with started(url) as (backplane, receiver):
        await backplane.listen(STREAM)  # allowed
        with anyio.fail_after(5), pytest.raises(BackplaneError) as caught:
            await backplane.listen("user:7")
        message = str(caught.value)
        assert "NOPERM" in message  # Redis' own words
        assert f"{{{redis_prefix}:user:7}}:ch" in message
        assert "ACL SETUSER" in message
        pub = await backplane.publish(STREAM, b"{}")  # the connection is fine
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM) == [pub])
        assert (backplane.reconnects, receiver.resets) == (0, 0)


async def test_a_wrong_password_keeps_redis_words_and_says_what_to_check(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    url = f"redis://nobody:wrong@127.0.0.1:{redis_server.port}/0"
    error = await start_fails(url)
    assert "WRONGPASS" in str(error) or "invalid username-password" in str(error)
    assert "user name and password" in str(error)
    assert "AuthenticationError:" in str(error)  # the type and its message, not a bare repr


# TLS -----------------------------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "redis.pem", directory / "redis.key", directory / "redis.csr"
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    for command in (
        f"req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout {ca_key} -out {ca}",
        f"req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout {key} -out {csr}",
        f"x509 -req -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial -days 1 "
        f"-extfile {ext} -out {cert}",
    ):
        subprocess.run(["openssl", *command.split()], check=True, capture_output=True)
    return ca, cert, key


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    """A redis-server with a plain port (for the test suite) and a TLS port: (server, TLS
    port, CA file)."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    ca, cert, key = make_certificates(tmp_path)
    tls_port = free_port()
    server = RedisServer(
        tmp_path,
        args=["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file",
              str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
    )  # fmt: skip
    server.start()
    try:
        yield server, tls_port, ca
    finally:
        server.stop()


async def test_tls_with_the_ca_works(tls_redis: tuple[RedisServer, int, Path]) -> None:
    _, port, ca = tls_redis
    async with started(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}") as (backplane, rec):
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(10):
            await rec.wait_for(lambda: rec.of(STREAM) == [pub])


async def test_an_untrusted_certificate_says_certificate(
    tls_redis: tuple[RedisServer, int, Path],
) -> None:
    _, port, _ = tls_redis
    error = await start_fails(f"rediss://127.0.0.1:{port}/0?timeout=2")
    assert "certificate" in str(error)
    assert "ssl_ca_certs" in str(error)


async def test_plain_redis_url_on_a_tls_port_says_to_use_rediss(
    tls_redis: tuple[RedisServer, int, Path],
) -> None:
    _, port, _ = tls_redis
    error = await start_fails(f"redis://127.0.0.1:{port}/0?timeout=1")
    assert "rediss://" in str(error)


# A missing extra -----------------------------------------------------------------------------


def test_a_missing_redis_extra_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from liveupdates.backplanes import backplane_from_url\n"
        "backplane_from_url('redis://127.0.0.1:6379/0')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "pip install 'liveupdates[redis]'" in result.stderr
    assert "ModuleNotFoundError" in result.stderr


# Sentinel ------------------------------------------------------------------------------------


@pytest.fixture
def sentinel(tmp_path: Path, redis_server: RedisServer) -> Iterator[int]:
    """One sentinel (redis-server --sentinel) watching the session's Redis as ``mymaster``."""
    if not redis_server_available():
        pytest.skip("redis-server not found")
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {redis_server.port} 1\n"
    )
    process = subprocess.Popen(
        [REDIS_SERVER, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # an external process: a bounded wait until it knows the master
            try:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    if client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"):
                        break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel did not start")
            time.sleep(0.01)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)


async def test_sentinel_url(sentinel: int, redis_prefix: str) -> None:
    url = (
        f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0?prefix={redis_prefix}"
        "&socket_keepalive=true&health_check_interval=0.5"
    )
    async with started(url) as (backplane, receiver):
        kwargs = backplane._client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        assert (kwargs["socket_keepalive"], kwargs["db"]) == (True, 0)  # typed as redis-py does
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM) == [pub])
        assert (await backplane.replay(STREAM, Position(pub.epoch, 0))).publications == [pub]


async def test_sentinel_client(sentinel: int, redis_prefix: str) -> None:
    from redis.asyncio.sentinel import Sentinel

    make_sentinel: Any = Sentinel  # (untyped in redis-py)
    sentinels = make_sentinel([("127.0.0.1", sentinel)])
    client = sentinels.master_for("mymaster")
    backplane = RedisBackplane(client, prefix=redis_prefix)
    receiver = RecordingReceiver()
    await backplane.start(receiver)
    try:
        await backplane.listen(STREAM)
        pub = await backplane.publish(STREAM, b"{}")
        with anyio.fail_after(10):
            await receiver.wait_for(lambda: receiver.of(STREAM) == [pub])
    finally:
        await backplane.aclose()
        await client.aclose()  # the application's: the backplane did not close it
        for connection in sentinels.sentinels:
            await connection.aclose()


async def test_a_producer_through_sentinel_holds_one_connection_to_the_master_and_none_else(
    sentinel: int, redis_server: RedisServer, redis_prefix: str
) -> None:
    """Publish-only (`start_publishing`, as a `Producer` starts it): the command pipeline is
    the one connection to the master, and the connection that asked the sentinel for the
    master is closed too."""
    name = "producer-" + redis_prefix
    url = (
        f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0?prefix={redis_prefix}&client_name={name}"
    )
    with redis.Redis(port=sentinel, socket_timeout=2) as asking:

        def at_sentinel() -> int:  # the sentinel's clients but this one (nobody else's)
            return sum(1 for c in asking.client_list() if c["cmd"] != "client|list")

        def at_master() -> list[dict[str, str]]:
            with redis.Redis(port=redis_server.port, socket_timeout=2) as client:
                return [c for c in client.client_list() if c["name"] == name]

        async with Producer(url) as producer:
            await until(lambda: len(at_master()) == 1 and at_sentinel() == 0)
            (link,) = at_master()
            assert link["sub"] == "0"
            (pub,) = await producer.publish(Invalidate(["jobs"]), to=Topic("jobs"))
            assert [c["id"] for c in at_master()] == [link["id"]]
    meta = "{" + redis_prefix + ":topic:jobs}:meta"
    assert (pub.stream, pub.offset) == (STREAM, 1)
    assert redis_server.command("HGET", meta, "offset") == b"1"


def test_sentinel_url_errors() -> None:
    with pytest.raises(ValueError, match="names the sentinels and the service"):
        RedisBackplane.from_url("redis+sentinel://127.0.0.1:26379")

"""End to end over uvicorn: what clients see when authentication fails rather than refuses.

A hook that raises is a server error: 1011 (503 on SSE, before the stream), logged with its
traceback, retried by clients. A sync hook runs in a worker thread, so a blocking one stalls
nobody else. An expired credential is refused at the handshake and at `refresh` (4440), before
any `welcome`, replay or `refreshed`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from httpx_ws import WebSocketDisconnect
from support import Client, UvicornThread, hub_stats, serve_hub, ws_client
from test_sse import sse

from liveupdates import Hub, Invalidate, Principal, User
from liveupdates.auth import AuthRequest

pytestmark = pytest.mark.anyio

entered = threading.Event()  # a blocking hook has started...
released = threading.Event()  # ...and waits for this


def authenticate(request: AuthRequest) -> Principal | None:
    """A sync hook, as a Django app writes it: 'boom' fails (a database blip), 'expired-<user>'
    names a credential that expired ten seconds ago, 'block-<user>' blocks until `released`."""
    token = request.token
    if token is None or token.startswith("bad"):
        return None
    if token == "boom":
        raise RuntimeError("database blip")
    if token.startswith("expired-"):
        return Principal(user=token.removeprefix("expired-"), expires_at=time.time() - 10)
    if token.startswith("block-"):
        entered.set()
        if not released.wait(10):  # blocks the thread it runs in
            raise RuntimeError("never released")
        return Principal(user=token.removeprefix("block-"))
    return Principal(user=token, expires_at=time.time() + 3600)


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    server = serve_hub(Hub(authenticate=authenticate))
    yield server
    server.stop()


async def everything_until_closed(client: Client) -> tuple[list[dict[str, Any]], int]:
    """Every message the server sends, and the close code that ends them."""
    messages: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(10):
            while True:
                messages.append(await client.receive())
    except WebSocketDisconnect as exc:
        return messages, exc.code


def hook_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == "the authentication hook failed"]


async def test_a_raising_hook_closes_with_1011_logged_with_its_traceback(
    server: UvicornThread, caplog: pytest.LogCaptureFixture
) -> None:
    before = await hub_stats(server)
    async with ws_client(server) as client:
        await client.send({"type": "hello", "token": "boom"})
        messages, code = await everything_until_closed(client)
    assert (messages, code) == ([], 1011)  # retryable: not 4401, which stops every client
    (record,) = hook_failures(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None and str(record.exc_info[1]) == "database blip"
    after = await hub_stats(server)
    assert after.errors == before.errors + 1  # a server error...
    assert after.auth_failures == before.auth_failures  # ...not a refused credential


async def test_a_hook_that_rejects_still_closes_with_4401(server: UvicornThread) -> None:
    async with ws_client(server) as client:
        await client.send({"type": "hello", "token": "bad-token"})
        assert await everything_until_closed(client) == ([], 4401)


async def test_a_raising_hook_at_refresh_closes_with_1011(
    server: UvicornThread, caplog: pytest.LogCaptureFixture
) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="carl")
        await client.send({"type": "refresh", "token": "boom"})
        messages, code = await everything_until_closed(client)
    assert code == 1011
    assert [m for m in messages if m["type"] == "refreshed"] == []
    assert len(hook_failures(caplog)) == 1


async def test_a_raising_hook_answers_sse_with_503_before_the_stream(
    server: UvicornThread, caplog: pytest.LogCaptureFixture
) -> None:
    async with sse(server, token="boom") as stream:
        assert stream.status_code == 503  # EventSource fails, and the client retries later
        assert stream.headers["retry-after"] == "5"
        assert b"try again" in await stream.body()
    (record,) = hook_failures(caplog)
    assert record.exc_info is not None and str(record.exc_info[1]) == "database blip"


async def test_a_blocking_sync_hook_does_not_stall_other_connections(
    server: UvicornThread,
) -> None:
    entered.clear()
    released.clear()
    try:
        async with ws_client(server) as blocked:
            await blocked.send({"type": "hello", "token": "block-ann"})
            assert await anyio.to_thread.run_sync(entered.wait, 10)  # the hook is blocking
            with anyio.fail_after(5):  # meanwhile another connection completes its handshake
                async with ws_client(server) as other:
                    welcome, *_ = await other.handshake(token="bea")
                    assert welcome["user"] == "bea"
            released.set()
            with anyio.fail_after(5):
                welcome = await blocked.until(lambda m: m["type"] == "welcome")
            assert welcome["user"] == "ann"
    finally:
        released.set()  # never leave the server's thread (or its event loop) blocked


async def test_an_expired_credential_is_refused_before_welcome_and_replay(
    server: UvicornThread,
) -> None:
    async with ws_client(server) as client:
        replies = await client.handshake(token="eve")
    mine = next(m for m in replies if m.get("stream") == "user:eve")
    for n in range(5):
        await server.acall(server.hub.publish, Invalidate(["private", n]), User("eve"))  # type: ignore[attr-defined]
    since = {"user:eve": {"epoch": mine["epoch"], "offset": mine["offset"]}}
    async with ws_client(server) as client:
        await client.send({"type": "hello", "token": "expired-eve", "since": since})
        messages, code = await everything_until_closed(client)
    assert (messages, code) == ([], 4440)  # no welcome, none of the 5 private events
    async with ws_client(server) as client:  # with a fresh token the replay is all there
        await client.send({"type": "hello", "token": "eve", "since": since})
        with anyio.fail_after(5):
            (replay,) = await client.events(1)  # coalesced into one invalidate
    assert replay["keys"] == [["private", n] for n in range(5)]


async def test_an_expired_credential_at_refresh_closes_with_4440_without_refreshed(
    server: UvicornThread,
) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="fay")
        await client.send({"type": "refresh", "token": "expired-fay"})
        messages, code = await everything_until_closed(client)
    assert code == 4440
    assert [m["type"] for m in messages if m["type"] in ("refreshed", "error")] == []


async def test_an_expired_credential_over_sse_is_one_error_then_the_end(
    server: UvicornThread,
) -> None:
    async with sse(server, token="expired-gil") as stream:
        assert stream.status_code == 200  # EventSource would hide any other status
        assert await stream.rest() == [
            {"type": "error", "code": "token_expired", "message": "the credential has expired",
             "topic": None, "id": None}
        ]  # fmt: skip

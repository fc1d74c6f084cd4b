"""End to end over uvicorn with the default limits: bad input gets the answer for bad input.

JSON nested thousands of levels deep is malformed input (4400 / `bad_request`, no traceback,
no server error), wherever it comes; a `hello` naming thousands of topics gets one answer for
the excess, not one per topic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from httpx_ws import WebSocketDisconnect
from support import Client, UvicornThread, hub_stats, serve_hub, token_auth, ws_client
from test_sse import sse

from liveupdates import Hub, Principal

pytestmark = pytest.mark.anyio

DEPTH = 5000  # about 10 KB of JSON: far under max_frame_bytes
LIMIT = 100  # the default max_subscriptions


def authorize(principal: Principal, topic: str) -> bool:
    return not topic.startswith("secret")


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    server = serve_hub(Hub(authenticate=token_auth, authorize=authorize))
    yield server
    server.stop()


def deep(depth: int = DEPTH) -> str:
    return "[" * depth + "]" * depth


async def everything_until_closed(client: Client) -> tuple[list[dict[str, Any]], int]:
    messages: list[dict[str, Any]] = []
    try:
        with anyio.fail_after(10):
            while True:
                messages.append(await client.receive())
    except WebSocketDisconnect as exc:
        return messages, exc.code


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        return [await client.receive() for _ in range(count)]


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info is not None or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "hello", "token": "ann", "extra": ' + deep() + "}",
        '{"type": "hello", "token": "ann", "since": {"all": {"epoch": "e", "offset": 1, "x": '
        + deep()
        + "}}}",
    ],
    ids=["unknown-field", "in-a-cursor"],
)
async def test_deeply_nested_json_in_hello_is_a_bad_request(
    server: UvicornThread, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    before = await hub_stats(server)
    async with ws_client(server) as client:
        await client.send_raw(frame)
        assert await everything_until_closed(client) == ([], 4400)
    assert tracebacks(caplog) == []
    assert (await hub_stats(server)).errors == before.errors


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "ping", "extra": ' + deep() + "}",
        '{"type": "subscribe", "topic": "jobs", "since": {"epoch": "e", "offset": 1, "x": '
        + deep()
        + "}}",
    ],
    ids=["ping", "subscribe"],
)
async def test_deeply_nested_json_after_hello_is_a_bad_request(
    server: UvicornThread, caplog: pytest.LogCaptureFixture, frame: str
) -> None:
    caplog.set_level(logging.INFO, logger="liveupdates")
    before = await hub_stats(server)
    async with ws_client(server) as client:
        await client.handshake(token="bob")
        await client.send_raw(frame)
        assert (await everything_until_closed(client))[1] == 4400
    assert tracebacks(caplog) == []
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("bad frame")]
    assert logged.getMessage() == "bad frame: BAD_REQUEST"
    assert (await hub_stats(server)).errors == before.errors


async def test_deeply_nested_json_in_the_sse_since_is_a_bad_request(
    server: UvicornThread, caplog: pytest.LogCaptureFixture
) -> None:
    before = await hub_stats(server)
    since = '{"all": {"epoch": "e", "offset": 1, "x": ' + deep() + "}}"
    async with sse(server, token="cid", since=since) as stream:
        assert stream.status_code == 200
        (message,) = await stream.rest()
    assert (message["type"], message["code"]) == ("error", "bad_request")
    assert message["message"] == "invalid since: nested too deeply"
    assert tracebacks(caplog) == []
    assert (await hub_stats(server)).errors == before.errors


async def test_a_hello_naming_thousands_of_topics_gets_one_answer_for_the_excess(
    server: UvicornThread,
) -> None:
    topics = [f"t-{n}" for n in range(5000)]
    hello = json.dumps({"type": "hello", "token": "dan", "topics": topics}, separators=(",", ":"))
    assert len(hello) < 65_536  # it fits in a frame
    async with ws_client(server) as client:
        await client.send_raw(hello)
        replies = await receive(client, 1 + 2 + LIMIT + 1)
        await client.send({"type": "ping"})
        assert (await client.receive())["type"] == "pong"  # nothing else came meanwhile
    assert sum(len(json.dumps(m)) for m in replies) < 15_000  # about 110 bytes a topic held
    subscribed = [m["stream"] for m in replies if m["type"] == "subscribed"]
    assert subscribed == ["all", "user:dan", *(f"topic:t-{n}" for n in range(LIMIT))]
    (error,) = [m for m in replies if m["type"] == "error"]
    assert (error["code"], error["topic"]) == ("too_many_subscriptions", f"t-{LIMIT}")
    assert error["message"] == (
        f"at most {LIMIT} subscriptions: {5000 - LIMIT} topics from 't-{LIMIT}' on not subscribed"
    )


@pytest.mark.parametrize("kind", ["invalid", "forbidden"])
async def test_a_hello_naming_thousands_of_refused_topics_gets_a_bounded_answer(
    server: UvicornThread, kind: str
) -> None:
    name = "b {}!" if kind == "invalid" else "secret{}"
    topics = [name.format(n) for n in range(3000)]
    async with ws_client(server) as client:
        await client.send({"type": "hello", "token": "eli", "topics": [*topics, "jobs"]})
        replies = await receive(client, 1 + 2 + LIMIT + 1)
        await client.send({"type": "ping"})
        assert (await client.receive())["type"] == "pong"  # nothing else came meanwhile
    errors = [m for m in replies if m["type"] == "error"]
    assert [m["topic"] for m in errors[:LIMIT]] == topics[:LIMIT]
    assert {m["code"] for m in errors[:LIMIT]} == {f"{kind}_topic" if kind == "invalid" else kind}
    assert (errors[LIMIT]["code"], errors[LIMIT]["topic"]) == (
        "too_many_subscriptions",
        topics[LIMIT],
    )
    assert f"{3001 - LIMIT} topics" in errors[LIMIT]["message"]


async def test_sse_topics_beyond_the_limit_get_one_answer(server: UvicornThread) -> None:
    topics = [f"t{n}" for n in range(3000)]
    async with sse(server, token="fay", topics=topics) as stream:
        _, first = await stream.next_event()
    assert len([m for m in first if m["type"] == "subscribed"]) == 2 + LIMIT
    (error,) = [m for m in first if m["type"] == "error"]
    assert (error["code"], error["topic"]) == ("too_many_subscriptions", f"t{LIMIT}")

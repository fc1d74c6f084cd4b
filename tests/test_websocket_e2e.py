"""End to end over uvicorn on 127.0.0.1 with real WebSocket clients: targeting and bad input;
in process, what uvicorn does not do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from httpx_ws import WebSocketDisconnect, WebSocketNetworkError, WebSocketUpgradeError
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from support import Client, UvicornThread, token_auth, ws_client
from wsproto.utilities import LocalProtocolError

from liveupdates import Everyone, Hub, Invalidate, Limits, Principal, Set, Topic, User
from liveupdates.asgi import WebSocketEndpoint

pytestmark = pytest.mark.anyio


def authorize(principal: Principal, topic: str) -> bool:
    return topic != "admin" or principal.user == "root"


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    hub = Hub(
        authenticate=token_auth,
        authorize=authorize,
        limits=Limits(max_frame_bytes=2048, max_subscriptions=3, rate=50, burst=20,
                      hello_timeout=0.5),
    )  # fmt: skip
    app = Starlette(routes=[WebSocketRoute("/live", WebSocketEndpoint(hub))], lifespan=hub.lifespan)
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    server.stop()


async def publish(server: UvicornThread, event: Any, to: Any) -> None:
    await server.acall(server.hub.publish, event, to)  # type: ignore[attr-defined]


@pytest.fixture
async def witness(server: UvicornThread) -> AsyncIterator[Client]:
    """A bystander connection: it must keep receiving whatever others do."""
    async with ws_client(server) as client:
        await client.handshake(token="witness")
        yield client


async def assert_still_serving(server: UvicornThread, witness: Client, marker: str) -> None:
    await publish(server, Set(["marker"], marker), Everyone)
    (event,) = await witness.events(1)
    assert event["data"] == marker


async def test_user_tabs_topics_and_everyone(server: UvicornThread) -> None:
    async with (
        ws_client(server) as tab1,
        ws_client(server) as tab2,
        ws_client(server) as bob,
        ws_client(server) as carol,
    ):
        await tab1.handshake(token="alice", topics=["jobs"])
        await tab2.handshake(token="alice")
        await bob.handshake(token="bob")
        await carol.handshake(token="carol", topics=["jobs"])

        await publish(server, Invalidate(["jobs", "alice"]), User("alice"))
        await publish(server, Set(["jobs", 7, "progress"], {"done": 9}), Topic("jobs"))
        await publish(server, Invalidate(["stats"]), Everyone)

        first, second, third = await tab1.events(3)
        assert (first["stream"], first["keys"]) == ("user:alice", [["jobs", "alice"]])
        assert (second["stream"], second["data"]) == ("topic:jobs", {"done": 9})
        assert (third["stream"], third["keys"]) == ("all", [["stats"]])
        personal, everyone = await tab2.events(2)
        assert personal["keys"] == [["jobs", "alice"]] and personal["offset"] == first["offset"]
        assert everyone["stream"] == "all"
        # bob and carol receive the everyone event first: alice's never reached them
        assert [e["stream"] for e in await bob.events(1)] == ["all"]
        topic, everyone = await carol.events(2)
        assert (topic["stream"], everyone["stream"]) == ("topic:jobs", "all")


async def test_subscribe_and_unsubscribe_at_runtime(server: UvicornThread) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="dave")
        await client.send({"type": "subscribe", "topic": "reports", "id": 1})
        reply = await client.until(lambda m: m["type"] == "subscribed")
        assert (reply["stream"], reply["outcome"], reply["id"]) == ("topic:reports", "fresh", 1)
        await publish(server, Invalidate(["reports"]), Topic("reports"))
        (event,) = await client.events(1)
        assert event["keys"] == [["reports"]]
        await client.send({"type": "unsubscribe", "topic": "reports", "id": 2})
        assert (await client.until(lambda m: m["type"] == "unsubscribed"))["id"] == 2
        await publish(server, Invalidate(["reports"]), Topic("reports"))
        await publish(server, Invalidate(["after"]), User("dave"))
        (event,) = await client.events(1)
        assert event["keys"] == [["after"]]


async def test_subprotocol_and_header_tokens(server: UvicornThread) -> None:
    async with ws_client(server, subprotocols=["liveupdates.v1", "liveupdates.token.erin"]) as c:
        assert c.session.subprotocol == "liveupdates.v1"
        welcome = (await c.handshake())[0]
        assert welcome["user"] == "erin"
    async with ws_client(server, headers={"authorization": "Bearer frank"}) as c:
        assert (await c.handshake())[0]["user"] == "frank"


@pytest.mark.parametrize(
    ("first_frame", "code"),
    [
        ("{not json", 4400),
        (json.dumps({"type": "launch"}), 4400),
        (json.dumps({"type": "subscribe", "topic": "jobs"}), 4400),
        (json.dumps({"type": "hello", "token": "x" * 4000}), 1009),
        (json.dumps({"type": "hello", "topics": "jobs"}), 4400),
        (json.dumps({"type": "hello", "token": "bad-token"}), 4401),
        (json.dumps({"type": "hello"}), 4401),
    ],
    ids=["malformed", "unknown-type", "not-hello", "oversized", "bad-field", "bad-token",
         "no-token"],
)  # fmt: skip
async def test_bad_handshakes_are_closed_with_their_code(
    server: UvicornThread, witness: Client, first_frame: str, code: int
) -> None:
    async with ws_client(server) as client:
        await client.send_raw(first_frame)
        assert await client.closed() == code
    await assert_still_serving(server, witness, f"after {code}")


async def test_no_hello_in_time_is_closed(server: UvicornThread, witness: Client) -> None:
    async with ws_client(server) as client:
        assert await client.closed() == 4408
    await assert_still_serving(server, witness, "after timeout")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("][", 4400),
        (json.dumps({"type": "subscribe"}), 4400),
        (json.dumps({"type": "hello"}), 4400),
        (json.dumps({"type": "ping", "pad": "y" * 3000}), 1009),
    ],
    ids=["malformed", "missing-field", "second-hello", "oversized"],
)
async def test_bad_frames_after_hello_close_only_that_connection(
    server: UvicornThread, witness: Client, frame: str, code: int
) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="mallory")
        await client.send_raw(frame)
        assert await client.closed() == code
    await assert_still_serving(server, witness, f"after {frame[:10]}")


async def test_forbidden_topics_get_an_error_frame_and_nothing_else(
    server: UvicornThread, witness: Client
) -> None:
    async with ws_client(server) as mallory:
        await mallory.handshake(token="mallory")
        for request_id, topic in enumerate(["admin", "user:witness", "bad topic!"]):
            await mallory.send({"type": "subscribe", "topic": topic, "id": request_id})
            error = await mallory.until(lambda m: m["type"] == "error")
            expected = "invalid_topic" if " " in topic else "forbidden"
            assert (error["code"], error["topic"], error["id"]) == (expected, topic, request_id)
        await publish(server, Invalidate(["secret"]), Topic("admin"))
        await publish(server, Invalidate(["private"]), User("witness"))
        await publish(server, Invalidate(["public"]), Everyone)
        (event,) = await mallory.events(1)
        assert event["keys"] == [["public"]]
        await mallory.send({"type": "ping"})
        assert (await mallory.until(lambda m: m["type"] == "pong"))["type"] == "pong"
    private, public = await witness.events(2)
    assert (private["keys"], public["keys"]) == ([["private"]], [["public"]])


async def test_subscription_limit(server: UvicornThread) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="gina", topics=["t1", "t2", "t3"])
        await client.send({"type": "subscribe", "topic": "t4"})
        error = await client.until(lambda m: m["type"] == "error")
        assert error["code"] == "too_many_subscriptions"


async def test_message_flood_is_rate_limited(server: UvicornThread, witness: Client) -> None:
    async with ws_client(server) as client:
        await client.handshake(token="flooder")
        try:
            for _ in range(200):
                await client.send({"type": "ping"})
        except (WebSocketDisconnect, WebSocketNetworkError, LocalProtocolError):
            pass  # the server closed while we were still sending (wsproto: "REMOTE_CLOSING")
        assert await client.closed() == 4429
    await assert_still_serving(server, witness, "after flood")


async def test_foreign_origin_is_refused(server: UvicornThread, witness: Client) -> None:
    with pytest.raises(WebSocketUpgradeError) as refused:
        async with ws_client(server, headers={"origin": "https://evil.example"}):
            pass
    assert refused.value.response.status_code == 403
    same_origin = {"origin": f"http://127.0.0.1:{server.port}"}
    async with ws_client(server, headers=same_origin) as client:
        assert (await client.handshake(token="harry"))[0]["user"] == "harry"
    await assert_still_serving(server, witness, "after origin")


async def test_plain_http_to_the_raw_endpoint_gets_upgrade_required() -> None:
    hub = Hub()
    transport = httpx.ASGITransport(app=WebSocketEndpoint(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/")
    assert response.status_code == 426


# In process, for what uvicorn does not do: sends that fail, a `send` that is no coroutine
# function (the endpoint hands uvicorn's own send coroutines to the flusher, and must not
# hand it anything else).


class _Awaitable:
    """An awaitable that is not a coroutine (only ``__await__``), as some servers' sends are."""

    def __init__(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self.coroutine = coroutine

    def __await__(self) -> Generator[Any, None, None]:
        return self.coroutine.__await__()


async def call_endpoint(hub: Hub, send: Callable[[Any], Awaitable[None]]) -> None:
    """Run one WebSocket session that says hello and then only listens."""
    incoming = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": '{"type":"hello"}'},
    ]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await anyio.sleep_forever()  # the client never leaves on its own
        raise AssertionError

    scope = {"type": "websocket", "path": "/live", "headers": [], "subprotocols": [],
             "query_string": b""}  # fmt: skip
    with anyio.fail_after(5):
        await WebSocketEndpoint(hub, allowed_origins="*")(scope, receive, send)


def frames_of(sent: list[Any], kind: str) -> list[Any]:
    return [m for message in sent if message["type"] == "websocket.send"
            for m in json.loads(message["text"]) if m["type"] == kind]  # fmt: skip


async def test_a_failing_send_ends_the_connection_quietly() -> None:
    sent: list[Any] = []
    subscribed = anyio.Event()

    async def send(message: Any) -> None:
        if frames_of(sent, "subscribed"):
            raise OSError("connection reset")  # the peer is gone
        sent.append(message)
        if frames_of(sent, "subscribed"):
            subscribed.set()

    async with Hub() as hub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_endpoint, hub, send)
            await subscribed.wait()
            await anyio.sleep(0.05)  # the process is quiet: the event goes straight out
            await hub.publish(Invalidate(["x"]), to=Everyone)
        assert (hub.stats().connections, hub.stats().errors) == (0, 0)  # gone, not a failure
    assert "websocket.close" not in [m["type"] for m in sent]  # nobody left to tell
    assert frames_of(sent, "invalidate") == []


async def test_a_send_that_returns_another_awaitable_gets_every_event() -> None:
    sent: list[Any] = []
    subscribed = anyio.Event()
    got_all = anyio.Event()

    async def record(message: Any) -> None:
        sent.append(message)
        if frames_of(sent, "subscribed"):
            subscribed.set()
        if len(frames_of(sent, "invalidate")) == 3:
            got_all.set()

    def send(message: Any) -> _Awaitable:
        return _Awaitable(record(message))

    async with Hub() as hub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_endpoint, hub, send)
            await subscribed.wait()
            for key in "abc":
                await anyio.sleep(0.05)  # quiet each time: straight to the socket
                await hub.publish(Invalidate([key]), to=Everyone)
            with anyio.fail_after(5):
                await got_all.wait()
            tg.cancel_scope.cancel()
        assert hub.stats().errors == 0
    assert [m["keys"] for m in frames_of(sent, "invalidate")] == [[["a"]], [["b"]], [["c"]]]

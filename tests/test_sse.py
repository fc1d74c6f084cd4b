"""End to end over uvicorn with a real HTTP client: the Server-Sent Events endpoint."""

from __future__ import annotations

import codecs
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import anyio
import anyio.abc
import anyio.lowlevel
import h11
import pytest
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from support import UvicornThread, token_auth, ws_client

from liveupdates import Everyone, Hub, HubStats, Invalidate, Limits, Principal, Set, Topic, User
from liveupdates.asgi import SSEEndpoint, WebSocketEndpoint
from liveupdates.asgi.sse import sse_event
from liveupdates.backplanes import MemoryBackplane
from liveupdates.errors import CloseCode

pytestmark = pytest.mark.anyio

HEARTBEAT = 0.2  # the hub pings an idle connection after this many seconds...
DEAD_AFTER = 0.8  # ...and closes one it has not heard from for this long


def authorize(principal: Principal, topic: str) -> bool:
    return topic != "admin"


def start_server() -> UvicornThread:
    hub = Hub(
        MemoryBackplane(history_size=5),
        authenticate=token_auth,
        authorize=authorize,
        limits=Limits(max_subscriptions=3, max_frame_bytes=4096,
                      heartbeat_interval=HEARTBEAT, heartbeat_timeout=DEAD_AFTER),
    )  # fmt: skip
    ended = Ended(SSEEndpoint(hub))
    app = Starlette(
        routes=[Route("/sse", ended), WebSocketRoute("/live", WebSocketEndpoint(hub))],
        lifespan=hub.lifespan,
    )
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    server.ended = ended  # type: ignore[attr-defined]
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    """Shared by the tests of this module: each uses its own users and topics."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def fresh_server() -> Iterator[UvicornThread]:
    """A server of its own, for tests that count offsets or connections."""
    server = start_server()
    yield server
    server.stop()


def hub_of(server: UvicornThread) -> Hub:
    hub: Hub = server.hub  # type: ignore[attr-defined]
    return hub


async def publish(server: UvicornThread, event: Any, to: Any) -> None:
    await server.acall(hub_of(server).publish, event, to)


async def stats(server: UvicornThread) -> HubStats:
    async def read() -> HubStats:
        return hub_of(server).stats()

    return await server.acall(read)


async def connections_of(server: UvicornThread, user: str) -> int:
    async def read() -> int:
        return len(hub_of(server).connections(user))

    return await server.acall(read)


async def on_server(server: UvicornThread, fn: Callable[[Hub], None]) -> None:
    """Run `fn(hub)` on the server's event loop."""

    async def run() -> None:
        fn(hub_of(server))

    await server.acall(run)


class Ended:
    """Wraps an ASGI app and counts the requests it finished (to wait for one, from a thread)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.count = 0
        self.changed = threading.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            with self.changed:
                self.count += 1
                self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        def wait() -> bool:
            with self.changed:
                return self.changed.wait_for(lambda: self.count >= count, timeout=5)

        assert await anyio.to_thread.run_sync(wait), f"{self.count} requests ended, not {count}"


class Stream:
    """An SSE response over a raw HTTP/1.1 connection (h11), read event by event as
    EventSource does (the spec's field rules; lines end with LF here)."""

    def __init__(self, sock: anyio.abc.ByteStream, conn: h11.Connection) -> None:
        self.sock, self.conn = sock, conn
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self.last_id: str | None = None
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._pending: deque[dict[str, Any]] = deque()

    async def _event(self) -> object:
        while True:
            event = self.conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            try:
                data = await self.sock.receive()
            except anyio.EndOfStream:
                data = b""
            self.conn.receive_data(data)

    async def start(self) -> None:
        response = await self._event()
        assert isinstance(response, h11.Response), response
        self.status_code = response.status_code
        self.headers = {k.decode(): v.decode() for k, v in response.headers}

    async def _line(self) -> str:
        while "\n" not in self._text:
            event = await self._event()
            if not isinstance(event, h11.Data):
                assert isinstance(event, h11.EndOfMessage), event
                raise EOFError
            self._text += self._decoder.decode(event.data)
        line, self._text = self._text.split("\n", 1)
        return line.removesuffix("\r")

    async def body(self) -> bytes:
        data = b""
        while isinstance(event := await self._event(), h11.Data):
            data += event.data
        return data

    async def next_event(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The next event's id field (None without one) and its messages; EOFError at the end."""
        data: list[str] = []
        event_id = None
        while True:
            line = await self._line()
            if not line:
                if data:
                    frame = json.loads("\n".join(data))
                    assert isinstance(frame, list), frame
                    if event_id is not None:
                        self.last_id = event_id
                    return event_id, frame
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            else:
                assert name == "", f"unexpected field {line!r}"

    async def receive(self) -> dict[str, Any]:
        while not self._pending:
            self._pending.extend((await self.next_event())[1])
        return self._pending.popleft()

    async def until(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        while True:
            message = await self.receive()
            if predicate(message):
                return message

    async def events(self, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while len(found) < count:
            message = await self.receive()
            if "offset" in message and message["type"] not in ("subscribed", "resync"):
                found.append(message)
        return found

    async def rest(self) -> list[dict[str, Any]]:
        """Every message until the server ends the response."""
        messages = list(self._pending)
        self._pending.clear()
        try:
            while True:
                messages += (await self.next_event())[1]
        except EOFError:
            return messages


@asynccontextmanager
async def sse(
    server: UvicornThread,
    *,
    token: str | None = None,
    topics: list[str] | None = None,
    since: Any = None,
    headers: dict[str, str] | None = None,
    method: str = "GET",
    path: str = "/sse",
) -> AsyncIterator[Stream]:
    params: dict[str, str] = {}
    if token is not None:
        params["token"] = token
    if topics:
        params["topics"] = ",".join(topics)
    if since is not None:
        params["since"] = since if isinstance(since, str) else json.dumps(since)
    target = path + ("?" + urlencode(params) if params else "")
    request = h11.Request(
        method=method,
        target=target,
        headers=[
            ("host", f"127.0.0.1:{server.port}"),
            ("accept", "text/event-stream"),
            *(headers or {}).items(),
        ],
    )
    async with await anyio.connect_tcp("127.0.0.1", server.port) as sock:
        conn = h11.Connection(h11.CLIENT)
        await sock.send(conn.send(request) + (conn.send(h11.EndOfMessage()) or b""))
        stream = Stream(sock, conn)
        with anyio.fail_after(10):
            await stream.start()
        yield stream


def outcomes(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["stream"]: m for m in messages if m["type"] == "subscribed"}


async def test_headers_then_welcome_and_every_outcome_in_the_first_event(
    server: UvicornThread,
) -> None:
    async with sse(server, token="alice", topics=["jobs", "stats"]) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "access-control-allow-origin" not in stream.headers  # no Origin: same origin
        event_id, first = await stream.next_event()
        assert [m["type"] for m in first] == ["welcome"] + ["subscribed"] * 4
        assert first[0]["user"] == "alice"
        assert first[0]["heartbeat"] == int(HEARTBEAT * 1000)
        subscribed = outcomes(first)
        assert set(subscribed) == {"all", "user:alice", "topic:jobs", "topic:stats"}
        assert {m["outcome"] for m in subscribed.values()} == {"fresh"}
        assert event_id is not None
        assert json.loads(event_id) == {s: [m["epoch"], 0] for s, m in subscribed.items()}
        assert " " not in event_id  # compact


async def test_targeting_by_user_topic_and_everyone(server: UvicornThread) -> None:
    async with (
        sse(server, token="alice", topics=["jobs"]) as alice,
        sse(server, token="alice") as alice_tab,
        sse(server, token="bob") as bob,
        ws_client(server) as carol,  # the same hub serves both transports
    ):
        for stream in (alice, alice_tab, bob):
            await stream.next_event()
        await carol.handshake(token="carol", topics=["jobs"])

        await publish(server, Invalidate(["jobs", "alice"]), User("alice"))
        await publish(server, Set(["jobs", 7, "progress"], {"done": 9}), Topic("jobs"))
        await publish(server, Invalidate(["stats"]), Everyone)

        personal, topic, everyone = await alice.events(3)
        assert (personal["stream"], personal["keys"]) == ("user:alice", [["jobs", "alice"]])
        assert (topic["stream"], topic["data"]) == ("topic:jobs", {"done": 9})
        assert (everyone["stream"], everyone["keys"]) == ("all", [["stats"]])
        assert [e["stream"] for e in await alice_tab.events(2)] == ["user:alice", "all"]
        assert [e["stream"] for e in await bob.events(1)] == ["all"]  # nothing of alice's
        over_ws = await carol.events(2)
        assert [e["stream"] for e in over_ws] == ["topic:jobs", "all"]
        assert over_ws[0]["offset"] == topic["offset"] and over_ws[1] == everyone


async def test_the_event_id_holds_the_cursors_after_each_frame(
    fresh_server: UvicornThread,
) -> None:
    server = fresh_server
    async with sse(server, token="dave", topics=["jobs"]) as stream:
        await stream.next_event()
        expected = json.loads(stream.last_id or "")
        for n in range(3):
            await publish(server, Invalidate(["jobs", n]), Topic("jobs"))
            await publish(server, Invalidate(["me", n]), User("dave"))
            while expected["topic:jobs"][1] < n + 1 or expected["user:dave"][1] < n + 1:
                event_id, frame = await stream.next_event()
                for m in frame:
                    if m["type"] == "invalidate":
                        expected[m["stream"]] = [m["epoch"], m["offset"]]
                if frame == [{"type": "ping"}]:
                    assert event_id is None  # a ping moves no cursor: no new id
                else:
                    assert event_id is not None and json.loads(event_id) == expected
        assert expected["all"][1] == 0
        while frame != [{"type": "ping"}]:  # the connection goes idle: the hub pings
            event_id, frame = await stream.next_event()
        assert event_id is None


async def test_resume_from_last_event_id_or_since_with_the_query_winning(
    fresh_server: UvicornThread,
) -> None:
    server = fresh_server
    async with sse(server, token="erin", topics=["jobs"]) as stream:
        await stream.next_event()
        await publish(server, Invalidate(["jobs", 1]), Topic("jobs"))
        await stream.events(1)
        last_id = stream.last_id
        assert last_id is not None
    # cut off: three changes happen while it is away (the history holds five)
    await publish(server, Invalidate(["jobs", 2]), Topic("jobs"))
    await publish(server, Set(["jobs", 3, "progress"], 40), Topic("jobs"))
    await publish(server, Set(["jobs", 3, "progress"], 90), Topic("jobs"))

    resumed = {"last-event-id": last_id}
    async with sse(server, token="erin", topics=["jobs"], headers=resumed) as stream:
        _, first = await stream.next_event()
        jobs = outcomes(first)["topic:jobs"]
        assert (jobs["outcome"], jobs["offset"]) == ("recovered", 4)
        assert outcomes(first)["all"]["outcome"] == "recovered"
        replayed = [m for m in first if m["type"] in ("invalidate", "set")]
        assert [(m["type"], m.get("keys"), m.get("data")) for m in replayed] == [
            ("invalidate", [["jobs", 2]], None),
            ("set", None, 90),  # coalesced: 40 never shows
        ]
        assert json.loads(stream.last_id or "")["topic:jobs"] == [jobs["epoch"], 4]

    since = {
        "topic:jobs": {"epoch": jobs["epoch"], "offset": 3},
        "user:mallory": {"epoch": "x", "offset": 1},  # not this connection's: ignored
    }
    async with sse(server, token="erin", topics=["jobs"], since=since) as stream:
        _, first = await stream.next_event()
        assert outcomes(first)["topic:jobs"]["outcome"] == "recovered"
        assert outcomes(first)["user:erin"]["outcome"] == "fresh"
        assert "user:mallory" not in json.loads(stream.last_id or "")
        (event,) = [m for m in first if m["type"] == "set"]  # the replay follows at once
        assert (event["offset"], event["data"]) == (4, 90)

    stale = {"topic:jobs": {"epoch": "from-another-server", "offset": 1}}
    async with sse(server, token="erin", topics=["jobs"], since=stale, headers=resumed) as stream:
        jobs = outcomes((await stream.next_event())[1])["topic:jobs"]
        assert (jobs["outcome"], jobs["reason"]) == ("resync", "epoch")

    for n in range(6):  # more than the history holds
        await publish(server, Invalidate(["jobs", 10 + n]), Topic("jobs"))
    async with sse(server, token="erin", topics=["jobs"], headers=resumed) as stream:
        jobs = outcomes((await stream.next_event())[1])["topic:jobs"]
        assert (jobs["outcome"], jobs["reason"], jobs["offset"]) == ("resync", "expired", 10)
        assert json.loads(stream.last_id or "")["topic:jobs"] == [jobs["epoch"], 10]


async def test_a_user_id_beyond_ascii_resumes_from_an_ascii_event_id(
    server: UvicornThread,
) -> None:
    async with sse(server, token="李") as stream:
        await stream.next_event()
        await publish(server, Invalidate(["mine"]), User("李"))
        await stream.events(1)
        last_id = stream.last_id or ""
    assert last_id.isascii()  # it comes back in a header
    assert json.loads(last_id)["user:李"][1] >= 1
    await publish(server, Invalidate(["missed"]), User("李"))
    epoch, offset = json.loads(last_id)["user:李"]
    since = json.dumps({"user:李": {"epoch": epoch, "offset": offset}}, ensure_ascii=False)
    for resume in ({"headers": {"last-event-id": last_id}}, {"since": since}):  # as JSON.stringify
        async with sse(server, token="李", **resume) as stream:
            _, first = await stream.next_event()
            assert outcomes(first)["user:李"]["outcome"] == "recovered"
            assert [m["keys"] for m in first if m["type"] == "invalidate"] == [[["missed"]]]


@pytest.mark.parametrize(
    ("token", "expected"), [(None, "no credentials"), ("bad-one", "credentials rejected")]
)
async def test_unauthorized_is_one_error_event_then_the_end(
    server: UvicornThread, token: str | None, expected: str
) -> None:
    async with sse(server, token=token, topics=["jobs"]) as stream:
        assert stream.status_code == 200  # EventSource would hide any other status
        event_id, frame = await stream.next_event()
        assert event_id is None
        assert frame == [
            {"type": "error", "code": "unauthorized", "message": expected, "topic": None,
             "id": None}
        ]  # fmt: skip
        assert await stream.rest() == []


async def test_tokens_from_a_header_or_a_cookie_hook(server: UvicornThread) -> None:
    async with sse(server, headers={"authorization": "Bearer frank"}) as stream:
        assert (await stream.receive())["user"] == "frank"


@pytest.mark.parametrize(
    ("since", "headers", "code"),
    [
        ("{not json", {}, "bad_request"),
        ('{"all": {"epoch": "e", "offset": -1}}', {}, "bad_request"),
        ('["all"]', {}, "bad_request"),
        (None, {"last-event-id": "garbage"}, "bad_request"),
        (None, {"last-event-id": '{"all": ["e", "1"]}'}, "bad_request"),
        ("x" * 5000, {}, "frame_too_large"),
    ],
)
async def test_a_bad_since_or_last_event_id_is_an_error_then_the_end(
    server: UvicornThread, since: str | None, headers: dict[str, str], code: str
) -> None:
    async with sse(server, token="gina", since=since, headers=headers) as stream:
        (message,) = await stream.rest()
        assert (message["type"], message["code"]) == ("error", code)
    assert await connections_of(server, "gina") == 0


async def test_refused_topics_are_error_messages_and_the_stream_stays(
    server: UvicornThread,
) -> None:
    topics = ["a", "admin", "bad topic!", "b", "c", "d"]  # at most three subscriptions
    async with sse(server, token="hank", topics=topics) as stream:
        _, first = await stream.next_event()
        errors = {m["topic"]: m["code"] for m in first if m["type"] == "error"}
        assert errors == {
            "admin": "forbidden",
            "bad topic!": "invalid_topic",
            "d": "too_many_subscriptions",
        }
        assert set(outcomes(first)) == {"all", "user:hank", "topic:a", "topic:b", "topic:c"}
        await publish(server, Invalidate(["c"]), Topic("c"))
        (event,) = await stream.events(1)
        assert event["stream"] == "topic:c"


async def test_pings_keep_a_silent_client_alive(server: UvicornThread) -> None:
    """No message ever goes up an SSE stream: written frames must count as signs of life."""
    async with sse(server, token="ivan") as stream:
        await stream.next_event()
        start = anyio.current_time()
        pings = 0
        while anyio.current_time() - start < 1.5 * DEAD_AFTER:
            message = await stream.receive()
            assert message["type"] == "ping", message  # not an error, not the end
            pings += 1
        assert pings >= 2
        await publish(server, Invalidate(["still", "here"]), User("ivan"))
        (event,) = await stream.events(1)
        assert event["keys"] == [["still", "here"]]


async def test_a_client_that_leaves_is_unregistered(fresh_server: UvicornThread) -> None:
    server = fresh_server
    async with sse(server, token="jane", topics=["jobs"]) as one, sse(server, token="kim") as two:
        await one.next_event()
        await two.next_event()
        assert (await stats(server)).connections == 2
    await server.ended.wait_for(2)  # type: ignore[attr-defined]
    current = await stats(server)
    assert (current.connections, current.users, current.streams) == (0, 0, 0)


async def test_a_server_side_close_names_the_error_then_ends(server: UvicornThread) -> None:
    def fail(hub: Hub) -> None:
        for conn in hub.connections("lena"):
            conn.close(CloseCode.TRY_AGAIN_LATER, "backplane unavailable")

    async with sse(server, token="lena") as stream:
        await stream.next_event()
        await on_server(server, fail)
        (error,) = [m for m in await stream.rest() if m["type"] != "ping"]
        assert (error["code"], error["message"]) == ("try_again_later", "backplane unavailable")
    assert await connections_of(server, "lena") == 0  # unregistered before the response ended


async def test_a_draining_hub_says_goodbye_and_refuses_new_streams(
    fresh_server: UvicornThread,
) -> None:
    server = fresh_server
    async with sse(server, token="olga") as stream:
        await stream.next_event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.acall, hub_of(server).drain)
            rest = [m for m in await stream.rest() if m["type"] != "ping"]
        assert rest == [{"type": "goodbye", "retry_ms": 5000}]  # then the end, and no error
    async with sse(server, token="olga") as stream:
        assert stream.status_code == 503  # a load balancer sends it elsewhere
        await stream.body()


async def test_origin_check_and_cors_headers(server: UvicornThread) -> None:
    async with sse(server, token="max", headers={"origin": "https://evil.example"}) as stream:
        assert stream.status_code == 403
        await stream.body()
    same = f"http://127.0.0.1:{server.port}"
    async with sse(server, token="max", headers={"origin": same}) as stream:
        assert stream.status_code == 200
        assert stream.headers["access-control-allow-origin"] == same
        assert stream.headers["access-control-allow-credentials"] == "true"
        assert (await stream.receive())["type"] == "welcome"


async def test_only_get(server: UvicornThread) -> None:
    async with sse(server, token="ned", method="POST") as stream:
        assert stream.status_code == 405
        assert stream.headers["allow"] == "GET"
        await stream.body()


def test_a_frame_with_a_raw_newline_stays_one_event() -> None:
    assert sse_event('["a"]', '{"all":["e",1]}') == b'id: {"all":["e",1]}\ndata: ["a"]\n\n'
    assert sse_event('[\n"a"\r\n]') == b'data: [\ndata: "a"\ndata: ]\n\n'


# In process, for what uvicorn does not do: writes that fail, a drain during authentication.


async def call_endpoint(
    endpoint: SSEEndpoint, send: Callable[[Any], Awaitable[None]], query: bytes = b""
) -> None:
    async def receive() -> dict[str, Any]:
        await anyio.sleep_forever()  # the client never leaves on its own
        raise AssertionError

    scope = {"type": "http", "method": "GET", "path": "/sse", "headers": [],
             "query_string": query}  # fmt: skip
    with anyio.fail_after(5):
        await endpoint(scope, receive, send)


async def test_a_failing_write_ends_the_connection_quietly() -> None:
    sent: list[Any] = []
    first_frame = anyio.Event()

    async def send(message: Any) -> None:
        if message.get("more_body"):
            if first_frame.is_set():
                raise OSError("connection reset")  # the peer is gone
            first_frame.set()
        sent.append(message)

    async with Hub(authenticate=token_auth) as hub:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_endpoint, SSEEndpoint(hub), send, b"token=pat")
            await first_frame.wait()
            await hub.publish(Invalidate(["x"]), to=User("pat"))
        assert (hub.stats().connections, hub.stats().errors) == (0, 0)  # gone, not a failure
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


async def test_a_drain_during_authentication_says_goodbye() -> None:
    async def authenticate(request: Any) -> Principal:
        await hub.drain()  # slow hook: the hub starts draining meanwhile
        return Principal(user="quinn")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async with Hub(authenticate=authenticate) as hub:
        await call_endpoint(SSEEndpoint(hub), send)
    bodies = b"".join(m.get("body", b"") for m in sent[1:])
    assert (sent[0]["status"], bodies) == (200, b'data: [{"type":"goodbye","retry_ms":5000}]\n\n')
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_websocket_request_is_refused() -> None:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    async with Hub() as hub:
        await SSEEndpoint(hub)({"type": "websocket", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]

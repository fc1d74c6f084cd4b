"""Heartbeats over real WebSocket connections: a live client stays, a dead one is closed.

The server pings a connection that has sent nothing for half the heartbeat interval, or heard
nothing for a whole one; a client answers each ping with a pong (as the browser client does)
and sends nothing else on its own. A connection that receives events all the time must still
be pinged, or its client never speaks and the dead-peer check closes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import anyio
import pytest
from httpx_ws import WebSocketDisconnect
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from support import UvicornThread, token_auth, ws_client

from liveupdates import Hub, Limits, Set, User
from liveupdates.asgi import WebSocketEndpoint

pytestmark = pytest.mark.anyio

INTERVAL, TIMEOUT = 0.2, 0.5  # heartbeat_interval, heartbeat_timeout (s)
EVERY = 0.05  # s between two events: the connection never idles long enough for an idle ping
COUNT = round(3 * TIMEOUT / EVERY)  # events over three heartbeat timeouts


@pytest.fixture(scope="module")
def server() -> Iterator[UvicornThread]:
    hub = Hub(
        authenticate=token_auth,
        limits=Limits(heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT),
    )
    app = Starlette(routes=[WebSocketRoute("/live", WebSocketEndpoint(hub))], lifespan=hub.lifespan)
    server = UvicornThread(app).start()
    server.hub = hub  # type: ignore[attr-defined]
    yield server
    server.stop()


def streamer(server: UvicornThread, user: str) -> Callable[[], Awaitable[None]]:
    """On the server: `COUNT` events to `user`, one every `EVERY` s."""

    async def stream() -> None:
        for n in range(COUNT):
            await server.hub.publish(Set(["progress"], n), User(user))  # type: ignore[attr-defined]
            await anyio.sleep(EVERY)

    return stream


async def busy_session(server: UvicornThread, user: str, answer: bool) -> tuple[list[int], int]:
    """A client of `user` receives `COUNT` events, one every `EVERY` s, answering pings or not:
    the data of the events it got and how many pings (raises WebSocketDisconnect if closed)."""
    data: list[int] = []
    pings = 0
    closed: WebSocketDisconnect | None = None
    async with ws_client(server) as client, anyio.create_task_group() as tg:
        await client.handshake(token=user)
        tg.start_soon(server.acall, streamer(server, user))
        try:
            while len(data) < COUNT:
                message = await client.receive()
                if message["type"] == "ping":
                    pings += 1
                    if answer:
                        await client.send({"type": "pong"})
                elif message["type"] == "set":
                    data.append(message["data"])
        except WebSocketDisconnect as exc:
            closed = exc  # (raised once the streamer is done)
    if closed is not None:
        raise closed
    return data, pings


async def test_a_busy_connection_whose_client_answers_pings_stays_open(
    server: UvicornThread,
) -> None:
    data, pings = await busy_session(server, "busy", answer=True)
    assert data == list(range(COUNT))  # every event, and no close in between
    assert pings >= 2  # pinged although the connection never idled


async def test_a_busy_connection_whose_client_never_answers_is_closed_as_dead(
    server: UvicornThread,
) -> None:
    with pytest.raises(WebSocketDisconnect) as closed:
        await busy_session(server, "mute", answer=False)
    assert closed.value.code == 4504

"""Isolation property: no connection ever receives an event it was not entitled to."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveupdates import AuthRequest, Everyone, Hub, Principal, Set, Target, Topic, User
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

pytestmark = pytest.mark.anyio

USERS = ["u0", "u1", "u2", "u3"]
TOPICS = ["t0", "t1", "t2", "secret"]


def authenticate(request: AuthRequest) -> Principal:
    return Principal(user=request.token)  # no token: anonymous


def authorize(principal: Principal, topic: str) -> bool:
    return topic != "secret" or principal.user == "u0"


connections = st.lists(
    st.tuples(st.sampled_from([*USERS, None]), st.frozensets(st.sampled_from(TOPICS))),
    min_size=1,
    max_size=6,
)
targets = st.one_of(
    st.just(Everyone),
    st.builds(User, st.sampled_from(USERS)),
    st.builds(Topic, st.sampled_from(TOPICS)),
)


def entitled(user: str | None, topics: frozenset[str], target: Target) -> bool:
    if isinstance(target, User):
        return user == target.id
    if isinstance(target, Topic):
        return target.name in topics and authorize(Principal(user=user), target.name)
    return True


async def received_ids(ws: AsgiWebSocket) -> list[int]:
    ids: list[int] = []
    while True:
        message: dict[str, Any] = await ws.receive_message()
        if message.get("type") == "set":
            if message["key"] == ["end"]:
                return ids
            ids.append(message["data"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conns=connections, events=st.lists(targets, max_size=15))
async def test_no_connection_receives_what_it_is_not_entitled_to(
    conns: list[tuple[str | None, frozenset[str]]], events: list[Target]
) -> None:
    async with (
        Hub(authenticate=authenticate, authorize=authorize) as hub,
        AsyncExitStack() as stack,
    ):
        app = WebSocketEndpoint(hub)
        sockets = []
        for user, topics in conns:
            ws = await stack.enter_async_context(connect_asgi(app))
            hello: dict[str, Any] = {"type": "hello", "topics": sorted(topics)}
            if user is not None:
                hello["token"] = user
            await ws.send_json(hello)
            answers = 1 + (user is not None) + len(topics)
            while answers:
                message = await ws.receive_message()
                answers -= message["type"] in ("subscribed", "error")
            sockets.append(ws)
        for index, target in enumerate(events):
            await hub.publish(Set(["e", index], index), to=target)
        await hub.publish(Set(["end"], 0), to=Everyone)
        for ws, (user, topics) in zip(sockets, conns, strict=True):
            expected = [i for i, t in enumerate(events) if entitled(user, topics, t)]
            assert await received_ids(ws) == expected

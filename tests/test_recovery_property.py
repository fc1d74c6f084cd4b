"""Recovery property: under random publishes, disconnects, reconnects, slow reading, history
overflow, epoch changes and backplane outages that fail publishes, a client ends with every
changed key refetched or patched.

The client model does what the browser client does: it keeps a cursor per stream, resumes
with its cursors, refetches a key on `invalidate` and a whole stream on `resync`, and patches
`set` values. After quiescence, for every key changed after it first connected, either an
invalidation (or resync) reached it after the key's last change, or it holds the key's last
`set` value. No event is ever delivered twice, no epoch changes without a resync, and after a
`recovered` replay the client's cursor reaches the `offset` of its `subscribed`.

A failed publish (the backplane is down: the application got `BackplaneUnavailable`, its
change is committed all the same) counts as a change the client must end up refetching.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from liveupdates import (
    AuthRequest,
    BackplaneUnavailable,
    Hub,
    Invalidate,
    Limits,
    Principal,
    Set,
    Topic,
    User,
)
from liveupdates.asgi import WebSocketEndpoint
from liveupdates.backplanes import MemoryBackplane
from liveupdates.positions import Publication
from liveupdates.testing.websocket import AsgiWebSocket, connect_asgi

pytestmark = pytest.mark.anyio

KEYS = ["k0", "k1", "k2"]
STREAMS = {"user": "user:u", "topic": "topic:t"}


def authenticate(request: AuthRequest) -> Principal:
    return Principal(user="u")


@dataclass
class ClientModel:
    cursors: dict[str, tuple[str, int]] = field(default_factory=dict)
    refetched: dict[tuple[str, str], int] = field(default_factory=dict)  # -> harness time
    values: dict[tuple[str, str], int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    recovered_to: dict[str, tuple[str, int]] = field(default_factory=dict)

    def refetch_stream(self, stream: str, now: int) -> None:
        for key in KEYS:
            self.refetched[(stream, key)] = now

    def apply(self, message: dict[str, Any], now: int) -> None:
        kind, stream = message.get("type"), str(message.get("stream"))
        if kind == "subscribed":
            self.recovered_to.pop(stream, None)
            if message["outcome"] != "recovered":  # fresh or resync: refetch what it covers
                self.refetch_stream(stream, now)
                self.cursors[stream] = (message["epoch"], message["offset"])
            else:  # the replay that follows brings the cursor there
                self.recovered_to[stream] = (message["epoch"], message["offset"])
            return
        if kind == "resync":
            self.recovered_to.pop(stream, None)
            self.refetch_stream(stream, now)
            self.cursors[stream] = (message["epoch"], message["offset"])
            return
        if "stream" not in message or "offset" not in message:
            return  # welcome, ping, ...
        position = (message["epoch"], message["offset"])
        cursor = self.cursors.get(stream)
        if cursor is not None and cursor[0] != position[0]:
            self.violations.append(f"silent epoch change on {stream}: {cursor} -> {position}")
        elif cursor is not None and position[1] <= cursor[1]:
            self.violations.append(f"duplicate on {stream}: {position} after {cursor}")
            return
        self.cursors[stream] = position
        if kind == "invalidate":
            for query_key in message["keys"]:
                for key in KEYS:
                    if ["data", key][: len(query_key)] == query_key:
                        self.refetched[(stream, key)] = now
        elif kind == "set":
            self.values[(stream, message["key"][1])] = message["data"]

    def check_recovered(self) -> None:
        """Once everything is read, every `recovered` replay has brought its cursor home."""
        for stream, (epoch, offset) in self.recovered_to.items():
            cursor = self.cursors.get(stream)
            if cursor is None or cursor[0] != epoch or cursor[1] < offset:
                self.violations.append(f"{stream}: cursor {cursor} short of recovered {offset}")

    def hello(self) -> dict[str, Any]:
        since = {s: {"epoch": e, "offset": o} for s, (e, o) in self.cursors.items()}
        return {"type": "hello", "token": "u", "topics": ["t"], "since": since}


publish = st.tuples(
    st.just("publish"),
    st.sampled_from(sorted(STREAMS)),
    st.sampled_from([*KEYS, "*"]),  # "*" invalidates the ["data"] prefix: every key
    st.sampled_from(["invalidate", "set"]),
)


class FlakyBackplane(MemoryBackplane):
    """The in-memory backplane with outages: while `down`, every publish fails, as Redis'
    would; once restored it resets its receivers, as every backplane must (rule 3)."""

    down = False

    async def publish(self, stream: str, body: bytes, slot: str | None = None) -> Publication:
        if self.down:
            raise BackplaneUnavailable("the backplane is down (test)")
        return await super().publish(stream, body, slot)

    def restore(self) -> None:
        if self.down:
            self.down = False
            for receiver in self._receivers:
                receiver.reset()


operation = st.one_of(
    publish,
    publish,
    publish,
    st.just(("outage",)),
    st.just(("restore",)),
    st.just(("revoke_other",)),
    st.just(("read",)),
    st.just(("drop",)),
    st.just(("connect",)),
    st.just(("drop",)),
    st.just(("connect",)),
    st.just(("lose_history",)),
)


FAILED_PUBLISH_WHILE_AWAY = [  # issue 19: a replay across the failure's announcement
    ("publish", "topic", "k0", "invalidate"),
    ("read",),
    ("drop",),
    ("outage",),
    ("publish", "topic", "k1", "invalidate"),
    ("restore",),
    ("connect",),
]
TRAILING_CONTROL = [("drop",), ("publish", "user", "k0", "set"), ("revoke_other",), ("connect",)]
DROP_THEN_MISS_TWO = [
    ("drop",),
    ("publish", "topic", "k0", "invalidate"),
    ("publish", "topic", "k1", "set"),
    ("connect",),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(ops=FAILED_PUBLISH_WHILE_AWAY, history_size=8, outbox_size=8)
@example(
    ops=[*FAILED_PUBLISH_WHILE_AWAY[:-2], ("connect",), ("restore",)], history_size=8, outbox_size=8
)
@example(ops=TRAILING_CONTROL, history_size=8, outbox_size=8)  # the cursor reaches `offset`
@example(ops=DROP_THEN_MISS_TWO, history_size=1, outbox_size=8)  # history expired: resync
@example(ops=DROP_THEN_MISS_TWO, history_size=5, outbox_size=8)  # replayed: recovered
@example(ops=[("drop",), *DROP_THEN_MISS_TWO[1:3] * 3, ("connect",)], history_size=9, outbox_size=2)
@example(
    ops=[("publish", "user", "k0", "set"), ("lose_history",), ("publish", "user", "k1", "set")],
    history_size=4,
    outbox_size=4,
)  # an epoch change while connected
@given(
    ops=st.lists(operation, max_size=40),
    history_size=st.integers(1, 12),
    outbox_size=st.integers(2, 8),
)
async def test_no_missed_invalidation(
    ops: list[tuple[Any, ...]], history_size: int, outbox_size: int
) -> None:
    backplane = FlakyBackplane(history_size=history_size)
    limits = Limits(outbox_max_messages=outbox_size, rate=1e6, burst=10**6)
    model = ClientModel()
    last_change: dict[tuple[str, str], tuple[int, str]] = {}  # -> (time, kind)
    now = 0
    async with Hub(backplane, authenticate=authenticate, limits=limits) as hub:
        app = WebSocketEndpoint(hub)
        stack = AsyncExitStack()
        ws: AsgiWebSocket | None = None

        async def connect() -> AsgiWebSocket:
            socket = await stack.enter_async_context(connect_asgi(app, send_buffer=1))
            await socket.send_json(model.hello())
            return socket

        async def read(socket: AsgiWebSocket) -> int:
            """Apply everything queued so far: a pong queues behind it. Returns how much."""
            await socket.send_json({"type": "ping"})
            applied = 0
            while (message := await socket.receive_message())["type"] != "pong":
                model.apply(message, now)
                applied += 1
            return applied

        try:
            ws = await connect()
            await read(ws)
            for op in ops:
                if op[0] == "publish":
                    _, target, key, kind = op
                    now += 1
                    stream = STREAMS[target]
                    keys = KEYS if key == "*" else [key]
                    for k in keys:
                        last_change[(stream, k)] = (now, kind if key != "*" else "invalidate")
                    event: Any = (
                        Set(["data", key], now)
                        if kind == "set" and key != "*"
                        else Invalidate(["data"] if key == "*" else ["data", key])
                    )
                    # A failed publish answers 503; the application's change is committed all
                    # the same, so the client must still end up refetching it.
                    with suppress(BackplaneUnavailable):
                        await hub.publish(event, to=User("u") if target == "user" else Topic("t"))
                elif op[0] == "read" and ws is not None:
                    await read(ws)
                elif op[0] == "drop" and ws is not None:
                    await stack.aclose()
                    stack, ws = AsyncExitStack(), None
                elif op[0] == "connect" and ws is None:
                    ws = await connect()
                elif op[0] == "outage":
                    backplane.down = True
                elif op[0] == "restore":
                    backplane.restore()
                elif op[0] == "revoke_other" and not backplane.down:
                    await hub.disconnect(connection="nobody")  # a control publication on `all`
                elif op[0] == "lose_history":
                    backplane._streams.clear()  # what a backplane restart without persistence does
            backplane.restore()
            if ws is None:
                ws = await connect()
            with anyio.fail_after(5):
                while hub.reconciling or hub._publisher.unannounced:  # failed publishes announced
                    await anyio.lowlevel.checkpoint()
            while await read(ws):
                pass
            model.check_recovered()
        finally:
            await stack.aclose()

    assert model.violations == []
    for (stream, key), (changed_at, kind) in last_change.items():
        refetched_at = model.refetched.get((stream, key), -1)
        patched = kind == "set" and model.values.get((stream, key)) == changed_at
        assert refetched_at >= changed_at or patched, (
            f"{stream} {key}: last change at {changed_at} ({kind}) never reached the client "
            f"(refetched at {refetched_at}, value {model.values.get((stream, key))})"
        )
